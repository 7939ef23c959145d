import GuestMemory

/// Why a kernel could not be put into guest memory.
///
/// Each case prints as one line that names the problem and, where there is one, what to do about
/// it. Nothing is written to guest memory before the image, command line and initrd have all
/// been checked, so a thrown error leaves guest memory as it was — except `.memory`, which means
/// the VMM laid out memory in a way the boot layer cannot use.
public enum BootError: Error, Equatable, Sendable, CustomStringConvertible {
    // MARK: Telling formats apart

    /// The image file is empty.
    case emptyImage
    /// Neither ELF magic at 0 nor a bzImage header (0xAA55 at 0x1FE, "HdrS" at 0x202).
    case unrecognizedImage(size: Int)

    // MARK: bzImage setup header

    /// The boot flag 0xAA55 is there but "HdrS" is not: a pre-2.00 kernel or not a kernel.
    case noHdrSMagic
    /// "HdrS" is there but the boot flag at 0x1FE is not 0xAA55.
    case badBootFlag(UInt16)
    /// The file ends inside the setup header, which runs up to `headerEnd`.
    case truncatedSetupHeader(headerEnd: Int, fileSize: Int)
    /// The setup header (per the jump at 0x200) ends before the version field, or before
    /// `init_size`, which a 2.10+ header must have.
    case setupHeaderTooShort(headerEnd: Int)
    /// Boot protocol older than 2.12, which has no 64-bit entry point to speak of.
    case protocolTooOld(version: UInt16)
    /// loadflags bit 0 (LOADED_HIGH) is clear: a zImage, which loads at 0x10000.
    case notLoadedHigh
    /// xloadflags bit 0 (XLF_KERNEL_64) is clear: no 64-bit entry at +0x200.
    case no64BitEntry
    /// The setup (real-mode) part, `setupSectors + 1` sectors, runs to or past the end of the file.
    case truncatedSetup(setupSectors: Int, fileSize: Int)
    /// The protected-mode kernel is shorter than `syssize` (0x1F4) promises.
    case truncatedKernel(expected: UInt64, actual: Int)
    /// The protected-mode kernel is too short to contain the 64-bit entry point at +0x200.
    case kernelTooSmall(size: Int)
    /// A relocatable kernel whose kernel_alignment (0x230) is not a power of two.
    case badKernelAlignment(UInt32)
    /// The kernel does not fit in the RAM region holding 1 MiB, which ends at `ramEnd`. It runs
    /// (decompresses itself) at `runtimeStart` and needs `initSize` bytes there, so RAM must reach
    /// `neededEnd` (`nil`: past 2^64, a nonsense header).
    case kernelDoesNotFit(neededEnd: GuestAddress?, runtimeStart: GuestAddress, initSize: UInt64, ramEnd: GuestAddress)

    // MARK: ELF vmlinux

    /// The file is shorter than the 64-byte ELF header.
    case elfTruncatedHeader(fileSize: Int)
    /// EI_CLASS is not ELFCLASS64.
    case elfNot64Bit(elfClass: UInt8)
    /// EI_DATA is not ELFDATA2LSB.
    case elfNotLittleEndian(encoding: UInt8)
    /// e_machine is not EM_X86_64 (62).
    case elfWrongMachine(UInt16)
    /// e_type is not ET_EXEC (2).
    case elfNotExecutable(type: UInt16)
    /// e_phentsize is smaller than an Elf64_Phdr (56 bytes).
    case elfBadProgramHeaderSize(UInt16)
    /// The program header table runs past the end of the file (or overflows).
    case elfProgramHeadersOutsideFile(offset: UInt64, count: UInt16, fileSize: Int)
    /// No PT_LOAD segment with a non-zero memory size.
    case elfNoLoadableSegment
    /// Segment `index` names file bytes `[offset, offset + size)` that are not in the file.
    case elfSegmentOutsideFile(index: Int, offset: UInt64, size: UInt64, fileSize: Int)
    /// Segment `index` has p_filesz > p_memsz.
    case elfSegmentFileSizeExceedsMemorySize(index: Int, fileSize: UInt64, memorySize: UInt64)
    /// Segment `index` would be loaded (wholly or partly) outside guest RAM.
    case elfSegmentOutsideRAM(index: Int, address: GuestAddress, size: UInt64)
    /// Segment `index` would be loaded below 1 MiB, over the boot structures.
    case elfSegmentInLowMemory(index: Int, address: GuestAddress)
    /// A note in PT_NOTE segment `index` runs past the end of its segment.
    case elfBadNote(index: Int)
    /// The entry point (e_entry, or the PVH entry when `pvh`) is not inside a loaded segment.
    case elfEntryNotLoaded(GuestAddress, pvh: Bool)

