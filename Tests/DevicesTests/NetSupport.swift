import Foundation
import GuestMemory
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// An interrupt line that counts its pulses.
final class NetInterruptCounter: InterruptLine {
    private let pulses = Atomic<Int>(0)
    func trigger() { pulses.add(1, ordering: .sequentiallyConsistent) }
    var count: Int { pulses.load(ordering: .sequentiallyConsistent) }
}

/// Everything the device told its "wants the TAP readable" handler, in order.
final class NetInterestLog: Sendable {
    private let calls = Mutex<[Bool]>([])
    func record(_ wants: Bool) { calls.withLock { $0.append(wants) } }
    var values: [Bool] { calls.withLock { $0 } }
}

/// A stand-in TAP device: one end of an AF_UNIX SOCK_SEQPACKET pair, which keeps packet
/// boundaries like a TAP does. The test plays the host on the other end (`peer`).
final class NetSocketEndpoint: PacketEndpoint {
    let fileDescriptor: CInt
    let peer: CInt
    let supportedOffloads: TapOffloads
    private let offloadCalls = Mutex<[TapOffloads]>([])

    init(offloads: TapOffloads = .all) throws {
        var fds: [CInt] = [-1, -1]
        let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else {
            throw NetTestError("socketpair: \(String(cString: strerror(errno)))")
        }
        // Room for a few 64 KiB packets in flight.
        var size: CInt = 1 << 20
        for fd in fds { setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size)) }
        fileDescriptor = fds[0]
        peer = fds[1]
        supportedOffloads = offloads
    }

    deinit {
        close(fileDescriptor)
        close(peer)
    }

    func setOffloads(_ offloads: TapOffloads) throws(TapError) { offloadCalls.withLock { $0.append(offloads) } }

    /// Every `setOffloads` argument so far.
    var offloadHistory: [TapOffloads] { offloadCalls.withLock { $0 } }

    /// The host sends the guest `packet` (virtio header + frame).
    func inject(_ packet: [UInt8]) throws {
        let n = packet.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, 0) }
        guard n == packet.count else { throw NetTestError("send: \(n) of \(packet.count) bytes") }
    }

    /// The next packet the guest sent, if any.
    func sent() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 0x20000)
        let n = buffer.withUnsafeMutableBytes { recv(peer, $0.baseAddress, $0.count, 0) }
        return n >= 0 ? Array(buffer[0 ..< n]) : nil
    }

    /// All packets the guest sent so far.
    func allSent() -> [[UInt8]] {
        var packets: [[UInt8]] = []
        while let packet = sent() { packets.append(packet) }
        return packets
    }
}

struct NetTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A 12-byte `virtio_net_hdr_v1`.
func netHeader(flags: UInt8 = 0, gso: UInt8 = 0, hdrLen: UInt16 = 0, gsoSize: UInt16 = 0,
               csumStart: UInt16 = 0, csumOffset: UInt16 = 0, numBuffers: UInt16 = 0) -> [UInt8] {
    [flags, gso] + netLE(hdrLen) + netLE(gsoSize) + netLE(csumStart) + netLE(csumOffset) + netLE(numBuffers)
}

func netLE(_ value: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8)] }

/// An Ethernet frame of `length` bytes: broadcast destination, a fixed source, an IPv4
/// EtherType and a recognisable payload.
func netFrame(_ length: Int, seed: UInt8 = 1) -> [UInt8] {
    let head: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00]
    let body = (0 ..< max(length - head.count, 0)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
    return Array((head + body).prefix(length))
}

/// A net device on a socket pair behind a real virtio-mmio transport, driven by the mock
/// driver the way Linux's virtio_net would.
struct NetRig {
    let memory: GuestMemory
    let endpoint: NetSocketEndpoint
    let device: NetDevice
    let line = NetInterruptCounter()
    let interest = NetInterestLog()
    let transport: MMIOTransport
    let driver: MockDriver
    let rx: MockDriverQueue
    let tx: MockDriverQueue
    let features: UInt64
    static let mac = try! MACAddress("52:54:00:12:34:56")

    /// `features: nil` accepts everything offered; `exclude` drops bits from that.
    init(features: UInt64? = nil, exclude: UInt64 = 0, offloads: TapOffloads = .all,
         endpoint: NetSocketEndpoint? = nil, receiveLimit: RateLimit = .unlimited,
         transmitLimit: RateLimit = .unlimited, clock: ManualClock? = nil) throws {
        memory = try GuestMemory(size: 0x40_0000)
        self.endpoint = try endpoint ?? NetSocketEndpoint(offloads: offloads)
        device = NetDevice(endpoint: self.endpoint, mac: NetRig.mac, receiveLimit: receiveLimit,
                           transmitLimit: transmitLimit, clock: clock?.function ?? RateLimiter.monotonicNow)
        let interest = self.interest
        device.setTapReadableHandler { interest.record($0) }
        transport = MMIOTransport(device: device, memory: memory, interrupt: line)
        driver = MockDriver(transport: transport)
        rx = try MockDriverQueue(memory: memory, size: 64, base: 0x1_0000, dataAreaSize: 0x18_0000)
        tx = try MockDriverQueue(memory: memory, size: 64, base: 0x20_0000, dataAreaSize: 0x18_0000)
        let wanted = (features ?? driver.deviceFeatures()) & ~exclude
        self.features = try driver.initialize(features: wanted, queues: [rx, tx])
    }

    /// Publishes `packet` on the transmit queue and kicks it; returns the used elements.
    @discardableResult
    func transmit(_ pieces: [[UInt8]], writable: [UInt32] = [], indirect: Bool = false) throws -> [UsedElement] {
        try tx.addChain(readable: pieces, writable: writable, indirect: indirect)
        driver.kick(1)
        return try tx.drainUsed()
    }

    /// Posts a receive chain of writable buffers of `lengths` (not kicked).
    @discardableResult
    func post(_ lengths: [UInt32], indirect: Bool = false) throws -> MockChain {
        try rx.addChain(writable: lengths, indirect: indirect)
    }

    /// The bytes the device wrote into `chain` (its writable buffers, concatenated, cut to `length`).
    func contents(of chain: MockChain, length: UInt32) throws -> [UInt8] {
        var bytes: [UInt8] = []
        for buffer in chain.writable { bytes += try rx.read(buffer) }
        return Array(bytes.prefix(Int(length)))
    }
}
