import Jailer
import Launcher
#if canImport(Glibc)
import Glibc
#endif

/// lguest installed or linked as `jailer`: Firecracker's jailer's command line, for the SDKs and
/// runtimes that build it (`jailer --id ID --exec-file /usr/bin/firecracker --uid U --gid G
/// [--cgroup-version 2] [--cgroup FILE=VALUE]... [--parent-cgroup P] [--chroot-base-dir DIR]
/// [--netns PATH] [--resource-limit R=N]... [--daemonize] [--new-pid-ns] -- FIRECRACKER-ARGS`).
///
/// The exec file is copied into `DIR/NAME/ID/root` as `/NAME` and run as `/NAME --id=ID ARGS`, as
/// Firecracker's jailer does; with `firecracker` being lguest under that name, lguest runs in
/// Firecracker's mode, its paths (the API socket, the configuration file) inside the jail. The
/// rest is `lguest jail` (docs/Jailer.md), which says where the two differ.
public func runFirecrackerJailer(_ arguments: [String]) -> Never {
    func refuse(_ message: String) -> Never {
        printError("jailer: \(message)")
        exit(2)
    }
    var values: [String: String] = [:]
    var cgroups: [String] = [], limits: [String] = []
    var daemonize = false
    var rest = ArraySlice(arguments)
    var passed: [String] = []
    let takesValue: Set<String> = ["--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir", "--netns",
                                   "--cgroup", "--cgroup-version", "--parent-cgroup", "--resource-limit"]
    while let raw = rest.popFirst() {
        if raw == "--" { passed = Array(rest); break }
        var flag = raw, inline: String?
        if let equals = raw.firstIndex(of: "="), raw.hasPrefix("--") {
            flag = String(raw[..<equals])
            inline = String(raw[raw.index(after: equals)...])
        }
        switch flag {
        case "--daemonize": daemonize = true
        case "--new-pid-ns": break // always: the jail has a PID namespace of its own
        case "--version":
            print("jailer (lguest jail, serving Firecracker's jailer command line)")
            exit(0)
        case "--node":
            refuse("--node is not supported: give --cgroup cpuset.mems=N --cgroup cpuset.cpus=… instead")
        case _ where takesValue.contains(flag):
            guard let value = inline ?? rest.popFirst() else { refuse("\(flag) needs a value") }
            switch flag {
            case "--cgroup": cgroups.append(value)
            case "--resource-limit": limits.append(value)
            default: values[flag] = value
            }
        default:
            refuse("unknown argument '\(raw)' (firecracker's own arguments go after --)")
        }
    }
    for required in ["--id", "--exec-file", "--uid", "--gid"] where values[required] == nil {
        refuse("\(required) is required")
    }
    guard let uid = UInt32(values["--uid"]!), let gid = UInt32(values["--gid"]!) else { refuse("--uid and --gid take numbers") }
    if !cgroups.isEmpty, values["--cgroup-version"] != "2" {
        refuse("only cgroup v2 is supported: give --cgroup-version 2 with --cgroup")
    }
    if let version = values["--cgroup-version"], version != "1", version != "2" { refuse("--cgroup-version is 1 or 2, not \(version)") }
    let id = values["--id"]!
    do throws(JailError) {
        try JailSpecification.validate(id: id)
        let execFile = values["--exec-file"]!
        var spec = JailSpecification(id: id, uid: uid, gid: gid,
                                     chrootBase: values["--chroot-base-dir"] ?? JailSpecification.defaultChrootBase,
                                     networkNamespace: values["--netns"], daemonize: daemonize, execFile: execFile)
        spec.parentCgroup = values["--parent-cgroup"] ?? spec.execName
        try JailSpecification.validate(parentCgroup: spec.parentCgroup)
        for option in cgroups { spec.cgroups.append(try JailSpecification.parseCgroup(option)) }
        for option in limits { try spec.applyResourceLimit(option) }
        try Jail.run(spec, lguestArguments: ["--id=\(id)"] + passed)
    } catch {
        printError("jailer: \(error)")
        if case .invalid = error { exit(2) }
        exit(1)
    }
}
