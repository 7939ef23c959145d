#if canImport(Glibc)
import Glibc
#endif

/// The VM's cgroup v2: `ROOT/PARENT/ID` under the unified hierarchy's mount, the controllers
/// its `--cgroup` files belong to enabled on the way down (each ancestor's
/// `cgroup.subtree_control`), the files written, and this process moved in (its children, lguest
/// among them, stay there).
enum Cgroup {
    static func enter(_ spec: JailSpecification) throws(JailError) {
        let root = try unifiedRoot()
        let controllers = Set(spec.cgroups.map { String($0.key.prefix { $0 != "." }) }).sorted()
        let available = (try? read("\(root)/cgroup.controllers"))?.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init) ?? []
        for controller in controllers where !available.contains(controller) {
            throw .failed("the \(controller) controller is not in this host's cgroup v2 hierarchy at \(root) (it has: \(available.joined(separator: " ")))")
        }
        var path = root
        for part in spec.cgroupPath.split(separator: "/") {
            // Ancestors hand the controllers down; a cgroup with processes of its own cannot
            // (the "no internal processes" rule), which is why the VM's is a leaf.
            let enable = controllers.map { "+\($0)" }.joined(separator: " ")
            try write(enable, to: "\(path)/cgroup.subtree_control")
            path += "/" + part
            if mkdir(path, 0o755) != 0, errno != EEXIST { throw .failed("cannot make the cgroup \(path): \(Jail.errorText())") }
        }
        for (key, value) in spec.cgroups {
            guard access("\(path)/\(key)", F_OK) == 0 else {
                throw .invalid("--cgroup \(key)=\(value): this host's cgroup \(path) has no file \(key)")
            }
            try write(value, to: "\(path)/\(key)")
        }
        try write("\(getpid())", to: "\(path)/cgroup.procs")
    }

    /// Where cgroup2 is mounted (`/proc/self/mounts`), else `/sys/fs/cgroup`.
    static func unifiedRoot() throws(JailError) -> String {
        if let file = fopen("/proc/self/mounts", "r") {
            defer { fclose(file) }
            var line: UnsafeMutablePointer<CChar>?
            var capacity = 0
            while getline(&line, &capacity, file) > 0, let line {
                let fields = String(cString: line).split(separator: " ")
                if fields.count > 2, fields[2] == "cgroup2" { free(line); return String(fields[1]) }
            }
            free(line)
        }
        var info = stat()
        guard stat("/sys/fs/cgroup/cgroup.controllers", &info) == 0 else {
            throw .failed("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)")
        }
        return "/sys/fs/cgroup"
    }

    static func read(_ path: String) throws(JailError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .failed("cannot open \(path): \(Jail.errorText())") }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        return String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self)
    }

    static func write(_ text: String, to path: String) throws(JailError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .failed("cannot open \(path): \(Jail.errorText())") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw .failed("cannot write '\(text)' to \(path): \(Jail.errorText())") }
    }
}
