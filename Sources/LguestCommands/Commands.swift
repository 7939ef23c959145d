import Api
import ArgumentParser
import Devices
import Launcher
import LguestKit
#if canImport(Glibc)
import Glibc
#endif

/// The command-line tool. It only turns arguments into a `VMConfiguration`; the Launcher does the rest.
///
/// The commands live in a library of their own so that the argument handling can be exercised
/// without starting a VM: `configuration(from:)` parses and checks, and nothing else.
public struct Lguest: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lguest",
        abstract: "Boot a Linux kernel in a KVM virtual machine.",
        usage: """
            lguest [--initrd=FILE] [--block=FILE] [--tunnet=IP] [--rng] [--no-sandbox] MEM_MB KERNEL [KERNEL ARGS...]
              lguest run --kernel FILE [--initrd FILE] [--cmdline "..."] [--memory MiB] [--cpus N]
              lguest restore --snapshot STATE --memory-file MEM [--resume]
              lguest jail --id ID --uid UID --gid GID [--cgroup FILE=VALUE]... -- LGUEST-ARGS...
            """,
        discussion: """
            Exit status: 0 when the guest powers off or reboots, 1 when the VM fails (triple fault, \
            KVM error, guest panic), 2 when the input is bad (kernel, initrd, option values, no \
            usable /dev/kvm, a snapshot that cannot be restored), 64 for a usage error. On the \
            console, Ctrl-A x quits; kill -TSTP pauses the VM and kill -CONT resumes it.
            """,
        version: "lguest (serving Firecracker's API v\(Controller.firecrackerVersion))",
        subcommands: [Classic.self, Run.self, RestoreCommand.self, JailCommand.self],
        defaultSubcommand: Classic.self)

    public init() {}

    /// The VM `arguments` (without the program name) ask for, parsed and checked the way
    /// `lguest` does before it starts anything: ArgumentParser's errors for usage problems
    /// (and `--help`), `CommandLineError` for option values it refuses, `LaunchError` for a
    /// configuration the Launcher would refuse. Reads no files and touches no devices.
    public static func configuration(from arguments: [String]) throws -> VMConfiguration {
        let command = try parseAsRoot(arguments)
        guard let command = command as? any VMCommand else { throw CleanExit.helpRequest(command) }
        let configuration = try command.configuration()
        try configuration.validate()
        return configuration
    }
}

/// A form of the command line that describes a VM.
protocol VMCommand: ParsableCommand {
    /// The VM the parsed options describe, or the first option value that is wrong.
    func configuration() throws(CommandLineError) -> VMConfiguration
}

/// An option value the tool refuses: one line that names it.
public struct CommandLineError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The command line the guest gets when none is given: the serial console, reboot through
/// the keyboard controller, and reboot (that is, exit) one second after a panic.
let defaultCommandLine = "console=ttyS0 reboot=k panic=1"

/// lguest's own form, as its Launcher took it: memory in MiB, the kernel, then the kernel's arguments.
struct Classic: VMCommand {
    static let configuration = CommandConfiguration(
        commandName: "classic",
        abstract: "lguest's original form: lguest [options] MEM_MB KERNEL [KERNEL ARGS...]",
        shouldDisplay: false)

    @Option(name: .customLong("initrd"), help: ArgumentHelp("An initial RAM disk for the kernel.", valueName: "FILE"))
    var initrd: String?

    @Option(name: .customLong("block"), help: ArgumentHelp("A raw disk image to give the guest as a virtio block device.", valueName: "FILE"))
    var block: [String] = []

    @Option(name: .customLong("tunnet"), help: ArgumentHelp("A TAP network device whose host end gets this address.", valueName: "IP"))
    var tunnet: [String] = []

    @Flag(name: .customLong("rng"), help: "A virtio random number generator.")
    var rng = false

    @Flag(name: .customLong("no-sandbox"), help: "Run without the seccomp filters and with the capabilities lguest started with (for debugging; docs/Sandbox.md).")
    var noSandbox = false

