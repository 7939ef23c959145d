import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: the `errno` it left behind.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public init(code: Int32) { self.code = code }
    public var description: String { String(cString: strerror(code)) }
}

/// Runs `call` until it stops failing with EINTR, and captures `errno` right after a failure,
/// before anything else (an allocation, a deinit) gets a chance to overwrite it. Every system
/// call on a disk image goes through here exactly once.
@inline(__always)
public func retryingEINTR(_ call: () -> Int) -> Result<Int, SystemError> {
    while true {
        let result = call()
        if result >= 0 { return .success(result) }
        let code = errno
        if code == EINTR { continue }
        return .failure(SystemError(code: code))
    }
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR; gives up quietly on other
/// errors (a closed terminal must not take the VM down). Returns how many bytes were written.
@discardableResult
public func writeAll(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) -> Int {
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


/// The process's arguments, program name first, as the C runtime passed them to `main`. Swift's
/// `CommandLine.arguments` comes from `/proc`, which a jail may not have mounted; these do not.
public var processArguments: [String] {
    let count = Int(lg_argc())
    guard count > 0, let argv = lg_argv() else { return CommandLine.arguments }
    return (0..<count).compactMap { argv[$0].map { String(cString: $0) } }
}

/// The time `nanoseconds` from now on `clock`, as the absolute deadline `sem_timedwait` and
/// `pthread_cond_timedwait` take.
public func deadline(afterNanoseconds nanoseconds: Int, clock: clockid_t) -> timespec {
    var now = timespec()
    clock_gettime(clock, &now)
    let total = now.tv_nsec + nanoseconds % 1_000_000_000
    return timespec(tv_sec: now.tv_sec + nanoseconds / 1_000_000_000 + total / 1_000_000_000,
                    tv_nsec: total % 1_000_000_000)
}
