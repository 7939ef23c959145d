import Devices
import KVM
import Snapshot
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// A machine as a state file holds it, checked and decoded, ready for `Machine.init` to
/// rebuild: the configuration, KVM's VM-wide and per-vCPU state, and each device's state
/// (read by the device itself once it exists).
///
/// The payload's sections, in order:
///
/// | tag    | what                                                                  |
/// |--------|-----------------------------------------------------------------------|
/// | `CONF` | `VMConfiguration` (ConfigurationState.swift), each NIC's actual MAC   |
/// | `KVMV` | both PICs, the IOAPIC, the PIT, the guest's clock (`VMState`)         |
/// | `KVMC` | the vCPUs' `VCPUState`s                                               |
/// | `PLAT` | the UART, the i8042, the power controller                             |
/// | `VIRT` | each virtio-mmio transport, in device order                           |
/// | `NOTE` | what the embedding program asked to keep (the API: its resources)     |
public struct SavedMachine: Sendable {
    public internal(set) var configuration: VMConfiguration
    /// Bytes the program that took the snapshot kept with it (`Machine.snapshot(notes:)`).
    public let notes: [UInt8]
    let vm: VMState
    let vcpus: [VCPUState]
    let platform: [UInt8]
    let transports: [[UInt8]]

    /// Reads and checks the state file at `path`: magic, version, length and checksum, then
    /// every section. Nothing here touches KVM.
    public init(statePath path: String) throws(SnapshotError) {
        try self.init(payload: try StateFile.read(path: path))
    }

    /// Decodes a payload (the fuzz harness starts here).
    public init(payload: [UInt8]) throws(SnapshotError) {
        var r = StateReader(payload, context: "the state")
        configuration = try r.section("CONF") { (r: inout StateReader) throws(SnapshotError) in try VMConfiguration(from: &r) }
        do throws(LaunchError) { try configuration.validate() }
        catch { throw .malformed("its configuration: \(error)") }
        vm = try r.section("KVMV") { (r: inout StateReader) throws(SnapshotError) in try VMState(from: &r) }
        let cpus = configuration.cpus
        vcpus = try r.section("KVMC") { (r: inout StateReader) throws(SnapshotError) in
            let count = try r.count(limit: VMConfiguration.maximumCPUs, of: "vCPUs")
            guard count == cpus else { throw .malformed("\(count) vCPU states for \(cpus) vCPUs") }
            var states: [VCPUState] = []
            for _ in 0..<count { states.append(try VCPUState(from: &r)) }
            return states
        }
        platform = try r.sectionBody("PLAT")
        let devices = Machine.deviceCount(configuration)
        transports = try r.section("VIRT") { (r: inout StateReader) throws(SnapshotError) in
            let count = try r.count(limit: 256, of: "virtio devices")
            guard count == devices else { throw .malformed("\(count) virtio device states for \(devices) devices") }
            var states: [[UInt8]] = []
            for _ in 0..<count { states.append(try r.data(limit: 1 << 16)) }
            return states
        }
        notes = try r.section("NOTE") { (r: inout StateReader) throws(SnapshotError) in try r.data(limit: 1 << 20) }
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes after the last section") }
    }

    /// Whether this host's KVM can give the guest the CPU it had: the same vendor, and every
    /// feature the guest saw among those KVM supports here. Throws `.incompatible` naming the
    /// first that is missing.
    func checkCPU(against supported: CPUIDTable) throws(SnapshotError) {
        guard let saved = vcpus.first else { return }
        let table = CPUIDTable(entries: saved.cpuid)
        if let a = table.entry(function: 0), let b = supported.entry(function: 0),
           (a.ebx, a.ecx, a.edx) != (b.ebx, b.ecx, b.edx) {
            throw .incompatible("it was taken on a CPU of another vendor")
        }
        // The bits lguest sets itself (hypervisor, TSC deadline, HTT) are not the host's to give.
        let ours: [UInt32: (ecx: UInt32, edx: UInt32)] = [1: (1 << 31 | 1 << 24, 1 << 28)]
        for (function, index) in [(UInt32(1), UInt32(0)), (7, 0), (0x8000_0001, 0), (0xD, 1)] {
            guard let a = table.entry(function: function, index: index) else { continue }
            let b = supported.entry(function: function, index: index)
            let mask = ours[function] ?? (0, 0)
            let registers: [(String, UInt32, UInt32)] = [
                ("EBX", function == 1 ? 0 : a.ebx, b?.ebx ?? 0),
                ("ECX", a.ecx & ~mask.ecx, b?.ecx ?? 0),
                ("EDX", a.edx & ~mask.edx, b?.edx ?? 0),
            ]
            for (name, wanted, offered) in registers where wanted & ~offered != 0 {
                throw .incompatible("the guest's CPU had features this host's KVM lacks (CPUID 0x\(String(function, radix: 16)).\(index) \(name) bits 0x\(String(wanted & ~offered, radix: 16)))")
            }
        }
    }
}