    @Argument(help: ArgumentHelp("Guest memory in MiB.", valueName: "MEM_MB"))
    var memory: UInt64

    @Argument(help: ArgumentHelp("The kernel: a bzImage or an ELF vmlinux.", valueName: "KERNEL"))
    var kernel: String

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The kernel's command line.", valueName: "KERNEL ARGS"))
    var kernelArguments: [String] = []

    func configuration() throws(CommandLineError) -> VMConfiguration {
        var networks: [NetConfiguration] = []
        for address in tunnet {
            do throws(TapError) { networks.append(try NetConfiguration(tunnet: address)) }
            catch { throw CommandLineError("--tunnet=\(address): \(error)") }
        }
        return VMConfiguration(
            kernelPath: kernel, initrdPath: initrd,
            commandLine: kernelArguments.isEmpty ? defaultCommandLine : kernelArguments.joined(separator: " "),
            memoryMiB: memory, cpus: 1,
            disks: block.map { BlockConfiguration(path: $0) }, networks: networks, rng: rng,
            sandbox: !noSandbox)
    }

    func run() throws { try launch(self) }
}

/// The modern form, in the style of today's VMMs.
struct Run: VMCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Boot a kernel: lguest run --kernel FILE [--initrd FILE] [--cmdline \"...\"] [--memory MiB] [--cpus N]")

    @Option(help: ArgumentHelp("The kernel: a bzImage or an ELF vmlinux.", valueName: "FILE"))
    var kernel: String

    @Option(help: ArgumentHelp("An initial RAM disk for the kernel.", valueName: "FILE"))
    var initrd: String?

    @Option(help: ArgumentHelp("The kernel's command line.", valueName: "TEXT"))
    var cmdline: String = defaultCommandLine

    @Option(help: ArgumentHelp("Guest memory in MiB.", valueName: "MiB"))
    var memory: UInt64 = 256

    @Option(help: ArgumentHelp("Number of vCPUs.", valueName: "N"))
    var cpus: Int = 1

    @Option(help: ArgumentHelp("Where the guest's console is: serial (ttyS0) or virtio (hvc0).", valueName: "KIND"))
    var console: VMConfiguration.ConsoleKind = .serial

    @Option(help: ArgumentHelp("A raw disk image or a block device, optionally read-only or rate-limited (repeatable).",
                               valueName: "PATH[,readonly][,bw=SIZE/MS[/BURST]][,ops=N/MS[/BURST]][,poll=US]"))
    var disk: [String] = []

    @Option(help: ArgumentHelp("A network device on a TAP interface.", valueName: "tap=NAME[,mac=MAC]"))
    var net: [String] = []

    @Option(help: ArgumentHelp("A host directory the guest can mount with mount -t virtiofs TAG DIR, optionally read-only (repeatable).",
                               valueName: "PATH,tag=TAG[,readonly]"))
    var share: [String] = []

    @Flag(help: "A virtio random number generator.")
    var rng = false

    @Option(help: ArgumentHelp("A virtio-vsock device: the guest's CID (3 or more) and the Unix socket host programs connect to (guest connections to port P reach PATH_P).",
                               valueName: "cid=N,uds=PATH"))
    var vsock: String?

    @Option(help: ArgumentHelp("A virtio balloon holding N MiB of the guest's memory for the host, optionally deflated by the guest when it runs out, with its memory statistics every S seconds, and with free page reporting.",
                               valueName: "amount_mib=N[,deflate_on_oom][,stats_polling_interval_s=S][,free_page_reporting]"))
    var balloon: String?

    @Flag(help: "Print when each step of the boot happens, in ms since lguest started.")
    var traceBoot = false

    @Option(help: ArgumentHelp("Where a bzImage with an LZ4 payload is kept expanded, so later boots map it instead of the guest expanding it again: the user's cache ($XDG_CACHE_HOME/lguest/kernels, the default), the kernel's own directory (beside), a directory, or off (the guest expands it every time, with KASLR).",
                               valueName: "beside|off|DIR"))
    var kernelCache: String?

    @Flag(help: "Also name the virtio devices on the kernel command line (virtio_mmio.device=), for kernels that cannot read them from ACPI.")
    var virtioCmdline = false

    @Flag(name: .customLong("no-sandbox"), help: "Run without the seccomp filters and with the capabilities lguest started with (for debugging; docs/Sandbox.md).")
    var noSandbox = false

    func configuration() throws(CommandLineError) -> VMConfiguration {
        var disks: [BlockConfiguration] = []
        for option in disk { disks.append(try BlockConfiguration(diskOption: option)) }
        var networks: [NetConfiguration] = []
        for option in net {
            do throws(NetConfigurationError) { networks.append(try NetConfiguration(option: option)) }
            catch { throw CommandLineError(error.description) }
        }
        var configuration = VMConfiguration(
            kernelPath: kernel, initrdPath: initrd, commandLine: cmdline,
            memoryMiB: memory, cpus: cpus, console: console,
            disks: disks, networks: networks, rng: rng, sandbox: !noSandbox)
        configuration.traceBoot = traceBoot
        configuration.virtioOnCommandLine = virtioCmdline
        switch kernelCache {
        case nil: configuration.kernelCache = .user
        case "off": configuration.kernelCache = .off
        case "beside": configuration.kernelCache = .besideKernel
        case let path?:
            guard path.hasPrefix("/") || path.hasPrefix(".") else {
                throw CommandLineError("--kernel-cache \(path): give beside, off or a directory (an absolute or ./ path)")
            }
            configuration.kernelCache = .directory(path)
        }
        for option in share { configuration.shares.append(try FsShareConfiguration(shareOption: option)) }
        if let vsock {
            do throws(VsockError) { configuration.vsock = try VsockConfiguration(option: vsock) }
            catch { throw CommandLineError(error.description) }
        }
        if let balloon {
            do throws(BalloonError) { configuration.balloon = try BalloonConfiguration(option: balloon) }
            catch { throw CommandLineError(error.description) }
        }
        return configuration
    }

    func run() throws { try launch(self) }
}

