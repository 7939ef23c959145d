import GuestMemory

/// Xen's `struct hvm_start_info` and the tables it points to (xen/include/public/arch-x86/hvm/
/// start_info.h, docs/misc/pvh.pandoc), the boot-info block of the PVH entry.
///
///     0x00 u32 magic = 0x336EC578     0x04 u32 version = 1
///     0x08 u32 flags                  0x0C u32 nr_modules
///     0x10 u64 modlist_paddr          0x18 u64 cmdline_paddr
///     0x20 u64 rsdp_paddr             0x28 u64 memmap_paddr
///     0x30 u32 memmap_entries         0x34 u32 reserved          (56 bytes)
///
/// followed, at `Layout.pvhModuleList`, by `hvm_modlist_entry {u64 paddr, size, cmdline_paddr,
/// reserved}` for the initrd, and at `Layout.pvhMemoryMap` by `hvm_memmap_table_entry {u64 addr,
/// size; u32 type, reserved}` for each e820 range.
enum PVHStartInfo {
    static let magic: UInt32 = 0x336E_C578
    static let size = 56
    static let moduleEntrySize = 32
    static let memoryMapEntrySize = 24

    /// Writes the start info, module list and memory map. The whole block below the zero page
    /// is cleared first, so nothing stale from an earlier boot survives.
    static func write(commandLine: GuestAddress, initrd: (address: GuestAddress, size: UInt64)?,
                      rsdp: GuestAddress?, e820: [E820Entry], into memory: GuestMemory) throws(BootError) {
        try memory.bootZero(at: Layout.pvhStartInfo,
                            length: Layout.zeroPage.rawValue - Layout.pvhStartInfo.rawValue)
        var info = StructureBuilder(size: size)
        info.set(magic, at: 0x00)
        info.set(UInt32(1), at: 0x04)
        if let initrd {
            var module = StructureBuilder(size: moduleEntrySize)
            module.set(initrd.address.rawValue, at: 0)
            module.set(initrd.size, at: 8)
            try memory.bootWrite(module.bytes, at: Layout.pvhModuleList)
            info.set(UInt32(1), at: 0x0C)
            info.set(Layout.pvhModuleList.rawValue, at: 0x10)
        }
        info.set(commandLine.rawValue, at: 0x18)
        info.set(rsdp?.rawValue ?? 0, at: 0x20)
        info.set(Layout.pvhMemoryMap.rawValue, at: 0x28)
        info.set(UInt32(e820.count), at: 0x30)
        try memory.bootWrite(e820.flatMap(\.pvhBytes), at: Layout.pvhMemoryMap)
        try memory.bootWrite(info.bytes, at: Layout.pvhStartInfo)
    }
}
