import Devices
import FuzzSupport
import Virtio
#if canImport(Glibc)
import Glibc
import VirtioTesting
#endif

/// virtio-blk as a hostile guest sees it: every request type, any header, any split of the
/// buffers, any sector, on a small scratch image. The first input byte picks a read-only or a
/// writable disk; the rest is a `HostileGuest` script.
enum BlockHarness {
    static let sectors = 64

    /// A scratch image shared by all runs (its contents do not steer the device). Unlinked at
    /// once and reopened through /proc, so nothing is left behind however the process ends.
    static let imagePath: String = {
        var template = Array("/tmp/lguest-fuzz-block-XXXXXX".utf8CString)
        // Safe: mkstemp rewrites the XXXXXX of the NUL-terminated template in place.
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0, ftruncate(fd, off_t(sectors * BlockDevice.sectorSize)) == 0 else {
            fatalError("cannot create the scratch image: errno \(errno)")
        }
        // Safe: the template is still NUL-terminated.
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return "/proc/self/fd/\(fd)"
    }()

    static func run(_ input: inout FuzzInput) {
        let readOnly = input.bool()
        guard let device = try? BlockDevice(BlockConfiguration(path: imagePath, readOnly: readOnly, serial: "fuzz")),
              let guest = try? HostileGuest(device: device, input: &input)
        else { return }
        guest.play(&input)
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    static func header(_ type: UInt32, sector: UInt64 = 0) -> [UInt8] { le(type) + le(UInt32(0)) + le(sector) }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        func seed(_ build: @escaping (MockDriverQueue) throws -> Void) -> [UInt8] {
            [0] + HostileGuest.seed(queues: 1) { try build($0[0]) }
        }
        let data = (0 ..< 512).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        return [
            ("read", seed { try $0.addChain(readable: [header(BlockRequestType.read, sector: 3)], writable: [512, 1]) }),
            ("write", seed { try $0.addChain(readable: [header(BlockRequestType.write, sector: 5), data], writable: [1]) }),
            ("write-split-indirect", seed {
                try $0.addChain(readable: [header(BlockRequestType.write, sector: 1), Array(data[..<100]), Array(data[100...])],
                                writable: [1], indirect: true)
            }),
            ("flush-getid", seed {
                try $0.addChain(readable: [header(BlockRequestType.flush)], writable: [1])
                try $0.addChain(readable: [header(BlockRequestType.getID)], writable: [20, 1])
            }),
            ("discard-writezeroes", seed {
                try $0.addChain(readable: [header(BlockRequestType.discard) + le(UInt64(8)) + le(UInt32(8)) + le(UInt32(0))],
                                writable: [1])
                try $0.addChain(readable: [header(BlockRequestType.writeZeroes) + le(UInt64(16)) + le(UInt32(4)) + le(UInt32(1))],
                                writable: [1])
            }),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(BlockHarness.seeds)
    _ = BlockHarness.imagePath
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    BlockHarness.run(&input)
    return 0
}

@_cdecl("fuzz_block_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
