import Boot
import FuzzSupport
import GuestMemory

/// The kernel loaders: `loadKernel` with any image, initrd and command line, into a 32 MiB
/// guest (enough for a small kernel to load, so the placement and writing code runs too).
/// The input is:
///
/// ```
/// u8    bit 0: an initrd; bit 1: an RSDP address; bit 2: the image is an LZ4 stream instead
/// u16   n, then n bytes: the command line (any bytes, NULs included)
/// u16   n, then n bytes: the initrd
/// rest  the kernel image: a bzImage, an ELF vmlinux, or anything else
/// ```
///
/// With bit 2 the image goes to the LZ4 decoder the kernel cache expands a bzImage's payload
/// with, into as much room as its trailer asks (at most 1 MiB).
enum KernelHarness {
    /// One guest for every run: the loader checks everything before it writes, and what it
    /// leaves behind does not steer the next run.
    static let memory: GuestMemory = {
        do { return try GuestMemory(size: 32 << 20) } catch { fatalError("cannot map guest memory: \(error)") }
    }()

    static func run(_ input: inout FuzzInput) {
        let flags = input.byte()
        let commandLine = String(decoding: input.take(Int(input.le(UInt16.self))), as: UTF8.self)
        let initrd = input.take(Int(input.le(UInt16.self)))
        let image = input.rest()
        if flags & 4 != 0 {
            let room = image.withUnsafeBytes { LZ4Legacy.expandedSize($0) ?? 0 }
            var output = [UInt8](repeating: 0, count: min(room, 1 << 20))
            output.withUnsafeMutableBytes { out in
                image.withUnsafeBytes { _ = try? LZ4Legacy.decompress($0, into: out) }
            }
            return
        }
        _ = try? loadKernel(image: image, initrd: flags & 1 != 0 ? initrd : nil, commandLine: commandLine,
                            rsdp: flags & 2 != 0 ? GuestAddress(0xE_0000) : nil, into: memory)
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    /// A bzImage with protocol 2.15, four setup sectors and a `kernelSize`-byte protected-mode part.
    static func bzImage(kernelSize: Int = 0x400) -> [UInt8] {
        var image = [UInt8](repeating: 0, count: 5 * 512)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) { image.replaceSubrange(offset ..< offset + MemoryLayout<T>.size, with: le(value)) }
        put(UInt8(4), 0x1F1)                        // setup_sects
        put(UInt32((kernelSize + 15) / 16), 0x1F4)  // syssize, in 16-byte units
        put(UInt16(0xAA55), 0x1FE)                  // boot_flag
        put(UInt8(0xEB), 0x200)                     // jmp over the header…
        put(UInt8(0x6A), 0x201)                     // …which ends at 0x26C
        put(UInt32(0x5372_6448), 0x202)             // "HdrS"
        put(UInt16(0x020F), 0x206)                  // version
        put(UInt8(0x01), 0x211)                     // loadflags: LOADED_HIGH
        put(UInt32(0x7FFF_FFFF), 0x22C)             // initrd_addr_max
        put(UInt32(0x20_0000), 0x230)               // kernel_alignment
        put(UInt8(1), 0x234)                        // relocatable_kernel
        put(UInt16(0x03), 0x236)                    // xloadflags: 64-bit entry, above 4 GiB
        put(UInt32(0x7FF), 0x238)                   // cmdline_size
        put(UInt64(0x100_0000), 0x258)              // pref_address
        put(UInt32(0x40_0000), 0x260)               // init_size
        return image + (0 ..< kernelSize).map { UInt8(truncatingIfNeeded: $0) }
    }

    /// An x86-64 ELF executable with one PT_LOAD segment at 2 MiB, and a Xen PVH note if asked.
    static func elf(pvh: Bool) -> [UInt8] {
        let code: [UInt8] = [0xF4]  // hlt
        var note: [UInt8] = []
        if pvh { note = le(UInt32(4)) + le(UInt32(4)) + le(UInt32(18)) + Array("Xen\0".utf8) + le(UInt32(0x20_0000)) }
        let headers = pvh ? 2 : 1
        var image = [UInt8](repeating: 0, count: 64 + 56 * headers)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) { image.replaceSubrange(offset ..< offset + MemoryLayout<T>.size, with: le(value)) }
        image.replaceSubrange(0 ..< 7, with: [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1])  // ELF, 64-bit, LSB, v1
        put(UInt16(2), 0x10); put(UInt16(62), 0x12); put(UInt32(1), 0x14)      // EXEC, x86-64
        put(UInt64(0x20_0000), 0x18); put(UInt64(64), 0x20)                    // entry, phoff
        put(UInt16(64), 0x34); put(UInt16(56), 0x36); put(UInt16(headers), 0x38)
        var header = 64
        func programHeader(type: UInt32, offset: Int, address: UInt64, size: Int, memorySize: UInt64) {
            put(type, header); put(UInt32(5), header + 4); put(UInt64(offset), header + 8)
            put(address, header + 16); put(address, header + 24)
            put(UInt64(size), header + 32); put(memorySize, header + 40); put(UInt64(0x1000), header + 48)
            header += 56
        }
        if pvh {
            programHeader(type: 4, offset: image.count, address: 0, size: note.count, memorySize: 0)
            image += note
        }
        programHeader(type: 1, offset: image.count, address: 0x20_0000, size: code.count, memorySize: 0x1000)
        return image + code
    }

    static func seed(flags: UInt8 = 0, commandLine: String = "console=ttyS0", initrd: [UInt8] = [], image: [UInt8]) -> [UInt8] {
        let line = Array(commandLine.utf8)
        return [flags] + le(UInt16(line.count)) + line + le(UInt16(initrd.count)) + initrd + image
    }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        [
            ("bzimage", seed(image: bzImage())),
            ("bzimage-initrd-rsdp", seed(flags: 3, initrd: [1, 2, 3, 4], image: bzImage())),
            ("elf", seed(image: elf(pvh: false))),
            ("elf-pvh-initrd", seed(flags: 3, initrd: [5, 6, 7], image: elf(pvh: true))),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(KernelHarness.seeds)
    _ = KernelHarness.memory
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    KernelHarness.run(&input)
    return 0
}

@_cdecl("fuzz_kernel_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
