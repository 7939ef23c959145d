import CKVM
import GuestMemory
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// One virtual CPU: a descriptor, and the shared `kvm_run` page through which KVM tells us why
/// the guest stopped.
///
/// A vCPU is driven from one OS thread: KVM_RUN blocks that thread for as long as the guest
/// runs, so it never runs on Swift's cooperative pool.
public final class VCPU: @unchecked Sendable {
    // @unchecked: a VCPU is used from the thread that runs it; the only cross-thread access
    // is `requestExit`, an atomic byte store KVM reads on entry.
    public let id: Int
    /// The VM this vCPU belongs to, kept alive (with its memory) while the vCPU exists.
    public let vm: VirtualMachine
    public let descriptor: OwnedDescriptor
    private let runPage: UnsafeMutablePointer<kvm_run>
    private let runSize: Int

    init(id: Int, vm: VirtualMachine, descriptor: OwnedDescriptor, run page: UnsafeMutableRawPointer, runSize: Int) {
        self.id = id
        self.vm = vm
        self.descriptor = descriptor
        // Safe: the page is KVM's `kvm_run` mapping, at least sizeof(kvm_run) long.
        self.runPage = page.bindMemory(to: kvm_run.self, capacity: 1)
        self.runSize = runSize
    }

    deinit { munmap(runPage, runSize) }

    var fd: CInt { descriptor.raw }

    // MARK: - State

    /// KVM_SET_CPUID2.
    public func setCPUID(_ table: CPUIDTable) throws(SystemCallError) {
        var table = table
        _ = try check("KVM_SET_CPUID2", table.withRawBuffer { lg_ioctl_pointer(fd, LG_KVM_SET_CPUID2, $0) })
    }

