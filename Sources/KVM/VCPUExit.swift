import CKVM

/// Why the guest stopped running, one case per thing the VMM must do about it.
///
/// The vCPU loop is one `switch` over this; the compiler checks it handles them all.
public enum VCPUExit {
    /// IN or OUT on an I/O port no in-kernel device claimed.
    case portIO(PortAccess)
    /// A load or store to guest-physical memory that is not RAM and no in-kernel device claimed.
    case mmio(MMIOAccess)
    /// HLT, only seen without an in-kernel local APIC (with one, KVM waits for the interrupt itself).
    case halt
    /// The CPU shut down: a triple fault. The guest is beyond saving.
    case shutdown
    /// KVM could not enter the guest: its state is invalid. Carries the hardware's reason.
    case failEntry(hardwareReason: UInt64)
    /// KVM itself could not go on (e.g. an instruction it cannot emulate).
    case internalError(suberror: UInt32, data: [UInt64])
    /// A system event the guest asked for through a paravirtual path (PSCI-like shutdown/reset).
    case systemEvent(type: UInt32)
    /// A signal or `requestExit` interrupted KVM_RUN; nothing happened to the guest.
    case interrupted
    /// Any exit reason this VMM never enables; stop, saying which.
    case unexpected(reason: UInt32)

    init(_ run: UnsafeMutablePointer<kvm_run>) {
        switch Int32(run.pointee.exit_reason) {
        case KVM_EXIT_IO:
            self = .portIO(PortAccess(run))
        case KVM_EXIT_MMIO:
            self = .mmio(MMIOAccess(run))
        case KVM_EXIT_HLT:
            self = .halt
        case KVM_EXIT_SHUTDOWN:
            self = .shutdown
        case KVM_EXIT_FAIL_ENTRY:
            self = .failEntry(hardwareReason: run.pointee.fail_entry.hardware_entry_failure_reason)
        case KVM_EXIT_INTERNAL_ERROR:
            let info = run.pointee.internal
            let data = withUnsafeBytes(of: info.data) { Array($0.bindMemory(to: UInt64.self).prefix(Int(min(info.ndata, 16)))) }
            self = .internalError(suberror: info.suberror, data: data)
        case KVM_EXIT_SYSTEM_EVENT:
            self = .systemEvent(type: run.pointee.system_event.type)
        case KVM_EXIT_INTR:
            self = .interrupted
        default:
            self = .unexpected(reason: run.pointee.exit_reason)
        }
    }
}

/// One port I/O exit. String I/O (`rep outsb`) repeats `count` times; the bytes are packed in
/// the `kvm_run` page, and for an IN we must fill them before re-entering the guest.
public struct PortAccess {
    public let port: UInt16
    /// Bytes per access: 1, 2 or 4.
    public let size: Int
    public let count: Int
    public let isWrite: Bool
    /// `count * size` bytes inside the `kvm_run` page. Valid until the next KVM_RUN.
    public let data: UnsafeMutableRawBufferPointer

    init(_ run: UnsafeMutablePointer<kvm_run>) {
        let io = run.pointee.io
        port = io.port
        size = Int(io.size)
        count = Int(io.count)
        isWrite = io.direction == UInt8(KVM_EXIT_IO_OUT)
        // Safe: KVM places the data inside the vCPU's mapping at data_offset; size*count is at most a page.
        let base = UnsafeMutableRawPointer(run) + Int(io.data_offset)
        data = UnsafeMutableRawBufferPointer(start: base, count: size * count)
    }
}

/// One MMIO exit: up to 8 bytes at a guest-physical address.
public struct MMIOAccess {
    public let address: UInt64
    public let length: Int
    public let isWrite: Bool
    /// The 8-byte data field of `kvm_run.mmio`; the first `length` bytes matter. Valid until the next KVM_RUN.
    public let data: UnsafeMutableRawBufferPointer

    init(_ run: UnsafeMutablePointer<kvm_run>) {
        address = run.pointee.mmio.phys_addr
        length = Int(min(run.pointee.mmio.len, 8))
        isWrite = run.pointee.mmio.is_write != 0
        // Safe: mmio.data is an 8-byte array inside the kvm_run page, which outlives this access.
        let base = UnsafeMutableRawPointer(run) + LG_KVM_RUN_MMIO_DATA_OFFSET
        data = UnsafeMutableRawBufferPointer(start: base, count: length)
    }
}
