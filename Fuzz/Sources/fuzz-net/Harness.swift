import Devices
import FuzzSupport
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The host end of the net device: one end of an AF_UNIX SOCK_SEQPACKET pair, which keeps
/// packet boundaries the way a TAP device does; the harness plays the host on `peer`.
final class SocketEndpoint: PacketEndpoint {
    let fileDescriptor: CInt
    let peer: CInt
    let supportedOffloads: TapOffloads

    init?(offloads: TapOffloads) {
        var fds: [CInt] = [-1, -1]
        let type = CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else { return nil }
        fileDescriptor = fds[0]
        peer = fds[1]
        supportedOffloads = offloads
    }

    deinit {
        close(fileDescriptor)
        close(peer)
    }

    func setOffloads(_ offloads: TapOffloads) throws(TapError) {}

    /// The host sends the guest `packet` (a virtio-net header and a frame, or any bytes at all).
    func inject(_ packet: [UInt8]) {
        // Safe: `packet` is alive for the call and holds `count` bytes.
        _ = packet.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }
    }

    /// Throws away what the guest sent, so the socket never fills up.
    func drain() {
        var buffer = [UInt8](repeating: 0, count: 0x11000)
        // Safe: recv writes at most `count` bytes into `buffer`.
        while buffer.withUnsafeMutableBytes({ recv(peer, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }) >= 0 {}
    }
}

/// virtio-net as a hostile guest sees it: transmit chains (any header, any frame, any split),
/// receive buffers of any shape, and packets arriving from the host in between (the `host`
/// operation: u16 n, then n bytes sent to the guest). The first input byte picks the host's
/// offloads (and so the features offered); the rest is a `HostileGuest` script.
enum NetHarness {
    static let mac = try! MACAddress("52:54:00:12:34:56")

    static func run(_ input: inout FuzzInput) {
        let offloads = TapOffloads(rawValue: UInt32(input.byte() & 0xF))
        guard let endpoint = SocketEndpoint(offloads: offloads) else { return }
        let device = NetDevice(endpoint: endpoint, mac: mac)
        guard let guest = try? HostileGuest(device: device, input: &input) else { return }
        guest.play(&input) { input in
            endpoint.inject(input.take(Int(input.le(UInt16.self))))
            device.tapReadable()
            endpoint.drain()
        }
        endpoint.drain()
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    /// A 12-byte `virtio_net_hdr_v1`.
    static func header(flags: UInt8 = 0, gso: UInt8 = 0, hdrLen: UInt16 = 0, gsoSize: UInt16 = 0,
                       csumStart: UInt16 = 0, csumOffset: UInt16 = 0) -> [UInt8] {
        [flags, gso] + le(hdrLen) + le(gsoSize) + le(csumStart) + le(csumOffset) + le(UInt16(0))
    }

    /// A broadcast IPv4 frame of `length` bytes.
    static func frame(_ length: Int) -> [UInt8] {
        let head: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00]
        return head + (0 ..< max(length - head.count, 0)).map { UInt8(truncatingIfNeeded: $0) }
    }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        let all = UInt8(TapOffloads.all.rawValue)
        let packet = header() + frame(60)
        let receive = [HostileGuest.Operation.host.rawValue] + le(UInt16(packet.count)) + packet
        return [
            ("transmit", [all] + HostileGuest.seed(queues: 2) { try $0[1].addChain(readable: [header() + frame(60)]) }),
            ("transmit-split-indirect", [all] + HostileGuest.seed(queues: 2) {
                try $0[1].addChain(readable: [header(), frame(20), Array(frame(60)[20...])], indirect: true)
            }),
            ("transmit-checksum-tso", [all] + HostileGuest.seed(queues: 2) {
                try $0[1].addChain(readable: [header(flags: 1, gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16)
                    + frame(200)])
            }),
            ("receive", [all] + HostileGuest.seed(queues: 2, operations: receive) {
                try $0[0].addChain(writable: [128])
                try $0[0].addChain(writable: [12, 40, 40])
            }),
            ("receive-no-offloads", [0] + HostileGuest.seed(queues: 2, featureMask: 1 << 5, operations: receive + receive) {
                try $0[0].addChain(writable: [40], indirect: true)
                try $0[0].addChain(writable: [64])
            }),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(NetHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    NetHarness.run(&input)
    return 0
}

@_cdecl("fuzz_net_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
