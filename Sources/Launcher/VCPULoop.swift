import CKVM
import Devices
import KVM
import Synchronization

/// How often the vCPUs came back to us, by reason, summed over all of a machine's vCPUs.
public final class ExitCounters: Sendable {
    public let ioIn = Atomic<UInt64>(0)
    public let ioOut = Atomic<UInt64>(0)
    public let mmioRead = Atomic<UInt64>(0)
    public let mmioWrite = Atomic<UInt64>(0)
    /// KVM_RUN failed, or the guest did what no vCPU survives (a triple fault, an entry failure).
    public let failures = Atomic<UInt64>(0)
    public init() {}
}

/// The vCPU loop: run the guest until it exits to us, do what the exit asks, repeat.
func runVCPU(_ vcpu: VCPU, ports: Bus, mmio: Bus, power: PowerControl, gate: RunGate, exits: ExitCounters,
             halts: HaltWatch) {
    while true {
        // Before parking, enter once more with `immediate_exit` set: KVM finishes the port or
        // MMIO read we just answered (the value lands in the guest's register) and returns at
        // once, so that a paused vCPU's state is whole and a snapshot of it can be resumed.
        if gate.wantsAttention {
            vcpu.requestExit()
            _ = try? vcpu.run()
        }
        guard gate.checkpoint() else { break }
        let exit: VCPUExit
        do { exit = try vcpu.run() } catch {
            exits.failures.add(1, ordering: .relaxed)
            power.requestStop(.failure("vCPU \(vcpu.id): \(error)"))
            return
        }
        // Journey 4: the guest runs. Most of the time it never comes back here: KVM handles page
        // faults, interrupts and halts in the kernel, and the guest's notifications go straight
        // to eventfds. What reaches us is the rest: a port or an address that belongs to one of
        // our devices, or the end of the world.
        switch exit {
        case let .portIO(access):
            if access.isWrite { exits.ioOut.add(1, ordering: .relaxed) } else { exits.ioIn.add(1, ordering: .relaxed) }
            for i in 0..<access.count {
                let item = UnsafeMutableRawBufferPointer(rebasing: access.data[(i * access.size)..<((i + 1) * access.size)])
                if access.isWrite { ports.write(UInt64(access.port), from: UnsafeRawBufferPointer(item)) }
                else { ports.read(UInt64(access.port), into: item) }
            }
        case let .mmio(access):
            if access.isWrite { exits.mmioWrite.add(1, ordering: .relaxed) } else { exits.mmioRead.add(1, ordering: .relaxed) }
            if access.isWrite { mmio.write(access.address, from: UnsafeRawBufferPointer(access.data)) }
            else { mmio.read(access.address, into: access.data) }
        case .halt:
            // Only without an in-kernel APIC, which lguest always creates; nothing to do.
            continue
        case .shutdown:
            exits.failures.add(1, ordering: .relaxed)
            // A PC resets itself on a triple fault; a kernel that announced its shutdown
            // through `\_TTS` and then triple-faults is using that as its reset (`reboot=t`).
            // Without the announcement it is a crash.
            power.requestStop(power.shutdownAnnounced ? .reboot : .tripleFault(vcpu: vcpu.id))
            return
        case let .failEntry(reason):
            exits.failures.add(1, ordering: .relaxed)
            power.requestStop(.failure("vCPU \(vcpu.id): KVM could not enter the guest (hardware reason 0x\(String(reason, radix: 16)))"))
            return
        case let .internalError(suberror, data):
            exits.failures.add(1, ordering: .relaxed)
            let words = data.map { "0x" + String($0, radix: 16) }.joined(separator: " ")
            power.requestStop(.failure("vCPU \(vcpu.id): KVM internal error \(suberror)\(words.isEmpty ? "" : " (\(words))")"))
            return
        case let .systemEvent(type):
            switch Int32(type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: power.requestStop(.powerOff)
            case KVM_SYSTEM_EVENT_RESET: power.requestStop(.reboot)
            case KVM_SYSTEM_EVENT_CRASH: power.requestStop(.guestPanic)
            default: power.requestStop(.failure("vCPU \(vcpu.id): unexpected system event \(type)"))
            }
            return
        case .interrupted:
            // A kick: the checkpoint above says why, or the halt watch asks.
            halts.answerIfAsked(vcpu)
            continue
        case let .unexpected(reason):
            exits.failures.add(1, ordering: .relaxed)
            power.requestStop(.failure("vCPU \(vcpu.id): unexpected KVM exit \(reason)"))
            return
        }
    }
}

