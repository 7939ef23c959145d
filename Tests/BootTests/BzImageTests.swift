import Testing
import GuestMemory
@testable import Boot

@Suite struct BzImageTests {
    let memory: GuestMemory
    init() throws { memory = try GuestMemory(size: 64 * mib) }

    @Test func parsesTheSetupHeader() throws {
        let header = try SetupHeader(image: SyntheticBzImage().bytes)
        #expect(header.version == 0x020F)
        #expect(header.setupSectors == 4)
        #expect(header.protectedModeOffset == 5 * 512)
        #expect(header.headerEnd == 0x26C)
        #expect(header.initSize == 0x40_0000)
        #expect(header.kernelAlignment == 0x20_0000)
        #expect(header.commandLineSize == 0x7FF)
        #expect(header.initrdAddressMax == GuestAddress(0x7FFF_FFFF))
        #expect(header.runtimeStart == GuestAddress(0x100_0000))
    }

    @Test func setupSectorsZeroMeansFour() throws {
        let header = try SetupHeader(image: SyntheticBzImage(setupSectors: 0).bytes)
        #expect(header.setupSectors == 4)
        #expect(header.protectedModeOffset == 0xA00)
    }

    @Test func runtimeAddressFollowsAlignmentAndPreferredAddress() throws {
        // A 32 MiB alignment lifts the runtime address above the 16 MiB default.
        let aligned = try SetupHeader(image: SyntheticBzImage(kernelAlignment: 0x200_0000).bytes)
        #expect(aligned.runtimeStart == GuestAddress(0x200_0000))
        // A fixed kernel runs at pref_address, whatever the alignment.
        let fixed = try SetupHeader(image: SyntheticBzImage(relocatable: 0, preferredAddress: 0x300_0000).bytes)
        #expect(fixed.runtimeStart == GuestAddress(0x300_0000))
        // No pref_address: 16 MiB.
        let plain = try SetupHeader(image: SyntheticBzImage(preferredAddress: 0).bytes)
        #expect(plain.runtimeStart == GuestAddress(0x100_0000))
    }

