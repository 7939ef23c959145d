import Devices
import KVM
import Sandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The threads of a started machine.
struct MachineThreads {
    var io: MachineThread?
    var fs: MachineThread?
    /// Each disk's workers (`BlockWorkers`), which only ever run what the I/O thread hands them.
    var diskWorkers: [MachineThread] = []
    var vcpus: [MachineThread] = []
    var started = false
    var shutDown = false
}

extension Machine {
    // The machine comes to life: one thread per vCPU, one for device I/O. From here
    // on the main thread (or whoever embeds us) only watches, pauses, and at the end stops.

    /// Starts the vCPU and I/O threads and returns. With `configuration.sandbox`, the process
    /// drops its capabilities first and each thread installs its filter before its loop; the
    /// caller's own thread is left alone (see `confineCallingThread`). A machine starts once.
    public func start(paused: Bool = false) throws(LaunchError) {
        guard threads.withLock({ t -> Bool in defer { t.started = true }; return !t.started }) else {
            throw .setup("the machine has already been started")
        }
        if paused {
            // Every thread parks before its first piece of work; `resume()` lets them go and
            // puts back the clock as it is now.
            gate.pauseBeforeStart()
            pausedClock.withLock { $0 = try? vm.clock() }
            pausedAt.withLock { $0 = VirtualMachine.realtimeNanoseconds() }
        }
        guard KickSignal.installed else { throw .setup("cannot install the vCPU kick signal's handler") }
        try watchConsoleInput()
        // Setup is over: from here on no thread needs a capability, a new file or a new thread
        // beyond the ones started below (docs/Sandbox.md).
        let sandbox = try MachineSandbox(enabled: configuration.sandbox, vcpus: vcpus, taps: taps,
                                         vhosts: networks.compactMap { $0.vhost?.fileDescriptor },
                                         blockDevices: blockDevices, vsock: vsock != nil, shares: fsEvents != nil)
        self.sandbox.withLock { $0 = sandbox }
        let events = self.events, power = self.power, gate = self.gate
        gate.enter()
        let io = try MachineThread(name: "lguest-io") {
            defer { gate.leave() }
            guard enterThreadSandbox(sandbox.io, power: power) else { return }
            if let failure = events.run(gate: gate) { power.requestStop(.failure(failure.description)) }
        }
        threads.withLock { $0.io = io }
        if let fsEvents {
            gate.enter()
            let fs = try MachineThread(name: "lguest-fs") {
                defer { gate.leave() }
                guard enterThreadSandbox(sandbox.fs, power: power) else { return }
                if let failure = fsEvents.run(gate: gate) { power.requestStop(.failure(failure.description)) }
            }
            threads.withLock { $0.fs = fs }
        }
        for (vcpu, filter) in zip(vcpus, sandbox.vcpus) {
            let (ports, mmio, exits, halts) = (self.ports, self.mmio, self.exits, self.halts)
            let trace = configuration.traceBoot && vcpu.id == 0
            gate.enter()
            let thread = try MachineThread(name: "lguest-vcpu\(vcpu.id)") {
                defer { gate.leave() }
                KickSignal.unblock()
                guard enterThreadSandbox(filter, power: power) else { return }
                if trace { printError(BootClock.line("trace: first KVM_RUN")) }
                runVCPU(vcpu, ports: ports, mmio: mmio, power: power, gate: gate, exits: exits, halts: halts)
            }
            threads.withLock { $0.vcpus.append(thread) }
        }
        // The disks' workers last, off the way to the first KVM_RUN: until they are ready, a batch
        // is served on the I/O thread alone.
        for (disk, block) in blocks.enumerated() {
            let workers = block.workers
            for worker in 0 ..< workers.count {
                let thread = try MachineThread(name: "lguest-disk\(disk).\(worker)") {
                    guard enterThreadSandbox(sandbox.diskWorker, power: power) else { return }
                    workers.serveBatches()
                }
                threads.withLock { $0.diskWorkers.append(thread) }
            }
        }
    }

    /// Installs the main thread's filter on the calling thread: for a program that, like the
    /// command-line tool, does nothing after `start()` but wait and exit.
    public func confineCallingThread() throws(LaunchError) {
        try sandbox.withLock { $0 }?.confineMainThread()
    }

    /// Installs the watcher's filter on the calling thread, when the machine is sandboxed: for
    /// the thread that waits for the VM to stop and then calls `shutdown()`.
    public func confineWatcherThread() throws(LaunchError) {
        guard configuration.sandbox else { return }
        do throws(SandboxError) { try ThreadSandbox.watcher(process: getpid()).install() }
        catch { throw .sandbox(error) }
    }

