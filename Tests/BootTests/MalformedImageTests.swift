import Testing
import GuestMemory
@testable import Boot

/// Every malformed input gets its own BootError; none of them traps.
@Suite struct MalformedImageTests {
    let memory: GuestMemory
    init() throws { memory = try GuestMemory(size: 64 * mib) }

    func load(_ image: [UInt8], initrd: [UInt8]? = nil, commandLine: String = "") -> BootError? {
        bootError { _ = try loadKernel(image: image, initrd: initrd, commandLine: commandLine, rsdp: nil, into: memory) }
    }

    // MARK: Formats

    @Test func emptyFile() {
        #expect(load([]) == .emptyImage)
    }

    @Test func neitherBzImageNorELF() {
        #expect(load(Array("#!/bin/sh\necho hello\n".utf8)) == .unrecognizedImage(size: 21))
        #expect(load([UInt8](repeating: 0, count: 0x1000)) == .unrecognizedImage(size: 0x1000))
    }

    // MARK: bzImage header

    @Test func everyTruncationOfABzImageIsRefused() {
        let image = SyntheticBzImage().bytes
        for length in 0..<image.count {
            let error = load(Array(image[..<length]))
            #expect(error != nil, "prefix of \(length) bytes loaded")
        }
        #expect(load(image) == nil)
    }

    @Test func truncationsGetTheRightError() {
        let image = SyntheticBzImage().bytes
        #expect(load(Array(image[..<0x100])) == .unrecognizedImage(size: 0x100))
        #expect(load(Array(image[..<0x204])) == .truncatedSetupHeader(headerEnd: 0x206, fileSize: 0x204))
        #expect(load(Array(image[..<0x240])) == .truncatedSetupHeader(headerEnd: 0x26C, fileSize: 0x240))
        #expect(load(Array(image[..<0x800])) == .truncatedSetup(setupSectors: 4, fileSize: 0x800))
        #expect(load(Array(image[..<0xA00])) == .truncatedSetup(setupSectors: 4, fileSize: 0xA00))
        #expect(load(Array(image[..<0xB00])) == .truncatedKernel(expected: 0x1000, actual: 0x100))
        #expect(load(Array(image.dropLast())) == .truncatedKernel(expected: 0x1000, actual: 0xFFF))
    }

    @Test func wrongBootFlag() {
        #expect(load(SyntheticBzImage(bootFlag: 0x55AA).bytes) == .badBootFlag(0x55AA))
    }

    @Test func wrongHdrSMagic() {
        #expect(load(SyntheticBzImage(magic: 0x5372_6449).bytes) == .noHdrSMagic)
        #expect(load(SyntheticBzImage(bootFlag: 0, magic: 0).bytes) == .unrecognizedImage(size: 0xA00 + 0x1000))
    }

    @Test func oldProtocolVersion() {
        #expect(load(SyntheticBzImage(version: 0x0203).bytes) == .protocolTooOld(version: 0x0203))
        #expect(load(SyntheticBzImage(version: 0x020B).bytes) == .protocolTooOld(version: 0x020B))
        #expect(load(SyntheticBzImage(version: 0x020C).bytes) == nil)
    }

    @Test func headerTooShortForItsVersion() {
        #expect(load(SyntheticBzImage(jumpLength: 0x40).bytes) == .setupHeaderTooShort(headerEnd: 0x242))
        #expect(load(SyntheticBzImage(jumpLength: 0x02).bytes) == .setupHeaderTooShort(headerEnd: 0x204))
    }

    @Test func zImageAndNo64BitEntry() {
        #expect(load(SyntheticBzImage(loadFlags: 0x80).bytes) == .notLoadedHigh)
        #expect(load(SyntheticBzImage(xloadFlags: 0x02).bytes) == .no64BitEntry)
    }

    @Test func setupSectorsBeyondTheFile() {
        var image = SyntheticBzImage().bytes
        image[0x1F1] = 200
        #expect(load(image) == .truncatedSetup(setupSectors: 200, fileSize: image.count))
        image[0x1F1] = 11  // 12 sectors of setup: the kernel is then 0x200 bytes, not syssize's 0x1000.
        #expect(load(image) == .truncatedKernel(expected: 0x1000, actual: 0x200))
    }

