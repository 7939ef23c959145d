#if canImport(Glibc)
import Glibc
#endif

/// Reads a whole regular file. The kernel and initrd are read once at start-up, before any
/// guest runs; a failure names the file and what it was for.
func readWholeFile(_ path: String, what: String) throws(LaunchError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .cannotRead(path: path, what: what, errno: errno) }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw .cannotRead(path: path, what: what, errno: errno) }
    guard info.st_mode & S_IFMT == S_IFREG else { throw .cannotRead(path: path, what: what, errno: EISDIR) }
    let size = Int(info.st_size)
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
        if n < 0, errno == EINTR { continue }
        guard n > 0 else { throw .cannotRead(path: path, what: what, errno: n == 0 ? EIO : errno) }
        done += n
    }
    return bytes
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR; gives up quietly on other
/// errors (a closed terminal must not take the VM down).
func writeAll(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) {
    var offset = 0
    while offset < bytes.count {
        let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if n > 0 { offset += n; continue }
        if n < 0, errno == EINTR { continue }
        if n < 0, errno == EAGAIN {
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&poller, 1, 100)
            continue
        }
        return
    }
}

/// Prints one line on standard error.
public func printError(_ line: String) {
    var text = line
    text.append("\n")
    text.withUTF8 { writeAll(2, UnsafeRawBufferPointer($0)) }
}
