import Devices
import Foundation
import GuestMemory
import Virtio
#if canImport(Glibc)
import Glibc
import VirtioTesting
#endif

/// ICMP echo requests built once: what both loops send.
struct EchoFrames {
    /// The 12-byte `virtio_net_hdr_v1`, all zero: no offload asked for.
    static let header = [UInt8](repeating: 0, count: VirtioNetHeader.size)
    static let guestAddress: [UInt8] = [10, 77, 0, 2]
    static let hostAddress: [UInt8] = [10, 77, 0, 1]
    static let guestMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]

    /// `count` echo requests of `length` bytes of Ethernet frame each, sequence numbers 0…
    static func make(count: Int, length: Int, hostMAC: [UInt8]) -> [[UInt8]] {
        (0 ..< count).map { sequence in
            var frame = hostMAC + guestMAC + [0x08, 0x00]
            let ipLength = length - 14
            var ip: [UInt8] = [0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xFF), 0, 0, 0x40, 0, 64, 1, 0, 0]
            ip += guestAddress + hostAddress
            let ipSum = checksum(ip)
            ip[10] = UInt8(ipSum >> 8)
            ip[11] = UInt8(ipSum & 0xFF)
            var icmp: [UInt8] = [8, 0, 0, 0, 0x4C, 0x47, UInt8(sequence >> 8), UInt8(sequence & 0xFF)]
            icmp += (0 ..< ipLength - 28).map { UInt8(truncatingIfNeeded: $0) }
            let icmpSum = checksum(icmp)
            icmp[2] = UInt8(icmpSum >> 8)
            icmp[3] = UInt8(icmpSum & 0xFF)
            frame += ip + icmp
            return frame
        }
    }

    /// The Internet checksum (RFC 1071), big-endian.
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// Whether `packet` (vnet header + frame, as read from the TAP) is an echo reply to us.
    static func isReply(_ packet: UnsafeRawBufferPointer) -> Bool {
        let ether = VirtioNetHeader.size
        guard packet.count >= ether + 34 else { return false }
        return packet[ether + 12] == 0x08 && packet[ether + 13] == 0x00 && packet[ether + 23] == 1
            && packet[ether + 34] == 0
    }
}

/// The benchmark's own network namespace with one TAP device in it, configured as the host
/// end of a /30: its namespace goes away with the process, TAP and all, however it exits.
final class BenchNetwork {
    let tap: Tap
    let hostMAC: [UInt8]

    init() throws {
        // Safe to call here: the namespace is the calling thread's, and every later step of the
        // benchmark (TAP, ioctls, `ip`) runs on this same, main thread.
        guard BenchNetwork.unshareNetwork() == 0 else {
            throw BenchError("unshare(CLONE_NEWNET): \(String(cString: strerror(errno))) (needs root)")
        }
        // No IPv6: no router solicitations or DAD probes mixed into the replies we count.
        for path in ["/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/all/disable_ipv6"] {
            try? "1\n".write(toFile: path, atomically: false, encoding: .utf8)
        }
        tap = try Tap(creating: "lgbench0")
        try tap.setHostAddress(IPv4Address(10, 77, 0, 1), prefixLength: 30)
        try tap.bringUp()
        hostMAC = try BenchNetwork.hardwareAddress(of: tap.name)
        let mac = EchoFrames.guestMAC.map { String(format: "%02x", $0) }.joined(separator: ":")
        // A permanent neighbour entry, so the host answers without asking who 10.77.0.2 is.
        _ = try run(["ip", "neigh", "replace", "10.77.0.2", "lladdr", mac, "dev", tap.name, "nud", "permanent"])
    }

    /// `unshare(CLONE_NEWNET)`. Glibc's module leaves `unshare` out (it is a _GNU_SOURCE
    /// declaration), so it is looked up by name.
    static func unshareNetwork() -> Int32 {
        let cloneNewNet: Int32 = 0x4000_0000
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "unshare") else { return -1 }
        typealias Unshare = @convention(c) (Int32) -> Int32
        return unsafeBitCast(symbol, to: Unshare.self)(cloneNewNet)
    }

    static func hardwareAddress(of name: String) throws -> [UInt8] {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard socket >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        defer { close(socket) }
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: Array(name.utf8)) }
        guard ioctl(socket, UInt(SIOCGIFHWADDR), &request) == 0 else {
            throw BenchError("SIOCGIFHWADDR: \(String(cString: strerror(errno)))")
        }
        var address = request.ifr_ifru.ifru_hwaddr
        return withUnsafeBytes(of: &address.sa_data) { Array($0.prefix(6)) }
    }
}

