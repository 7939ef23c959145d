@_exported import Devices
@_exported import Launcher
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A Linux guest in a KVM virtual machine, for Swift programs that run VMs in-process.
///
/// ```swift
/// let vm = VirtualMachine(configuration: VMConfiguration(kernelPath: "vmlinuz", commandLine: "console=ttyS0"),
///                         console: .init(output: ConsoleHandler { bytes in print(bytes) }))
/// try vm.start()
/// vm.pause(); vm.resume()
/// let reason = await vm.exitStatus    // or vm.stop()
/// ```
///
/// Its life is `notStarted → running ⇄ paused → stopped`. A VM does nothing to the process
/// beyond its own threads and descriptors: no terminal, no signal handlers but the one that
/// kicks its vCPUs out of KVM_RUN (a real-time signal with a handler that does nothing), and
/// seccomp only on its own threads and only when `configuration.sandbox` says so. Several VMs
/// may run in one process; each is stopped and its threads joined by `stop()`.
public final class VirtualMachine: Sendable {
    public enum State: Sendable, Equatable, CustomStringConvertible {
        case notStarted, running, paused
        case stopped(StopReason)

        public var description: String {
            switch self {
            case .notStarted: "Not started"
            case .running: "Running"
            case .paused: "Paused"
            case .stopped: "Stopped"
            }
        }
    }

    /// Why a request does not fit the VM's state.
    public struct StateError: Error, Equatable, Sendable, CustomStringConvertible {
        public let description: String
    }

    public let configuration: VMConfiguration
    /// The snapshot this VM starts from instead of booting, if any.
    private let restore: Machine.Restore?
    private let connection: ConsoleConnection
    private let machine = Mutex<Machine?>(nil)
    /// The state and who watches it, under one lock: an observer added as the VM stops is
    /// called exactly once, by `observeState` or by `set`.
    private let watched = Mutex<(state: State, observers: [@Sendable (State) -> Void])>((.notStarted, []))
    private let stopped = StopSignal()
    private let haltObservers = Mutex<[@Sendable () -> Void]>([])
    private let watcher = Mutex<MachineThread?>(nil)

    /// A VM that will boot `configuration`, its console connected as `console` says. Nothing
    /// is checked or opened until `start()`.
    public init(configuration: VMConfiguration, console: ConsoleConnection) {
        self.configuration = configuration
        self.connection = console
        restore = nil
    }

    /// A VM that will continue the snapshot `saved` (read with `SavedMachine(statePath:)`),
    /// its memory mapped from `memoryPath`. `configuration` is the saved one unless the caller
    /// replaced paths in it (disks, TAP devices, the vsock socket); its shape must not change.
    ///
    /// The guest's clock goes on from the snapshot plus the wall-clock time since, so that its
    /// date is right; `advanceClock: false` has it go on from the snapshot's moment.
    public init(restoring saved: SavedMachine, memoryPath: String, configuration: VMConfiguration? = nil,
                advanceClock: Bool = true, console: ConsoleConnection) {
        self.configuration = configuration ?? saved.configuration
        self.connection = console
        restore = Machine.Restore(saved: saved, memoryPath: memoryPath, advanceClock: advanceClock)
    }

    public var state: State { watched.withLock { $0.state } }

    /// Calls `handler` (on the thread that made the change) each time the state changes; for a
    /// VM that has already stopped, once, at once.
    public func observeState(_ handler: @escaping @Sendable (State) -> Void) {
        let now = watched.withLock { watched -> State in
            watched.observers.append(handler)
            return watched.state
        }
        if case .stopped = now { handler(now) }
    }

    /// Calls `handler` once, on the VM's own watcher thread, if the guest halts its CPUs for
    /// good (`systemctl halt`): the VM stays running, as a halted PC stays on, until `stop()`.
    public func observeHalt(_ handler: @escaping @Sendable () -> Void) {
        haltObservers.withLock { $0.append(handler) }
    }

    private func set(_ state: State) {
        let observers = watched.withLock { watched -> [@Sendable (State) -> Void] in
            watched.state = state
            return watched.observers
        }
        for observer in observers { observer(state) }
    }

