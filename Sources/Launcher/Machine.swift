import Boot
import CKVM
import Devices
import Firmware
import GuestMemory
import KVM
import Snapshot
import Synchronization
import Virtio
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// A VM assembled from a configuration, ready to run: memory filled, devices wired, vCPUs set up.
///
/// Everything that can fail because of the user's input fails in `init`, before the guest runs
/// (exit code 2). `start()` starts its threads; `pause()`, `resume()` and `shutdown()`
/// (MachineLifecycle.swift) do what they say, from any thread.
public final class Machine: Sendable {
    public let configuration: VMConfiguration
    let memory: GuestMemory
    let vm: VirtualMachine
    let vcpus: [VCPU]
    /// The CPUID table each vCPU was given, saved with it in a snapshot.
    let cpuid: [CPUIDTable]
    let ports: Bus
    let mmio: Bus
    let power: PowerControl
    let serial: Serial
    let keyboard: I8042
    let console: ConsoleDevice?
    let virtio: [VirtioSlot]
    let events: EventLoop
    /// The TAP descriptors, which vCPU threads may still reconfigure once sandboxed.
    let taps: [CInt]
    let networks: [NetDevice]
    let blocks: [BlockDevice]
    let rng: RngDevice?
    /// The shared directories, and the event loop their queues are served from (on the
    /// file-system thread, `lguest-fs`, under a filter of its own); nil without shares.
    let shares: [FsDevice]
    let fsEvents: EventLoop?
    let vsock: VsockDevice?
    let balloon: BalloonDevice?
    /// The filters `start()` built, kept for `confineCallingThread()`.
    let sandbox = Mutex<MachineSandbox?>(nil)
    /// The disks that are block devices, which the I/O thread may still discard on.
    let blockDevices: [CInt]

    /// Where the guest's console goes and comes from.
    let connection: ConsoleConnection
    /// The guest's kvmclock when it was paused, put back on resume.
    let pausedClock = Mutex<UInt64?>(nil)
    /// The host's wall-clock time when the guest's clock was frozen, in ns (for a snapshot: the
    /// restored clock makes up for the time since then).
    let pausedAt = Mutex<UInt64?>(nil)
    /// The vCPUs' exits, by reason.
    public let exits = ExitCounters()
    /// Where the threads park while paused and learn that the machine is stopping.
    let gate = RunGate()
    /// Notices a guest that halted its CPUs for good (`systemctl halt`).
    let halts: HaltWatch
    /// The threads `start()` made, joined by `shutdown()`.
    let threads = Mutex<MachineThreads>(MachineThreads())

    /// A snapshot to restore instead of booting: the saved machine (whose configuration, with
    /// any paths the user replaced, is the one to build) and its memory file.
    public struct Restore: Sendable {
        public var saved: SavedMachine
        public var memoryPath: String
        /// Whether the guest's clock makes up for the wall-clock time since the snapshot.
        public var advanceClock: Bool
        public init(saved: SavedMachine, memoryPath: String, advanceClock: Bool = true) {
            self.saved = saved
            self.memoryPath = memoryPath
            self.advanceClock = advanceClock
        }
    }

