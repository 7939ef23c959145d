#if canImport(Glibc)
import Glibc
#endif

/// The shared objects lguest runs with, brought into the jail read-only at the paths it finds
/// them by: lguest links dynamically (glibc, the Swift runtime), and a jail holds nothing it
/// does not bring.
///
/// The jailer is lguest itself, so the libraries it has mapped (`/proc/self/maps`) are exactly
/// the ones the jailed lguest will load, plus its ELF interpreter (`PT_INTERP`). Each is
/// bind-mounted read-only at its real path; every symbolic link on the way to it that the
/// loader follows (`/lib64` to `usr/lib64`, `libstdc++.so.6` to `libstdc++.so.6.0.30`: a
/// library's name as another asks for it) is made again in the jail. Nothing else of the host's
/// directories is there.
enum JailLibraries {
    enum Entry: Equatable {
        case symlink(path: String, target: String)
        case file(path: String)
    }

    static func plan() throws(JailError) -> [Entry] {
        var entries: [Entry] = []
        var seen: Set<String> = []
        let mapped = mappedLibraries()
        if let interpreter = interpreter() { bring(interpreter, into: &entries, seen: &seen) }
        for library in mapped.sorted() { bring(library, into: &entries, seen: &seen) }
        // The names the loader asks for: links beside each library that lead to it.
        for directory in Set(mapped.map(parent)).sorted() {
            guard let dir = opendir(directory) else { continue }
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard name != ".", name != ".." else { continue }
                let path = "\(directory)/\(name)"
                if let real = realPath(path), mapped.contains(real), real != path { bring(path, into: &entries, seen: &seen) }
            }
        }
        return entries
    }

    /// Records what it takes for `path` to resolve in the jail as it does here.
    static func bring(_ path: String, into entries: inout [Entry], seen: inout Set<String>, depth: Int = 0) {
        guard depth < 16 else { return }
        let parts = path.split(separator: "/").map(String.init)
        var current = ""
        for (i, part) in parts.enumerated() {
            current += "/" + part
            var info = stat()
            guard lstat(current, &info) == 0 else { return }
            if info.st_mode & S_IFMT == S_IFLNK {
                guard let target = link(current) else { return }
                if seen.insert(current).inserted { entries.append(.symlink(path: current, target: target)) }
                let base = target.hasPrefix("/") ? target : parent(current) + "/" + target
                let rest = parts[(i + 1)...].joined(separator: "/")
                bring(normalize(rest.isEmpty ? base : base + "/" + rest), into: &entries, seen: &seen, depth: depth + 1)
                return
            }
            if i == parts.count - 1, info.st_mode & S_IFMT == S_IFREG, seen.insert(current).inserted {
                entries.append(.file(path: current))
            }
        }
    }

    /// The real paths of the shared objects this process has mapped, the executable aside.
    static func mappedLibraries() -> Set<String> {
        guard let file = fopen("/proc/self/maps", "r") else { return [] }
        defer { fclose(file) }
        let executable = realPath("/proc/self/exe")
        var result: Set<String> = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0 {
            guard let line else { break }
            let text = String(cString: line)
            guard let slash = text.firstIndex(of: "/") else { continue }
            let path = String(text[slash...].dropLast(text.hasSuffix("\n") ? 1 : 0))
            if path.contains(".so"), path != executable, !path.hasSuffix(" (deleted)") { result.insert(path) }
        }
        free(line)
        return result
    }

    /// The executable's `PT_INTERP`: the dynamic loader the kernel starts it with.
    static func interpreter() -> String? {
        let fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: 64)
        guard pread(fd, &header, 64, 0) == 64, header[0 ..< 4] == [0x7F, 0x45, 0x4C, 0x46], header[4] == 2 else { return nil }
        func u64(_ b: [UInt8], _ o: Int) -> UInt64 { (0 ..< 8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
        func u16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        let tableOffset = u64(header, 32), entrySize = u16(header, 54), count = u16(header, 56)
        guard entrySize >= 56, count < 256 else { return nil }
        var entry = [UInt8](repeating: 0, count: entrySize)
        for i in 0 ..< count {
            guard pread(fd, &entry, entrySize, off_t(tableOffset) + off_t(i * entrySize)) == entrySize else { return nil }
            guard entry[0] == 3 else { continue } // PT_INTERP
            let offset = u64(entry, 8), size = Int(u64(entry, 32))
            guard size > 1, size < 4096 else { return nil }
            var text = [UInt8](repeating: 0, count: size)
            guard pread(fd, &text, size, off_t(offset)) == size else { return nil }
            return String(decoding: text.prefix { $0 != 0 }, as: UTF8.self)
        }
        return nil
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
