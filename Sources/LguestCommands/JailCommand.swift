import ArgumentParser
import Jailer
import Launcher
#if canImport(Glibc)
import Glibc
#endif

/// `lguest jail`: runs `lguest ARGS…` in a jail of its own (Sources/Jailer, docs/Jailer.md).
struct JailCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jail",
        abstract: "Run lguest in a jail: its own root, mount and PID namespaces, cgroup, limits and user.",
        discussion: """
            Example: lguest jail --id vm1 --uid 1000 --gid 1000 --cgroup memory.max=600M -- \
            run --kernel vmlinuz --disk rootfs.img --cmdline "root=/dev/vda console=ttyS0". \
            Exit status: lguest's, or 2 for bad jail options, 1 when the jail cannot be built.
            """)

    @Option(help: ArgumentHelp("The VM's id: 1 to 64 letters, digits and hyphens.", valueName: "ID"))
    var id: String

    @Option(help: ArgumentHelp("The user lguest runs as.", valueName: "UID"))
    var uid: UInt32

    @Option(help: ArgumentHelp("The group lguest runs as.", valueName: "GID"))
    var gid: UInt32

    @Option(name: .customLong("chroot-base-dir"),
            help: ArgumentHelp("Where jails are built: DIR/lguest/ID/root (default \(JailSpecification.defaultChrootBase)).", valueName: "DIR"))
    var chrootBase: String = JailSpecification.defaultChrootBase

    @Option(help: ArgumentHelp("A network namespace to join (/var/run/netns/NAME).", valueName: "PATH"))
    var netns: String?

    @Option(help: ArgumentHelp("A cgroup v2 file to set in the VM's cgroup (repeatable): cpu.max=\"50000 100000\", memory.max=600M, pids.max=64.", valueName: "FILE=VALUE"))
    var cgroup: [String] = []

    @Option(name: .customLong("parent-cgroup"), help: ArgumentHelp("The cgroup the VM's is made in (default lguest).", valueName: "PATH"))
    var parentCgroup: String = JailSpecification.ownName

    @Option(name: .customLong("resource-limit"), help: ArgumentHelp("no-file=N and fsize=N, comma-separated or repeated (no-file defaults to 2048).", valueName: "RESOURCE=N"))
    var resourceLimit: [String] = []

    @Flag(help: "Detach: a session of its own, standard input, output and error on /dev/null; the jail's /lguest.pid says which process is lguest.")
    var daemonize = false

    @Argument(parsing: .postTerminator, help: ArgumentHelp("lguest's own arguments, after --.", valueName: "LGUEST-ARGS"))
    var lguestArguments: [String] = []

    /// The jail these options ask for, checked.
    func specification() throws(JailError) -> JailSpecification {
        try JailSpecification.validate(id: id)
        try JailSpecification.validate(parentCgroup: parentCgroup)
        guard chrootBase.hasPrefix("/") else { throw .invalid("--chroot-base-dir \(chrootBase) is not an absolute path") }
        var cgroups: [(key: String, value: String)] = []
        for option in cgroup { cgroups.append(try JailSpecification.parseCgroup(option)) }
        var spec = JailSpecification(id: id, uid: uid, gid: gid, chrootBase: chrootBase, networkNamespace: netns,
                                     cgroups: cgroups, parentCgroup: parentCgroup, daemonize: daemonize)
        for option in resourceLimit { try spec.applyResourceLimit(option) }
        guard !lguestArguments.isEmpty else { throw .invalid("nothing to run: give lguest's arguments after --") }
        return spec
    }

    func run() throws {
        do throws(JailError) {
            try Jail.run(try specification(), lguestArguments: lguestArguments)
        } catch {
            printError("lguest jail: \(error)")
            if case .invalid = error { Glibc.exit(2) }
            Glibc.exit(1)
        }
    }
}
