import Testing
import GuestMemory
@testable import Boot

@Suite struct ELFTests {
    let memory: GuestMemory
    init() throws { memory = try GuestMemory(size: 64 * mib) }

    @Test func loadsA64BitELFWithAZeroPageBuiltFromScratch() throws {
        var elf = SyntheticELF()
        elf.segments.append(.init(address: 0x40_0000, data: [1, 2, 3, 4], memorySize: 0x1000))
        // Stale bytes where the bss goes must be cleared.
        try memory.write([UInt8](repeating: 0xCC, count: 0x100), at: 0x20_1000)

        let initrd = [UInt8](repeating: 0x5A, count: 12345)
        let entry = try loadKernel(image: elf.bytes, initrd: initrd, commandLine: "root=/dev/vda",
                                   rsdp: GuestAddress(0xE0000), into: memory)

        #expect(try memory.readBytes(at: 0x20_0000, count: SyntheticELF.code.count) == SyntheticELF.code)
        #expect(try memory.readBytes(at: 0x20_1000, count: 0x100) == [UInt8](repeating: 0, count: 0x100))
        #expect(try memory.readBytes(at: 0x40_0000, count: 5) == [1, 2, 3, 4, 0])

        #expect(entry.mode == .long64)
        #expect(entry.instructionPointer == GuestAddress(0x20_0000))
        #expect(entry.bootInfoRegister == .rsi && entry.bootInfoAddress == GuestAddress(0x7000))
        #expect(entry.pageTableRoot == GuestAddress(0x9000))
        #expect(try memory.u64(0x510) == 0x00AF_9B00_0000_FFFF)

        let zp: UInt64 = 0x7000
        #expect(try memory.u16(zp + 0x1FE) == 0xAA55)
        #expect(try memory.u32(zp + 0x202) == 0x5372_6448)
        #expect(try memory.u32(zp + 0x230) == 0x100_0000)
        #expect(try memory.u8(zp + 0x210) == 0xFF)
        #expect(try memory.u32(zp + 0x228) == 0x2_0000)
        #expect(try memory.u32(zp + 0x238) == 13)
        #expect(try memory.u64(zp + 0x070) == 0xE0000)
        #expect(try memory.u8(zp + 0x1E8) == 3)
        let initrdAddress = UInt64(try memory.u32(zp + 0x218))
        #expect(try memory.u32(zp + 0x21C) == 12345)
        #expect(initrdAddress == (64 * mib - 12345) & ~0xFFF)
        #expect(try memory.readBytes(at: GuestAddress(initrdAddress), count: 16) == [UInt8](repeating: 0x5A, count: 16))
        #expect(try memory.readBytes(at: 0x2_0000, count: 14) == Array("root=/dev/vda\0".utf8))
    }

    @Test func initrdGoesAboveTheHighestSegment() throws {
        // A kernel filling RAM up to 60 MiB leaves room for a 3 MiB initrd only above it.
        let elf = SyntheticELF(segments: [.init(address: 0x20_0000, data: SyntheticELF.code, memorySize: 58 * mib)])
        _ = try loadKernel(image: elf.bytes, initrd: [UInt8](repeating: 1, count: Int(3 * mib)),
                           commandLine: "", rsdp: nil, into: memory)
        #expect(try memory.u32(0x7218) == UInt32(61 * mib))
        let tooBig = bootError { _ = try loadKernel(image: elf.bytes, initrd: [UInt8](repeating: 1, count: Int(5 * mib)),
                                                    commandLine: "", rsdp: nil, into: memory) }
        #expect(tooBig == .initrdDoesNotFit(size: 5 * mib, highestAddress: GuestAddress(0x7FFF_FFFF), memorySize: 64 * mib))
    }

