import GuestMemory

/// Puts a Linux kernel, its initrd and its command line into guest memory, writes the boot
/// structures (zero page or PVH start info, e820 map, GDT, IDT, page tables), and returns the
/// CPU state to enter it with.
///
/// - `image`: a bzImage (what distributions install as /boot/vmlinuz-*) or an uncompressed
///   x86-64 ELF vmlinux. An ELF with a Xen PVH note is entered through PVH in 32-bit protected
///   mode; any other ELF, and every bzImage, through the 64-bit boot protocol.
/// - `initrd`: loaded page-aligned as high as it fits below the kernel's initrd limit and above
///   the memory the kernel needs; `nil` or empty for none.
/// - `rsdp`: the ACPI RSDP, if the firmware layer wrote one; handed to the kernel directly.
///
/// Everything is checked before anything is written, so on error guest memory is untouched.
/// The image may be any bytes at all: a malformed one gets a `BootError`, never a trap.
public func loadKernel(image: [UInt8], initrd: [UInt8]?, commandLine: String, rsdp: GuestAddress?,
                       into memory: GuestMemory) throws(BootError) -> BootEntry {
    let result: Result<BootEntry, BootError> = image.withUnsafeBytes { image in
        let load = { (initrd: UnsafeRawBufferPointer?) -> Result<BootEntry, BootError> in
            do throws(BootError) {
                return .success(try loadKernel(image: image, initrd: initrd, commandLine: commandLine,
                                               rsdp: rsdp, into: memory))
            } catch { return .failure(error) }
        }
        guard let initrd else { return load(nil) }
        return initrd.withUnsafeBytes { load($0) }
    }
    return try result.get()
}

/// Puts `length` bytes of the kernel's file, from `fileOffset`, into guest memory at `address`
/// some cheaper way than a copy (a private mapping of the file) and returns true, or returns
/// false to have them copied. Called for the segments of an ELF kernel only.
public typealias SegmentMapper = (_ fileOffset: UInt64, _ length: UInt64, _ address: GuestAddress) -> Bool

/// The same, for images the caller holds in memory of its own (a file read at start-up): the
/// bytes are only read, and only while this runs. `map` may place an ELF kernel's segments.
public func loadKernel(image: UnsafeRawBufferPointer, initrd: UnsafeRawBufferPointer?, commandLine: String,
                       rsdp: GuestAddress?, into memory: GuestMemory,
                       map: SegmentMapper? = nil) throws(BootError) -> BootEntry {
    guard !image.isEmpty else { throw .emptyImage }
    guard memory.contains(GuestAddress(0), length: Layout.firmwareHoleEnd.rawValue) else { throw .lowMemoryMissing }
    let e820 = try E820Entry.map(for: memory)
    let initrd = initrd.flatMap { $0.isEmpty ? nil : $0 }

    if ElfKernel.isELF(image) {
        let kernel = try ElfKernel(image: image)
        return try load(elf: kernel, image: image, initrd: initrd, commandLine: commandLine,
                        rsdp: rsdp, e820: e820, into: memory, map: map)
    }
    let header = try SetupHeader(image: image)
    return try load(bzImage: header, image: image, initrd: initrd, commandLine: commandLine,
                    rsdp: rsdp, e820: e820, into: memory)
}

// MARK: - bzImage

private func load(bzImage header: SetupHeader, image: UnsafeRawBufferPointer, initrd: UnsafeRawBufferPointer?, commandLine: String,
                  rsdp: GuestAddress?, e820: [E820Entry], into memory: GuestMemory) throws(BootError) -> BootEntry {
    let maximumCommandLine = min(Int(header.commandLineSize), Int(Layout.commandLineCapacity) - 1)
    let commandLineBytes = try checkedCommandLine(commandLine, maximum: maximumCommandLine)

    // The protected-mode kernel sits at 1 MiB, then decompresses itself to its runtime address
    // (16 MiB for a default kernel) and needs init_size bytes there. All of it must be RAM.
    let kernelSize = UInt64(header.kernelSize)
    let runtimeStart = header.runtimeStart
    let ramEnd = memory.region(containing: Layout.kernelLoad)?.end ?? Layout.kernelLoad
    let neededEnd: GuestAddress? = {
        guard let decompressed = runtimeStart.adding(UInt64(header.initSize)),
              let loaded = Layout.kernelLoad.adding(kernelSize) else { return nil }
        return max(decompressed, loaded)
    }()
    guard let neededEnd, neededEnd <= ramEnd else {
        throw .kernelDoesNotFit(neededEnd: neededEnd, runtimeStart: runtimeStart,
                                initSize: UInt64(header.initSize), ramEnd: ramEnd)
    }
    let initrdPlacement = try initrd.map { (bytes) throws(BootError) in
        try placeInitrd(size: UInt64(bytes.count), above: neededEnd,
                        highestAddress: header.initrdAddressMax, in: memory)
    }

    // Journey 2: the kernel moves in. A bzImage is two programs glued together: a 16-bit
    // setup that would ask the BIOS about the machine, and a protected-mode kernel that is
    // mostly a compressed copy of the real one. We have no BIOS and want no real mode, so we
    // throw the setup code away, keep only its header (copied into the zero page, where the
    // decompressor looks for kernel_alignment and init_size), and put the protected-mode part
    // at 1 MiB, where every x86 boot loader since the 1990s has put it. From there the kernel
    // unpacks itself to 16 MiB, which is why we checked above that the guest has that much
    // room plus init_size: running out of memory half-way through decompression is a much
    // less helpful error message than ours.
    try memory.bootWrite(UnsafeRawBufferPointer(rebasing: image[header.protectedModeOffset...]), at: Layout.kernelLoad)

    var zeroPage = ZeroPage(header: header, image: image)
    zeroPage.fill(commandLine: Layout.commandLine,
                  initrd: initrdPlacement.map { ($0, UInt64(initrd?.count ?? 0)) },
                  rsdp: rsdp, e820: e820)
    try memory.bootWrite(zeroPage.bytes, at: Layout.zeroPage)
    try writeCommandLine(commandLineBytes, into: memory)
    if let initrd, let initrdPlacement { try memory.bootWrite(initrd, at: initrdPlacement) }

    return try CPUTables.install(mode: .long64, entry: Layout.kernelLoad + Layout.kernel64EntryOffset,
                                 bootInfo: Layout.zeroPage, into: memory)
}

