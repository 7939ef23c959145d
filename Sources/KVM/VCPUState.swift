import CKVM
import Snapshot
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// Everything KVM holds about one vCPU, read from a paused VM and written into a new one: the
/// registers, the FPU and vector state, the local APIC, the MSRs (kvmclock's and the TSC's
/// among them), pending exceptions and interrupts, and whether it was running or halted.
public struct VCPUState: Sendable {
    public var cpuid: [kvm_cpuid_entry2]
    public var registers: kvm_regs
    public var specialRegisters: kvm_sregs
    public var xsave: kvm_xsave
    public var xcrs: kvm_xcrs
    public var debugRegisters: kvm_debugregs
    public var lapic: kvm_lapic_state
    public var events: kvm_vcpu_events
    public var mpState: kvm_mp_state
    public var msrs: [MSR]

    public struct MSR: Sendable, Equatable {
        public var index: UInt32
        public var value: UInt64
        public init(index: UInt32, value: UInt64) { self.index = index; self.value = value }
    }

    /// More than any CPU has (KVM's index list is a few hundred long).
    static let maximumMSRs = 4096
    static let maximumCPUIDEntries = 1024
}

extension VCPU {
    /// Reads this vCPU's state. It must be out of KVM_RUN (the machine paused) and, if its last
    /// exit was a port or MMIO read, re-entered once with `immediate_exit` set so that KVM
    /// finished the instruction (the vCPU loop does that before it parks).
    ///
    /// `cpuid` is the table the vCPU was given (KVM_GET_CPUID2 may answer with the host's
    /// view rather than the guest's, as PVM does).
    public func saveState(cpuid: CPUIDTable, msrIndices: [UInt32]) throws(SystemCallError) -> VCPUState {
        var xsave = kvm_xsave(), xcrs = kvm_xcrs(), debug = kvm_debugregs(), lapic = kvm_lapic_state()
        var events = kvm_vcpu_events(), mp = kvm_mp_state()
        _ = try check("KVM_GET_XSAVE", lg_ioctl_pointer(fd, LG_KVM_GET_XSAVE, &xsave))
        _ = try check("KVM_GET_XCRS", lg_ioctl_pointer(fd, LG_KVM_GET_XCRS, &xcrs))
        _ = try check("KVM_GET_DEBUGREGS", lg_ioctl_pointer(fd, LG_KVM_GET_DEBUGREGS, &debug))
        _ = try check("KVM_GET_LAPIC", lg_ioctl_pointer(fd, LG_KVM_GET_LAPIC, &lapic))
        _ = try check("KVM_GET_VCPU_EVENTS", lg_ioctl_pointer(fd, LG_KVM_GET_VCPU_EVENTS, &events))
        _ = try check("KVM_GET_MP_STATE", lg_ioctl_pointer(fd, LG_KVM_GET_MP_STATE, &mp))
        return VCPUState(cpuid: cpuid.entries, registers: try registers(), specialRegisters: try specialRegisters(),
                         xsave: xsave, xcrs: xcrs, debugRegisters: debug, lapic: lapic, events: events,
                         mpState: mp, msrs: try readMSRs(msrIndices))
    }

    /// Writes `state` into this (new, never run) vCPU, in the order KVM needs: CPUID first
    /// (it decides which MSRs and XSAVE components exist), the LAPIC before the MSRs (the
    /// TSC deadline lives in the LAPIC timer), pending events last.
    public func restoreState(_ state: VCPUState) throws(SystemCallError) {
        try setCPUID(CPUIDTable(entries: state.cpuid))
        var state = state
        _ = try check("KVM_SET_MP_STATE", lg_ioctl_pointer(fd, LG_KVM_SET_MP_STATE, &state.mpState))
        try setRegisters(state.registers)
        try setSpecialRegisters(state.specialRegisters)
        _ = try check("KVM_SET_XSAVE", lg_ioctl_pointer(fd, LG_KVM_SET_XSAVE, &state.xsave))
        _ = try check("KVM_SET_XCRS", lg_ioctl_pointer(fd, LG_KVM_SET_XCRS, &state.xcrs))
        _ = try check("KVM_SET_DEBUGREGS", lg_ioctl_pointer(fd, LG_KVM_SET_DEBUGREGS, &state.debugRegisters))
        _ = try check("KVM_SET_LAPIC", lg_ioctl_pointer(fd, LG_KVM_SET_LAPIC, &state.lapic))
        try setMSRs(state.msrs.map { ($0.index, $0.value) })
        _ = try check("KVM_SET_VCPU_EVENTS", lg_ioctl_pointer(fd, LG_KVM_SET_VCPU_EVENTS, &state.events))
    }

