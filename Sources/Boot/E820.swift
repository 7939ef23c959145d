import GuestMemory

/// The kind of an e820 range (the BIOS "INT 15h, AX=E820h" memory map the kernel trusts).
public enum E820Type: UInt32, Sendable {
    /// Usable RAM.
    case ram = 1
    /// Reserved: firmware tables, holes, anything the kernel must leave alone.
    case reserved = 2
    /// ACPI tables the kernel may reclaim once it has read them.
    case acpiReclaimable = 3
    /// ACPI non-volatile storage.
    case acpiNVS = 4
    /// RAM with errors.
    case unusable = 5
}

/// One range of the guest's physical memory map, as the zero page's `e820_table` and PVH's
/// `hvm_memmap_table_entry` carry it.
public struct E820Entry: Equatable, Sendable {
    public var address: GuestAddress
    public var size: UInt64
    public var type: E820Type

    public init(address: GuestAddress, size: UInt64, type: E820Type) {
        self.address = address
        self.size = size
        self.type = type
    }

    /// The first address past the range.
    public var end: GuestAddress { address + size }

    /// The most entries the zero page's `e820_table` holds (E820_MAX_ENTRIES_ZEROPAGE).
    public static let maximumCount = 128

    /// The memory map for `memory`: each RAM region, minus the firmware hole
    /// [0x9FC00, 0x100000), which is reported as reserved. For the usual single region from 0:
    ///
    ///     [0, 0x9FC00)          RAM
    ///     [0x9FC00, 0x100000)   reserved (MP table, ACPI tables, RSDP at 0xE0000)
    ///     [0x100000, end)       RAM
    ///
    /// and each further region (say, memory above the 32-bit MMIO hole) as one more RAM entry.
    public static func map(for memory: GuestMemory) throws(BootError) -> [E820Entry] {
        let holeStart = Layout.firmwareHoleStart, holeEnd = Layout.firmwareHoleEnd
        var entries = [E820Entry(address: holeStart, size: holeEnd.rawValue - holeStart.rawValue, type: .reserved)]
        for region in memory.regions {
            if region.start < holeStart {
                let end = min(region.end, holeStart)
                entries.append(E820Entry(address: region.start, size: end.rawValue - region.start.rawValue, type: .ram))
            }
            if region.end > holeEnd {
                let start = max(region.start, holeEnd)
                entries.append(E820Entry(address: start, size: region.end.rawValue - start.rawValue, type: .ram))
            }
        }
        guard entries.count <= maximumCount else { throw .tooManyMemoryRegions(count: entries.count) }
        return entries.sorted { $0.address < $1.address }
    }

    /// The 20-byte packed `struct boot_e820_entry { u64 addr; u64 size; u32 type; }`.
    var zeroPageBytes: [UInt8] {
        var entry = StructureBuilder(size: 20)
        entry.set(address.rawValue, at: 0)
        entry.set(size, at: 8)
        entry.set(type.rawValue, at: 16)
        return entry.bytes
    }

    /// The 24-byte `struct hvm_memmap_table_entry { u64 addr; u64 size; u32 type; u32 reserved; }`.
    var pvhBytes: [UInt8] { zeroPageBytes + [0, 0, 0, 0] }
}