/// Round trips per second of one net workload.
struct NetRate {
    var roundTrips: Double
    var lost: Int
    var frameLength: Int
    /// Frame bits per second in both directions together.
    var megabits: Double { roundTrips * Double(frameLength) * 2 * 8 / 1e6 }
}

/// A loop that sends `batch` echo requests, then collects `batch` replies, until time is up.
/// `send` sends the batch; `receive` moves what is there and returns how many replies it saw
/// (0 if nothing was ready).
func echoLoop(seconds: Double, warmUp: Double, batch: Int, frameLength: Int, fd: CInt,
              send: () throws -> Void, receive: () throws -> Int) throws -> NetRate {
    var start = now()
    var measuring = false
    var trips = 0
    var lost = 0
    while true {
        try send()
        var got = 0
        while got < batch {
            let n = try receive()
            got += n
            if n == 0, got < batch {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&poller, 1, 200) == 0 {
                    lost += batch - got
                    break
                }
            }
        }
        trips += min(got, batch)
        let t = now()
        if !measuring {
            if t - start >= warmUp {
                measuring = true
                start = t
                trips = 0
                lost = 0
            }
        } else if t - start >= seconds {
            return NetRate(roundTrips: Double(trips) / (t - start), lost: lost, frameLength: frameLength)
        }
    }
}

/// The net device on the benchmark's TAP, behind a real virtio-mmio transport, with receive
/// buffers posted once and `batch` transmit chains laid out once in guest memory.
final class NetDriverLoop {
    let memory: GuestMemory
    let device: NetDevice
    let transport: MMIOTransport
    let driver: MockDriver
    let rx: MockDriverQueue
    let tx: MockDriverQueue
    let line = CountingLine()
    var txHeads: [UInt16] = []
    /// Receive buffer of each receive head (indexed by head).
    var rxBuffers: [GuestAddress] = []
    var rxPublished: UInt16 = 0
    static let rxBufferSize = 2048

    init(tap: Tap, frames: [[UInt8]]) throws {
        memory = try GuestMemory(size: 0x100_0000)
        device = NetDevice(endpoint: tap, mac: try MACAddress("52:54:00:12:34:56"))
        device.setTapReadableHandler { _ in }
        transport = MMIOTransport(device: device, memory: memory, interrupt: line)
        driver = MockDriver(transport: transport)
        rx = try MockDriverQueue(memory: memory, size: NetDevice.defaultQueueSize, base: 0x1_0000, dataAreaSize: 0x60_0000)
        tx = try MockDriverQueue(memory: memory, size: NetDevice.defaultQueueSize, base: 0x80_0000, dataAreaSize: 0x60_0000)
        // Everything offered (MRG_RXBUF, checksum and TSO offloads, EVENT_IDX, indirect), as
        // Linux's virtio_net acks it.
        try driver.initialize(queues: [rx, tx])

        // Receive: the whole ring, one 2 KiB buffer per chain, as a mergeable-buffer driver posts.
        for index in 0 ..< rx.size {
            let buffer = try rx.allocate(UInt64(Self.rxBufferSize), alignment: 64)
            try rx.writeDescriptor(index, RawDescriptor(address: buffer, length: UInt32(Self.rxBufferSize), flags: .write))
            rxBuffers.append(buffer)
            try rx.pushAvail(head: index)
        }
        try rx.publish()
        rxPublished = rx.pendingAvailIndex
        transport.handleNotification(queue: UInt32(NetDevice.receiveQueue))

        // Transmit: header and frame in two descriptors, like an skb with its header pushed
        // in front of the linear data.
        for (i, frame) in frames.enumerated() {
            let header = try tx.allocate(UInt64(VirtioNetHeader.size))
            try memory.write(EchoFrames.header, at: header)
            let data = try tx.allocate(UInt64(frame.count), alignment: 64)
            try memory.write(frame, at: data)
            let head = UInt16(2 * i)
            try tx.writeDescriptor(head, RawDescriptor(address: header, length: UInt32(VirtioNetHeader.size),
                                                       flags: .next, next: head + 1))
            try tx.writeDescriptor(head + 1, RawDescriptor(address: data, length: UInt32(frame.count)))
            txHeads.append(head)
        }
    }

    func send() throws {
        for head in txHeads { try tx.pushAvail(head: head) }
        try tx.publish()
        transport.handleNotification(queue: UInt32(NetDevice.transmitQueue))
        var done = 0
        while try tx.popUsed() != nil { done += 1 }
        guard done == txHeads.count else { throw BenchError("net: \(done) of \(txHeads.count) frames sent") }
    }