    /// KVM_SET_MSRS. KVM stops at the first MSR it refuses and returns how many it set, so a
    /// short count is an error naming the MSR that failed.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(SystemCallError) {
        let stride = MemoryLayout<kvm_msr_entry>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8 + msrs.count * stride, alignment: 8)
        defer { buffer.deallocate() }
        // Safe: header and entries are written inside the allocation just made.
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: 8 + msrs.count * stride)
        buffer.storeBytes(of: UInt32(msrs.count), as: UInt32.self)
        for (i, msr) in msrs.enumerated() {
            var entry = kvm_msr_entry()
            entry.index = msr.index
            entry.data = msr.value
            (buffer + 8 + i * stride).storeBytes(of: entry, as: kvm_msr_entry.self)
        }
        let set = try check("KVM_SET_MSRS", lg_ioctl_pointer(fd, LG_KVM_SET_MSRS, buffer))
        if set != msrs.count {
            throw SystemCallError("KVM_SET_MSRS (MSR 0x\(String(msrs[Int(set)].index, radix: 16)))", errno: EINVAL)
        }
    }

    public func registers() throws(SystemCallError) -> kvm_regs {
        var regs = kvm_regs()
        _ = try check("KVM_GET_REGS", lg_ioctl_pointer(fd, LG_KVM_GET_REGS, &regs))
        return regs
    }

    public func setRegisters(_ regs: kvm_regs) throws(SystemCallError) {
        var regs = regs
        _ = try check("KVM_SET_REGS", lg_ioctl_pointer(fd, LG_KVM_SET_REGS, &regs))
    }

    public func specialRegisters() throws(SystemCallError) -> kvm_sregs {
        var sregs = kvm_sregs()
        _ = try check("KVM_GET_SREGS", lg_ioctl_pointer(fd, LG_KVM_GET_SREGS, &sregs))
        return sregs
    }

    public func setSpecialRegisters(_ sregs: kvm_sregs) throws(SystemCallError) {
        var sregs = sregs
        _ = try check("KVM_SET_SREGS", lg_ioctl_pointer(fd, LG_KVM_SET_SREGS, &sregs))
    }

    /// KVM_SET_FPU with the state a CPU has after FNINIT: control word 0x37F, MXCSR 0x1F80.
    public func resetFPU() throws(SystemCallError) {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37F
        fpu.mxcsr = 0x1F80
        _ = try check("KVM_SET_FPU", lg_ioctl_pointer(fd, LG_KVM_SET_FPU, &fpu))
    }

    /// Programs the local APIC's two local interrupt pins as firmware does: LINT0 takes the
    /// 8259's interrupts (ExtINT, "virtual wire" mode) and LINT1 takes NMIs.
    public func configureLocalInterruptPins() throws(SystemCallError) {
        var lapic = kvm_lapic_state()
        _ = try check("KVM_GET_LAPIC", lg_ioctl_pointer(fd, LG_KVM_GET_LAPIC, &lapic))
        withUnsafeMutableBytes(of: &lapic.regs) { registers in
            func setDeliveryMode(offset: Int, mode: UInt32) {
                let old = registers.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                registers.storeBytes(of: (old & ~0x700) | (mode << 8), toByteOffset: offset, as: UInt32.self)
            }
            setDeliveryMode(offset: 0x350, mode: 7) // LVT LINT0: ExtINT
            setDeliveryMode(offset: 0x360, mode: 4) // LVT LINT1: NMI
        }
        _ = try check("KVM_SET_LAPIC", lg_ioctl_pointer(fd, LG_KVM_SET_LAPIC, &lapic))
    }

    /// KVM_KVMCLOCK_CTRL: tells the guest, through its kvmclock page, that it was stopped by
    /// the host, so that its watchdogs do not take the gap for a soft lockup.
    public func notePausedByHost() throws(SystemCallError) {
        _ = try check("KVM_KVMCLOCK_CTRL", lg_ioctl(fd, LG_KVM_KVMCLOCK_CTRL))
    }

    // MARK: - Running

    /// KVM_RUN: enters the guest and returns when it exits to us. The returned exit may point into
    /// the `kvm_run` page (I/O data); it is valid until the next call to `run()`.
    public func run() throws(SystemCallError) -> VCPUExit {
        let result = lg_ioctl(fd, LG_KVM_RUN)
        if result == -EINTR || result == -EAGAIN { setImmediateExit(0); return .interrupted }
        if result < 0 { throw SystemCallError("KVM_RUN", errno: -result) }
        return VCPUExit(runPage)
    }

    /// Whether the guest's interrupt flag was set when KVM_RUN last returned (the run page's
    /// `if_flag`, which KVM fills in on every return, a kicked one included).
    public var interruptsEnabled: Bool { runPage.pointee.if_flag != 0 }

    /// What KVM_GET_MP_STATE says the vCPU is doing.
    public enum ActivityState: Sendable, Equatable {
        case runnable
        /// It executed HLT and waits for an interrupt.
        case halted
        /// An application processor that has not been started, or was put back to wait for
        /// INIT and SIPI (an offlined CPU): only another CPU can start it.
        case waitingForStartup
        case other(UInt32)
    }

    /// KVM_GET_MP_STATE.
    public func activityState() throws(SystemCallError) -> ActivityState {
        var state = kvm_mp_state()
        _ = try check("KVM_GET_MP_STATE", lg_ioctl_pointer(fd, LG_KVM_GET_MP_STATE, &state))
        switch Int32(state.mp_state) {
        case KVM_MP_STATE_RUNNABLE: return .runnable
        case KVM_MP_STATE_HALTED: return .halted
        case KVM_MP_STATE_UNINITIALIZED, KVM_MP_STATE_INIT_RECEIVED: return .waitingForStartup
        default: return .other(state.mp_state)
        }
    }

    /// Makes the next (or current) KVM_RUN return at once. Pair it with a signal to the vCPU's
    /// thread to interrupt a guest that is running right now.
    ///
    /// Any thread may call it: the store is atomic, so neither the compiler nor the CPU tears
    /// or drops it, and a kick that lands while the vCPU is outside KVM_RUN makes its next
    /// entry return at once.
    public func requestExit() { setImmediateExit(1) }

    private func setImmediateExit(_ value: UInt8) {
        let offset = MemoryLayout<kvm_run>.offset(of: \.immediate_exit)!
        // Safe: `immediate_exit` is a byte inside the mapped `kvm_run` page.
        lg_store_relaxed_u8(UnsafeMutableRawPointer(runPage) + offset, value)
    }
}
