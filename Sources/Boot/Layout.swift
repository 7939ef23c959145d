import GuestMemory

/// Where the boot layer puts things in guest-physical memory.
///
/// Everything the kernel needs before it can look after itself lives in the first megabyte:
///
/// | address            | what                                                        |
/// |--------------------|-------------------------------------------------------------|
/// | 0x0500             | boot GDT, 4 descriptors (32 bytes)                          |
/// | 0x0520             | boot IDT, one zero descriptor (8 bytes)                     |
/// | 0x6000             | PVH `hvm_start_info`, then its module list and memory map  |
/// | 0x7000             | zero page (`struct boot_params`, 4 KiB)                     |
/// | 0x8FF0             | initial stack pointer (the stack grows down towards 0x8000) |
/// | 0x9000             | PML4                                                        |
/// | 0xA000             | PDPT                                                        |
/// | 0xB000–0xEFFF      | four page directories: identity map of 0–4 GiB, 2 MiB pages |
/// | 0x20000            | kernel command line (4 KiB reserved)                        |
/// | 0x9FC00–0xFFFFF    | firmware hole: MP/ACPI tables (RSDP at 0xE0000), reserved   |
/// | 0x100000           | the kernel (protected-mode part of a bzImage)               |
///
/// The layout follows Firecracker and cloud-hypervisor (`layout.rs`, `regs.rs`), except that
/// the GDT puts the code segment at selector 0x10 and data at 0x18 as boot.rst asks, and the
/// identity map covers 4 GiB rather than 1 GiB: four page directories cost 16 KiB and let a
/// tiny test guest touch MMIO windows below 4 GiB without building page tables of its own.
public enum Layout {
    /// The boot GDT: `[0]` null, `[1]` a 32-bit TSS (PVH) or null (64-bit), `[2]` code, `[3]` data.
    public static let gdt = GuestAddress(0x500)
    /// Number of 8-byte descriptors in the boot GDT.
    public static let gdtEntries: UInt64 = 4
    /// The boot IDT: a single zero descriptor. Interrupts stay off until the kernel loads its own.
    public static let idt = GuestAddress(0x520)
    /// The IDT's size in bytes (one 8-byte descriptor).
    public static let idtSize: UInt64 = 8

    /// PVH `hvm_start_info` (56 bytes), the boot-info block for the 32-bit PVH entry.
    public static let pvhStartInfo = GuestAddress(0x6000)
    /// PVH module list (`hvm_modlist_entry`, 32 bytes each; the initrd is module 0).
    public static let pvhModuleList = GuestAddress(0x6040)
    /// PVH memory map (`hvm_memmap_table_entry`, 24 bytes each, up to 128 of them: ends at 0x6C80).
    public static let pvhMemoryMap = GuestAddress(0x6080)

    /// The zero page: `struct boot_params` for the 64-bit boot protocol.
    public static let zeroPage = GuestAddress(0x7000)
    /// Size of the zero page.
    public static let zeroPageSize: UInt64 = 0x1000

    /// Initial stack pointer, 16 bytes below the page tables.
    public static let bootStack = GuestAddress(0x8FF0)

    /// Page-map level 4: one entry, pointing at `pdpt`.
    public static let pml4 = GuestAddress(0x9000)
    /// Page-directory-pointer table: four entries, pointing at the four page directories.
    public static let pdpt = GuestAddress(0xA000)
    /// The first of four page directories (0xB000, 0xC000, 0xD000, 0xE000), each mapping 1 GiB.
    public static let pageDirectories = GuestAddress(0xB000)
    /// Number of page directories; each maps 512 × 2 MiB = 1 GiB, so 4 GiB in all.
    public static let pageDirectoryCount: UInt64 = 4

    /// The kernel command line, NUL-terminated.
    public static let commandLine = GuestAddress(0x20000)
    /// Bytes reserved for the command line, including its NUL.
    public static let commandLineCapacity: UInt64 = 0x1000

    /// Start of the firmware hole: the end of conventional RAM as the guest sees it.
    public static let firmwareHoleStart = GuestAddress(0x9FC00)
    /// End of the firmware hole (exclusive); also where the kernel is loaded.
    public static let firmwareHoleEnd = GuestAddress(0x100000)

    /// Where the protected-mode kernel goes: 1 MiB, `code32_start` for a bzImage.
    public static let kernelLoad = GuestAddress(0x100000)
    /// The 64-bit entry point is this far into the protected-mode kernel (boot.rst).
    public static let kernel64EntryOffset: UInt64 = 0x200

    /// `LOAD_PHYSICAL_ADDR` of a default x86-64 kernel: a relocatable bzImage decompresses
    /// itself at or above this address.
    public static let defaultKernelRuntimeAddress = GuestAddress(0x100_0000)

    /// The highest initrd byte we allow when the image does not say (ELF vmlinux). It is the
    /// `initrd_addr_max` every modern x86-64 bzImage advertises.
    public static let defaultInitrdAddressMax = GuestAddress(0x7FFF_FFFF)

    /// Initrd placement granularity.
    public static let pageSize: UInt64 = 0x1000

    /// What the boot layer writes to below 1 MiB, which a loaded ELF segment must not cover.
    /// (Segments are simply required to start at or above `kernelLoad`.)
    static let lowMemoryEnd = kernelLoad
}
