/// The files a VM uses, found in the lguest command line the jail runs, and that command line
/// rewritten to the paths they have inside the jail.
///
/// For `lguest run`: `--kernel` and `--initrd` are copied in (owned by the VM's user, read-only:
/// they are read once); `--disk` images and devices and `--share` directories are bind-mounted
/// (the guest's writes land in the user's file, whatever file system it is on; read-only ones
/// are mounted read-only); a `--vsock` socket is made in the jail's root, where host programs
/// find it as `CHROOT/SOCKET`. Each lands at `/NAME` (its own name, `-2`, `-3`… on a clash).
/// Other forms of the command line (Firecracker's flags, `restore`) are passed as they are:
/// their paths must already be valid inside the jail, as with Firecracker's jailer.
public struct JailFiles: Equatable, Sendable {
    public enum Placement: Equatable, Sendable {
        case copy
        case bind(readOnly: Bool)
    }

    public struct Item: Equatable, Sendable {
        /// The host's path.
        public var source: String
        /// The path inside the jail, from its root.
        public var target: String
        public var placement: Placement
        public var isDirectory: Bool
    }

    public var items: [Item] = []
    /// The lguest command line with every path replaced by its jail path.
    public var arguments: [String]
    /// Vsock sockets lguest will make, as jail paths.
    public var sockets: [String] = []

    public init(arguments original: [String]) {
        arguments = original
        guard original.first == "run" else { return }
        var used: Set<String> = []
        func jailPath(for path: String) -> String {
            let name = path.split(separator: "/").last.map(String.init) ?? "file"
            var candidate = "/" + (name == ".." || name == "." ? "file" : name)
            var n = 2
            while used.contains(candidate) { candidate = "/\(name)-\(n)"; n += 1 }
            used.insert(candidate)
            return candidate
        }
        var i = 1
        var rewritten = ["run"]
        while i < original.count {
            var option = original[i], value: String?
            if let equals = option.firstIndex(of: "="), option.hasPrefix("--") {
                value = String(option[option.index(after: equals)...])
                option = String(option[..<equals])
            } else if i + 1 < original.count, ["--kernel", "--initrd", "--disk", "--share", "--vsock"].contains(option) {
                i += 1
                value = original[i]
            }
            i += 1
            guard let value else { rewritten.append(option); continue }
            switch option {
            case "--kernel", "--initrd":
                let target = jailPath(for: value)
                items.append(Item(source: value, target: target, placement: .copy, isDirectory: false))
                rewritten += [option, target]
            case "--disk", "--share":
                // PATH[,flags…]: the path is the first field.
                let fields = value.split(separator: ",", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                let flags = fields.count > 1 ? fields[1].split(separator: ",").map(String.init) : []
                let readOnly = flags.contains("readonly") || flags.contains("ro")
                let target = jailPath(for: fields[0])
                items.append(Item(source: fields[0], target: target, placement: .bind(readOnly: readOnly), isDirectory: option == "--share"))
                rewritten += [option, ([target] + fields.dropFirst()).joined(separator: ",")]
            case "--vsock":
                let fields = value.split(separator: ",").map { field -> String in
                    guard field.hasPrefix("uds=") else { return String(field) }
                    let target = jailPath(for: String(field.dropFirst(4)))
                    sockets.append(target)
                    return "uds=" + target
                }
                rewritten += [option, fields.joined(separator: ",")]
            default:
                rewritten.append("\(option)=\(value)")
            }
        }
        arguments = rewritten
    }
}
