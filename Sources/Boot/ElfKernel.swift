import GuestMemory

/// An x86-64 ELF vmlinux, parsed and checked against its own file.
///
/// Every header, program header and segment is bounds-checked with overflow-checked
/// arithmetic; nothing here can trap, whatever the bytes. Checking the segments against guest
/// RAM is a separate step (`checkPlacement(in:)`), so the image can be parsed once, up front.
struct ElfKernel {
    /// A PT_LOAD segment: file bytes `[fileOffset, fileOffset + fileSize)` go to `address`, and
    /// the rest of `memorySize` (the bss) is zeroed.
    struct LoadSegment {
        let index: Int
        let fileOffset: UInt64
        let fileSize: UInt64
        let address: GuestAddress
        let memorySize: UInt64
        /// `address + memorySize`, checked when the segment was parsed.
        let end: GuestAddress
    }

    static let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]  // "\x7FELF"

    private enum Constant {
        static let headerSize: UInt64 = 64
        static let programHeaderSize: UInt16 = 56
        static let class64: UInt8 = 2
        static let littleEndian: UInt8 = 1
        static let executable: UInt16 = 2
        static let x86_64: UInt16 = 62
        static let load: UInt32 = 1
        static let note: UInt32 = 4
        /// XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit physical PVH entry point.
        static let xenPhys32Entry: UInt32 = 18
        static let xenName: [UInt8] = [0x58, 0x65, 0x6E, 0x00]  // "Xen\0"
    }

    /// e_entry: the 64-bit entry point (a physical address in a Linux vmlinux).
    let entry: GuestAddress
    /// The PT_LOAD segments with something in them, in file order.
    let segments: [LoadSegment]
    /// The PVH entry from a "Xen" XEN_ELFNOTE_PHYS32_ENTRY note, if the kernel has one.
    let pvhEntry: GuestAddress?

    /// The end of the highest segment: the kernel's footprint, for placing the initrd above it.
    var end: GuestAddress { segments.map(\.end).max() ?? Layout.kernelLoad }

    static func isELF(_ image: UnsafeRawBufferPointer) -> Bool { image.starts(with: magic) }

    init(image: UnsafeRawBufferPointer) throws(BootError) {
        let file = ImageBytes(image)
        guard UInt64(image.count) >= Constant.headerSize else { throw .elfTruncatedHeader(fileSize: image.count) }
        // The header is all there, so the `?? 0`s below never happen.
        let elfClass = file.u8(4) ?? 0, encoding = file.u8(5) ?? 0
        guard elfClass == Constant.class64 else { throw .elfNot64Bit(elfClass: elfClass) }
        guard encoding == Constant.littleEndian else { throw .elfNotLittleEndian(encoding: encoding) }
        let type = file.u16(0x10) ?? 0, machine = file.u16(0x12) ?? 0
        guard machine == Constant.x86_64 else { throw .elfWrongMachine(machine) }
        guard type == Constant.executable else { throw .elfNotExecutable(type: type) }
        let entry = GuestAddress(file.u64(0x18) ?? 0)
        let tableOffset = file.u64(0x20) ?? 0
        let entrySize = file.u16(0x36) ?? 0, count = file.u16(0x38) ?? 0

        guard entrySize >= Constant.programHeaderSize else { throw .elfBadProgramHeaderSize(entrySize) }
        // count * entrySize < 2^32, so only the addition can overflow; `contains` checks it.
        guard file.contains(offset: tableOffset, length: UInt64(count) * UInt64(entrySize)) else {
            throw .elfProgramHeadersOutsideFile(offset: tableOffset, count: count, fileSize: image.count)
        }

        var segments: [LoadSegment] = []
        var pvhEntry: GuestAddress?
        for index in 0..<Int(count) {
            // Inside the table, which is inside the file: these reads all succeed.
            let header = tableOffset + UInt64(index) * UInt64(entrySize)
            let kind = file.u32(header) ?? 0
            let offset = file.u64(header + 8) ?? 0
            let physical = file.u64(header + 24) ?? 0
            let fileSize = file.u64(header + 32) ?? 0
            let memorySize = file.u64(header + 40) ?? 0

            switch kind {
            case Constant.load:
                guard fileSize <= memorySize else {
                    throw .elfSegmentFileSizeExceedsMemorySize(index: index, fileSize: fileSize, memorySize: memorySize)
                }
                guard file.contains(offset: offset, length: fileSize) else {
                    throw .elfSegmentOutsideFile(index: index, offset: offset, size: fileSize, fileSize: image.count)
                }
                guard memorySize > 0 else { continue }
                let address = GuestAddress(physical)
                guard let end = address.adding(memorySize) else {
                    throw .elfSegmentOutsideRAM(index: index, address: address, size: memorySize)
                }
                segments.append(LoadSegment(index: index, fileOffset: offset, fileSize: fileSize,
                                            address: address, memorySize: memorySize, end: end))
            case Constant.note:
                guard let notes = file.slice(offset: offset, length: fileSize) else {
                    throw .elfSegmentOutsideFile(index: index, offset: offset, size: fileSize, fileSize: image.count)
                }
                if let found = try Self.pvhEntry(inNotes: notes, segment: index) { pvhEntry = found }
            default:
                continue
            }
        }
        guard !segments.isEmpty else { throw .elfNoLoadableSegment }
        self.entry = entry
        self.segments = segments
        self.pvhEntry = pvhEntry

        // The CPU starts at the entry point; it had better be something we loaded.
        let target = pvhEntry ?? entry
        guard segments.contains(where: { target >= $0.address && target < $0.end }) else {
            throw .elfEntryNotLoaded(target, pvh: pvhEntry != nil)
        }
    }

    /// Walks the notes of one PT_NOTE segment (`Elf64_Nhdr`: namesz, descsz, type, then name
    /// and descriptor, each padded to 4 bytes) looking for Xen's PHYS32_ENTRY.
    private static func pvhEntry(inNotes notes: UnsafeRawBufferPointer, segment: Int) throws(BootError) -> GuestAddress? {
        let bytes = ImageBytes(notes)
        var cursor: UInt64 = 0
        // A trailing run shorter than a note header is padding.
        while bytes.contains(offset: cursor, length: 12) {
            let nameSize = UInt64(bytes.u32(cursor) ?? 0)
            let descriptorSize = UInt64(bytes.u32(cursor + 4) ?? 0)
            let type = bytes.u32(cursor + 8) ?? 0
            // Sizes are < 2^32, so padding them to 4 cannot overflow a UInt64.
            let name = cursor + 12
            let descriptor = name + (nameSize + 3) & ~3
            let next = descriptor + (descriptorSize + 3) & ~3
            guard bytes.contains(offset: name, length: nameSize),
                  bytes.contains(offset: descriptor, length: descriptorSize) else {
                throw .elfBadNote(index: segment)
            }
            if type == Constant.xenPhys32Entry, nameSize == 4,
               bytes.slice(offset: name, length: 4).map(Array.init) == Constant.xenName {
                // The descriptor is a 32-bit address (Linux stores it as a quad; the low half counts).
                guard descriptorSize >= 4, let address = bytes.u32(descriptor) else { throw .elfBadNote(index: segment) }
                return GuestAddress(UInt64(address))
            }
            cursor = next
        }
        return nil
    }

    /// Checks every segment lands in guest RAM, above the boot structures below 1 MiB.
    func checkPlacement(in memory: GuestMemory) throws(BootError) {
        for segment in segments {
            guard segment.address >= Layout.lowMemoryEnd else {
                throw .elfSegmentInLowMemory(index: segment.index, address: segment.address)
            }
            guard memory.contains(segment.address, length: segment.memorySize) else {
                throw .elfSegmentOutsideRAM(index: segment.index, address: segment.address, size: segment.memorySize)
            }
        }
    }

    /// Copies each segment into guest memory (or has `map` put it there) and zeroes its bss.
    /// Call `checkPlacement` first.
    func load(from image: UnsafeRawBufferPointer, into memory: GuestMemory, map: SegmentMapper? = nil) throws(BootError) {
        for segment in segments {
            // Both ranges were checked when the image was parsed and placed.
            let start = Int(segment.fileOffset)
            if map?(segment.fileOffset, segment.fileSize, segment.address) != true {
                try memory.bootWrite(UnsafeRawBufferPointer(rebasing: image[start..<(start + Int(segment.fileSize))]), at: segment.address)
            }
            try memory.bootZero(at: segment.address + segment.fileSize,
                                length: segment.memorySize - segment.fileSize)
        }
    }
}
