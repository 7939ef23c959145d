import Boot
import CKVM
import Devices
import Firmware
import GuestMemory
import KVM
import Synchronization
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A VM assembled from a configuration, ready to run: memory filled, devices wired, vCPUs set up.
///
/// Everything that can fail because of the user's input fails in `init`, before the guest runs
/// (exit code 2). Once `run` starts the vCPUs, only the guest or KVM can stop the machine.
public final class Machine: Sendable {
    public let configuration: VMConfiguration
    let memory: GuestMemory
    let vm: VirtualMachine
    let vcpus: [VCPU]
    let ports: Bus
    let mmio: Bus
    let power: PowerControl
    let serial: Serial
    let console: ConsoleDevice?
    let virtio: [VirtioSlot]
    let events: EventLoop
    /// The TAP descriptors, which vCPU threads may still reconfigure once sandboxed.
    let taps: [CInt]
    /// The disks that are block devices, which the I/O thread may still discard on.
    let blockDevices: [CInt]

    public init(_ configuration: VMConfiguration) throws(LaunchError) {
        self.configuration = configuration
        try configuration.validate()
        // The process's start time comes from /proc, which no thread may open once the sandbox
        // is up; the boot timer, on a vCPU thread, must find it already read.
        _ = BootClock.processStart
        if configuration.traceBoot { printError(BootClock.line("trace: configuration read")) }

        // Journey 1: a configuration arrives. lguest's Launcher began life by mapping a chunk of
        // its own memory as the guest's "physical" memory and reading the kernel into it; we do
        // the same, except that KVM, not a kernel module of our own, is the Host. Files first:
        // if the kernel cannot even be read, nothing else is worth doing.
        let kernel = try LoadedFile(path: configuration.kernelPath, what: "kernel")
        let initrd = try configuration.initrdPath.map { path throws(LaunchError) in try LoadedFile(path: path, what: "initrd") }

        let system: KVMSystem
        do { system = try KVMSystem() } catch { throw .kvm(error) }

        let memory: GuestMemory
        do { memory = try GuestMemory(layout: MemoryMap.ramRegions(bytes: configuration.memoryMiB << 20)) }
        catch { throw .memory(error) }
        self.memory = memory

        // The virtio devices, each opening what it serves (an image file, a TAP device) now,
        // so that a missing disk is a clean refusal rather than a surprise after boot.
        events = try EventLoop()
        let stdout = DescriptorSink(fd: 1)
        var devices: [any VirtioDevice] = []
        let console = configuration.console == .virtio ? ConsoleDevice(output: stdout) : nil
        if let console { devices.append(console) }
        var blockDevices: [CInt] = []
        for disk in configuration.disks {
            do throws(BlockError) {
                let device = try BlockDevice(disk)
                if let fd = device.blockDeviceDescriptor { blockDevices.append(fd) }
                devices.append(device)
            } catch { throw .disk(error) }
        }
        self.blockDevices = blockDevices
        var networks: [NetDevice] = []
        for network in configuration.networks {
            do throws(TapError) { networks.append(try NetDevice(configuration: network)) }
            catch { throw .network(error) }
        }
        devices += networks as [any VirtioDevice]
        taps = networks.map(\.tapDescriptor)
        if configuration.rng { devices.append(RngDevice()) }
        self.console = console
        let windows = devices.indices.map(VirtioWiring.window(for:))

        // The firmware tables describe the machine to the guest: CPUs, COM1, the keyboard
        // controller, pvpanic, the power registers and the virtio devices.
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
        let entry: BootEntry
        do {
            // The files' bytes are borrowed, so the files must outlive the copy into the guest.
            entry = try withExtendedLifetime((kernel, initrd)) { () throws(BootError) in
                try loadKernel(image: kernel.bytes, initrd: initrd?.bytes, commandLine: commandLine,
                               rsdp: rsdp, into: memory)
            }
        } catch { throw .kernel(path: configuration.kernelPath, error) }

        let vm = try Self.kvm {
            let vm = try system.createVM()
            try vm.createPlatform(tssAddress: MemoryMap.kvmTSS)
            try vm.map(memory)
            return vm
        }
        self.vm = vm

        // The platform devices, each where the ACPI tables said it would be.
        power = PowerControl()
        let serialInterrupt: EventFD
        do {
            serialInterrupt = try EventFD()
            try vm.attachInterrupt(serialInterrupt, gsi: PlatformInterrupts.com1)
        } catch { throw .kvm(.call(error)) }
        serial = Serial(output: stdout, interrupt: { serialInterrupt.signal() })
        var slots: [VirtioSlot] = []
        for (index, device) in devices.enumerated() {
            slots.append(try VirtioWiring.attach(device, index: index, vm: vm, memory: memory, events: events))
        }
        virtio = slots
        // A network device reads its TAP only while the guest has posted receive buffers; it says
        // when, and the I/O thread watches or ignores the TAP accordingly.
        for network in networks {
            let events = self.events
            network.setTapReadableHandler { [unowned network] wanted in
                if wanted { _ = try? events.watch(network.tapDescriptor) { network.tapReadable() } }
                else { events.unwatch(network.tapDescriptor) }
            }
        }
        let power = self.power
        do {
            ports = try PlatformWiring.ports(serial: serial, power: power, bootTimer: BootTimer { value in
                printError(BootClock.line("boot timer: the guest wrote 0x" + String(value, radix: 16)))
            })
            mmio = try Bus(slots.map { Bus.window($0.window.base.rawValue, $0.window.size, $0.transport) })
        } catch { throw .setup(error.description) }

        // The vCPUs, all created before any runs: the boot processor wakes the others with
        // INIT/SIPI as soon as it gets going, and a vCPU that does not exist yet would miss it.
        vcpus = try Self.kvm {
            let cpuid = try system.supportedCPUID()
            return try (0..<configuration.cpus).map { id in
                let vcpu = try vm.createVCPU(id: id)
                try vcpu.configure(cpuid: cpuid.forVCPU(id: id, count: configuration.cpus))
                if id == 0 { try vcpu.enter(entry) }
                return vcpu
            }
        }
        if configuration.traceBoot { printError(BootClock.line("trace: VM built")) }
    }

