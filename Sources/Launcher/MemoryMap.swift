import GuestMemory

/// Where things live in guest-physical memory, above what the Boot layer places in the first
/// megabyte.
///
/// RAM starts at 0 and runs up to 3 GiB at most; the 1 GiB below 4 GiB is the hole where
/// device windows (virtio-mmio, then the IOAPIC, local APIC and KVM's TSS pages) live, and
/// whatever RAM remains continues at 4 GiB.
public enum MemoryMap {
    public static let lowMemoryLimit: UInt64 = 0xC000_0000
    public static let highMemoryStart = GuestAddress(0x1_0000_0000)

    /// Virtio-mmio device windows: one 4 KiB page each, from here up.
    public static let virtioMMIOBase = GuestAddress(0xD000_0000)
    public static let virtioMMIOWindowSize: UInt64 = 0x1000

    /// KVM's three TSS pages (with its identity-map page just below), out of every other range.
    public static let kvmTSS = GuestAddress(0xFFFB_D000)

    /// The RAM regions for `bytes` of guest memory.
    public static func ramRegions(bytes: UInt64) -> [(start: GuestAddress, size: UInt64)] {
        let low = min(bytes, lowMemoryLimit)
        var regions: [(start: GuestAddress, size: UInt64)] = [(GuestAddress(0), low)]
        if bytes > low { regions.append((highMemoryStart, bytes - low)) }
        return regions
    }
}