    /// What the I/O thread does when the TAP is readable, then the driver's side: count the
    /// replies, repost the buffers, and kick only if the device asked for it (EVENT_IDX).
    func receive() throws -> Int {
        device.tapReadable()
        var replies = 0
        let before = rx.pendingAvailIndex
        while let used = try rx.popUsed() {
            let head = UInt16(used.id)
            guard Int(head) < rxBuffers.count else { throw BenchError("net: unknown receive head \(head)") }
            let buffer = rxBuffers[Int(head)]
            let isReply = try memory.withSlice(at: buffer, length: UInt64(used.length)) { slice in
                EchoFrames.isReply(UnsafeRawBufferPointer(slice))
            }
            if isReply { replies += 1 }
            try rx.pushAvail(head: head)
        }
        let after = rx.pendingAvailIndex
        if after != before {
            try rx.publish()
            // vring_need_event: kick if avail_event lies in (before, after].
            let event = try rx.availEvent()
            if after &- event &- 1 < after &- before { transport.handleNotification(queue: UInt32(NetDevice.receiveQueue)) }
        }
        return replies
    }
}

/// The same frames on the same TAP descriptor, without the device: `writev` of header and
/// frame per packet, `read` per packet.
final class RawTapLoop {
    let fd: CInt
    let frames: [[UInt8]]
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: NetDriverLoop.rxBufferSize, alignment: 64)

    init(fd: CInt, frames: [[UInt8]]) {
        self.fd = fd
        self.frames = frames
    }

    deinit { buffer.deallocate() }

    func send() throws {
        try EchoFrames.header.withUnsafeBytes { header in
            for frame in frames {
                let n = frame.withUnsafeBytes { body -> Int in
                    var vectors = [iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count),
                                   iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count)]
                    return writev(fd, &vectors, 2)
                }
                guard n == header.count + frame.count else { throw BenchError("raw writev: \(n), errno \(errno)") }
            }
        }
    }

    func receive() throws -> Int {
        var replies = 0
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { return replies }
                throw BenchError("raw read: \(String(cString: strerror(errno)))")
            }
            if EchoFrames.isReply(UnsafeRawBufferPointer(rebasing: buffer[0 ..< n])) { replies += 1 }
        }
    }
}

enum NetBench {
    struct Options {
        var seconds = 5.0
        var warmUp = 1.0
        var batch = 32
        var only: String?
        /// Skip the raw TAP (for profiling the device alone).
        var deviceOnly = false
    }

    static func main(_ options: Options) throws {
        let network = try BenchNetwork()
        print("net: TAP \(network.tap.name) (\(network.hostMAC.map { String(format: "%02x", $0) }.joined(separator: ":"))) "
            + "at 10.77.0.1/30 in a private network namespace; ICMP echo to it")
        var table = Table(header: ["workload", "lguest pps", "lguest Mbit/s", "raw pps", "raw Mbit/s", "ratio", "lost"])
        let shapes = [(64, 1), (64, options.batch), (1514, 1), (1514, options.batch)]
        for (length, batch) in shapes {
            let name = "\(length) B frames, batch \(batch)"
            if let only = options.only, !name.contains(only) { continue }
            let frames = EchoFrames.make(count: batch, length: length, hostMAC: network.hostMAC)
            // A fresh device per workload, on the same TAP; activating it sets the TAP's
            // offloads, which the raw loop then uses as they are.
            let loop = try NetDriverLoop(tap: network.tap, frames: frames)
            let ours = try echoLoop(seconds: options.seconds, warmUp: options.warmUp, batch: batch, frameLength: length,
                                    fd: network.tap.fileDescriptor, send: loop.send, receive: loop.receive)
            drain(network.tap.fileDescriptor)
            if options.deviceOnly {
                print("  \(name): lguest \(format(ours.roundTrips)) pps")
                continue
            }
            let raw = RawTapLoop(fd: network.tap.fileDescriptor, frames: frames)
            let peer = try echoLoop(seconds: options.seconds, warmUp: options.warmUp, batch: batch, frameLength: length,
                                    fd: network.tap.fileDescriptor, send: raw.send, receive: raw.receive)
            drain(network.tap.fileDescriptor)
            table.rows.append([name, format(ours.roundTrips), format(ours.megabits), format(peer.roundTrips),
                               format(peer.megabits), percent(ours.roundTrips / peer.roundTrips), "\(ours.lost)/\(peer.lost)"])
            print("  \(name): lguest \(format(ours.roundTrips)) pps, raw \(format(peer.roundTrips)) pps")
        }
        print("")
        print("pps = echo round trips per second (one frame out through TX, one back through RX);")
        print("Mbit/s counts frame bytes in both directions.")
        print(table.render())
    }

    /// Reads and discards whatever is queued, so one loop's leftovers do not count for the next.
    static func drain(_ fd: CInt) {
        var scratch = [UInt8](repeating: 0, count: 0x11000)
        while scratch.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
    }
}