    /// Runs a sequence of KVM calls, whose errors come as `KVMError` (opening, creating) or
    /// `SystemCallError` (one ioctl), and reports either as a `LaunchError`.
    private static func kvm<T>(_ body: () throws -> T) throws(LaunchError) -> T {
        do { return try body() }
        catch let error as KVMError { throw .kvm(error) }
        catch let error as SystemCallError { throw .kvm(.call(error)) }
        catch { throw .setup("\(error)") }
    }

    /// Starts the guest and blocks until it stops; returns why.
    public func run() throws(LaunchError) -> StopReason {
        Terminal.unblockTerminatingSignals()
        Terminal.enterRawMode()
        defer { Terminal.restore() }
        try watchConsoleInput()
        // Setup is over: from here on no thread needs a capability, a new file or a new thread
        // beyond the ones started below (docs/Sandbox.md).
        let sandbox = try MachineSandbox(enabled: configuration.sandbox, vcpus: vcpus, taps: taps,
                                         blockDevices: blockDevices)
        let events = self.events, power = self.power
        try spawnThread(name: "lguest-io") {
            guard enterThreadSandbox(sandbox.io, power: power) else { return }
            events.run()
        }
        for (vcpu, filter) in zip(vcpus, sandbox.vcpus) {
            let (ports, mmio) = (self.ports, self.mmio)
            let trace = configuration.traceBoot && vcpu.id == 0
            try spawnThread(name: "lguest-vcpu\(vcpu.id)") {
                guard enterThreadSandbox(filter, power: power) else { return }
                if trace { printError(BootClock.line("trace: first KVM_RUN")) }
                runVCPU(vcpu, ports: ports, mmio: mmio, power: power)
            }
        }
        try sandbox.confineMainThread()
        return power.waitForStop()
    }

    /// Keys typed on the host go to the console (COM1 or virtio-console), through the escape
    /// filter. Standard input that is a
    /// regular file or /dev/null is not a console: the guest gets no input.
    private func watchConsoleInput() throws(LaunchError) {
        let power = self.power, events = self.events
        let deliver: @Sendable ([UInt8]) -> Void
        if let console { deliver = { console.enqueueInput($0) } }
        else { let serial = self.serial; deliver = { serial.enqueueInput($0) } }
        let filter = Mutex(EscapeFilter())
        let isTerminal = Terminal.inputIsTerminal
        _ = try events.watch(0) {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n <= 0 {
                if n == 0 || (errno != EINTR && errno != EAGAIN) { events.unwatch(0) }
                return
            }
            let input = buffer.prefix(n)
            guard isTerminal else { deliver(Array(input)); return }
            switch filter.withLock({ $0.filter(input) }) {
            case .quit: power.requestStop(.userQuit)
            case let .send(bytes): if !bytes.isEmpty { deliver(bytes) }
            }
        }
    }
}

/// The vCPU loop: run the guest until it exits to us, do what the exit asks, repeat.
func runVCPU(_ vcpu: VCPU, ports: Bus, mmio: Bus, power: PowerControl) {
    while true {
        let exit: VCPUExit
        do { exit = try vcpu.run() } catch {
            power.requestStop(.failure("vCPU \(vcpu.id): \(error)"))
            return
        }
        // Journey 4: the guest runs. Most of the time it never comes back here: KVM handles page
        // faults, interrupts and halts in the kernel, and the guest's notifications go straight
        // to eventfds. What reaches us is the rest: a port or an address that belongs to one of
        // our devices, or the end of the world.
        switch exit {
        case let .portIO(access):
            for i in 0..<access.count {
                let item = UnsafeMutableRawBufferPointer(rebasing: access.data[(i * access.size)..<((i + 1) * access.size)])
                if access.isWrite { ports.write(UInt64(access.port), from: UnsafeRawBufferPointer(item)) }
                else { ports.read(UInt64(access.port), into: item) }
            }
        case let .mmio(access):
            if access.isWrite { mmio.write(access.address, from: UnsafeRawBufferPointer(access.data)) }
            else { mmio.read(access.address, into: access.data) }
        case .halt:
            // Only without an in-kernel APIC, which lguest always creates; nothing to do.
            continue
        case .shutdown:
            // A PC resets itself on a triple fault; a kernel that announced its shutdown
            // through `\_TTS` and then triple-faults is using that as its reset (`reboot=t`).
            // Without the announcement it is a crash.
            power.requestStop(power.shutdownAnnounced ? .reboot : .tripleFault(vcpu: vcpu.id))
            return
        case let .failEntry(reason):
            power.requestStop(.failure("vCPU \(vcpu.id): KVM could not enter the guest (hardware reason 0x\(String(reason, radix: 16)))"))
            return
        case let .internalError(suberror, data):
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
            if power.stopReason != nil { return }
        case let .unexpected(reason):
            power.requestStop(.failure("vCPU \(vcpu.id): unexpected KVM exit \(reason)"))
            return
        }
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
