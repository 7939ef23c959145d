import Devices
import FuzzSupport
import GuestMemory
import HostSystem
import Virtio
import VirtioTesting
#if canImport(Glibc)
import Glibc
#endif

/// virtio-vsock as a hostile guest sees it, with host programs on the other side. Each input
/// gets a fresh device on a scratch Unix socket, and a host program listening on port 1 (so a
/// guest REQUEST to port 1 connects); the rest is a `HostileGuest` script whose `host`
/// operation is one of:
///
/// ```
/// u8 % 4 == 0   u8 n, n bytes: a host program connects to the device's socket and sends them
///                 (a CONNECT line, or not)
///           1   the I/O thread runs: every ready descriptor's handler, once
///           2   the port-1 program accepts a connection and sends u8 n bytes on it
///           3   the newest host program closes its socket
/// ```
enum VsockHarness {
    static let directory: String = {
        let path = "/tmp/lguest-fuzz-vsock-\(getpid())"
        mkdir(path, 0o700)
        return path
    }()

    static func run(_ input: inout FuzzInput) {
        let configuration = VsockConfiguration(guestCID: 3, udsPath: directory + "/v.sock")
        guard let device = try? VsockDevice(configuration: configuration),
              let program = try? UnixListener(path: directory + "/v.sock_1") else { return }
        let watcher = PollWatcher()
        device.start(watcher: watcher)
        var hosts: [OwnedDescriptor] = []
        guard let guest = try? HostileGuest(device: device, input: &input) else { return }
        guest.play(&input) { input in
            switch input.byte() % 4 {
            case 0:
                let bytes = input.take(Int(input.byte()))
                if case let .success(socket) = UnixSocket.connect(to: configuration.udsPath) {
                    _ = bytes.withUnsafeBytes { UnixSocket.send(socket.raw, $0) }
                    hosts.append(socket)
                }
            case 1:
                watcher.pump()
            case 2:
                let bytes = input.take(Int(input.byte()))
                if let socket = program.accept() {
                    _ = bytes.withUnsafeBytes { UnixSocket.send(socket.raw, $0) }
                    hosts.append(socket)
                }
            default:
                if !hosts.isEmpty { hosts.removeLast() }
            }
        }
        watcher.pump()
        guest.transport.writeRegister(.status, 0)
        watcher.pump()
        program.removeSocketFile()
        device.listener.removeSocketFile()
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    /// A packet from the guest (CID 3) to the host.
    static func packet(op: UInt16, from guestPort: UInt32, to hostPort: UInt32, payload: [UInt8] = [],
                       type: UInt16 = VsockType.stream) -> [UInt8] {
        VsockHeader(sourceCID: 3, destinationCID: VsockCID.host, sourcePort: guestPort, destinationPort: hostPort,
                    length: UInt32(payload.count), type: type, op: op, bufferAllocation: 65536).bytes + payload
    }

    /// Host operations: `host` opcode (4), then the choice and its operands.
    static func connectLine(_ line: String) -> [UInt8] { [4, 0, UInt8(line.utf8.count)] + Array(line.utf8) }
    static let pump: [UInt8] = [4, 1]

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        [
            ("guest-connects", HostileGuest.seed(queues: 3, operations: pump + [4, 2, 3, 1, 2, 3] + pump) {
                try $0[0].addChain(writable: [64, 64])
                try $0[0].addChain(writable: [128])
                try $0[1].addChain(readable: [packet(op: VsockOp.request, from: 9, to: 1)])
                try $0[1].addChain(readable: [Array(packet(op: VsockOp.readWrite, from: 9, to: 1, payload: [1, 2, 3]).prefix(20)),
                                              Array(packet(op: VsockOp.readWrite, from: 9, to: 1, payload: [1, 2, 3]).dropFirst(20))])
            }),
            ("host-connects", HostileGuest.seed(queues: 3, operations: connectLine("CONNECT 52\n") + pump + pump) {
                try $0[0].addChain(writable: [200])
                try $0[1].addChain(readable: [packet(op: VsockOp.response, from: 52, to: 1 << 30)])
            }),
            ("bad-packets", HostileGuest.seed(queues: 3) {
                try $0[0].addChain(writable: [8])
                try $0[1].addChain(readable: [packet(op: 99, from: 1, to: 2)])
                try $0[1].addChain(readable: [packet(op: VsockOp.request, from: 1, to: 2, type: VsockType.seqpacket)])
                try $0[1].addChain(readable: [[1, 2, 3]])
            }),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(VsockHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    VsockHarness.run(&input)
    return 0
}

@_cdecl("fuzz_vsock_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
