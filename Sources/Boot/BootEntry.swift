import GuestMemory

/// The CPU state to enter a loaded kernel with.
///
/// The boot layer never touches KVM; it returns this value, and the KVM layer turns it into
/// `kvm_regs` and `kvm_sregs`. Segments are given field for field as `struct kvm_segment`
/// wants them, decoded from the very GDT descriptors written to guest memory, so the
/// hidden segment state and the GDT cannot disagree.
///
/// For `.long64` (bzImage, or ELF vmlinux without a PVH note), boot.rst's 64-bit protocol:
///
///     rip = instructionPointer, rsi = bootInfoAddress (zero page), rsp = rbp = stackPointer,
///     rflags = 0x2 (interrupts off), cr3 = pageTableRoot,
///     cr0 |= PE|PG, cr4 |= PAE, efer |= LME|LMA   (start from KVM_GET_SREGS, keep the rest)
///     cs = codeSegment (0x10: type 0xB, s 1, l 1, db 0, g 1), ds = es = fs = gs = ss = dataSegment (0x18)
///
/// For `.protected32` (PVH entry of an ELF vmlinux), Xen's pvh.pandoc:
///
///     eip = instructionPointer, ebx = bootInfoAddress (hvm_start_info), rflags = 0x2,
///     cr0 = PE (plus ET, which hardware forces), cr4 = 0, efer = 0, no paging (pageTableRoot nil),
///     cs = codeSegment (0x10: 32-bit, type 0xB, db 1), ds = es = fs = gs = ss = dataSegment (0x18),
///     tr = taskSegment (0x08: 32-bit busy TSS, base 0, limit 0x67)
public struct BootEntry: Equatable, Sendable {
    /// The processor mode the kernel expects at its first instruction.
    public enum Mode: Equatable, Sendable {
        /// 64-bit long mode with paging on (the x86-64 boot protocol).
        case long64
        /// 32-bit protected mode, paging off (the PVH entry).
        case protected32
    }

    /// A general-purpose register that carries the boot-info pointer.
    public enum Register: Equatable, Sendable {
        /// `%rsi`: the zero page for the 64-bit protocol.
        case rsi
        /// `%rbx` (`%ebx`): `hvm_start_info` for PVH.
        case rbx
    }

    /// Base and limit for `lgdt`/`lidt` (`kvm_sregs.gdt` / `.idt`, a `struct kvm_dtable`).
    public struct DescriptorTable: Equatable, Sendable {
        public var base: GuestAddress
        /// Size in bytes minus one, as the hardware wants it.
        public var limit: UInt16
    }

    /// The processor mode at entry.
    public var mode: Mode
    /// Where the kernel starts executing: `rip` (`eip` for PVH).
    public var instructionPointer: GuestAddress
    /// Which register must hold `bootInfoAddress`: `.rsi` for `.long64`, `.rbx` for `.protected32`.
    public var bootInfoRegister: Register
    /// The zero page (`.long64`) or `hvm_start_info` (`.protected32`).
    public var bootInfoAddress: GuestAddress
    /// Initial `rsp` (and `rbp`). boot.rst does not require a stack; a valid one costs nothing.
    public var stackPointer: GuestAddress
    /// `rflags` at entry: only the always-one bit 1, so interrupts are off.
    public var flags: UInt64 = 0x2
    /// The boot GDT in guest memory.
    public var gdt: DescriptorTable
    /// The boot IDT in guest memory: one zero descriptor (interrupts stay off anyway).
    public var idt: DescriptorTable
    /// For `cs`.
    public var codeSegment: Segment
    /// For `ds`, `es`, `fs`, `gs` and `ss`.
    public var dataSegment: Segment
    /// For `tr`, when the entry protocol asks for one (PVH); `nil` means keep what KVM has.
    public var taskSegment: Segment?
    /// `cr3`: the PML4 of the identity map for `.long64`; `nil` for `.protected32` (no paging).
    public var pageTableRoot: GuestAddress?

    /// `cs`'s selector: 0x10 (__BOOT_CS).
    public var codeSelector: UInt16 { codeSegment.selector }
    /// The selector for `ds`/`es`/`fs`/`gs`/`ss`: 0x18 (__BOOT_DS).
    public var dataSelector: UInt16 { dataSegment.selector }

