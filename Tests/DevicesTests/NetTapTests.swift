import Foundation
import GuestMemory
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// Runs code inside a network namespace of its own, so that every TAP device a test makes,
/// and every packet it sends, stays in a world nobody else can see.
///
/// A network namespace belongs to a thread, not to a process: `unshare(CLONE_NEWNET)` on a
/// fresh thread moves only that thread. `/dev/net/tun` opened there creates its device there,
/// and the configuration socket `Tap` makes lives there too. When the thread has ended and
/// the last TAP descriptor is closed, the kernel tears the namespace down with everything in
/// it — there is no name to delete and nothing to leak if a test fails halfway.
enum NetNamespace {
    /// `CLONE_NEWNET` (`linux/sched.h`).
    static let cloneNewNet: Int32 = 0x4000_0000

    /// `unshare(2)`, which Swift's Glibc does not import (it needs `_GNU_SOURCE`).
    static let unshare: (@convention(c) (Int32) -> Int32)? = {
        guard let symbol = dlsym(nil, "unshare") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32) -> Int32).self)
    }()

    /// Why namespaced TAP tests cannot run here, or nil if they can.
    static let unavailableReason: String? = {
        let reason = Mutex<String?>("did not run")
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            guard let unshare else { reason.withLock { $0 = "unshare(2) not found" }; return }
            guard unshare(cloneNewNet) == 0 else {
                let text = String(cString: strerror(errno))
                reason.withLock { $0 = "cannot make a network namespace: \(text)" }
                return
            }
            let fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC)
            guard fd >= 0 else {
                let text = String(cString: strerror(errno))
                reason.withLock { $0 = "cannot open /dev/net/tun: \(text)" }
                return
            }
            close(fd)
            reason.withLock { $0 = nil }
        }
        thread.start()
        done.wait()
        return reason.withLock { $0 }
    }()

    static var available: Bool { unavailableReason == nil }

    /// Runs `body` on a new thread in a new, empty network namespace and returns its result.
    /// Everything made inside should be released inside.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                guard let unshare, unshare(cloneNewNet) == 0 else {
                    continuation.resume(throwing: NetTestError("cannot make a network namespace"))
                    return
                }
                do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
            }
            thread.start()
        }
    }
}

/// Real TAP devices, each in a network namespace the test makes (skipped, saying why, where
/// namespaces or /dev/net/tun are not available).
@Suite(.enabled(if: NetNamespace.available, "\(NetNamespace.unavailableReason ?? "")"))
struct NetTapTests {
    static let hostAddress = IPv4Address(192, 0, 2, 1) // TEST-NET-1: documentation only
    static let guestAddress = IPv4Address(192, 0, 2, 2)

    @Test func tapDevicesAreCreatedAttachedAndRefusedWithClearErrors() async throws {
        try await NetNamespace.run {
            // This thread is in a namespace of its own, not the process's.
            #expect(namespaceLink("/proc/thread-self/ns/net") != namespaceLink("/proc/self/ns/net"))
            #expect(namespaceLink("/proc/thread-self/ns/net") != nil)

            // The kernel picks lguest0 in an empty namespace.
            let unnamed = try Tap(creating: nil)
            #expect(unnamed.name == "lguest0")
            #expect(if_nametoindex("lguest0") != 0)

            let first = try Tap(creating: "lgtest0")
            #expect(first.name == "lgtest0")
            try withExtendedLifetime(first) {
                #expect(throws: TapError.alreadyExists("lgtest0")) { try Tap(creating: "lgtest0") }
                #expect(throws: TapError.busy("lgtest0")) { try Tap(attachingTo: "lgtest0") }
                try first.setOffloads(.all)
                try first.setOffloads([.tso4]) // made consistent (nothing) rather than refused
            }
            withExtendedLifetime(unnamed) {}

            #expect(throws: TapError.noSuchDevice("nosuch0")) { try Tap(attachingTo: "nosuch0") }
            #expect(throws: TapError.notATap("lo")) { try Tap(attachingTo: "lo") }
            #expect(throws: TapError.self) { try Tap.open(.create(name: "lo")) }

            // Attaching to a device someone else made: a persistent TAP, as `ip tuntap add`
            // leaves behind. TUNSETPERSIST is _IOW('T', 203, int).
            let tunSetPersist: UInt = 0x4004_54CB
            do {
                let maker = try Tap(creating: "lgpersist0")
                #expect(ioctl(maker.fileDescriptor, tunSetPersist, 1) == 0)
            }
            let attached = try Tap(attachingTo: "lgpersist0")
            #expect(attached.name == "lgpersist0")
            #expect(ioctl(attached.fileDescriptor, tunSetPersist, 0) == 0)
            withExtendedLifetime(attached) {}
        }
    }