    /// KVM_GET_MSRS for `indices`. KVM stops at the first MSR it cannot read on this vCPU and
    /// says how many it read; that one is left out and the rest read again.
    func readMSRs(_ indices: [UInt32]) throws(SystemCallError) -> [VCPUState.MSR] {
        var result: [VCPUState.MSR] = []
        var pending = indices[...]
        let stride = MemoryLayout<kvm_msr_entry>.stride
        while !pending.isEmpty {
            let batch = Array(pending)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8 + batch.count * stride, alignment: 8)
            defer { buffer.deallocate() }
            // Safe: the header and entries are written inside the allocation just made.
            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: 8 + batch.count * stride)
            buffer.storeBytes(of: UInt32(batch.count), as: UInt32.self)
            for (i, index) in batch.enumerated() {
                var entry = kvm_msr_entry()
                entry.index = index
                (buffer + 8 + i * stride).storeBytes(of: entry, as: kvm_msr_entry.self)
            }
            let read = Int(try check("KVM_GET_MSRS", lg_ioctl_pointer(fd, LG_KVM_GET_MSRS, buffer)))
            for i in 0..<min(read, batch.count) {
                let entry = (buffer + 8 + i * stride).load(as: kvm_msr_entry.self)
                result.append(VCPUState.MSR(index: entry.index, value: entry.data))
            }
            pending = pending.dropFirst(read + 1)
        }
        return result
    }
}

extension VCPUState {
    public func encode(to writer: inout StateWriter) {
        writer.u32(UInt32(cpuid.count))
        for entry in cpuid { writer.raw(entry) }
        writer.raw(registers)
        writer.raw(specialRegisters)
        writer.raw(xsave)
        writer.raw(xcrs)
        writer.raw(debugRegisters)
        writer.raw(lapic)
        writer.raw(events)
        writer.raw(mpState)
        writer.u32(UInt32(msrs.count))
        for msr in msrs { writer.u32(msr.index); writer.u64(msr.value) }
    }

    public init(from reader: inout StateReader) throws(SnapshotError) {
        let leaves = try reader.count(limit: Self.maximumCPUIDEntries, of: "CPUID leaves")
        cpuid = []
        for _ in 0..<leaves { cpuid.append(try reader.raw(kvm_cpuid_entry2.self, zero: kvm_cpuid_entry2())) }
        registers = try reader.raw(kvm_regs.self, zero: kvm_regs())
        specialRegisters = try reader.raw(kvm_sregs.self, zero: kvm_sregs())
        xsave = try reader.raw(kvm_xsave.self, zero: kvm_xsave())
        xcrs = try reader.raw(kvm_xcrs.self, zero: kvm_xcrs())
        debugRegisters = try reader.raw(kvm_debugregs.self, zero: kvm_debugregs())
        lapic = try reader.raw(kvm_lapic_state.self, zero: kvm_lapic_state())
        events = try reader.raw(kvm_vcpu_events.self, zero: kvm_vcpu_events())
        mpState = try reader.raw(kvm_mp_state.self, zero: kvm_mp_state())
        let count = try reader.count(limit: Self.maximumMSRs, of: "MSRs")
        msrs = []
        for _ in 0..<count { msrs.append(MSR(index: try reader.u32(), value: try reader.u64())) }
        // KVM_SET_XCRS takes at most KVM_MAX_XCRS (16) registers: more would be refused anyway,
        // but say so here rather than as an ioctl error.
        guard xcrs.nr_xcrs <= 16 else { throw .malformed("\(xcrs.nr_xcrs) extended control registers") }
    }
}
