import GuestMemory
#if canImport(Glibc)
import Glibc
#endif

/// A whole regular file read into memory of its own: the kernel and the initrd, read once at
/// start-up and copied into guest memory from here.
///
/// The memory is anonymous and 2 MiB-aligned, so a 14 MB kernel faults in a handful of huge
/// pages instead of thousands of small ones; it is read with `pread`, never mapped, so a file
/// truncated under our feet is a short read and an error, not a SIGBUS.
final class LoadedFile {
    let bytes: UnsafeRawBufferPointer
    private let mapping: UnsafeMutableRawPointer?

    init(path: String, what: String) throws(LaunchError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .cannotRead(path: path, what: what, errno: errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .cannotRead(path: path, what: what, errno: errno) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .cannotRead(path: path, what: what, errno: EISDIR) }
        let size = Int(info.st_size)
        guard size > 0 else { mapping = nil; bytes = UnsafeRawBufferPointer(start: nil, count: 0); return }
        guard let base = GuestMemory.mapAligned(size: UInt64(size)) else {
            throw .cannotRead(path: path, what: what, errno: errno)
        }
        var done = 0
        while done < size {
            // Safe: `done < size`, and pread writes at most `size - done` bytes from there.
            let n = pread(fd, base + done, size - done, off_t(done))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                let error = n == 0 ? EIO : errno
                munmap(base, size)
                throw .cannotRead(path: path, what: what, errno: error)
            }
            done += n
        }
        mapping = base
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        if let mapping { munmap(mapping, bytes.count) }
    }
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR; gives up quietly on other
/// errors (a closed terminal must not take the VM down). Returns how many bytes were written.
@discardableResult
func writeAll(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) -> Int {
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
        return offset // EPIPE (the reader went away, and SIGPIPE is ignored), EIO, …
    }
    return offset
}

/// Prints one line on standard error.
public func printError(_ line: String) {
    var text = line
    text.append("\n")
    text.withUTF8 { writeAll(2, UnsafeRawBufferPointer($0)) }
}
