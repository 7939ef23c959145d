import Testing
import GuestMemory
@testable import Boot

/// Mutated and random images: the loader may refuse them, but must never trap.
@Suite struct FuzzTests {
    /// Flips, overwrites and splices bytes of `image`, concentrating on the headers.
    static func mutate(_ image: [UInt8], using generator: inout SeededGenerator) -> [UInt8] {
        var image = image
        let interesting: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFF_FFFF, 0x8000_0000, UInt64.max, UInt64.max - 1]
        for _ in 0..<Int.random(in: 1...6, using: &generator) {
            guard !image.isEmpty else { break }
            // Mostly inside the first 0x300 bytes, where the headers are.
            let span = Bool.random(using: &generator) ? min(image.count, 0x300) : image.count
            let offset = Int.random(in: 0..<span, using: &generator)
            switch Int.random(in: 0..<5, using: &generator) {
            case 0:
                image[offset] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &generator)
            case 1:
                image[offset] = UInt8.random(in: 0...255, using: &generator)
            case 2:
                // Write an interesting value of 1, 2, 4 or 8 bytes.
                let value = interesting.randomElement(using: &generator)!
                let width = [1, 2, 4, 8].randomElement(using: &generator)!
                for i in 0..<width where offset + i < image.count {
                    image[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i))
                }
            case 3:
                image.removeLast(Int.random(in: 0...min(image.count, 64), using: &generator))
            default:
                image.insert(UInt8.random(in: 0...255, using: &generator), at: offset)
            }
        }
        return image
    }

    @Test func mutatedBzImagesNeverTrap() throws {
        let memory = try GuestMemory(size: 32 * mib)
        var generator = SeededGenerator(seed: 0xB0_07)
        let base = SyntheticBzImage(kernelSize: 0x400).bytes
        var loaded = 0
        for _ in 0..<3000 {
            let image = Self.mutate(base, using: &generator)
            let initrd: [UInt8]? = Bool.random(using: &generator) ? [1, 2, 3] : nil
            if (try? loadKernel(image: image, initrd: initrd, commandLine: "console=ttyS0", rsdp: nil, into: memory)) != nil {
                loaded += 1
            }
        }
        // Some mutations are harmless (payload bytes, padding); most are not.
        #expect(loaded > 0 && loaded < 3000)
    }

    @Test func mutatedELFsNeverTrap() throws {
        let memory = try GuestMemory(size: 32 * mib)
        var generator = SeededGenerator(seed: 0xE1F)
        let bases = [SyntheticELF().bytes, SyntheticELF(pvhEntry: 0x20_0000).bytes,
                     SyntheticELF(segments: [.init(address: 0x20_0000, data: SyntheticELF.code, memorySize: 0x1000),
                                             .init(address: 0x30_0000, data: [9, 9], memorySize: 0x10)]).bytes]
        var loaded = 0
        for iteration in 0..<3000 {
            let image = Self.mutate(bases[iteration % bases.count], using: &generator)
            if (try? loadKernel(image: image, initrd: [7], commandLine: "", rsdp: nil, into: memory)) != nil {
                loaded += 1
            }
        }
        #expect(loaded > 0 && loaded < 3000)
    }

    @Test func randomBytesNeverTrap() throws {
        let memory = try GuestMemory(size: 32 * mib)
        var generator = SeededGenerator(seed: 42)
        for iteration in 0..<2000 {
            var image = (0..<Int.random(in: 0..<0x1200, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Give half of them a plausible start, so they get past the format sniffing.
            if iteration % 4 == 1, image.count >= 4 { image.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46]) }
            if iteration % 4 == 2, image.count >= 0x206 {
                image[0x1FE] = 0x55; image[0x1FF] = 0xAA
                image.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
            }
            #expect(throws: BootError.self) {
                try loadKernel(image: image, initrd: nil, commandLine: "", rsdp: nil, into: memory)
            }
        }
    }

    @Test func everyErrorMessageIsOneLine() {
        let errors: [BootError] = [
            .emptyImage, .unrecognizedImage(size: 3), .noHdrSMagic, .badBootFlag(0x1234),
            .truncatedSetupHeader(headerEnd: 0x26C, fileSize: 0x240), .setupHeaderTooShort(headerEnd: 0x240),
            .protocolTooOld(version: 0x0203), .notLoadedHigh, .no64BitEntry,
            .truncatedSetup(setupSectors: 39, fileSize: 12000), .truncatedKernel(expected: 100, actual: 50),
            .kernelTooSmall(size: 16), .badKernelAlignment(3),
            .kernelDoesNotFit(neededEnd: nil, runtimeStart: 0x100_0000, initSize: 1, ramEnd: 0x200_0000),
            .elfTruncatedHeader(fileSize: 10), .elfNot64Bit(elfClass: 1), .elfNotLittleEndian(encoding: 2),
            .elfWrongMachine(3), .elfNotExecutable(type: 1), .elfBadProgramHeaderSize(8),
            .elfProgramHeadersOutsideFile(offset: 64, count: 3, fileSize: 100), .elfNoLoadableSegment,
            .elfSegmentOutsideFile(index: 1, offset: 2, size: 3, fileSize: 4),
            .elfSegmentFileSizeExceedsMemorySize(index: 0, fileSize: 2, memorySize: 1),
            .elfSegmentOutsideRAM(index: 0, address: 0x1000, size: 0x10), .elfSegmentInLowMemory(index: 0, address: 0x8000),
            .elfBadNote(index: 2), .elfEntryNotLoaded(0x1000, pvh: true),
            .commandLineTooLong(length: 3000, maximum: 2047), .commandLineContainsNul(offset: 3),
            .initrdDoesNotFit(size: 300 * mib, highestAddress: 0x7FFF_FFFF, memorySize: 256 * mib),
            .lowMemoryMissing, .tooManyMemoryRegions(count: 130), .memory(.outOfBounds(address: 0x7000, length: 4096)),
        ]
        for error in errors {
            #expect(!error.description.isEmpty && !error.description.contains("\n"), "\(error)")
        }
        #expect(BootError.noHdrSMagic.description.hasPrefix("kernel image is not a bzImage: no HdrS magic at 0x202"))
        #expect(BootError.protocolTooOld(version: 0x0203).description.hasPrefix(
            "boot protocol 2.03 is too old: need 2.12 or later for the 64-bit entry"))
        #expect(BootError.commandLineTooLong(length: 3000, maximum: 2047).description
            == "command line is 3000 bytes, the kernel accepts at most 2047")
        #expect(BootError.initrdDoesNotFit(size: 300 * mib, highestAddress: 0x7FFF_FFFF, memorySize: 256 * mib).description
            .hasPrefix("initrd of 300 MiB does not fit above the kernel and below 0x7fffffff in 256 MiB of guest memory"))
        #expect(BootError.truncatedSetup(setupSectors: 39, fileSize: 12000).description.hasPrefix(
            "kernel image is truncated: setup header says 39 sectors of setup (20480 bytes with the boot sector) but the file has 12000 bytes"))
    }
}