    // MARK: What goes with the kernel

    /// The command line has `length` bytes; the kernel takes at most `maximum` (without the NUL).
    case commandLineTooLong(length: Int, maximum: Int)
    /// The command line contains a NUL byte at `offset`; the kernel would stop reading there.
    case commandLineContainsNul(offset: Int)
    /// No page-aligned spot above the kernel and at or below `highestAddress` holds the initrd.
    case initrdDoesNotFit(size: UInt64, highestAddress: GuestAddress, memorySize: UInt64)

    // MARK: Guest memory

    /// Guest RAM does not cover [0, 1 MiB) in one region, where the boot structures live.
    case lowMemoryMissing
    /// The memory map needs more e820 entries than the zero page holds (128).
    case tooManyMemoryRegions(count: Int)
    /// Guest memory refused a write the boot layer had checked: a VMM bug, not a kernel problem.
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case .emptyImage:
            return "kernel image is empty: pass a bzImage (vmlinuz) or an ELF vmlinux"
        case let .unrecognizedImage(size):
            return "kernel image (\(size) bytes) is not a bzImage or ELF vmlinux: no ELF magic at 0 and no 0xAA55/HdrS header at 0x1FE; pass /boot/vmlinuz-* or a vmlinux"
        case .noHdrSMagic:
            return "kernel image is not a bzImage: no HdrS magic at 0x202 (a pre-2.00 kernel, or not a kernel at all)"
        case let .badBootFlag(flag):
            return "kernel image is damaged: boot flag at 0x1FE is \(hex(flag)), not 0xaa55"
        case let .truncatedSetupHeader(headerEnd, fileSize):
            return "kernel image is truncated: the setup header runs to \(hex(headerEnd)) but the file has \(fileSize) bytes"
        case let .setupHeaderTooShort(headerEnd):
            return "kernel image is damaged: its setup header ends at \(hex(headerEnd)), before the fields a 2.12 kernel must have"
        case let .protocolTooOld(version):
            return "boot protocol \(protocolVersion(version)) is too old: need 2.12 or later for the 64-bit entry (Linux 3.8 or newer)"
        case .notLoadedHigh:
            return "kernel image is a zImage (loadflags LOADED_HIGH clear): only bzImage kernels are supported"
        case .no64BitEntry:
            return "kernel has no 64-bit entry point (xloadflags XLF_KERNEL_64 clear): use an x86-64 kernel"
        case let .truncatedSetup(setupSectors, fileSize):
            return "kernel image is truncated: setup header says \(setupSectors) sectors of setup (\((setupSectors + 1) * 512) bytes with the boot sector) but the file has \(fileSize) bytes"
        case let .truncatedKernel(expected, actual):
            return "kernel image is truncated: setup header says the kernel after the setup is \(expected) bytes but the file has \(actual)"
        case let .kernelTooSmall(size):
            return "kernel image is truncated: the kernel after the setup is \(size) bytes, too short for the 64-bit entry at +0x200"
        case let .badKernelAlignment(alignment):
            return "kernel image is damaged: kernel_alignment \(hex(alignment)) is not a power of two"
        case let .kernelDoesNotFit(neededEnd, runtimeStart, initSize, ramEnd):
            let end = neededEnd.map(\.description) ?? "past 2^64"
            let advice = neededEnd.map { "give the guest at least \(mebibytes(roundingUp: $0.rawValue))" } ?? "the image is damaged"
            return "kernel needs guest RAM up to \(end) (it runs at \(runtimeStart) with init_size \(formatSize(initSize))) but RAM ends at \(ramEnd): \(advice)"
        case let .elfTruncatedHeader(fileSize):
            return "ELF kernel is truncated: the file has \(fileSize) bytes, less than the 64-byte ELF header"
        case let .elfNot64Bit(elfClass):
            return "ELF kernel is not 64-bit (EI_CLASS \(elfClass)): use an x86-64 vmlinux"
        case let .elfNotLittleEndian(encoding):
            return "ELF kernel is not little-endian (EI_DATA \(encoding)): use an x86-64 vmlinux"
        case let .elfWrongMachine(machine):
            return "ELF kernel is for machine \(machine), not x86-64 (62): use an x86-64 vmlinux"
        case let .elfNotExecutable(type):
            return "ELF file is not an executable (e_type \(type), want 2): pass the vmlinux itself, not an object or module"
        case let .elfBadProgramHeaderSize(size):
            return "ELF kernel is damaged: program header entries are \(size) bytes, an Elf64_Phdr needs 56"
        case let .elfProgramHeadersOutsideFile(offset, count, fileSize):
            return "ELF kernel is truncated: \(count) program headers at offset \(hex(offset)) run past the end of the \(fileSize)-byte file"
        case .elfNoLoadableSegment:
            return "ELF kernel has no loadable (PT_LOAD) segment: nothing to run"
        case let .elfSegmentOutsideFile(index, offset, size, fileSize):
            return "ELF kernel is truncated: segment \(index) needs file bytes \(hex(offset))+\(size) but the file has \(fileSize)"
        case let .elfSegmentFileSizeExceedsMemorySize(index, fileSize, memorySize):
            return "ELF kernel is damaged: segment \(index) has \(fileSize) bytes in the file but only \(memorySize) in memory"
        case let .elfSegmentOutsideRAM(index, address, size):
            return "ELF segment \(index) at \(address)+\(hex(size)) is outside guest RAM: give the guest more memory"
        case let .elfSegmentInLowMemory(index, address):
            return "ELF segment \(index) at \(address) is below 1 MiB, where the boot structures live: link the kernel at 0x100000 or above"
        case let .elfBadNote(index):
            return "ELF kernel is damaged: a note in segment \(index) runs past the end of the segment"
        case let .elfEntryNotLoaded(address, pvh):
            return "ELF kernel's \(pvh ? "PVH entry" : "entry point") \(address) is not inside any loaded segment"
        case let .commandLineTooLong(length, maximum):
            return "command line is \(length) bytes, the kernel accepts at most \(maximum)"
        case let .commandLineContainsNul(offset):
            return "command line contains a NUL byte at offset \(offset): the kernel would ignore everything after it"
        case let .initrdDoesNotFit(size, highestAddress, memorySize):
            return "initrd of \(formatSize(size)) does not fit above the kernel and below \(highestAddress) in \(formatSize(memorySize)) of guest memory: give the guest more memory"
        case .lowMemoryMissing:
            return "guest RAM must cover the first megabyte in one region (boot structures live there)"
        case let .tooManyMemoryRegions(count):
            return "guest memory map needs \(count) e820 entries, the zero page holds at most 128: use fewer memory regions"
        case let .memory(error):
            return "cannot write boot data into guest memory: \(error)"
        }
    }
}

// MARK: - Formatting helpers for the messages

func hex(_ value: some BinaryInteger) -> String { "0x" + String(value, radix: 16) }

/// "2.03" for 0x0203.
func protocolVersion(_ version: UInt16) -> String {
    let minor = version & 0xFF
    return "\(version >> 8).\(minor < 10 ? "0" : "")\(minor)"
}

/// "300 MiB", "51.5 MiB", "512 bytes".
func formatSize(_ bytes: UInt64) -> String {
    let mib: UInt64 = 1 << 20
    if bytes < mib { return "\(bytes) bytes" }
    if bytes % mib == 0 { return "\(bytes / mib) MiB" }
    let tenths = (bytes % mib) * 10 / mib
    return "\(bytes / mib).\(tenths) MiB"
}

/// "68 MiB" for anything in (67 MiB, 68 MiB].
func mebibytes(roundingUp bytes: UInt64) -> String {
    let mib: UInt64 = 1 << 20
    return "\(bytes / mib + (bytes % mib == 0 ? 0 : 1)) MiB"
}