    /// CR0 bits the entry needs set: PE|PG (0x8000_0001) for `.long64`, PE (0x1) for
    /// `.protected32`, where every other writable bit must be clear.
    public var cr0: UInt64 { mode == .long64 ? 0x8000_0001 : 0x1 }
    /// CR4 bits the entry needs set: PAE (0x20) for `.long64`; `.protected32` wants CR4 = 0.
    public var cr4: UInt64 { mode == .long64 ? 0x20 : 0 }
    /// EFER bits the entry needs set: LME|LMA (0x500) for `.long64`; `.protected32` wants 0.
    public var efer: UInt64 { mode == .long64 ? 0x500 : 0 }
}

/// A segment register's hidden state, as `struct kvm_segment` holds it.
///
/// Made by decoding an 8-byte GDT descriptor, so it always matches what is in the GDT.
public struct Segment: Equatable, Sendable {
    /// The selector: descriptor index × 8 (GDT, ring 0).
    public var selector: UInt16
    public var base: UInt64
    /// The limit in bytes, already scaled by the granularity bit (KVM wants bytes, not pages).
    public var limit: UInt32
    /// The 4-bit type: 0xB execute/read accessed code (or busy TSS), 0x3 read/write accessed data.
    public var type: UInt8
    /// The P bit.
    public var present: Bool
    /// Descriptor privilege level (0).
    public var dpl: UInt8
    /// D/B: 32-bit default operand size. Clear for 64-bit code.
    public var db: Bool
    /// S: code/data (true) or system segment such as a TSS (false).
    public var s: Bool
    /// L: 64-bit code.
    public var l: Bool
    /// G: limit counts 4 KiB pages.
    public var g: Bool
    /// AVL: available to software.
    public var avl: Bool

    /// Decodes GDT descriptor `descriptor` found at index `selector / 8`.
    public init(selector: UInt16, descriptor: UInt64) {
        self.selector = selector
        base = (descriptor >> 16) & 0xFF_FFFF | ((descriptor >> 56) & 0xFF) << 24
        let rawLimit = UInt32(truncatingIfNeeded: descriptor & 0xFFFF | ((descriptor >> 48) & 0xF) << 16)
        let access = UInt8(truncatingIfNeeded: descriptor >> 40)
        let flags = UInt8(truncatingIfNeeded: descriptor >> 52) & 0xF
        type = access & 0xF
        s = access & 0x10 != 0
        dpl = (access >> 5) & 0x3
        present = access & 0x80 != 0
        avl = flags & 0x1 != 0
        l = flags & 0x2 != 0
        db = flags & 0x4 != 0
        g = flags & 0x8 != 0
        limit = g ? rawLimit << 12 | 0xFFF : rawLimit
    }
}

/// The boot GDT, the IDT and the identity page tables.
enum CPUTables {
    /// 64-bit code, flat: the kernel's __BOOT_CS for the 64-bit protocol.
    static let code64: UInt64 = 0x00AF_9B00_0000_FFFF
    /// 32-bit code, flat: for PVH.
    static let code32: UInt64 = 0x00CF_9B00_0000_FFFF
    /// Read/write data, flat 4 GiB: __BOOT_DS for both.
    static let data: UInt64 = 0x00CF_9300_0000_FFFF
    /// A 32-bit busy TSS at base 0 with limit 0x67, which PVH requires in `tr`.
    static let tss32: UInt64 = 0x0000_8B00_0000_0067

    static let codeSelector: UInt16 = 0x10
    static let dataSelector: UInt16 = 0x18
    /// PVH's TSS sits in the slot boot.rst leaves unused. (In long mode a TSS descriptor takes
    /// 16 bytes and would run into the IDT at 0x520, so the 64-bit GDT has none: KVM's default
    /// TR works, as Firecracker's 64-bit boots show.)
    static let tssSelector: UInt16 = 0x08

    /// The four descriptors for `mode`.
    static func gdt(for mode: BootEntry.Mode) -> [UInt64] {
        switch mode {
        case .long64: return [0, 0, code64, data]
        case .protected32: return [0, tss32, code32, data]
        }
    }

