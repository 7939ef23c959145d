import Devices
import FuzzSupport
import Virtio

/// Where the guest's console output goes: nowhere.
final class DiscardingSink: ByteSink {
    func write(_ bytes: UnsafeRawBufferPointer) {}
}

/// virtio-console as a hostile guest sees it: output chains on the transmit queue, receive
/// buffers on the receive queue, and keys arriving from the host in between (the `host`
/// operation: u8 n, then n bytes typed). The input is a `HostileGuest` script.
enum ConsoleHarness {
    static func run(_ input: inout FuzzInput) {
        let device = ConsoleDevice(output: DiscardingSink())
        guard let guest = try? HostileGuest(device: device, input: &input) else { return }
        guest.play(&input) { input in
            device.enqueueInput(input.take(Int(input.byte())))
        }
    }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        let typed: [UInt8] = [HostileGuest.Operation.host.rawValue, 3] + Array("ls\n".utf8)
        return [
            ("output", HostileGuest.seed(queues: 2) { try $0[1].addChain(readable: [Array("hello\n".utf8)]) }),
            ("output-indirect", HostileGuest.seed(queues: 2) {
                try $0[1].addChain(readable: [Array("hel".utf8), Array("lo\n".utf8)], indirect: true)
            }),
            ("input", HostileGuest.seed(queues: 2, operations: typed) { try $0[0].addChain(writable: [2]); try $0[0].addChain(writable: [16]) }),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(ConsoleHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    ConsoleHarness.run(&input)
    return 0
}

@_cdecl("fuzz_console_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