    @Test func pvhNoteSelectsThe32BitEntryAndStartInfo() throws {
        let elf = SyntheticELF(pvhEntry: 0x20_0004)
        let initrd = [UInt8](repeating: 0xA5, count: 8192)
        let entry = try loadKernel(image: elf.bytes, initrd: initrd, commandLine: "console=ttyS0",
                                   rsdp: GuestAddress(0xE0000), into: memory)

        #expect(entry.mode == .protected32)
        #expect(entry.instructionPointer == GuestAddress(0x20_0004))
        #expect(entry.bootInfoRegister == .rbx && entry.bootInfoAddress == GuestAddress(0x6000))
        #expect(entry.pageTableRoot == nil)
        #expect(entry.cr0 == 0x1 && entry.cr4 == 0 && entry.efer == 0)
        #expect(entry.codeSegment.selector == 0x10 && entry.codeSegment.db && !entry.codeSegment.l)
        #expect(entry.codeSegment.type == 0xB && entry.codeSegment.limit == 0xFFFF_FFFF)
        #expect(entry.dataSegment.selector == 0x18 && entry.dataSegment.type == 0x3)
        let tss = try #require(entry.taskSegment)
        #expect(tss.selector == 0x08 && tss.type == 0xB && !tss.s && tss.limit == 0x67 && tss.base == 0)
        #expect(try memory.u64(0x508) == 0x0000_8B00_0000_0067)
        #expect(try memory.u64(0x510) == 0x00CF_9B00_0000_FFFF)
        #expect(try memory.u64(0x518) == 0x00CF_9300_0000_FFFF)

        let si: UInt64 = 0x6000
        #expect(try memory.u32(si) == 0x336E_C578)
        #expect(try memory.u32(si + 4) == 1)
        #expect(try memory.u32(si + 8) == 0)
        #expect(try memory.u32(si + 0x0C) == 1)
        #expect(try memory.u64(si + 0x18) == 0x2_0000)
        #expect(try memory.u64(si + 0x20) == 0xE0000)
        #expect(try memory.u32(si + 0x30) == 3)

        let modules = try memory.u64(si + 0x10)
        #expect(try memory.u64(modules) == (64 * mib - 8192))
        #expect(try memory.u64(modules + 8) == 8192)
        #expect(try memory.u64(modules + 16) == 0)
        #expect(try memory.readBytes(at: GuestAddress(64 * mib - 8192), count: 4) == [0xA5, 0xA5, 0xA5, 0xA5])

        let map = try memory.u64(si + 0x28)
        let expected: [(UInt64, UInt64, UInt32)] = [(0, 0x9FC00, 1), (0x9FC00, 0x6_0400, 2), (0x10_0000, 63 * mib, 1)]
        for (index, (address, size, type)) in expected.enumerated() {
            let at = map + UInt64(index) * 24
            #expect(try memory.u64(at) == address)
            #expect(try memory.u64(at + 8) == size)
            #expect(try memory.u32(at + 16) == type)
            #expect(try memory.u32(at + 20) == 0)
        }
        #expect(try memory.readBytes(at: 0x2_0000, count: 14) == Array("console=ttyS0\0".utf8))
    }

    @Test func pvhWithoutInitrdHasNoModules() throws {
        _ = try loadKernel(image: SyntheticELF(pvhEntry: 0x20_0000).bytes, initrd: nil, commandLine: "",
                           rsdp: nil, into: memory)
        #expect(try memory.u32(0x600C) == 0)
        #expect(try memory.u64(0x6010) == 0)
        #expect(try memory.u64(0x6020) == 0)
    }

    @Test func elfCommandLineLimitIsTheKernelsBuffer() {
        let error = bootError {
            _ = try loadKernel(image: SyntheticELF().bytes, initrd: nil,
                               commandLine: String(repeating: "x", count: 2048), rsdp: nil, into: memory)
        }
        #expect(error == .commandLineTooLong(length: 2048, maximum: 2047))
    }
}

@Suite struct E820Tests {
    @Test func memoryAboveTheHoleIsAnotherRAMEntry() throws {
        // Low RAM up to 64 MiB, and 16 MiB at 4 GiB (as above a 32-bit MMIO hole).
        let memory = try GuestMemory(layout: [(GuestAddress(0), 64 * mib), (GuestAddress(0x1_0000_0000), 16 * mib)])
        let map = try E820Entry.map(for: memory)
        #expect(map == [
            E820Entry(address: 0, size: 0x9FC00, type: .ram),
            E820Entry(address: 0x9FC00, size: 0x100000 - 0x9FC00, type: .reserved),
            E820Entry(address: 0x100000, size: 63 * mib, type: .ram),
            E820Entry(address: 0x1_0000_0000, size: 16 * mib, type: .ram),
        ])
        #expect(map[2].end == GuestAddress(64 * mib))
    }

    @Test func refusesMoreThan128Entries() throws {
        var layout: [(start: GuestAddress, size: UInt64)] = [(GuestAddress(0), 2 * mib)]
        for index in 0..<UInt64(127) { layout.append((GuestAddress(4 * mib + index * 0x2000), 0x1000)) }
        let memory = try GuestMemory(layout: layout)
        #expect(bootError { _ = try E820Entry.map(for: memory) } == .tooManyMemoryRegions(count: 130))
        #expect(bootError {
            _ = try loadKernel(image: SyntheticBzImage().bytes, initrd: nil, commandLine: "", rsdp: nil, into: memory)
        } == .tooManyMemoryRegions(count: 130))
    }

    @Test func guestMemoryMustCoverTheFirstMegabyte() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0x10_0000), 64 * mib)])
        #expect(bootError {
            _ = try loadKernel(image: SyntheticBzImage().bytes, initrd: nil, commandLine: "", rsdp: nil, into: memory)
        } == .lowMemoryMissing)
    }
}