    public init(_ configuration: VMConfiguration, console connection: ConsoleConnection, restoring restore: Restore? = nil) throws(LaunchError) {
        self.configuration = configuration
        self.connection = connection
        try configuration.validate()
        if let restore { try Self.checkRestorable(configuration, restore.saved.configuration) }
        // The process's start time comes from /proc, which no thread may open once the sandbox
        // is up; the boot timer, on a vCPU thread, must find it already read.
        _ = BootClock.processStart
        // --trace-boot: each step of the start-up, on standard error, for Scripts/bench.sh startup.
        func trace(_ step: String) { if configuration.traceBoot { printError(BootClock.line("trace: " + step)) } }
        trace("configuration read")

        // Journey 1: a configuration arrives. lguest's Launcher began life by mapping a chunk of
        // its own memory as the guest's "physical" memory and reading the kernel into it; we do
        // the same, except that KVM, not a kernel module of our own, is the Host. Files first:
        // if the kernel cannot even be read, nothing else is worth doing.
        // A restored machine's kernel is already in its memory file.
        // A kernel in the kernel cache is mapped from there (KernelCaching), not read.
        let kernel = restore == nil ? try KernelSource(configuration: configuration) : nil
        let initrd = restore == nil ? try configuration.initrdPath.map { path throws(LaunchError) in try LoadedFile(path: path, what: "initrd") } : nil
        trace("kernel and initrd read")

        let system: KVMSystem
        do { system = try KVMSystem() } catch { throw .kvm(error) }
        if let restore {
            let supported = try Self.kvm { try system.supportedCPUID() }
            do throws(SnapshotError) { try restore.saved.checkCPU(against: supported) } catch { throw .snapshot(error) }
        }

        let memory: GuestMemory
        if let restore {
            memory = try Self.mapMemoryFile(restore.memoryPath, bytes: configuration.memoryMiB << 20)
        } else {
            do { memory = try GuestMemory(layout: MemoryMap.ramRegions(bytes: configuration.memoryMiB << 20)) }
            catch { throw .memory(error) }
        }
        self.memory = memory
        trace("guest memory mapped")

        // The virtio devices, each opening what it serves (an image file, a TAP device) now,
        // so that a missing disk is a clean refusal rather than a surprise after boot.
        events = try EventLoop()
        let stdout = connection.output
        var devices: [any VirtioDevice] = []
        var limited: [any RateLimitedDevice] = []
        let console = configuration.console == .virtio ? ConsoleDevice(output: stdout) : nil
        if let console { devices.append(console) }
        var blocks: [BlockDevice] = []
        for disk in configuration.disks {
            do throws(BlockError) { blocks.append(try BlockDevice(disk)) } catch { throw .disk(error) }
        }
        devices += blocks as [any VirtioDevice]
        limited += blocks as [any RateLimitedDevice]
        self.blocks = blocks
        blockDevices = blocks.compactMap(\.blockDeviceDescriptor)
        var networks: [NetDevice] = []
        for network in configuration.networks {
            var vhost: VhostNet?
            if network.vhost {
                do throws(VhostError) { vhost = try VhostNet(queues: 2) } catch { throw .vhost(error) }
            }
            do throws(TapError) { networks.append(try NetDevice(configuration: network, vhost: vhost)) }
            catch { throw .network(error) }
            limited.append(networks[networks.count - 1])
        }
        devices += networks as [any VirtioDevice]
        self.networks = networks
        taps = networks.map(\.tapDescriptor)
        rng = configuration.rng ? RngDevice() : nil
        if let rng { devices.append(rng) }
        var shares: [FsDevice] = []
        let budget = configuration.shares.isEmpty ? (0, 0) : FsDevice.descriptorBudget(shares: configuration.shares.count)
        for share in configuration.shares {
            do throws(FsError) {
                shares.append(try FsDevice(share, maxNodes: share.maxNodes ?? budget.0, maxHandles: share.maxHandles ?? budget.1))
            } catch { throw .share(error) }
        }
        devices += shares as [any VirtioDevice]
        self.shares = shares
        fsEvents = shares.isEmpty ? nil : try EventLoop()
        // The vsock device binds its Unix socket now: a path in use is refused before boot.
        do throws(VsockError) { vsock = try configuration.vsock.map { c throws(VsockError) in try VsockDevice(configuration: c) } }
        catch { throw .vsock(error) }
        if let vsock { devices.append(vsock) }
        balloon = configuration.balloon.map { BalloonDevice(configuration: $0) }
        if let balloon { devices.append(balloon) }
        self.console = console
        let windows = devices.indices.map(VirtioWiring.window(for:))

        trace("devices opened")

        // The firmware tables describe the machine to the guest: CPUs, COM1, the keyboard
        // controller, pvpanic, the power registers and the virtio devices.
        // (A restored machine's tables and kernel are in its memory already.)
        var entry: BootEntry?
        if let kernel {
            let rsdp: GuestAddress
            do {
                rsdp = try ACPI.write(AcpiConfiguration(cpus: configuration.cpus, virtioMMIO: windows), into: memory)
                // Where a restarting kernel jumps when it has no better way (the default on this
                // platform; Firmware/ResetVector.swift says why).
                try ResetVector.write(into: memory)
            } catch { throw .setup("cannot build the ACPI tables: \(error)") }

            // The command line is the user's, unless they asked for the devices to be named on it.
            var commandLine = configuration.commandLine
            if configuration.virtioOnCommandLine, !windows.isEmpty {
                commandLine += (commandLine.isEmpty ? "" : " ") + VirtioWiring.commandLineDevices(windows)
            }
            do {
                // The files' bytes are borrowed, so the files must outlive the copy into the guest.
                entry = try withExtendedLifetime((kernel, initrd)) { () throws(BootError) in
                    // A bzImage expanded once and kept boots from its uncompressed kernel, mapped in.
                    switch kernel {
                    case let .cached(cached):
                        return try loadKernel(image: cached.elf, initrd: initrd?.bytes, commandLine: commandLine,
                                              rsdp: rsdp, into: memory, map: KernelCaching.mapper(cached, into: memory))
                    case let .file(file):
                        return try loadKernel(image: file.bytes, initrd: initrd?.bytes, commandLine: commandLine,
                                              rsdp: rsdp, into: memory)
                    }
                }
            } catch { throw .kernel(path: configuration.kernelPath, error) }
            trace("kernel loaded")
        }

        let vm = try Self.kvm {
            let vm = try system.createVM()
            try vm.createPlatform(tssAddress: MemoryMap.kvmTSS)
            trace("VM created")
            // KVM_SET_USER_MEMORY_REGION: the host kernel's cost (PVM's KVM takes milliseconds).
            try vm.map(memory)
            trace("guest memory given to KVM")
            return vm
        }
        self.vm = vm

        // The platform devices, each where the ACPI tables said it would be.
        power = PowerControl()
        let serialInterrupt = try Self.interruptLine(vm, gsi: PlatformInterrupts.com1)
        serial = Serial(output: stdout, interrupt: { serialInterrupt.signal() })
        let keyboardInterrupt = try Self.interruptLine(vm, gsi: PlatformInterrupts.keyboard)
        keyboard = I8042(power: power, interrupt: { keyboardInterrupt.signal() })
        var slots: [VirtioSlot] = []
        for (index, device) in devices.enumerated() {
            // A shared directory's requests are file-system calls, served on a thread of their own.
            let loop = (device is FsDevice ? fsEvents : nil) ?? events
            slots.append(try VirtioWiring.attach(device, index: index, vm: vm, memory: memory, events: loop))
        }
        virtio = slots
        // A rate-limited device out of tokens waits for its timer, here, on the I/O thread.
        for device in limited where device.throttleTimer.isUsable {
            _ = try events.watch(device.throttleTimer.descriptor) { device.throttleTimerFired() }
        }
        // A network device reads its TAP only while the guest has posted receive buffers; it says
        // when, and the I/O thread watches or ignores the TAP accordingly.
        for network in networks {
            let events = self.events
            network.setTapReadableHandler { [unowned network] wanted in
                if wanted { _ = try? events.watch(network.tapDescriptor) { network.tapReadable() } }
                else { events.unwatch(network.tapDescriptor) }
            }
        }
        // The balloon asks the guest for fresh statistics when its timer fires, on the I/O thread.
        if let balloon, balloon.statisticsTimer.isUsable {
            _ = try events.watch(balloon.statisticsTimer.descriptor) { balloon.statisticsTimerFired() }
        }
        // The vsock device watches its listener and connections itself, through the I/O thread.
        vsock?.start(watcher: events)
        let power = self.power
        do {
            ports = try PlatformWiring.ports(serial: serial, keyboard: keyboard, power: power, bootTimer: BootTimer { value in
                printError(BootClock.line("boot timer: the guest wrote 0x" + String(value, radix: 16)))
            })
            mmio = try Bus(slots.map { Bus.window($0.window.base.rawValue, $0.window.size, $0.transport) })
        } catch { throw .setup(error.description) }

        // The vCPUs, all created before any runs: the boot processor wakes the others with
        // INIT/SIPI as soon as it gets going, and a vCPU that does not exist yet would miss it.
        (vcpus, cpuid) = try Self.kvm {
            let supported = try system.supportedCPUID()
            var vcpus: [VCPU] = [], tables: [CPUIDTable] = []
            for id in 0..<configuration.cpus {
                let vcpu = try vm.createVCPU(id: id)
                if let restore {
                    let saved = restore.saved.vcpus[id]
                    try vcpu.restoreState(saved)
                    tables.append(CPUIDTable(entries: saved.cpuid))
                } else {
                    tables.append(supported.forVCPU(id: id, count: configuration.cpus))
                    try vcpu.configure(cpuid: tables[id])
                    if id == 0, let entry { try vcpu.enter(entry) }
                }
                vcpus.append(vcpu)
            }
            return (vcpus, tables)
        }
        halts = HaltWatch(vcpuCount: vcpus.count)
        if let restore { try restoreDevices(restore.saved, advanceClock: restore.advanceClock) }
        trace("VM built")
    }