// MARK: - ELF vmlinux

/// The longest command line for an ELF vmlinux, which has no cmdline_size to ask: x86's
/// COMMAND_LINE_SIZE is 2048 including the NUL, and the kernel silently truncates beyond it.
let elfCommandLineMaximum = 2047

private func load(elf kernel: ElfKernel, image: UnsafeRawBufferPointer, initrd: UnsafeRawBufferPointer?, commandLine: String,
                  rsdp: GuestAddress?, e820: [E820Entry], into memory: GuestMemory,
                  map: SegmentMapper?) throws(BootError) -> BootEntry {
    try kernel.checkPlacement(in: memory)
    let commandLineBytes = try checkedCommandLine(commandLine, maximum: elfCommandLineMaximum)
    let initrdPlacement = try initrd.map { (bytes) throws(BootError) in
        try placeInitrd(size: UInt64(bytes.count), above: max(kernel.end, Layout.kernelLoad),
                        highestAddress: Layout.defaultInitrdAddressMax, in: memory)
    }
    let initrdRange = initrdPlacement.map { ($0, UInt64(initrd?.count ?? 0)) }

    try kernel.load(from: image, into: memory, map: map)
    try writeCommandLine(commandLineBytes, into: memory)
    if let initrd, let initrdPlacement { try memory.bootWrite(initrd, at: initrdPlacement) }

    if let pvhEntry = kernel.pvhEntry {
        try PVHStartInfo.write(commandLine: Layout.commandLine, initrd: initrdRange, rsdp: rsdp,
                               e820: e820, into: memory)
        return try CPUTables.install(mode: .protected32, entry: pvhEntry, bootInfo: Layout.pvhStartInfo, into: memory)
    }
    var zeroPage = ZeroPage(forELFWithCommandLineSize: commandLineBytes.count)
    zeroPage.fill(commandLine: Layout.commandLine, initrd: initrdRange, rsdp: rsdp, e820: e820)
    try memory.bootWrite(zeroPage.bytes, at: Layout.zeroPage)
    return try CPUTables.install(mode: .long64, entry: kernel.entry, bootInfo: Layout.zeroPage, into: memory)
}

// MARK: - Command line and initrd

/// The command line as bytes, without a NUL, refused if the kernel would not read all of it.
func checkedCommandLine(_ commandLine: String, maximum: Int) throws(BootError) -> [UInt8] {
    let bytes = Array(commandLine.utf8)
    if let nul = bytes.firstIndex(of: 0) { throw .commandLineContainsNul(offset: nul) }
    guard bytes.count <= maximum else { throw .commandLineTooLong(length: bytes.count, maximum: maximum) }
    return bytes
}

/// Clears the command-line buffer and writes `bytes` and a NUL at its start.
func writeCommandLine(_ bytes: [UInt8], into memory: GuestMemory) throws(BootError) {
    try memory.bootZero(at: Layout.commandLine, length: Layout.commandLineCapacity)
    try memory.bootWrite(bytes + [0], at: Layout.commandLine)
}

/// The highest page-aligned address where `size` bytes of initrd fit in one RAM region, at or
/// above `floor` (the end of what the kernel needs), with its last byte at or below
/// `highestAddress`. That is kvmtool's and Firecracker's choice: as high as possible keeps it
/// out of the way of the kernel, which grows upwards from where it runs.
func placeInitrd(size: UInt64, above floor: GuestAddress, highestAddress: GuestAddress,
                 in memory: GuestMemory) throws(BootError) -> GuestAddress {
    let limit = highestAddress.adding(1) ?? highestAddress  // first byte past the allowed range
    for region in memory.regions.sorted(by: { $0.start > $1.start }) {
        let top = min(region.end, limit)
        guard let room = top.offset(from: region.start), room >= size else { continue }
        let start = GuestAddress(top.rawValue - size).alignedDown(to: Layout.pageSize)
        if start >= region.start, start >= floor { return start }
    }
    throw .initrdDoesNotFit(size: size, highestAddress: highestAddress, memorySize: memory.totalSize)
}
