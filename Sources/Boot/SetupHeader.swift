import GuestMemory

/// The bzImage setup header (boot.rst "The Real-Mode Kernel Header"), parsed and checked.
///
/// Offsets are file offsets. Everything here has been checked against the file: the header
/// lies inside it, the protected-mode kernel after the setup is there in full, and the kernel
/// speaks boot protocol 2.12 or later with a 64-bit entry point.
public struct SetupHeader: Equatable, Sendable {
    /// Offsets of the fields we read, in the file and in `boot_params` alike.
    enum Offset {
        static let setupSectors: UInt64 = 0x1F1
        static let systemSize: UInt64 = 0x1F4
        static let bootFlag: UInt64 = 0x1FE
        static let jump: UInt64 = 0x200
        static let magic: UInt64 = 0x202
        static let version: UInt64 = 0x206
        static let loadFlags: UInt64 = 0x211
        static let initrdAddressMax: UInt64 = 0x22C
        static let kernelAlignment: UInt64 = 0x230
        static let relocatable: UInt64 = 0x234
        static let xloadFlags: UInt64 = 0x236
        static let commandLineSize: UInt64 = 0x238
        static let payloadOffset: UInt64 = 0x248
        static let payloadLength: UInt64 = 0x24C
        static let preferredAddress: UInt64 = 0x258
        static let initSize: UInt64 = 0x260
    }

    /// "HdrS", little-endian.
    static let magic: UInt32 = 0x5372_6448
    static let bootFlag: UInt16 = 0xAA55
    /// 2.12: the first version with xloadflags, so the first that can promise a 64-bit entry.
    public static let minimumVersion: UInt16 = 0x020C

    /// setup_sects as found; 0 means 4.
    public let setupSectorsField: UInt8
    /// Boot protocol version, (major << 8) | minor.
    public let version: UInt16
    /// First file offset past the setup header: 0x202 + the byte at 0x201.
    public let headerEnd: Int
    /// loadflags: bit 0 LOADED_HIGH, bit 5 QUIET_FLAG, bit 7 CAN_USE_HEAP.
    public let loadFlags: UInt8
    /// syssize: the protected-mode kernel's size in 16-byte paragraphs.
    public let systemSize: UInt32
    /// Highest address the initrd may occupy (its last byte).
    public let initrdAddressMax: GuestAddress
    /// The alignment a relocatable kernel wants for its runtime address.
    public let kernelAlignment: UInt32
    /// Whether the kernel relocates itself (relocatable_kernel).
    public let relocatable: Bool
    /// xloadflags: bit 0 XLF_KERNEL_64, bit 1 XLF_CAN_BE_LOADED_ABOVE_4G.
    public let xloadFlags: UInt16
    /// The longest command line the kernel takes, without its NUL.
    public let commandLineSize: UInt32
    /// pref_address: LOAD_PHYSICAL_ADDR, where the kernel would like to run.
    public let preferredAddress: UInt64
    /// init_size: bytes the kernel needs from its runtime address until it has parsed the memory map.
    public let initSize: UInt32
    /// Bytes of protected-mode kernel in the file: everything after the setup sectors.
    public let kernelSize: Int
    /// payload_offset and payload_length: the compressed kernel inside the protected-mode part
    /// (offset from its start), as the decompressor finds it.
    public let payloadOffset: UInt32
    public let payloadLength: UInt32

    /// Number of 512-byte setup sectors after the boot sector (setup_sects, with 0 read as 4).
    public var setupSectors: Int { setupSectorsField == 0 ? 4 : Int(setupSectorsField) }
    /// File offset of the protected-mode kernel: after the boot sector and the setup sectors.
    public var protectedModeOffset: Int { (setupSectors + 1) * 512 }

    /// Reads and checks the header of `image`, which may be anything at all.
    public init(image: [UInt8]) throws(BootError) {
        let result: Result<SetupHeader, BootError> = image.withUnsafeBytes { bytes in
            do throws(BootError) { return .success(try SetupHeader(image: bytes)) } catch { return .failure(error) }
        }
        self = try result.get()
    }

