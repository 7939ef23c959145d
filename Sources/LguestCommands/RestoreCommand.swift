import ArgumentParser
import Devices
import Launcher
import LguestKit
import Snapshot

/// `lguest restore`: a new process continues a snapshot taken through the API
/// (`PUT /snapshot/create`) or by a Swift program (`VirtualMachine.snapshot`).
struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Continue a snapshot: lguest restore --snapshot STATE --memory-file MEM [--resume]",
        discussion: """
            Without --resume the VM starts paused: kill -CONT PID starts it. The disks, TAP \\
            devices and vsock socket are those the snapshot names unless replaced here; the \\
            guest's memory, vCPUs and devices are the snapshot's.
            """)

    @Option(help: ArgumentHelp("The snapshot's state file.", valueName: "STATE"))
    var snapshot: String

    @Option(name: .customLong("memory-file"), help: ArgumentHelp("The snapshot's memory file (mapped, not read).", valueName: "MEM"))
    var memoryFile: String

    @Flag(help: "Let the guest run at once rather than start paused.")
    var resume = false

    @Option(help: ArgumentHelp("A disk image to serve instead of the snapshot's, in the snapshot's disk order (give all or none).", valueName: "PATH"))
    var disk: [String] = []

    @Option(help: ArgumentHelp("A TAP device to use instead of the snapshot's, in its network devices' order (give all or none).", valueName: "tap=NAME"))
    var net: [String] = []

    @Option(name: .customLong("vsock-uds"), help: ArgumentHelp("The Unix socket for the vsock device's host side instead of the snapshot's.", valueName: "PATH"))
    var vsockUDS: String?

    @Flag(name: .customLong("keep-clock"), help: "Let the guest's clock go on from the snapshot's moment instead of making up for the time since.")
    var keepClock = false

    @Flag(help: "Print when each step of the restore happens, in ms since lguest started (the first KVM_RUN is the guest's first instruction).")
    var traceBoot = false

    @Flag(name: .customLong("no-sandbox"), help: "Run without the seccomp filters and with the capabilities lguest started with (for debugging; docs/Sandbox.md).")
    var noSandbox = false

    /// The saved machine's configuration with this command's replacements.
    func configuration(for saved: SavedMachine) throws(CommandLineError) -> VMConfiguration {
        var configuration = saved.configuration
        configuration.sandbox = !noSandbox
        configuration.traceBoot = traceBoot
        if !disk.isEmpty {
            guard disk.count == configuration.disks.count else {
                throw CommandLineError("--disk: the snapshot has \(configuration.disks.count) disks; give that many or none")
            }
            for (index, path) in disk.enumerated() { configuration.disks[index].path = path }
        }
        if !net.isEmpty {
            guard net.count == configuration.networks.count else {
                throw CommandLineError("--net: the snapshot has \(configuration.networks.count) network devices; give that many or none")
            }
            for (index, option) in net.enumerated() {
                guard option.hasPrefix("tap="), option.count > 4 else { throw CommandLineError("--net \(option): give it as tap=NAME") }
                configuration.networks[index].tap = .existing(String(option.dropFirst(4)))
            }
        }
        if let vsockUDS {
            guard configuration.vsock != nil else { throw CommandLineError("--vsock-uds: the snapshot has no vsock device") }
            configuration.vsock?.udsPath = vsockUDS
        }
        return configuration
    }

    func run() throws {
        let saved: SavedMachine
        do throws(SnapshotError) { saved = try SavedMachine(statePath: snapshot) } catch { fail("\(snapshot): \(error.description)") }
        let configuration: VMConfiguration
        do throws(CommandLineError) { configuration = try self.configuration(for: saved) } catch { fail(error.description) }
        let memory = memoryFile, advance = !keepClock
        runToCompletion(sandboxed: configuration.sandbox, paused: !resume) { console in
            VirtualMachine(restoring: saved, memoryPath: memory, configuration: configuration, advanceClock: advance, console: console)
        }
    }
}
