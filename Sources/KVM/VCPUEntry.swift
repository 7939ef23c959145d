import Boot
import CKVM
import HostSystem

extension VCPU {
    /// Puts the vCPU exactly where the Boot layer said the kernel wants to start: the mode,
    /// the segments decoded from the GDT it wrote, the page tables, and the boot-info pointer.
    ///
    /// Special registers are read, modified and written back, so state KVM initialised
    /// (the APIC base, the descriptor caches of unused registers) stays valid.
    public func enter(_ entry: BootEntry) throws(SystemCallError) {
        var sregs = try specialRegisters()
        let code = kvmSegment(entry.codeSegment)
        let data = kvmSegment(entry.dataSegment)
        sregs.cs = code
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        if let task = entry.taskSegment { sregs.tr = kvmSegment(task) }
        sregs.gdt = kvm_dtable(base: entry.gdt.base.rawValue, limit: entry.gdt.limit, padding: (0, 0, 0))
        sregs.idt = kvm_dtable(base: entry.idt.base.rawValue, limit: entry.idt.limit, padding: (0, 0, 0))
        switch entry.mode {
        case .long64:
            sregs.cr0 |= entry.cr0
            sregs.cr4 |= entry.cr4
            sregs.efer |= entry.efer
            sregs.cr3 = entry.pageTableRoot?.rawValue ?? 0
        case .protected32:
            // PVH: protection on, paging and everything else off (ET is forced on by hardware).
            sregs.cr0 = entry.cr0 | 0x10
            sregs.cr4 = entry.cr4
            sregs.efer = entry.efer
            sregs.cr3 = 0
        }
        try setSpecialRegisters(sregs)

        var regs = kvm_regs()
        regs.rip = entry.instructionPointer.rawValue
        regs.rflags = entry.flags
        regs.rsp = entry.stackPointer.rawValue
        regs.rbp = entry.stackPointer.rawValue
        switch entry.bootInfoRegister {
        case .rsi: regs.rsi = entry.bootInfoAddress.rawValue
        case .rbx: regs.rbx = entry.bootInfoAddress.rawValue
        }
        try setRegisters(regs)
    }

    private func kvmSegment(_ s: Segment) -> kvm_segment {
        kvm_segment(base: s.base, limit: s.limit, selector: s.selector, type: s.type,
                    present: s.present ? 1 : 0, dpl: s.dpl, db: s.db ? 1 : 0, s: s.s ? 1 : 0,
                    l: s.l ? 1 : 0, g: s.g ? 1 : 0, avl: s.avl ? 1 : 0, unusable: 0, padding: 0)
    }
}