extension Machine {
    /// How many virtio devices `configuration` makes (in the order `init` attaches them).
    static func deviceCount(_ configuration: VMConfiguration) -> Int {
        (configuration.console == .virtio ? 1 : 0) + configuration.disks.count + configuration.networks.count
            + (configuration.rng ? 1 : 0) + configuration.shares.count + (configuration.vsock != nil ? 1 : 0)
            + (configuration.balloon != nil ? 1 : 0)
    }

    /// Saves the paused machine: its memory to `memoryPath` and everything else to
    /// `statePath` (both replaced if they exist, both on disk when this returns).
    ///
    /// `notes` are kept in the state file for whoever restores it (at most 1 MiB).
    public func snapshot(statePath: String, memoryPath: String, notes: [UInt8] = []) throws(LaunchError) {
        guard notes.count <= 1 << 20 else { throw .setup("the snapshot's notes are larger than 1 MiB") }
        guard isPaused else { throw .setup("the VM must be paused to take a snapshot") }
        guard shares.isEmpty else {
            throw .snapshot(.incompatible("a VM with shared directories cannot be saved (the guest's open files on the share would not survive)"))
        }
        guard !networks.contains(where: { $0.vhost != nil }) else {
            throw .snapshot(.incompatible("a VM with a vhost=on network device cannot be saved (its rings' state is in the host kernel)"))
        }
        var w = StateWriter()
        let msrs: [UInt32]
        do throws(KVMError) { msrs = try vm.system.msrIndexList() } catch { throw .kvm(error) }
        do throws(SystemCallError) {
            var clock = pausedClock.withLock { $0 }
            var frozenAt = pausedAt.withLock { $0 }
            if clock == nil { clock = try vm.clock(); frozenAt = nil }
            let vmState = try vm.saveState(clock: clock ?? 0, frozenAt: frozenAt)
            var vcpuStates: [VCPUState] = []
            for (vcpu, table) in zip(vcpus, cpuid) { vcpuStates.append(try vcpu.saveState(cpuid: table, msrIndices: msrs)) }
            w.section("CONF") { configuration.encode(to: &$0, macs: networks.map(\.mac)) }
            w.section("KVMV") { vmState.encode(to: &$0) }
            w.section("KVMC") { w in
                w.u32(UInt32(vcpuStates.count))
                for state in vcpuStates { state.encode(to: &w) }
            }
        } catch { throw .kvm(.call(error)) }
        w.section("PLAT") { w in
            serial.saveState(to: &w)
            keyboard.saveState(to: &w)
            power.saveState(to: &w)
        }
        w.section("VIRT") { w in
            w.u32(UInt32(virtio.count))
            for slot in virtio {
                var inner = StateWriter()
                slot.transport.saveState(to: &inner)
                w.data(inner.bytes)
            }
        }
        w.section("NOTE") { $0.data(notes) }
        let memory = self.memory
        do throws(SnapshotError) {
            try AtomicFile.replace(memoryPath) { fd throws(SnapshotError) in
                let failure = memory.write(toFile: fd)
                guard failure == 0 else { throw .file(path: memoryPath, String(cString: strerror(failure))) }
            }
        } catch { throw .snapshot(error) }
        do throws(SnapshotError) { try StateFile.write(payload: w.bytes, path: statePath) } catch { throw .snapshot(error) }
    }
}