    /// Stops the VM where it is: every vCPU out of KVM_RUN and parked, the I/O thread parked
    /// between two batches of work. Returns when all are, or false if the VM stopped instead.
    ///
    /// The guest's clock stops too: its kvmclock is read when the VM stops and put back when it
    /// goes on, so the guest does not see the time it spent paused (as with QEMU's `stop`).
    @discardableResult
    public func pause() -> Bool {
        guard gate.pause(kick: { kickAll() }) else { return false }
        pausedClock.withLock { $0 = try? vm.clock() }
        pausedAt.withLock { $0 = VirtualMachine.realtimeNanoseconds() }
        return true
    }

    /// Lets a paused VM go on where it was.
    public func resume() {
        if let clock = pausedClock.withLock({ value -> UInt64? in defer { value = nil }; return value }) {
            try? vm.setClock(clock)
            // Not every host has it (it needs kvmclock in the guest); the guest copes without.
            for vcpu in vcpus { try? vcpu.notePausedByHost() }
        }
        gate.resume()
    }

    /// Whether the VM is paused.
    public var isPaused: Bool { gate.isPaused }

    /// Blocks until some thread reports a reason to stop (the guest, a failure, `requestStop`).
    /// If the guest halts for good on the way (`HaltWatch`), `halted` is called, once.
    public func waitForStop(halted: () -> Void = {}) -> StopReason {
        while true {
            if let reason = power.waitForStop(timeoutNanoseconds: 1_000_000_000) { return reason }
            if power.shutdownAnnounced, !gate.isPaused, halts.look(kick: { kickVCPUs() }) { halted() }
        }
    }

    /// Asks the machine to stop for `reason` (the first reason reported wins).
    public func requestStop(_ reason: StopReason) { power.requestStop(reason) }

    /// The reason the machine stopped, once it has.
    public var stopReason: StopReason? { power.stopReason }

    /// Ends every thread the machine started and lets go of what they used: when it returns no
    /// thread of this machine is running, and the machine's descriptors close as soon as the
    /// last reference to it goes. Stops the VM with `userQuit` if nothing stopped it before.
    public func shutdown() {
        power.requestStop(.userQuit)
        gate.stop()
        let started = threads.withLock { t -> MachineThreads? in
            guard !t.shutDown else { return nil }
            t.shutDown = true
            return t
        }
        guard let started else { return }
        kickAll()
        started.io?.join()
        // No batch is being served once the I/O thread has ended.
        for block in blocks { block.workers.stop() }
        for thread in started.diskWorkers { thread.join() }
        started.fs?.join()
        for thread in started.vcpus { thread.join() }
        events.removeAllHandlers()
        fsEvents?.removeAllHandlers()
        for network in networks { network.setTapReadableHandler { _ in } }
    }

    /// Sends every vCPU out of KVM_RUN once; they go back in unless something asked them to stop.
    func kickVCPUs() {
        for vcpu in vcpus { vcpu.requestExit() }
        for thread in threads.withLock({ $0.vcpus }) { thread.kick() }
    }

    /// Makes every thread reach its checkpoint: the vCPUs leave KVM_RUN, the I/O thread leaves
    /// epoll_wait.
    func kickAll() {
        for vcpu in vcpus { vcpu.requestExit() }
        let vcpuThreads = threads.withLock { $0.vcpus }
        for thread in vcpuThreads { thread.kick() }
        events.wake()
        fsEvents?.wake()
    }

    /// Keys from the connection's input go to the console (COM1 or virtio-console), through
    /// the escape filter when asked. An input that is a regular file or /dev/null cannot be
    /// watched, and the guest gets no input.
    private func watchConsoleInput() throws(LaunchError) {
        guard let fd = connection.input else { return }
        let power = self.power, events = self.events
        let deliver: @Sendable ([UInt8]) -> Void
        if let console { deliver = { console.enqueueInput($0) } }
        else { let serial = self.serial; deliver = { serial.enqueueInput($0) } }
        let filter = Mutex(EscapeFilter())
        let escape = connection.escapeQuits
        _ = try events.watch(fd) {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 {
                if n == 0 || (errno != EINTR && errno != EAGAIN) { events.unwatch(fd) }
                return
            }
            let input = buffer.prefix(n)
            guard escape else { deliver(Array(input)); return }
            switch filter.withLock({ $0.filter(input) }) {
            case .quit: power.requestStop(.userQuit)
            case let .send(bytes): if !bytes.isEmpty { deliver(bytes) }
            }
        }
    }

    /// Serves disk `index` (in `configuration.disks` order) from the image at `path` from now
    /// on; the guest hears its capacity may have changed. For Firecracker's `PATCH /drives`.
    public func replaceDisk(_ index: Int, path: String) throws(LaunchError) {
        guard blocks.indices.contains(index) else { throw .badOption("there is no disk \(index)") }
        do throws(BlockError) { try blocks[index].replaceImage(path: path) } catch { throw .disk(error) }
    }