    @Test func kernelTooShortForTheEntryPoint() {
        #expect(load(SyntheticBzImage(kernelSize: 0x200).bytes) == .kernelTooSmall(size: 0x200))
        #expect(load(SyntheticBzImage(kernelSize: 0x210).bytes) == nil)
    }

    @Test func badKernelAlignment() {
        #expect(load(SyntheticBzImage(kernelAlignment: 0).bytes) == .badKernelAlignment(0))
        #expect(load(SyntheticBzImage(kernelAlignment: 0x30_0000).bytes) == .badKernelAlignment(0x30_0000))
        // A fixed-address kernel does not use it.
        #expect(load(SyntheticBzImage(kernelAlignment: 0, relocatable: 0).bytes) == nil)
    }

    // MARK: What goes with it

    @Test func commandLineTooLong() {
        let image = SyntheticBzImage(commandLineSize: 100).bytes
        #expect(load(image, commandLine: String(repeating: "a", count: 100)) == nil)
        #expect(load(image, commandLine: String(repeating: "a", count: 101)) == .commandLineTooLong(length: 101, maximum: 100))
        // A header asking for more than our 4 KiB buffer gets the buffer.
        let greedy = SyntheticBzImage(commandLineSize: 0x10_0000).bytes
        #expect(load(greedy, commandLine: String(repeating: "a", count: 4096)) == .commandLineTooLong(length: 4096, maximum: 4095))
    }

    @Test func commandLineWithANul() {
        #expect(load(SyntheticBzImage().bytes, commandLine: "quiet\0init=/bin/sh") == .commandLineContainsNul(offset: 5))
    }

