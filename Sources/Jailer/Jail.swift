import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// Builds a VM's jail and runs lguest in it, in the order Firecracker's jailer does:
///
/// 1. every inherited descriptor but 0, 1 and 2 closed; the environment left behind;
/// 2. `CHROOT_BASE/lguest/ID/root` made, a copy of this lguest put in it as `/lguest`, the
///    shared objects it loads readied (`JailLibraries`) and the VM's files brought in (`JailFiles`);
/// 3. resource limits (`no-file`, `fsize`) set, the process put in its cgroup with its limits;
/// 4. the network namespace joined, if one was given;
/// 5. new mount and PID namespaces; the jail's root bind-mounted on itself, the libraries and
///    the VM's disks and shares bind-mounted into it, `/dev/kvm` and `/dev/net/tun` made in it, everything given
///    to the VM's user; `pivot_root` into it and the old root detached;
/// 6. a child forked, the first process of the new PID namespace (`runInit`): it mounts that
///    namespace's `/proc`, drops to the VM's user and group (no supplementary groups), sets
///    no_new_privs, and starts `/lguest` with the rewritten command line.
///
/// The parent writes lguest's pid to `/lguest.pid` in the jail, then, with `--daemonize`,
/// exits; otherwise it drops its privileges too, passes on SIGINT, SIGTERM, SIGHUP and
/// SIGQUIT, and exits with lguest's status.
public enum Jail {
    /// Builds the jail and runs `lguestArguments` in it. Returns only with an error, before
    /// lguest started.
    public static func run(_ spec: JailSpecification, lguestArguments: [String]) throws(JailError) -> Never {
        guard geteuid() == 0 else { throw .invalid("lguest jail must run as root (it makes namespaces, device nodes and cgroups)") }
        _ = lg_close_range(3, UInt32.max)
        let files = JailFiles(arguments: lguestArguments)
        try checkBase(spec.chrootBase)
        for item in files.items { try checkSource(item) }
        let netns: CInt? = try spec.networkNamespace.map { path throws(JailError) in
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .invalid("--netns \(path): \(errorText())") }
            return fd
        }

        let root = spec.rootDirectory
        try makeDirectories(root)
        try copy(from: spec.execFile ?? "/proc/self/exe", to: "\(root)/\(spec.execName)", mode: 0o755, owner: nil)
        for item in files.items {
            let target = root + item.target
            switch item.placement {
            case .copy: try copy(from: item.source, to: target, mode: 0o400, owner: (spec.uid, spec.gid))
            case .bind:
                if item.isDirectory {
                    if mkdir(target, 0o700) != 0, errno != EEXIST { throw .failed("cannot make \(target): \(errorText())") }
                } else {
                    let fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
                    guard fd >= 0 else { throw .failed("cannot make \(target): \(errorText())") }
                    close(fd)
                }
            }
        }

        let libraries = try JailLibraries.plan()
        for entry in libraries {
            switch entry {
            case let .symlink(path, target):
                try makeDirectories(root + JailLibraries.parent(path))
                unlink(root + path)
                guard symlink(target, root + path) == 0 else { throw .failed("cannot make the link \(root + path): \(errorText())") }
            case let .file(path):
                try makeDirectories(root + JailLibraries.parent(path))
                let fd = open(root + path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o444)
                guard fd >= 0 else { throw .failed("cannot make \(root + path): \(errorText())") }
                close(fd)
            }
        }

        try setLimit(RLIMIT_NOFILE, spec.fileLimit, name: "no-file")
        if let size = spec.fileSizeLimit { try setLimit(RLIMIT_FSIZE, size, name: "fsize") }
        if !spec.cgroups.isEmpty { try Cgroup.enter(spec) }
        if let netns {
            let joined = lg_setns(netns, LG_CLONE_NEWNET)
            guard joined == 0 else { throw .failed("cannot join the network namespace \(spec.networkNamespace ?? ""): \(String(cString: strerror(-joined)))") }
            close(netns)
        }
        let devNull = spec.daemonize ? open("/dev/null", O_RDWR) : -1
        if spec.daemonize && devNull < 0 { throw .failed("cannot open /dev/null: \(errorText())") }