    @Test func loadsKernelZeroPageCommandLineAndInitrd() throws {
        let image = SyntheticBzImage()
        let bytes = image.bytes
        let initrd = (0..<(5000 as Int)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let entry = try loadKernel(image: bytes, initrd: initrd, commandLine: "console=ttyS0 panic=1",
                                   rsdp: GuestAddress(0xE0000), into: memory)

        // The protected-mode kernel at 1 MiB, byte for byte.
        #expect(try memory.readBytes(at: 0x10_0000, count: image.kernelSize) == image.kernel)

        // The setup header copied to the zero page at the same offsets, and nothing past its end.
        let zp: UInt64 = 0x7000
        let header = try memory.readBytes(at: GuestAddress(zp + 0x1F1), count: 0x26C - 0x1F1)
        var expected = Array(bytes[0x1F1..<0x26C])
        expected[0x1FA - 0x1F1] = 0xFF; expected[0x1FB - 0x1F1] = 0xFF  // vid_mode
        expected[0x210 - 0x1F1] = 0xFF                                   // type_of_loader
        for i in 0..<8 { expected[0x218 - 0x1F1 + i] = header[0x218 - 0x1F1 + i] }   // ramdisk_image/size
        for i in 0..<4 { expected[0x228 - 0x1F1 + i] = header[0x228 - 0x1F1 + i] }   // cmd_line_ptr
        #expect(header == expected)
        #expect(try memory.u32(zp + 0x280) == 0)
        #expect(try memory.u16(zp + 0x1FE) == 0xAA55)
        #expect(try memory.u32(zp + 0x202) == 0x5372_6448)
        #expect(try memory.u32(zp + 0x260) == 0x40_0000)     // init_size, for the decompressor
        #expect(try memory.u32(zp + 0x230) == 0x20_0000)     // kernel_alignment
        #expect(try memory.u8(zp + 0x210) == 0xFF)
        #expect(try memory.u16(zp + 0x1FA) == 0xFFFF)
        #expect(try memory.u32(zp + 0x214) == 0x10_0000)     // code32_start
        #expect(try memory.u32(zp + 0x228) == 0x2_0000)      // cmd_line_ptr
        #expect(try memory.u32(zp + 0x0C8) == 0)             // ext_cmd_line_ptr
        #expect(try memory.u64(zp + 0x070) == 0xE0000)       // acpi_rsdp_addr
        #expect(try memory.u8(zp + 0x1EF) == 0)              // sentinel stays clear

        // The command line, NUL-terminated.
        let line = Array("console=ttyS0 panic=1".utf8)
        #expect(try memory.readBytes(at: 0x2_0000, count: line.count + 1) == line + [0])

        // The initrd: page-aligned, as high as possible below the end of RAM.
        let initrdAddress = try memory.u32(zp + 0x218)
        #expect(try memory.u32(zp + 0x21C) == 5000)
        #expect(try memory.u32(zp + 0x0C0) == 0 && memory.u32(zp + 0x0C4) == 0)
        #expect(initrdAddress % 4096 == 0)
        #expect(UInt64(initrdAddress) == (64 * mib - 5000) & ~0xFFF)
        #expect(UInt64(initrdAddress) >= 0x100_0000 + 0x40_0000)
        #expect(try memory.readBytes(at: GuestAddress(UInt64(initrdAddress)), count: initrd.count) == initrd)

        // The e820 map.
        #expect(try memory.u8(zp + 0x1E8) == 3)
        let e820: [(UInt64, UInt64, UInt32)] = [(0, 0x9FC00, 1), (0x9FC00, 0x6_0400, 2), (0x10_0000, 63 * mib, 1)]
        for (index, (address, size, type)) in e820.enumerated() {
            let at = zp + 0x2D0 + UInt64(index) * 20
            #expect(try memory.u64(at) == address)
            #expect(try memory.u64(at + 8) == size)
            #expect(try memory.u32(at + 16) == type)
        }

        // The entry: 64-bit, at load address + 0x200, zero page in %rsi.
        #expect(entry.mode == .long64)
        #expect(entry.instructionPointer == GuestAddress(0x10_0200))
        #expect(entry.bootInfoRegister == .rsi)
        #expect(entry.bootInfoAddress == GuestAddress(0x7000))
        #expect(entry.stackPointer == GuestAddress(0x8FF0))
        #expect(entry.pageTableRoot == GuestAddress(0x9000))
        #expect(entry.codeSelector == 0x10 && entry.dataSelector == 0x18)
        #expect(entry.flags == 0x2)
        #expect(entry.cr0 == 0x8000_0001 && entry.cr4 == 0x20 && entry.efer == 0x500)
        #expect(entry.taskSegment == nil)
    }

    @Test func withoutInitrdTheRamdiskFieldsStayZero() throws {
        _ = try loadKernel(image: SyntheticBzImage().bytes, initrd: nil, commandLine: "", rsdp: nil, into: memory)
        #expect(try memory.u32(0x7218) == 0)
        #expect(try memory.u32(0x721C) == 0)
        #expect(try memory.u64(0x7070) == 0)
        #expect(try memory.u8(0x2_0000) == 0)
    }

    @Test func initrdStaysBelowInitrdAddressMax() throws {
        // The kernel says its initrd must end at or below 48 MiB - 1.
        let image = SyntheticBzImage(initrdAddressMax: UInt32(48 * mib - 1)).bytes
        _ = try loadKernel(image: image, initrd: [UInt8](repeating: 7, count: 0x2800), commandLine: "",
                           rsdp: nil, into: memory)
        #expect(try memory.u32(0x7218) == UInt32(48 * mib - 0x3000))
    }

    @Test func initrdFillingAllTheRoomAboveTheKernelFits() throws {
        // 16 MiB runtime + 4 MiB init_size = 20 MiB; 64 MiB of RAM leaves exactly 44 MiB.
        let initrd = [UInt8](repeating: 1, count: Int(44 * mib))
        _ = try loadKernel(image: SyntheticBzImage().bytes, initrd: initrd, commandLine: "", rsdp: nil, into: memory)
        #expect(try memory.u32(0x7218) == UInt32(20 * mib))
    }
}

@Suite struct CPUStateTests {
    @Test func gdtIdtAndPageTablesForLongMode() throws {
        let memory = try GuestMemory(size: 64 * mib)
        let entry = try loadKernel(image: SyntheticBzImage().bytes, initrd: nil, commandLine: "", rsdp: nil, into: memory)
        #expect(try memory.u64(0x500) == 0)
        #expect(try memory.u64(0x508) == 0)
        #expect(try memory.u64(0x510) == 0x00AF_9B00_0000_FFFF)
        #expect(try memory.u64(0x518) == 0x00CF_9300_0000_FFFF)
        #expect(try memory.u64(0x520) == 0)
        #expect(entry.gdt == .init(base: GuestAddress(0x500), limit: 31))
        #expect(entry.idt == .init(base: GuestAddress(0x520), limit: 7))

        // Identity map of 0-4 GiB with 2 MiB pages.
        #expect(try memory.u64(0x9000) == 0xA003)
        #expect(try memory.u64(0x9008) == 0)
        for directory in 0..<UInt64(4) {
            #expect(try memory.u64(0xA000 + directory * 8) == (0xB000 + directory * 0x1000) | 3)
        }
        #expect(try memory.u64(0xA020) == 0)
        #expect(try memory.u64(0xB000) == 0x83)
        #expect(try memory.u64(0xB008) == 0x20_0083)
        #expect(try memory.u64(0xBFF8) == (511 << 21) | 0x83)
        #expect(try memory.u64(0xEFF8) == (2047 << 21) | 0x83)  // the last 2 MiB below 4 GiB

        let code = entry.codeSegment
        #expect(code.selector == 0x10 && code.base == 0 && code.limit == 0xFFFF_FFFF)
        #expect(code.type == 0xB && code.present && code.s && code.l && !code.db && code.g && code.dpl == 0)
        let data = entry.dataSegment
        #expect(data.selector == 0x18 && data.limit == 0xFFFF_FFFF)
        #expect(data.type == 0x3 && data.present && data.s && !data.l && data.db && data.g)
    }

    @Test func segmentDecodesATaskStateDescriptor() {
        let tss = Segment(selector: 0x08, descriptor: 0x0000_8B00_0000_0067)
        #expect(tss.type == 0xB && !tss.s && tss.present && tss.limit == 0x67 && !tss.g && tss.base == 0)
        let odd = Segment(selector: 0, descriptor: 0x12CF_9B34_5678_FFFF)
        #expect(odd.base == 0x1234_5678)
    }
}