extension BlockConfiguration {
    /// The `--disk` option, `PATH[,readonly][,bw=SIZE/REFILL_MS[/BURST]][,ops=N/REFILL_MS[/BURST]][,poll=US][,workers=N]`
    /// (`ro` for `readonly`; `poll=0` never polls the queue; `workers=0` serves on the I/O thread alone).
    public init(diskOption option: String) throws(CommandLineError) {
        var parts = option.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let path = parts.removeFirst()
        var readOnly = false
        var limit = RateLimit.unlimited
        var poll = BlockConfiguration.defaultPollMicroseconds
        var workers = BlockWorkers.defaultCount
        for flag in parts {
            switch flag {
            case "readonly", "ro": readOnly = true
            case _ where flag.hasPrefix("poll="):
                guard let value = UInt32(flag.dropFirst(5)), value <= BlockConfiguration.maxPollMicroseconds else {
                    throw CommandLineError("--disk \(option): poll= takes microseconds from 0 to \(BlockConfiguration.maxPollMicroseconds)")
                }
                poll = value
            case _ where flag.hasPrefix("workers="):
                guard let value = Int(flag.dropFirst(8)), (0 ... BlockWorkers.maxCount).contains(value) else {
                    throw CommandLineError("--disk \(option): workers= takes a count from 0 to \(BlockWorkers.maxCount)")
                }
                workers = value
            default:
                let known: Bool
                do throws(RateLimitOptionError) { known = try limit.apply(flag: flag) } catch {
                    throw CommandLineError("--disk \(option): \(flag.prefix { $0 != "=" }): \(error)")
                }
                guard known else { throw CommandLineError("--disk \(option): unknown flag '\(flag)' (known: readonly, bw=, ops=, poll=, workers=)") }
            }
        }
        if path.isEmpty { throw CommandLineError("--disk \(option): no image path") }
        self.init(path: path, readOnly: readOnly, rateLimit: limit, pollMicroseconds: poll, workers: workers)
    }
}

