import Devices
import GuestMemory
import KVM
import Snapshot
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

// A machine comes back: instead of loading a kernel, `Machine.init` maps a memory
// file and hands each part of the machine its saved state: KVM's vCPUs (VCPUState) and
// interrupt controllers, clock and PIT (VMState), the platform devices, and each virtio
// transport, which activates its device again with queues that go on where they were.
extension Machine {
    /// A configuration may replace a saved machine's paths (disks, TAP devices, the vsock
    /// socket), never its shape: the guest already knows its memory, CPUs and devices.
    static func checkRestorable(_ configuration: VMConfiguration, _ saved: VMConfiguration) throws(LaunchError) {
        func refuse(_ what: String) -> LaunchError { .snapshot(.incompatible("the snapshot's \(what) cannot change at restore")) }
        guard configuration.memoryMiB == saved.memoryMiB else { throw refuse("memory size") }
        guard configuration.cpus == saved.cpus else { throw refuse("vCPU count") }
        guard configuration.console == saved.console, configuration.rng == saved.rng else { throw refuse("devices") }
        guard configuration.disks.count == saved.disks.count, configuration.networks.count == saved.networks.count,
              (configuration.vsock == nil) == (saved.vsock == nil), configuration.shares.isEmpty,
              configuration.balloon == saved.balloon
        else { throw refuse("devices") }
        guard zip(configuration.networks, saved.networks).allSatisfy({ $0.mac == $1.mac }) else { throw refuse("MAC addresses") }
        guard configuration.vsock?.guestCID == saved.vsock?.guestCID else { throw refuse("vsock CID") }
    }

    /// The memory file at `path`, mapped copy-on-write as guest memory: pages come in from the
    /// file (or the page cache other clones share) as the guest touches them.
    static func mapMemoryFile(_ path: String, bytes: UInt64) throws(LaunchError) -> GuestMemory {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .snapshot(.file(path: path, String(cString: strerror(errno)))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .snapshot(.file(path: path, String(cString: strerror(errno)))) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .snapshot(.file(path: path, "not a regular file")) }
        guard UInt64(info.st_size) == bytes else {
            throw .snapshot(.file(path: path, "holds \(info.st_size) bytes; the snapshot's memory is \(bytes)"))
        }
        do { return try GuestMemory(layout: MemoryMap.ramRegions(bytes: bytes), file: fd) }
        catch { throw .memory(error) }
    }

    /// Puts back the VM-wide and device state, once the vCPUs have theirs.
    func restoreDevices(_ saved: SavedMachine, advanceClock: Bool) throws(LaunchError) {
        do throws(SystemCallError) { try vm.restoreState(saved.vm, advanceClock: advanceClock) } catch { throw .kvm(.call(error)) }
        do throws(SnapshotError) {
            var platform = StateReader(saved.platform, context: "section PLAT")
            try serial.restoreState(from: &platform)
            try keyboard.restoreState(from: &platform)
            try power.restoreState(from: &platform)
            guard platform.isAtEnd else { throw .malformed("section PLAT has \(platform.remaining) bytes nobody reads") }
            for (slot, bytes) in zip(virtio, saved.transports) {
                var reader = StateReader(bytes, context: "a virtio device's state")
                try slot.transport.restoreState(from: &reader)
                guard reader.isAtEnd else { throw .malformed("a virtio device's state has \(reader.remaining) bytes nobody reads") }
            }
        } catch { throw .snapshot(error) }
        // The guest's clock jumps by the time the snapshot lay on disk: its kvmclock says the
        // host stopped it, so that its watchdogs and RCU's stall detector let the jump pass.
        for vcpu in vcpus { try? vcpu.notePausedByHost() }
        // The vsock connections were the old process's: the guest's driver must drop them.
        vsock?.announceTransportReset()
        // Kicks the old process had not served yet are lost with its eventfds: look at every
        // queue once, as soon as the I/O thread runs.
        for slot in virtio {
            for (index, doorbell) in slot.doorbells.enumerated() where slot.transport.isQueueReady(index) {
                doorbell.signal()
            }
        }
    }
}
