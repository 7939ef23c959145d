import Devices
import FuzzSupport
import Virtio

/// virtio-rng as a hostile guest sees it: any chain on its one queue (readable parts, huge or
/// empty buffers, loops, indirect tables). The input is a `HostileGuest` script.
enum RngHarness {
    static func run(_ input: inout FuzzInput) {
        guard let guest = try? HostileGuest(device: RngDevice(), input: &input) else { return }
        guest.play(&input)
    }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        [
            ("one-buffer", HostileGuest.seed(queues: 1) { try $0[0].addChain(writable: [64]) }),
            ("split-indirect", HostileGuest.seed(queues: 1) { try $0[0].addChain(writable: [3, 60, 1], indirect: true) }),
            ("readable-refused", HostileGuest.seed(queues: 1) { try $0[0].addChain(readable: [[1, 2, 3]], writable: [8]) }),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(RngHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    RngHarness.run(&input)
    return 0
}

@_cdecl("fuzz_rng_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