extension FsShareConfiguration {
    /// The `--share` option, `PATH,tag=TAG[,readonly]` (`ro` for `readonly`).
    public init(shareOption option: String) throws(CommandLineError) {
        var parts = option.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let path = parts.removeFirst()
        var tag: String?
        var readOnly = false
        for flag in parts {
            if flag == "readonly" || flag == "ro" { readOnly = true }
            else if flag.hasPrefix("tag=") { tag = String(flag.dropFirst(4)) }
            else { throw CommandLineError("--share \(option): unknown flag '\(flag)' (known: tag=, readonly)") }
        }
        if path.isEmpty { throw CommandLineError("--share \(option): no directory") }
        guard let tag, !tag.isEmpty else { throw CommandLineError("--share \(option): no tag: give it as \(path),tag=NAME") }
        self.init(path: path, tag: tag, readOnly: readOnly)
        do throws(FsError) { try validate() } catch { throw CommandLineError("--share \(option): \(error)") }
    }
}

extension VMConfiguration.ConsoleKind: ExpressibleByArgument {}

/// Builds the machine `command` describes, runs it, and exits with the code
/// docs/Architecture.md promises.
func launch(_ command: some VMCommand) throws -> Never {
    let configuration: VMConfiguration
    do { configuration = try command.configuration() } catch { fail(error.description) }
    runToCompletion(configuration)
}

/// Boots `configuration` with the console on standard input and output, waits for the guest
/// to stop, and exits: 0 when the guest chose to stop, 1 when the VM failed, 2 for bad input.
func runToCompletion(_ configuration: VMConfiguration) -> Never {
    runToCompletion(sandboxed: configuration.sandbox) { VirtualMachine(configuration: configuration, console: $0) }
}

/// Runs the VM `make` builds on the given console (standard input and output), `paused` if
/// asked, until it stops; SIGTSTP pauses it and SIGCONT resumes it. Exits as `runToCompletion`.
func runToCompletion(sandboxed: Bool, paused: Bool = false, _ make: (ConsoleConnection) -> VirtualMachine) -> Never {
    let output: ConsoleOutput
    do { output = try ConsoleOutput(descriptor: 1, sandboxed: sandboxed) } catch { fail(error.description) }
    let vm = make(ConsoleConnection(output: output, input: 0, escapeQuits: Terminal.inputIsTerminal))
    TerminatingSignals.unblock()
    Terminal.ignoreBrokenPipes()
    Terminal.enterRawMode()
    // Held until the process exits: if this thread let go of the machine last, its deinit would
    // close descriptors here, which this thread's filter does not allow.
    var machine: Machine?
    let escape = Terminal.inputIsTerminal, pid = getpid()
    vm.observeHalt {
        printError("lguest: the guest halted its CPUs and will do nothing more; lguest waits: "
                   + (escape ? "Ctrl-A x ends it" : "kill \(pid) ends it"))
    }
    do {
        let signals = try PauseSignals.start()
        try vm.start(paused: paused)
        machine = vm.runningMachineForControl
        if let machine { signals.serve(machine) }
        if paused { printError("lguest: the VM is paused: kill -CONT \(getpid()) resumes it") }
        // Nothing is left for this thread but to wait: it gets the tightest filter.
        try machine?.confineCallingThread()
    } catch {
        Terminal.restore()
        fail(error.description)
    }
    let reason = vm.waitUntilStopped()
    output.close()
    Terminal.restore()
    if output.dropped > 0 {
        printError("lguest: \(output.dropped) bytes of console output were dropped: standard output stopped taking them")
    }
    if let message = reason.message { printError("lguest: \(message)") }
    withExtendedLifetime(machine) { exit(reason.exitCode) }
}

/// Bad input found before the guest ran: one line, exit code 2.
func fail(_ message: String) -> Never {
    printError("lguest: \(message)")
    exit(2)
}