    /// Builds the machine (reading the kernel, opening disks and TAPs, creating the VM) and
    /// starts it. Input problems are thrown as `LaunchError` before any guest code runs.
    ///
    /// `paused` leaves it paused before the guest runs an instruction (`resume()` starts it):
    /// what a restore without `resume_vm` does.
    public func start(paused: Bool = false) throws(LaunchError) {
        guard state == .notStarted else { throw .setup("the VM has already been started") }
        let machine = try Machine(configuration, console: connection, restoring: restore)
        try machine.start(paused: paused)
        self.machine.withLock { $0 = machine }
        set(paused ? .paused : .running)
        // A thread of its own waits for the guest (or anyone) to stop the machine, then ends
        // the machine's threads and reports why.
        let stopped = self.stopped
        let thread = try MachineThread(name: "lguest-watch") { [self] in
            do throws(LaunchError) { try machine.confineWatcherThread() } catch { machine.requestStop(.failure(error.description)) }
            let reason = machine.waitForStop(halted: {
                for observer in self.haltObservers.withLock({ $0 }) { observer() }
            })
            machine.shutdown()
            self.machine.withLock { $0 = nil }
            set(.stopped(reason))
            stopped.fulfil(reason)
        }
        watcher.withLock { $0 = thread }
    }

    /// Pauses a running VM: returns once no vCPU is in the guest and no device is working.
    public func pause() throws(StateError) {
        guard let machine = runningMachine() else { throw StateError(description: "the VM is not running") }
        if machine.pause() { set(.paused) }
    }

    /// Lets a paused VM go on.
    public func resume() throws(StateError) {
        guard let machine = runningMachine() else { throw StateError(description: "the VM is not running") }
        machine.resume()
        if case .paused = state { set(.running) }
    }

    /// Saves the paused VM: guest memory to `memoryPath`, everything else to `statePath`. A
    /// new process continues it with `VirtualMachine(restoring:memoryPath:console:)`.
    public func snapshot(statePath: String, memoryPath: String, notes: [UInt8] = []) throws(LaunchError) {
        guard state == .paused, let machine = runningMachine() else { throw .setup("the VM must be paused to take a snapshot") }
        try machine.snapshot(statePath: statePath, memoryPath: memoryPath, notes: notes)
    }

    private func runningMachine() -> Machine? {
        switch state {
        case .running, .paused: return machine.withLock { $0 }
        default: return nil
        }
    }

    /// Stops the VM if it still runs and waits until every one of its threads has ended.
    @discardableResult
    public func stop() -> StopReason? {
        guard state != .notStarted else { return nil }
        machine.withLock { $0 }?.requestStop(.userQuit)
        return waitUntilStopped()
    }

    /// Blocks until the VM has stopped and its threads have ended; returns why it stopped.
    public func waitUntilStopped() -> StopReason {
        let reason = stopped.wait()
        watcher.withLock { $0 }?.join()
        return reason
    }

    /// Why the VM stopped, once it has.
    public var exitStatus: StopReason {
        get async {
            await withCheckedContinuation { continuation in
                stopped.notify { continuation.resume(returning: $0) }
            }
        }
    }

    /// Types `bytes` on the guest's console (the serial port, or virtio-console when configured).
    public func writeConsole(_ bytes: [UInt8]) {
        machine.withLock { $0 }?.typeOnConsole(bytes)
    }

    /// The underlying machine while it runs, for the control plane's finer requests.
    public var runningMachineForControl: Machine? { runningMachine() }
}

/// A console output that hands each chunk the guest prints to a closure (called on a vCPU or
/// the I/O thread: it must not block for long).
public struct ConsoleHandler: ByteSink {
    let body: @Sendable (UnsafeRawBufferPointer) -> Void
    public init(_ body: @escaping @Sendable (UnsafeRawBufferPointer) -> Void) { self.body = body }
    public func write(_ bytes: UnsafeRawBufferPointer) { body(bytes) }
}