    @Test func initrdTooBigForMemory() {
        let initrd = [UInt8](repeating: 0, count: Int(45 * mib))
        #expect(load(SyntheticBzImage().bytes, initrd: initrd)
            == .initrdDoesNotFit(size: 45 * mib, highestAddress: GuestAddress(0x7FFF_FFFF), memorySize: 64 * mib))
    }

    @Test func memoryTooSmallForInitSize() throws {
        // 16 MiB + 0x3378000 (Debian's init_size) needs 67.5 MiB; we have 64.
        let error = load(SyntheticBzImage(initSize: 0x337_8000).bytes)
        #expect(error == .kernelDoesNotFit(neededEnd: GuestAddress(0x437_8000), runtimeStart: GuestAddress(0x100_0000),
                                           initSize: 0x337_8000, ramEnd: GuestAddress(64 * mib)))
        #expect(error?.description.hasSuffix("give the guest at least 68 MiB") == true)
        // A preferred address near 2^64 overflows; that is an error, not a trap.
        let wild = load(SyntheticBzImage(relocatable: 0, preferredAddress: UInt64.max - 0x1000).bytes)
        #expect(wild == .kernelDoesNotFit(neededEnd: nil, runtimeStart: GuestAddress(UInt64.max - 0x1000),
                                          initSize: 0x40_0000, ramEnd: GuestAddress(64 * mib)))
    }

    @Test func failedLoadLeavesMemoryUntouched() throws {
        _ = load(SyntheticBzImage().bytes, initrd: [UInt8](repeating: 1, count: Int(60 * mib)))
        #expect(try memory.readBytes(at: 0, count: 0x21000) == [UInt8](repeating: 0, count: 0x21000))
        #expect(try memory.u64(0x10_0000) == 0)
    }

    // MARK: ELF

    @Test func everyTruncationOfAnELFIsRefused() {
        for pvh in [false, true] {
            let image = SyntheticELF(pvhEntry: pvh ? 0x20_0000 : nil).bytes
            for length in 0..<image.count {
                #expect(load(Array(image[..<length])) != nil, "prefix of \(length) bytes loaded")
            }
            #expect(load(image) == nil)
        }
    }

    @Test func elfHeaderChecks() {
        #expect(load([0x7F, 0x45, 0x4C, 0x46, 2, 1]) == .elfTruncatedHeader(fileSize: 6))
        #expect(load(SyntheticELF(elfClass: 1).bytes) == .elfNot64Bit(elfClass: 1))
        var bigEndian = SyntheticELF().bytes
        bigEndian[5] = 2
        #expect(load(bigEndian) == .elfNotLittleEndian(encoding: 2))
        #expect(load(SyntheticELF(machine: 3).bytes) == .elfWrongMachine(3))
        #expect(load(SyntheticELF(type: 1).bytes) == .elfNotExecutable(type: 1))
        var shortEntries = SyntheticELF().bytes
        shortEntries[0x36] = 32
        #expect(load(shortEntries) == .elfBadProgramHeaderSize(32))
        #expect(load(SyntheticELF(segments: []).bytes) == .elfNoLoadableSegment)
    }

    @Test func programHeaderTableOutOfFile() {
        var image = SyntheticELF().bytes
        put(UInt64(image.count - 10), at: 0x20, in: &image)
        #expect(load(image) == .elfProgramHeadersOutsideFile(offset: UInt64(image.count - 10), count: 1, fileSize: image.count))
        put(UInt64.max - 20, at: 0x20, in: &image)
        #expect(load(image) == .elfProgramHeadersOutsideFile(offset: UInt64.max - 20, count: 1, fileSize: image.count))
        image = SyntheticELF().bytes
        put(UInt16(0xFFFF), at: 0x38, in: &image)
        #expect(load(image) == .elfProgramHeadersOutsideFile(offset: 64, count: 0xFFFF, fileSize: image.count))
    }

    @Test func segmentOffsetsAndSizesThatOverflow() {
        let phdr = 64
        var image = SyntheticELF().bytes
        put(UInt64.max - 3, at: phdr + 8, in: &image)           // p_offset
        #expect(load(image) == .elfSegmentOutsideFile(index: 0, offset: UInt64.max - 3, size: 8, fileSize: image.count))

        image = SyntheticELF().bytes
        put(UInt64.max, at: phdr + 32, in: &image)               // p_filesz
        put(UInt64.max, at: phdr + 40, in: &image)               // p_memsz
        #expect(load(image) == .elfSegmentOutsideFile(index: 0, offset: 120, size: UInt64.max, fileSize: image.count))

        image = SyntheticELF().bytes
        put(UInt64.max - 0xFFF, at: phdr + 24, in: &image)       // p_paddr: paddr + memsz wraps
        #expect(load(image) == .elfSegmentOutsideRAM(index: 0, address: GuestAddress(UInt64.max - 0xFFF), size: 0x2000))
    }

    @Test func fileSizeLargerThanMemorySize() {
        var image = SyntheticELF().bytes
        put(UInt64(4), at: 64 + 40, in: &image)
        #expect(load(image) == .elfSegmentFileSizeExceedsMemorySize(index: 0, fileSize: 8, memorySize: 4))
    }

    @Test func segmentOutsideGuestRAM() {
        let past = SyntheticELF(segments: [.init(address: 64 * mib - 0x1000, data: SyntheticELF.code, memorySize: 0x2000)],
                                entry: 64 * mib - 0x1000)
        #expect(load(past.bytes) == .elfSegmentOutsideRAM(index: 0, address: GuestAddress(64 * mib - 0x1000), size: 0x2000))
        let low = SyntheticELF(segments: [.init(address: 0x8000, data: SyntheticELF.code, memorySize: 0x100)], entry: 0x8000)
        #expect(load(low.bytes) == .elfSegmentInLowMemory(index: 0, address: GuestAddress(0x8000)))
    }

    @Test func entryPointOutsideTheSegments() {
        #expect(load(SyntheticELF(entry: 0x30_0000).bytes) == .elfEntryNotLoaded(GuestAddress(0x30_0000), pvh: false))
        #expect(load(SyntheticELF(pvhEntry: 0x10).bytes) == .elfEntryNotLoaded(GuestAddress(0x10), pvh: true))
    }

    @Test func malformedNote() {
        var image = SyntheticELF(pvhEntry: 0x20_0000).bytes
        // The first note's name size now runs past the end of the note segment.
        let noteOffset = 64 + 2 * 56
        put(UInt32(0x1000), at: noteOffset, in: &image)
        #expect(load(image) == .elfBadNote(index: 0))
        // A PVH note whose descriptor is too short to hold an address.
        image = SyntheticELF(pvhEntry: 0x20_0000).bytes
        put(UInt32(2), at: noteOffset + 20 + 4, in: &image)
        #expect(load(image) == .elfBadNote(index: 0))
    }

    func put<T: FixedWidthInteger>(_ value: T, at offset: Int, in image: inout [UInt8]) {
        for i in 0..<MemoryLayout<T>.size { image[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
}