    @Test func aFrameFromTheGuestIsAnsweredByTheHostKernel() async throws {
        let outcome = try await NetNamespace.run { () throws -> String in
            let tap = try Tap.open(.create(name: "lgtest0", hostAddress: Self.hostAddress))
            let harness = try TapHarness(tap: tap)
            defer { harness.driver.reset() }

            // ARP: who has 192.0.2.1? The host kernel answers with the TAP's own MAC.
            try harness.transmit(arpRequest(from: NetRig.mac, ip: Self.guestAddress, asking: Self.hostAddress))
            #expect(harness.device.statistics.txPackets == 1)
            let arpReply = try #require(try harness.receive { frame in
                frame.count >= 42 && frame[12] == 0x08 && frame[13] == 0x06 && frame[20] == 0 && frame[21] == 2
                    && Array(frame[28 ..< 32]) == Self.hostAddress.octets
            }, "no ARP reply from the host")
            #expect(Array(arpReply[0 ..< 6]) == NetRig.mac.bytes)
            #expect(Array(arpReply[32 ..< 38]) == NetRig.mac.bytes)
            #expect(Array(arpReply[38 ..< 42]) == Self.guestAddress.octets)
            let hostMAC = Array(arpReply[22 ..< 28])

            // ICMP echo to the host end: it answers with an echo reply.
            try harness.transmit(icmpEcho(from: NetRig.mac, to: hostMAC, source: Self.guestAddress,
                                          destination: Self.hostAddress, identifier: 0x4C47, sequence: 1))
            let echoReply = try #require(try harness.receive { frame in
                frame.count >= 42 && frame[12] == 0x08 && frame[13] == 0x00 && frame[23] == 1
                    && Array(frame[26 ..< 30]) == Self.hostAddress.octets && frame[34] == 0
                    && frame[38] == 0x4C && frame[39] == 0x47
            }, "no ICMP echo reply from the host")
            #expect(Array(echoReply[0 ..< 6]) == NetRig.mac.bytes)
            #expect(Array(echoReply[30 ..< 34]) == Self.guestAddress.octets)
            #expect(Array(echoReply[42...]) == Array("lguest ping".utf8))
            // Again with the checksum left to the host (CSUM): the 12-byte header reaches the
            // kernel as the guest wrote it, and it takes the partially checksummed packet.
            var partial = icmpEcho(from: NetRig.mac, to: hostMAC, source: Self.guestAddress,
                                   destination: Self.hostAddress, identifier: 0x4C47, sequence: 2)
            partial[36] = 0
            partial[37] = 0
            try harness.transmit(partial, header: netHeader(flags: VirtioNetHeader.needsChecksum, csumStart: 34, csumOffset: 2))
            #expect(try harness.receive { frame in
                frame.count >= 42 && frame[12] == 0x08 && frame[13] == 0x00 && frame[23] == 1 && frame[34] == 0
                    && frame[38] == 0x4C && frame[39] == 0x47 && frame[40] == 0 && frame[41] == 2
            } != nil, "no reply to the echo request with a partial checksum")
            #expect(harness.device.statistics.txPackets >= 3) // plus any ARP answers
            #expect(harness.headersSeen > 0)
            #expect(harness.device.statistics.txErrors == 0)
            return "ok"
        }
        #expect(outcome == "ok")
    }

    @Test func offloadsFromTheAckedFeaturesAreAcceptedByARealTap() async throws {
        try await NetNamespace.run {
            let tap = try Tap.open(.create(name: "lgtest1"))
            // Every subset of the guest offloads a driver could ack must activate cleanly.
            let guestBits = [VirtioNetFeature.guestChecksum, VirtioNetFeature.guestTSO4, VirtioNetFeature.guestTSO6,
                             VirtioNetFeature.guestECN]
            for mask in 0 ..< 16 {
                let acked = guestBits.enumerated().reduce(UInt64(0)) { mask & (1 << $1.offset) != 0 ? $0 | $1.element : $0 }
                let harness = try TapHarness(tap: tap, features: VirtioFeature.version1 | VirtioNetFeature.mac | acked)
                #expect(harness.transport.isActivated)
                #expect(!harness.driver.status.contains(.deviceNeedsReset), "acked \(acked)")
                harness.driver.reset()
            }
        }
    }
}

/// A net device on a real TAP with the mock driver, and the launcher's part played by hand:
/// wait for the TAP to be readable and call `tapReadable()` while the device wants that.
final class TapHarness {
    let memory: GuestMemory
    let device: NetDevice
    let transport: MMIOTransport
    let driver: MockDriver
    let rx: MockDriverQueue
    let tx: MockDriverQueue
    private var posted: [UInt16: MockChain] = [:]
    private(set) var headersSeen = 0

