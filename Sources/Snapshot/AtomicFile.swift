#if canImport(Glibc)
import Glibc
#endif

/// Writes a file so that whoever reads `path` sees the old file or the whole new one, never a
/// torn one: the bytes go to a new file beside it, are made durable, and the new file is
/// renamed over the old. A running VM restored from the old memory file keeps its mapping of
/// the old inode, so a VM may be snapshotted over the very files it was restored from.
public enum AtomicFile {
    public static func replace(_ path: String, _ body: (CInt) throws(SnapshotError) -> Void) throws(SnapshotError) {
        // Only a regular file is replaced: a snapshot named /dev/null must not take its place.
        var existing = stat()
        if lstat(path, &existing) == 0, existing.st_mode & S_IFMT != S_IFREG {
            throw .file(path: path, "exists and is not a regular file")
        }
        let temporary = path + ".partial-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .file(path: temporary, String(cString: strerror(errno))) }
        do throws(SnapshotError) {
            defer { close(fd) }
            try body(fd)
            guard fsync(fd) == 0 else { throw .file(path: temporary, String(cString: strerror(errno))) }
        } catch {
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(temporary)
            throw .file(path: path, why)
        }
        // The rename itself is durable once the directory is.
        let directory = open(Self.directory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 { fsync(directory); close(directory) }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