    /// Writes the GDT, the IDT and (for long mode) the page tables, and returns the entry state
    /// that goes with them.
    static func install(mode: BootEntry.Mode, entry: GuestAddress, bootInfo: GuestAddress,
                        into memory: GuestMemory) throws(BootError) -> BootEntry {
        let descriptors = gdt(for: mode)
        var table = StructureBuilder(size: descriptors.count * 8)
        for (index, descriptor) in descriptors.enumerated() { table.set(descriptor, at: index * 8) }
        try memory.bootWrite(table.bytes, at: Layout.gdt)
        try memory.bootZero(at: Layout.idt, length: Layout.idtSize)
        if mode == .long64 { try writeIdentityMap(into: memory) }

        // Journey 3: the first instruction. The kernel is in place; now we decide what the CPU
        // looks like when it gets there. A bzImage wants to wake up already in 64-bit mode —
        // boot.rst's "64-bit Boot Protocol" — so we hand it a flat GDT with __BOOT_CS at 0x10
        // and __BOOT_DS at 0x18, paging on with an identity map it will throw away within
        // microseconds, interrupts off, and the zero page in %rsi. A PVH kernel is more modest:
        // 32-bit protected mode, no paging, a token TSS, and hvm_start_info in %ebx. Either way
        // we only describe the state; the KVM layer pokes it into the registers, and whatever
        // we forgot here the kernel will discover with a triple fault.
        let code = Segment(selector: codeSelector, descriptor: descriptors[Int(codeSelector / 8)])
        let data = Segment(selector: dataSelector, descriptor: descriptors[Int(dataSelector / 8)])
        let gdtLimit = UInt16(descriptors.count * 8 - 1)
        switch mode {
        case .long64:
            return BootEntry(
                mode: .long64, instructionPointer: entry, bootInfoRegister: .rsi, bootInfoAddress: bootInfo,
                stackPointer: Layout.bootStack,
                gdt: .init(base: Layout.gdt, limit: gdtLimit),
                idt: .init(base: Layout.idt, limit: UInt16(Layout.idtSize - 1)),
                codeSegment: code, dataSegment: data, taskSegment: nil,
                pageTableRoot: Layout.pml4)
        case .protected32:
            return BootEntry(
                mode: .protected32, instructionPointer: entry, bootInfoRegister: .rbx, bootInfoAddress: bootInfo,
                stackPointer: Layout.bootStack,
                gdt: .init(base: Layout.gdt, limit: gdtLimit),
                idt: .init(base: Layout.idt, limit: UInt16(Layout.idtSize - 1)),
                codeSegment: code, dataSegment: data,
                taskSegment: Segment(selector: tssSelector, descriptor: descriptors[Int(tssSelector / 8)]),
                pageTableRoot: nil)
        }
    }

    /// Identity-maps 0–4 GiB with 2 MiB pages: PML4[0] → PDPT, PDPT[0..3] → four page
    /// directories, PD entries present|writable|huge (0x83).
    static func writeIdentityMap(into memory: GuestMemory) throws(BootError) {
        let present: UInt64 = 0x1, writable: UInt64 = 0x2, huge: UInt64 = 0x80
        let page = Int(Layout.pageSize)

        var pml4 = StructureBuilder(size: page)
        pml4.set(Layout.pdpt.rawValue | present | writable, at: 0)
        try memory.bootWrite(pml4.bytes, at: Layout.pml4)

        var pdpt = StructureBuilder(size: page)
        for index in 0..<Layout.pageDirectoryCount {
            let directory = Layout.pageDirectories + index * Layout.pageSize
            pdpt.set(directory.rawValue | present | writable, at: Int(index) * 8)
        }
        try memory.bootWrite(pdpt.bytes, at: Layout.pdpt)

        for index in 0..<Layout.pageDirectoryCount {
            var directory = StructureBuilder(size: page)
            for entry in 0..<UInt64(512) {
                let physical = (index * 512 + entry) << 21
                directory.set(physical | present | writable | huge, at: Int(entry) * 8)
            }
            try memory.bootWrite(directory.bytes, at: Layout.pageDirectories + index * Layout.pageSize)
        }
    }
}

extension GuestMemory {
    /// `write(_:at:)` with the error the boot layer throws.
    func bootWrite(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws(BootError) {
        do { try write(bytes, at: address) } catch { throw .memory(error) }
    }

    /// `write(bytes:at:)` with the error the boot layer throws: one copy, no staging array.
    func bootWrite(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws(BootError) {
        do { try write(bytes: bytes, at: address) } catch { throw .memory(error) }
    }

    /// `zero(at:length:)` with the error the boot layer throws.
    func bootZero(at address: GuestAddress, length: UInt64) throws(BootError) {
        do { try zero(at: address, length: length) } catch { throw .memory(error) }
    }
}
