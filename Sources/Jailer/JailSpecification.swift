/// What `lguest jail` was asked for, checked before anything on the host changes: the VM's id,
/// who it runs as, where its jail is built, its cgroup limits and resource limits. The options
/// mean what Firecracker's jailer's do, where it has them (docs/Jailer.md says where not).
public struct JailSpecification: Equatable, Sendable {
    public var id: String
    public var uid: UInt32
    public var gid: UInt32
    /// Jails are built in `chrootBase/lguest/ID/root`.
    public var chrootBase: String
    /// A network namespace to join (`/var/run/netns/NAME`), if any.
    public var networkNamespace: String?
    /// cgroup v2 files to write, in order, in `/sys/fs/cgroup/PARENT/ID`.
    public var cgroups: [(key: String, value: String)]
    /// The cgroup under which the VM's is made, relative to the cgroup v2 root.
    public var parentCgroup: String
    public var fileLimit: UInt64
    public var fileSizeLimit: UInt64?
    public var daemonize: Bool
    /// The program jailed: nil for this lguest itself; Firecracker's jailer's `--exec-file`.
    public var execFile: String?
    /// The name it has in the jail (`/NAME`), of the jail's directory under the base, of its
    /// pid file and of the default parent cgroup: `lguest`, or the exec file's own name.
    public var execName: String { execFile.map { String($0.split(separator: "/").last ?? "lguest") } ?? Self.ownName }

    public static let defaultChrootBase = "/srv/jailer"
    /// Firecracker's default for `no-file`.
    public static let defaultFileLimit: UInt64 = 2048
    /// The name lguest jails itself under.
    public static let ownName = "lguest"

    /// The cgroup v2 controllers whose files `--cgroup` may set.
    public static let controllers: Set<String> = ["cpu", "cpuset", "memory", "pids", "io", "hugetlb"]

    public init(id: String, uid: UInt32, gid: UInt32, chrootBase: String = defaultChrootBase,
                networkNamespace: String? = nil, cgroups: [(key: String, value: String)] = [],
                parentCgroup: String = ownName, fileLimit: UInt64 = defaultFileLimit,
                fileSizeLimit: UInt64? = nil, daemonize: Bool = false, execFile: String? = nil) {
        self.id = id
        self.uid = uid
        self.gid = gid
        self.chrootBase = chrootBase
        self.networkNamespace = networkNamespace
        self.cgroups = cgroups
        self.parentCgroup = parentCgroup
        self.fileLimit = fileLimit
        self.fileSizeLimit = fileSizeLimit
        self.daemonize = daemonize
        self.execFile = execFile
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.id == b.id && a.uid == b.uid && a.gid == b.gid && a.chrootBase == b.chrootBase
            && a.networkNamespace == b.networkNamespace && a.cgroups.map { "\($0.key)=\($0.value)" } == b.cgroups.map { "\($0.key)=\($0.value)" }
            && a.parentCgroup == b.parentCgroup && a.fileLimit == b.fileLimit && a.fileSizeLimit == b.fileSizeLimit
            && a.daemonize == b.daemonize && a.execFile == b.execFile
    }

    /// `CHROOT_BASE/lguest/ID`: the jail's own directory, with `root` inside.
    public var jailDirectory: String { "\(chrootBase)/\(execName)/\(id)" }
    /// What lguest sees as `/`.
    public var rootDirectory: String { "\(jailDirectory)/root" }
    /// The VM's cgroup, relative to the cgroup v2 root.
    public var cgroupPath: String { "\(parentCgroup)/\(id)" }

    /// The id: 1 to 64 letters, digits and hyphens, as Firecracker's jailer takes it.
    public static func validate(id: String) throws(JailError) {
        let allowed = id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D }
        guard (1...64).contains(id.utf8.count), allowed else {
            throw .invalid("--id '\(id)' is not 1 to 64 letters, digits and hyphens")
        }
    }

    /// One `--cgroup KEY=VALUE`: the key a file of a known controller (`memory.max`), the value
    /// one line.
    public static func parseCgroup(_ option: String) throws(JailError) -> (key: String, value: String) {
        guard let equals = option.firstIndex(of: "=") else { throw .invalid("--cgroup '\(option)': expected FILE=VALUE (memory.max=512M, say)") }
        let key = String(option[..<equals]), value = String(option[option.index(after: equals)...])
        let parts = key.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, let controller = parts.first, controllers.contains(String(controller)),
              parts.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F } }) else {
            throw .invalid("--cgroup '\(option)': '\(key)' is not a file of a cgroup v2 controller (\(controllers.sorted().joined(separator: ", ")))")
        }
        guard !value.isEmpty, !value.contains("\n") else { throw .invalid("--cgroup '\(option)': the value must be one non-empty line") }
        return (key, value)
    }

    /// One `--resource-limit`: `no-file=N` and `fsize=N`, comma-separated or one per option.
    public mutating func applyResourceLimit(_ option: String) throws(JailError) {
        for item in option.split(separator: ",") {
            let pair = item.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, let value = UInt64(pair[1]) else {
                throw .invalid("--resource-limit '\(option)': expected no-file=N or fsize=N")
            }
            switch pair[0] {
            case "no-file":
                guard value >= 64 else { throw .invalid("--resource-limit '\(option)': no-file below 64 leaves lguest no descriptors to run with") }
                fileLimit = value
            case "fsize": fileSizeLimit = value
            default: throw .invalid("--resource-limit '\(option)': unknown resource '\(pair[0])' (known: no-file, fsize)")
            }
        }
    }

    /// A parent cgroup: a relative path of plain names.
    public static func validate(parentCgroup: String) throws(JailError) {
        let parts = parentCgroup.split(separator: "/", omittingEmptySubsequences: false)
        guard !parentCgroup.isEmpty, !parentCgroup.hasPrefix("/"),
              parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw .invalid("--parent-cgroup '\(parentCgroup)' is not a relative path of names")
        }
    }
}

/// Why the jail could not be built: one line.
public enum JailError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Bad input: exit 2.
    case invalid(String)
    /// A step on the host failed: exit 1.
    case failed(String)

    public var description: String {
        switch self {
        case let .invalid(text), let .failed(text): text
        }
    }
}
