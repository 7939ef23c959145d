import CKVM
import Snapshot
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// What KVM emulates for the whole VM in the kernel: both 8259 PICs and the IOAPIC (which
/// lines are masked, raised, in service, how each is routed), the PIT's three counters, and
/// the guest's clock.
public struct VMState: Sendable {
    /// Chip 0 is the master PIC, 1 the slave, 2 the IOAPIC.
    public var irqchips: [kvm_irqchip]
    public var pit: kvm_pit_state2
    /// The guest's kvmclock, in nanoseconds, and the host's wall-clock time when it was read.
    public var clock: UInt64
    public var hostRealtime: UInt64

    static let chipCount = 3
}

extension VirtualMachine {
    /// Reads the VM-wide state. `clock` is the guest's kvmclock as the machine froze it, at the
    /// host's wall-clock time `frozenAt` (now, if nil).
    public func saveState(clock: UInt64, frozenAt: UInt64? = nil) throws(SystemCallError) -> VMState {
        var chips: [kvm_irqchip] = []
        for id in 0..<VMState.chipCount {
            var chip = kvm_irqchip()
            chip.chip_id = UInt32(id)
            _ = try check("KVM_GET_IRQCHIP", lg_ioctl_pointer(fd, LG_KVM_GET_IRQCHIP, &chip))
            chips.append(chip)
        }
        var pit = kvm_pit_state2()
        _ = try check("KVM_GET_PIT2", lg_ioctl_pointer(fd, LG_KVM_GET_PIT2, &pit))
        return VMState(irqchips: chips, pit: pit, clock: clock, hostRealtime: frozenAt ?? Self.realtimeNanoseconds())
    }

    /// Writes `state` into this VM (created with `createPlatform`, its vCPUs restored). With
    /// `advanceClock`, the guest's clock goes on from where it was plus the wall-clock time
    /// that passed since the snapshot, so that the guest's idea of the date agrees with the
    /// host's; without, from where it was.
    public func restoreState(_ state: VMState, advanceClock: Bool = true) throws(SystemCallError) {
        for chip in state.irqchips {
            var chip = chip
            _ = try check("KVM_SET_IRQCHIP", lg_ioctl_pointer(fd, LG_KVM_SET_IRQCHIP, &chip))
        }
        var pit = state.pit
        _ = try check("KVM_SET_PIT2", lg_ioctl_pointer(fd, LG_KVM_SET_PIT2, &pit))
        let now = Self.realtimeNanoseconds()
        let elapsed = advanceClock && now > state.hostRealtime ? now - state.hostRealtime : 0
        try setClock(state.clock &+ elapsed)
    }

    /// The host's wall-clock time, in ns since the epoch.
    public static func realtimeNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

extension VMState {
    public func encode(to writer: inout StateWriter) {
        writer.u32(UInt32(irqchips.count))
        for chip in irqchips { writer.raw(chip) }
        writer.raw(pit)
        writer.u64(clock)
        writer.u64(hostRealtime)
    }

    public init(from reader: inout StateReader) throws(SnapshotError) {
        let count = try reader.count(limit: Self.chipCount, of: "interrupt controllers")
        guard count == Self.chipCount else { throw .malformed("\(count) interrupt controllers, not \(Self.chipCount)") }
        irqchips = []
        for id in 0..<count {
            let chip = try reader.raw(kvm_irqchip.self, zero: kvm_irqchip())
            guard chip.chip_id == UInt32(id) else { throw .malformed("interrupt controller \(chip.chip_id) where \(id) belongs") }
            irqchips.append(chip)
        }
        pit = try reader.raw(kvm_pit_state2.self, zero: kvm_pit_state2())
        clock = try reader.u64()
        hostRealtime = try reader.u64()
    }
}