    init(tap: Tap, features: UInt64? = nil) throws {
        memory = try GuestMemory(size: 0x40_0000)
        device = NetDevice(endpoint: tap, mac: NetRig.mac)
        transport = MMIOTransport(device: device, memory: memory, interrupt: NetInterruptCounter())
        driver = MockDriver(transport: transport)
        rx = try MockDriverQueue(memory: memory, size: 64, base: 0x1_0000, dataAreaSize: 0x18_0000)
        tx = try MockDriverQueue(memory: memory, size: 64, base: 0x20_0000, dataAreaSize: 0x18_0000)
        try driver.initialize(features: features, queues: [rx, tx])
        for _ in 0 ..< 16 { try post() }
        driver.kick(0)
    }

    private func post() throws {
        let chain = try rx.addChain(writable: [1526])
        posted[chain.head] = chain
    }

    func transmit(_ frame: [UInt8], header: [UInt8] = netHeader()) throws {
        try tx.addChain(readable: [header, frame])
        driver.kick(1)
        #expect(try tx.drainUsed().count == 1)
    }

    /// Frames the host sends until one satisfies `wanted` (which is returned), for at most
    /// about two seconds. Every header must be valid; ARP questions about the guest are answered.
    func receive(_ wanted: ([UInt8]) -> Bool) throws -> [UInt8]? {
        for _ in 0 ..< 40 {
            var poller = pollfd(fd: device.tapDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&poller, 1, 50)
            if device.wantsTapReadable { device.tapReadable() }
            // Every used chain is taken out of `posted` before any replacement is posted: a
            // replacement may get the head of a chain used in the same batch.
            let used = try rx.drainUsed()
            var chains: [MockChain] = []
            for element in used {
                let taken = posted.removeValue(forKey: UInt16(element.id))
                chains.append(try #require(taken))
            }
            for (element, chain) in zip(used, chains) {
                try post()
                driver.kick(0)
                let bytes = Array(try rx.read(chain.writable[0]).prefix(Int(element.length)))
                try #require(bytes.count >= 12 + 14)
                // A valid header: one buffer, no segmentation for these small frames.
                #expect(bytes[10] == 1 && bytes[11] == 0, "num_buffers \(bytes[10]) \(bytes[11]), length \(element.length), frame \(bytes[12...].prefix(40).map { String($0, radix: 16) })")
                #expect(bytes[1] == VirtioNetHeader.gsoNone)
                headersSeen += 1
                let frame = Array(bytes[12...])
                if wanted(frame) { return frame }
                if let reply = arpAnswer(to: frame) { try transmit(reply) }
            }
        }
        return nil
    }

    /// An ARP reply for an ARP request about the guest's address (the host checking on us).
    private func arpAnswer(to frame: [UInt8]) -> [UInt8]? {
        guard frame.count >= 42, frame[12] == 0x08, frame[13] == 0x06, frame[21] == 1,
              Array(frame[38 ..< 42]) == NetTapTests.guestAddress.octets else { return nil }
        let asker = Array(frame[22 ..< 28])
        return asker + NetRig.mac.bytes + [0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]
            + NetRig.mac.bytes + NetTapTests.guestAddress.octets + asker + Array(frame[28 ..< 32])
    }
}

/// An Ethernet broadcast ARP request: "who has `asking`? tell `ip` (at `mac`)".
func arpRequest(from mac: MACAddress, ip: IPv4Address, asking: IPv4Address) -> [UInt8] {
    [UInt8](repeating: 0xFF, count: 6) + mac.bytes + [0x08, 0x06]
        + [0, 1, 0x08, 0, 6, 4, 0, 1] + mac.bytes + ip.octets + [UInt8](repeating: 0, count: 6) + asking.octets
}

/// An Ethernet frame holding an IPv4 ICMP echo request with the payload "lguest ping".
func icmpEcho(from mac: MACAddress, to destinationMAC: [UInt8], source: IPv4Address, destination: IPv4Address,
              identifier: UInt16, sequence: UInt16) -> [UInt8] {
    var icmp: [UInt8] = [8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xFF),
                         UInt8(sequence >> 8), UInt8(sequence & 0xFF)] + Array("lguest ping".utf8)
    let icmpSum = internetChecksum(icmp)
    icmp[2] = UInt8(icmpSum >> 8)
    icmp[3] = UInt8(icmpSum & 0xFF)
    let total = UInt16(20 + icmp.count)
    var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0x12, 0x34, 0x40, 0, 64, 1, 0, 0]
        + source.octets + destination.octets
    let ipSum = internetChecksum(ip)
    ip[10] = UInt8(ipSum >> 8)
    ip[11] = UInt8(ipSum & 0xFF)
    return destinationMAC + mac.bytes + [0x08, 0x00] + ip + icmp
}

/// RFC 1071: the one's complement of the one's complement sum of 16-bit words.
func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var index = 0
    while index + 1 < bytes.count {
        sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
        index += 2
    }
    if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
    while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
    return ~UInt16(sum)
}

/// Where a `/proc/…/ns/net` link points (`net:[inode]`): the namespace's identity.
func namespaceLink(_ path: String) -> String? {
    try? FileManager.default.destinationOfSymbolicLink(atPath: path)
}
