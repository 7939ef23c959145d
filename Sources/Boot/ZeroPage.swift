import GuestMemory

/// `struct boot_params`, the zero page (zero-page.rst), built in host memory and then written
/// to `Layout.zeroPage` in one piece.
struct ZeroPage {
    /// Offsets inside `boot_params` (zero-page.rst; the setup header keeps its file offsets).
    enum Offset {
        static let acpiRSDPAddress = 0x070
        static let extRamdiskImage = 0x0C0
        static let extRamdiskSize = 0x0C4
        static let extCommandLinePointer = 0x0C8
        static let e820Entries = 0x1E8
        static let setupHeader = 0x1F1
        static let vidMode = 0x1FA
        static let bootFlag = 0x1FE
        static let headerMagic = 0x202
        static let typeOfLoader = 0x210
        static let code32Start = 0x214
        static let ramdiskImage = 0x218
        static let ramdiskSize = 0x21C
        static let commandLinePointer = 0x228
        static let kernelAlignment = 0x230
        static let commandLineSize = 0x238
        static let e820Table = 0x2D0
    }

    private(set) var page = StructureBuilder(size: Int(Layout.zeroPageSize))

    /// A zero page for a bzImage: zeroes, then the setup header copied from the image to the
    /// same offsets, exactly as boot.rst's 64-bit protocol says. The decompressor reads
    /// kernel_alignment and init_size from here, so this copy is not optional.
    init(header: SetupHeader, image: UnsafeRawBufferPointer) {
        page.set(bytes: image[Offset.setupHeader..<header.headerEnd], at: Offset.setupHeader)
        page.set(UInt32(Layout.kernelLoad.rawValue), at: Offset.code32Start)
    }

    /// A zero page for an ELF vmlinux, which has no setup header to copy: fill in the few
    /// fields the kernel looks at, as Firecracker does — the boot flag and "HdrS" so it
    /// believes there is a header, and a non-zero kernel_alignment.
    init(forELFWithCommandLineSize commandLineSize: Int) {
        page.set(SetupHeader.bootFlag, at: Offset.bootFlag)
        page.set(SetupHeader.magic, at: Offset.headerMagic)
        page.set(UInt32(0x100_0000), at: Offset.kernelAlignment)
        page.set(UInt32(commandLineSize), at: Offset.commandLineSize)
    }

    /// The fields every loader fills: loader identity, video mode, command line, initrd,
    /// RSDP, and the memory map.
    mutating func fill(commandLine: GuestAddress, initrd: (address: GuestAddress, size: UInt64)?,
                       rsdp: GuestAddress?, e820: [E820Entry]) {
        page.set(UInt8(0xFF), at: Offset.typeOfLoader)  // "undefined" boot loader
        page.set(UInt16(0xFFFF), at: Offset.vidMode)    // "normal" video mode
        setSplit(commandLine.rawValue, low: Offset.commandLinePointer, high: Offset.extCommandLinePointer)
        if let initrd {
            setSplit(initrd.address.rawValue, low: Offset.ramdiskImage, high: Offset.extRamdiskImage)
            setSplit(initrd.size, low: Offset.ramdiskSize, high: Offset.extRamdiskSize)
        }
        if let rsdp { page.set(rsdp.rawValue, at: Offset.acpiRSDPAddress) }
        precondition(e820.count <= E820Entry.maximumCount)
        page.set(UInt8(e820.count), at: Offset.e820Entries)
        for (index, entry) in e820.enumerated() {
            page.set(bytes: entry.zeroPageBytes, at: Offset.e820Table + index * 20)
        }
    }

    /// A 64-bit value split over a 32-bit setup-header field and its `ext_` high half.
    private mutating func setSplit(_ value: UInt64, low: Int, high: Int) {
        page.set(UInt32(truncatingIfNeeded: value), at: low)
        page.set(UInt32(truncatingIfNeeded: value >> 32), at: high)
    }

    var bytes: [UInt8] { page.bytes }
}