    /// Replaces disk `index`'s rate limits on the running VM (full buckets).
    public func setDiskRateLimit(_ index: Int, _ limit: RateLimit) throws(LaunchError) {
        guard blocks.indices.contains(index) else { throw .badOption("there is no disk \(index)") }
        blocks[index].setRateLimit(limit)
    }

    /// Replaces network device `index`'s rate limits, both directions, on the running VM.
    public func setNetworkRateLimit(_ index: Int, receive: RateLimit, transmit: RateLimit) throws(LaunchError) {
        guard networks.indices.contains(index) else { throw .badOption("there is no network device \(index)") }
        guard networks[index].vhost == nil else {
            throw .badOption("network device \(index) uses vhost=on: its frames never pass through lguest, so it cannot be rate limited")
        }
        networks[index].setRateLimit(receive: receive, transmit: transmit)
    }

    /// Asks the guest to make its balloon `mib` MiB large (Firecracker's `PATCH /balloon`): it
    /// hears through a configuration-change interrupt, and the pages it inflates leave this
    /// process's resident memory. At most the guest's memory.
    public func setBalloonTarget(mib: UInt32) throws(LaunchError) {
        guard let balloon else { throw .badOption("there is no balloon device") }
        let wanted = BalloonConfiguration(amountMiB: mib)
        do throws(BalloonError) { try wanted.validate(memoryMiB: configuration.memoryMiB) } catch { throw .balloon(error) }
        balloon.setTarget(pages: wanted.targetPages)
    }

    /// Changes how often the balloon asks for the guest's statistics; the next request goes at
    /// once. Statistics can be neither turned on nor off once the machine is built.
    public func setBalloonStatisticsInterval(seconds: UInt16) throws(LaunchError) {
        guard let balloon else { throw .badOption("there is no balloon device") }
        do throws(BalloonError) { try balloon.setStatisticsInterval(seconds: seconds) } catch { throw .balloon(error) }
    }

    /// The balloon's target, what the guest says it holds, and the guest's last statistics.
    public var balloonStatus: BalloonStatus? { balloon?.status }

    /// Presses Ctrl-Alt-Delete on the i8042 keyboard: Linux hands it to init (SIGINT), which
    /// is how Firecracker's `SendCtrlAltDel` asks a guest to shut down.
    public func pressCtrlAltDel() { keyboard.pressKeys(I8042.ctrlAltDelete) }

    /// Types `bytes` on the guest's console, as if they came from the connection's input.
    public func typeOnConsole(_ bytes: [UInt8]) {
        if let console { console.enqueueInput(bytes) } else { serial.enqueueInput(bytes) }
    }
}

/// What a machine's devices and vCPUs have done, read at once for metrics.
public struct MachineStatistics: Sendable {
    public var blocks: [BlockStatistics]
    public var networks: [NetStatistics]
    public var rng: RngDevice.Statistics?
    public var vsock: VsockStatistics?
    public var balloon: BalloonStatistics?
    public var uart: UartStatistics
    public var exitsIOIn: UInt64, exitsIOOut: UInt64, exitsMMIORead: UInt64, exitsMMIOWrite: UInt64, vcpuFailures: UInt64
    public var panicked: Bool
}

extension Machine {
    public var statistics: MachineStatistics {
        MachineStatistics(
            blocks: blocks.map(\.statistics), networks: networks.map(\.statistics), rng: rng?.statistics,
            vsock: vsock?.statistics, balloon: balloon?.statistics,
            uart: serial.statistics,
            exitsIOIn: exits.ioIn.load(ordering: .relaxed), exitsIOOut: exits.ioOut.load(ordering: .relaxed),
            exitsMMIORead: exits.mmioRead.load(ordering: .relaxed), exitsMMIOWrite: exits.mmioWrite.load(ordering: .relaxed),
            vcpuFailures: exits.failures.load(ordering: .relaxed),
            panicked: power.stopReason == .guestPanic)
    }
}

extension Machine {
    /// Installs, on the calling thread, the filter of a thread that only pauses and resumes
    /// this machine on signals (the command-line tool's SIGTSTP and SIGCONT), when sandboxed.
    public func confineSignalThread() throws(LaunchError) {
        guard configuration.sandbox else { return }
        let filter = ThreadSandbox.signalControl(process: getpid(), vm: vm.descriptor.raw, vcpus: vcpus.map(\.descriptor.raw))
        do throws(SandboxError) { try filter.install() } catch { throw .sandbox(error) }
    }
}
