import Testing
import GuestMemory
@testable import Boot

/// A minimal bzImage built field by field: boot sector + setup sectors with a real-looking
/// setup header, then a protected-mode "kernel" whose bytes are a recognisable pattern.
struct SyntheticBzImage {
    var setupSectors: UInt8 = 4
    var bootFlag: UInt16 = 0xAA55
    var magic: UInt32 = 0x5372_6448  // "HdrS"
    var jumpLength: UInt8 = 0x6A     // header ends at 0x26C, as in Debian's kernel
    var version: UInt16 = 0x020F
    var loadFlags: UInt8 = 0x01
    var xloadFlags: UInt16 = 0x03
    var initrdAddressMax: UInt32 = 0x7FFF_FFFF
    var kernelAlignment: UInt32 = 0x20_0000
    var relocatable: UInt8 = 1
    var commandLineSize: UInt32 = 0x7FF
    var preferredAddress: UInt64 = 0x100_0000
    var initSize: UInt32 = 0x40_0000
    var kernelSize = 0x1000
    /// Overrides syssize; by default it matches `kernelSize`.
    var systemSize: UInt32?
    /// A compressed kernel placed at payload_offset 0x400 of the protected-mode part (which
    /// grows to hold it), with payload_length set; none by default.
    var payload: [UInt8]?

    /// The protected-mode part: byte i is (i * 7 + 3) & 0xFF, with the payload at 0x400.
    var kernel: [UInt8] {
        var bytes = (0..<kernelSize).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        if let payload {
            if bytes.count < 0x400 + payload.count { bytes += [UInt8](repeating: 0, count: 0x400 + payload.count - bytes.count) }
            bytes.replaceSubrange(0x400 ..< 0x400 + payload.count, with: payload)
            // Whole 16-byte paragraphs, as syssize counts them.
            bytes += [UInt8](repeating: 0, count: (16 - bytes.count % 16) % 16)
        }
        return bytes
    }

    var setupLength: Int { (Int(setupSectors == 0 ? 4 : setupSectors) + 1) * 512 }

    var bytes: [UInt8] {
        var image = [UInt8](repeating: 0, count: setupLength)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            for i in 0..<MemoryLayout<T>.size { image[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        put(setupSectors, 0x1F1)
        put(systemSize ?? UInt32((kernel.count + 15) / 16), 0x1F4)
        put(bootFlag, 0x1FE)
        put(UInt8(0xEB), 0x200)
        put(jumpLength, 0x201)
        put(magic, 0x202)
        put(version, 0x206)
        put(loadFlags, 0x211)
        put(UInt32(0x10_0000), 0x214)
        put(initrdAddressMax, 0x22C)
        put(kernelAlignment, 0x230)
        put(relocatable, 0x234)
        put(UInt8(21), 0x235)
        put(xloadFlags, 0x236)
        put(commandLineSize, 0x238)
        put(preferredAddress, 0x258)
        put(initSize, 0x260)
        if let payload {
            put(UInt32(0x400), 0x248)
            put(UInt32(payload.count), 0x24C)
        }
        // Something past the header end, which must not be copied into the zero page.
        put(UInt32(0xDEAD_BEEF), 0x280)
        return image + kernel
    }
}

/// A minimal x86-64 ELF executable: a header, program headers, an optional PT_NOTE and the
/// PT_LOAD segments' bytes.
struct SyntheticELF {
    struct Segment {
        var address: UInt64
        var data: [UInt8]
        var memorySize: UInt64
    }

    var segments: [Segment] = [Segment(address: 0x20_0000, data: SyntheticELF.code, memorySize: 0x2000)]
    var entry: UInt64 = 0x20_0000
    /// Adds a Xen PHYS32_ENTRY note with this address.
    var pvhEntry: UInt32?
    /// Start each segment's bytes on a 4 KiB boundary of the file.
    var pageAlignedSegments = false
    var elfClass: UInt8 = 2
    var machine: UInt16 = 62
    var type: UInt16 = 2

    /// `mov $0x3f8, %dx; mov $'A', %al; out %al, (%dx); hlt` — the kind of thing a tiny test guest runs.
    static let code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x41, 0xEE, 0xF4]

    static let headerSize = 64, programHeaderSize = 56

    var note: [UInt8] {
        guard let pvhEntry else { return [] }
        var bytes: [UInt8] = []
        func put32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        // A harmless note first, so the walk has to skip one.
        put32(4); put32(4); put32(6); bytes += Array("GNU\0".utf8); put32(0x1234)
        put32(4); put32(8); put32(18); bytes += Array("Xen\0".utf8); put32(pvhEntry); put32(0xFFFF_FFFF)
        return bytes
    }

    /// File offset of the program header table.
    static let programHeaderOffset = UInt64(headerSize)

    /// Offset of the `index`th program header (the note, if any, comes first).
    func programHeaderOffset(_ index: Int) -> Int { Self.headerSize + index * Self.programHeaderSize }

    var bytes: [UInt8] {
        let note = self.note
        let headerCount = segments.count + (note.isEmpty ? 0 : 1)
        var image = [UInt8](repeating: 0, count: Self.headerSize + headerCount * Self.programHeaderSize)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            for i in 0..<MemoryLayout<T>.size { image[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        image.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46])
        image[4] = elfClass; image[5] = 1; image[6] = 1
        put(type, 0x10); put(machine, 0x12); put(UInt32(1), 0x14)
        put(entry, 0x18); put(UInt64(Self.headerSize), 0x20)
        put(UInt16(Self.headerSize), 0x34); put(UInt16(Self.programHeaderSize), 0x36); put(UInt16(headerCount), 0x38)

        var index = 0
        func programHeader(type: UInt32, offset: Int, address: UInt64, fileSize: Int, memorySize: UInt64) {
            let at = programHeaderOffset(index)
            put(type, at); put(UInt32(5), at + 4); put(UInt64(offset), at + 8)
            put(address, at + 16); put(address, at + 24)
            put(UInt64(fileSize), at + 32); put(memorySize, at + 40); put(UInt64(0x1000), at + 48)
            index += 1
        }
        if !note.isEmpty {
            programHeader(type: 4, offset: image.count, address: 0, fileSize: note.count, memorySize: 0)
            image += note
        }
        for segment in segments {
            // As a linker lays out a real vmlinux: each segment's bytes page-aligned in the file.
            if pageAlignedSegments { image += [UInt8](repeating: 0, count: (4096 - image.count % 4096) % 4096) }
            programHeader(type: 1, offset: image.count, address: segment.address,
                          fileSize: segment.data.count, memorySize: segment.memorySize)
            image += segment.data
        }
        return image
    }
}

/// SplitMix64: a small deterministic generator, so a fuzz failure can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Runs `body` and returns the BootError it threw (nil if it did not throw). Any other error
/// is recorded as a test failure.
func bootError(_ body: () throws -> Void) -> BootError? {
    do {
        try body()
        return nil
    } catch let error as BootError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

extension GuestMemory {
    func u8(_ address: UInt64) throws -> UInt8 { try read(UInt8.self, at: GuestAddress(address)) }
    func u16(_ address: UInt64) throws -> UInt16 { try read(UInt16.self, at: GuestAddress(address)) }
    func u32(_ address: UInt64) throws -> UInt32 { try read(UInt32.self, at: GuestAddress(address)) }
    func u64(_ address: UInt64) throws -> UInt64 { try read(UInt64.self, at: GuestAddress(address)) }
}

let mib: UInt64 = 1 << 20