        let unshared = lg_unshare(LG_CLONE_NEWNS | LG_CLONE_NEWPID)
        guard unshared == 0 else { throw .failed("cannot make new mount and PID namespaces: \(String(cString: strerror(-unshared)))") }
        try mountOrFail(nil, "/", flags: UInt(CKVM.MS_REC | CKVM.MS_PRIVATE), what: "make / private")
        try mountOrFail(root, root, flags: UInt(CKVM.MS_BIND | CKVM.MS_REC), what: "bind \(root) on itself")
        for item in files.items {
            guard case let .bind(readOnly) = item.placement else { continue }
            let target = root + item.target
            try mountOrFail(item.source, target, flags: UInt(CKVM.MS_BIND), what: "bind \(item.source) into the jail")
            if readOnly {
                try mountOrFail(nil, target, flags: UInt(CKVM.MS_BIND | CKVM.MS_REMOUNT | CKVM.MS_RDONLY), what: "make \(target) read-only")
            }
        }
        for case let .file(path) in libraries {
            try mountOrFail(path, root + path, flags: UInt(CKVM.MS_BIND), what: "bind \(path) into the jail")
            try mountOrFail(nil, root + path, flags: UInt(CKVM.MS_BIND | CKVM.MS_REMOUNT | CKVM.MS_RDONLY), what: "make \(root + path) read-only")
        }
        try makeDevice("\(root)/dev/kvm", major: 10, minor: 232, owner: (spec.uid, spec.gid))
        try makeDevice("\(root)/dev/net/tun", major: 10, minor: 200, owner: (spec.uid, spec.gid))
        if mkdir("\(root)/proc", 0o555) != 0, errno != EEXIST { throw .failed("cannot make \(root)/proc: \(errorText())") }
        guard chown(root, spec.uid, spec.gid) == 0 else { throw .failed("cannot give \(root) to \(spec.uid):\(spec.gid): \(errorText())") }
        // The host's /proc, kept open across pivot_root: the one place lguest's host pid shows.
        let hostProc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        try enter(root)

        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD] { sigaddset(&signals, signal) }
        sigprocmask(SIG_BLOCK, &signals, nil)
        let child = lg_fork()
        guard child >= 0 else { throw .failed("cannot fork: \(String(cString: strerror(-child)))") }
        if child == 0 { runInit(spec, arguments: files.arguments, devNull: devNull, signals: signals) }
        writePidFile(lguestPid(under: child, hostProc: hostProc) ?? child, name: spec.execName)
        if hostProc >= 0 { close(hostProc) }
        if spec.daemonize { exit(0) }
        do throws(JailError) { try dropPrivileges(spec) } catch {
            kill(child, SIGKILL)
            throw error
        }
        waitForChild(child, signals: signals)
    }

    /// The first process of the new PID namespace, as the VM's user: it mounts the namespace's
    /// `/proc`, then starts lguest and stays as its init, passing signals on and ending with
    /// lguest's status. (A namespace's first process ignores every signal it has no handler
    /// for; lguest, second, gets them as it would anywhere.)
    static func runInit(_ spec: JailSpecification, arguments: [String], devNull: CInt, signals: sigset_t) -> Never {
        var signals = signals
        if spec.daemonize {
            setsid()
            for fd in CInt(0)...2 { dup2(devNull, fd) }
        }
        if devNull > 2 { close(devNull) }
        do throws(JailError) {
            // lguest's virtio-fs reopens files through /proc/self/fd; this /proc shows no
            // process outside the jail.
            try mountOrFail("proc", "/proc", type: "proc", flags: UInt(CKVM.MS_NOSUID | CKVM.MS_NODEV | CKVM.MS_NOEXEC), what: "mount /proc in the jail")
            try dropPrivileges(spec)
            guard lg_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 else { throw JailError.failed("cannot set no_new_privs: \(errorText())") }
        } catch {
            printLine("lguest jail: \(error)")
            _exit(1)
        }
        let lguest = lg_fork()
        guard lguest >= 0 else {
            printLine("lguest jail: cannot fork: \(String(cString: strerror(-lguest)))")
            _exit(1)
        }
        if lguest == 0 {
            sigprocmask(SIG_UNBLOCK, &signals, nil)
            exec("/\(spec.execName)", arguments)
        }
        waitForChild(lguest, signals: signals)
    }

    /// lguest's pid as the host sees it: the one child of the jail's init (`children` in the
    /// host's /proc), waited for up to two seconds.
    static func lguestPid(under initPid: pid_t, hostProc: CInt) -> pid_t? {
        guard hostProc >= 0 else { return nil }
        for _ in 0 ..< 200 {
            let fd = openat(hostProc, "\(initPid)/task/\(initPid)/children", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            close(fd)
            let text = String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self)
            if let pid = text.split(separator: " ").first.flatMap({ pid_t($0) }) { return pid }
            usleep(10_000)
        }
        return nil
    }

    // MARK: - Steps

    /// The base directory: made if missing; if there, a real directory owned by root.
    static func checkBase(_ base: String) throws(JailError) {
        var info = stat()
        if lstat(base, &info) != 0 {
            guard errno == ENOENT else { throw .invalid("--chroot-base-dir \(base): \(errorText())") }
            try makeDirectories(base)
            return
        }
        guard info.st_mode & S_IFMT != S_IFLNK else { throw .invalid("--chroot-base-dir \(base) is a symbolic link") }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw .invalid("--chroot-base-dir \(base) is not a directory") }
        guard info.st_uid == 0 else { throw .invalid("--chroot-base-dir \(base) is not owned by root (uid \(info.st_uid))") }
    }

    static func checkSource(_ item: JailFiles.Item) throws(JailError) {
        var info = stat()
        guard stat(item.source, &info) == 0 else { throw .invalid("\(item.source): \(errorText())") }
        let isDirectory = info.st_mode & S_IFMT == S_IFDIR
        if item.isDirectory != isDirectory {
            throw .invalid("\(item.source) is \(isDirectory ? "a directory" : "not a directory")")
        }
    }

    static func makeDirectories(_ path: String) throws(JailError) {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0, errno != EEXIST { throw .failed("cannot make \(current): \(errorText())") }
        }
    }

    /// Copies `source` to `target` (replacing it), with `mode` and, if given, `owner`.
    static func copy(from source: String, to target: String, mode: mode_t, owner: (UInt32, UInt32)?) throws(JailError) {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw .invalid("\(source): \(errorText())") }
        defer { close(input) }
        unlink(target)
        let output = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw .failed("cannot make \(target): \(errorText())") }
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw .failed("cannot read \(source): \(errorText())") }
            if n == 0 { break }
            var done = 0
            while done < n {
                let w = buffer.withUnsafeBytes { write(output, $0.baseAddress! + done, n - done) }
                if w < 0, errno == EINTR { continue }
                guard w > 0 else { throw .failed("cannot write \(target): \(errorText())") }
                done += w
            }
        }
        if let (uid, gid) = owner, fchown(output, uid, gid) != 0 { throw .failed("cannot give \(target) to \(uid):\(gid): \(errorText())") }
        guard fchmod(output, mode) == 0 else { throw .failed("cannot set the mode of \(target): \(errorText())") }
    }

    static func setLimit(_ resource: __rlimit_resource, _ value: UInt64, name: String) throws(JailError) {
        var limit = rlimit(rlim_cur: rlim_t(value), rlim_max: rlim_t(value))
        guard setrlimit(Int32(resource.rawValue), &limit) == 0 else { throw .failed("cannot set the \(name) limit to \(value): \(errorText())") }
    }

    static func mountOrFail(_ source: String?, _ target: String, type: String? = nil, flags: UInt, what: String) throws(JailError) {
        guard mount(source, target, type, flags, nil) == 0 else { throw .failed("cannot \(what): \(errorText())") }
    }

    /// A character device node, mode 0600, owned by the VM's user.
    static func makeDevice(_ path: String, major: UInt64, minor: UInt64, owner: (UInt32, UInt32)) throws(JailError) {
        try makeDirectories(String(path[..<path.lastIndex(of: "/")!]))
        unlink(path)
        // makedev(): the minor's low 8 bits, the major's low 12, then the high bits of each.
        let device = (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12) | ((major & ~0xFFF) << 32)
        guard mknod(path, S_IFCHR | 0o600, dev_t(device)) == 0 else { throw .failed("cannot make \(path): \(errorText())") }
        guard chown(path, owner.0, owner.1) == 0 else { throw .failed("cannot give \(path) to \(owner.0):\(owner.1): \(errorText())") }
    }

    /// `pivot_root` into `root`; the old root is detached and its mount point removed.
    ///
    /// A host running from its initramfs cannot pivot away from it (EINVAL: the initial rootfs
    /// is never unmounted). There, as container runtimes do, the jail is moved over `/` and
    /// chrooted into: the host's root stays beneath it, out of reach of a process that, like the
    /// jailed lguest, has no capabilities.
    static func enter(_ root: String) throws(JailError) {
        guard chdir(root) == 0 else { throw .failed("cannot enter \(root): \(errorText())") }
        if mkdir("old_root", 0o700) != 0, errno != EEXIST { throw .failed("cannot make \(root)/old_root: \(errorText())") }
        let pivoted = lg_pivot_root(".", "old_root")
        if pivoted == -EINVAL {
            rmdir("old_root")
            try mountOrFail(root, "/", flags: UInt(CKVM.MS_MOVE), what: "move the jail over /")
            guard chroot(".") == 0, chdir("/") == 0 else { throw .failed("cannot chroot into \(root): \(errorText())") }
            return
        }
        guard pivoted == 0 else { throw .failed("cannot pivot_root into \(root): \(String(cString: strerror(-pivoted)))") }
        guard chdir("/") == 0, umount2("/old_root", CInt(MNT_DETACH)) == 0 else { throw .failed("cannot detach the old root: \(errorText())") }
        rmdir("/old_root")
    }

    /// Root's setgid and setuid set the real, effective and saved ids alike: there is no way back.
    static func dropPrivileges(_ spec: JailSpecification) throws(JailError) {
        guard setgroups(0, nil) == 0, setgid(spec.gid) == 0, setuid(spec.uid) == 0 else {
            throw .failed("cannot become \(spec.uid):\(spec.gid): \(errorText())")
        }
    }

    /// Execs `path` with `arguments` and an empty environment; on failure, says why and exits 1.
    static func exec(_ path: String, _ arguments: [String]) -> Never {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        var environment: [UnsafeMutablePointer<CChar>?] = [nil]
        execve(path, argv, &environment)
        printLine("lguest jail: cannot run \(path) in the jail: \(errorText())")
        _exit(1)
    }

    static func writePidFile(_ pid: pid_t, name: String) {
        let fd = open("/\(name).pid", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        let text = Array("\(pid)\n".utf8)
        _ = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Passes the blocked signals on to `child` until it ends; exits with its status (128 + N
    /// when signal N ended it).
    static func waitForChild(_ child: pid_t, signals: sigset_t) -> Never {
        var signals = signals
        while true {
            var info = siginfo_t()
            let signal = sigwaitinfo(&signals, &info)
            if signal == SIGCHLD {
                var status: CInt = 0
                if waitpid(child, &status, WNOHANG) == child {
                    if status & 0x7F == 0 { exit((status >> 8) & 0xFF) }
                    exit(128 + (status & 0x7F))
                }
            } else if signal > 0 {
                kill(child, signal)
            }
        }
    }

    static func errorText() -> String { String(cString: strerror(errno)) }

    static func printLine(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}