    /// An eventfd wired to interrupt line `gsi` of `vm` (an irqfd): a platform device's IRQ.
    private static func interruptLine(_ vm: VirtualMachine, gsi: UInt32) throws(LaunchError) -> EventFD {
        do {
            let line = try EventFD()
            try vm.attachInterrupt(line, gsi: gsi)
            return line
        } catch { throw .kvm(.call(error)) }
    }

    /// Runs a sequence of KVM calls, whose errors come as `KVMError` (opening, creating) or
    /// `SystemCallError` (one ioctl), and reports either as a `LaunchError`.
    private static func kvm<T>(_ body: () throws -> T) throws(LaunchError) -> T {
        do { return try body() }
        catch let error as KVMError { throw .kvm(error) }
        catch let error as SystemCallError { throw .kvm(.call(error)) }
        catch { throw .setup("\(error)") }
    }

}

extension StopReason {
    /// The process exit code (docs/Architecture.md has the table): 0 when the guest chose to
    /// stop, 1 when the VM failed.
    public var exitCode: Int32 {
        switch self {
        case .powerOff, .reboot, .userQuit: return 0
        case .guestPanic, .tripleFault, .failure: return 1
        }
    }

    /// The line to print on standard error, or nil when the guest simply stopped.
    public var message: String? {
        switch self {
        case .powerOff, .reboot, .userQuit: return nil
        case .guestPanic: return "the guest kernel panicked (reported through pvpanic)"
        case let .tripleFault(vcpu): return "the guest triple-faulted on vCPU \(vcpu) (KVM_EXIT_SHUTDOWN)"
        case let .failure(why): return why
        }
    }
}