    /// Reads and checks the header of `image`, which may be anything at all.
    public init(image: UnsafeRawBufferPointer) throws(BootError) {
        let file = ImageBytes(image)
        // Which kind of not-a-bzImage is it? Tell a damaged kernel from a random file.
        let bootFlag = file.u16(Offset.bootFlag)
        guard file.u32(Offset.magic) == Self.magic else {
            if bootFlag == Self.bootFlag {
                // A boot sector cut off before the magic is a truncated file, not an old kernel.
                if image.count < Int(Offset.magic) + 4 {
                    throw .truncatedSetupHeader(headerEnd: Int(Offset.magic) + 4, fileSize: image.count)
                }
                throw .noHdrSMagic
            }
            throw .unrecognizedImage(size: image.count)
        }
        guard let bootFlag, bootFlag == Self.bootFlag else { throw .badBootFlag(bootFlag ?? 0) }

        // The jump instruction at 0x200 (EB xx) jumps over the header: its end is 0x202 + xx.
        // The magic at 0x202..0x205 is present, so the byte at 0x201 is too.
        let headerEnd = 0x202 + Int(image[0x201])
        guard headerEnd <= image.count else {
            throw .truncatedSetupHeader(headerEnd: headerEnd, fileSize: image.count)
        }
        guard headerEnd >= Int(Offset.version) + 2, let version = file.u16(Offset.version) else {
            throw .setupHeaderTooShort(headerEnd: headerEnd)
        }
        guard version >= Self.minimumVersion else { throw .protocolTooOld(version: version) }
        // A 2.10+ header reaches at least to the end of init_size; headerEnd <= image.count, so
        // from here on every read below succeeds. The `?? 0`s only keep the compiler honest.
        guard headerEnd >= Int(Offset.initSize) + 4 else { throw .setupHeaderTooShort(headerEnd: headerEnd) }
        self.version = version
        self.headerEnd = headerEnd
        setupSectorsField = file.u8(Offset.setupSectors) ?? 0
        loadFlags = file.u8(Offset.loadFlags) ?? 0
        systemSize = file.u32(Offset.systemSize) ?? 0
        initrdAddressMax = GuestAddress(UInt64(file.u32(Offset.initrdAddressMax) ?? 0))
        kernelAlignment = file.u32(Offset.kernelAlignment) ?? 0
        relocatable = (file.u8(Offset.relocatable) ?? 0) != 0
        xloadFlags = file.u16(Offset.xloadFlags) ?? 0
        commandLineSize = file.u32(Offset.commandLineSize) ?? 0
        preferredAddress = file.u64(Offset.preferredAddress) ?? 0
        initSize = file.u32(Offset.initSize) ?? 0
        payloadOffset = file.u32(Offset.payloadOffset) ?? 0
        payloadLength = file.u32(Offset.payloadLength) ?? 0

        guard loadFlags & 0x01 != 0 else { throw .notLoadedHigh }
        guard xloadFlags & 0x01 != 0 else { throw .no64BitEntry }

        // The setup sectors and then the protected-mode kernel, all of it.
        let setupSectors = setupSectorsField == 0 ? 4 : Int(setupSectorsField)
        let protectedModeOffset = (setupSectors + 1) * 512
        guard protectedModeOffset < image.count else {
            throw .truncatedSetup(setupSectors: setupSectors, fileSize: image.count)
        }
        kernelSize = image.count - protectedModeOffset
        let promised = UInt64(systemSize) * 16
        guard UInt64(kernelSize) >= promised else { throw .truncatedKernel(expected: promised, actual: kernelSize) }
        guard UInt64(kernelSize) > Layout.kernel64EntryOffset else { throw .kernelTooSmall(size: kernelSize) }

        if relocatable {
            guard kernelAlignment.nonzeroBitCount == 1 else { throw .badKernelAlignment(kernelAlignment) }
        }
    }

    /// The compressed kernel of `image` (the file this header was read from): payload_length
    /// bytes from payload_offset into the protected-mode part, or nil if they are not all there.
    public func payload(in image: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        let start = UInt64(protectedModeOffset) + UInt64(payloadOffset)
        guard payloadLength > 0, let bytes = ImageBytes(image).slice(offset: start, length: UInt64(payloadLength)) else {
            return nil
        }
        return bytes
    }

    /// Where the kernel will run: a relocatable kernel's `startup_64` (head_64.S) aligns its load
    /// address up to kernel_alignment and never goes below LOAD_PHYSICAL_ADDR (pref_address);
    /// a fixed one runs at LOAD_PHYSICAL_ADDR. A header without pref_address means 16 MiB.
    public var runtimeStart: GuestAddress {
        let loadPhysical = preferredAddress != 0 ? GuestAddress(preferredAddress) : Layout.defaultKernelRuntimeAddress
        guard relocatable else { return loadPhysical }
        // kernel_alignment is a power of two and at most 2^31, so this cannot overflow.
        let aligned = Layout.kernelLoad.alignedUp(to: UInt64(kernelAlignment)) ?? Layout.kernelLoad
        return max(aligned, loadPhysical)
    }
}
