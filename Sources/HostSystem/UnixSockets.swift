import CKVM
#if canImport(Glibc)
import Glibc
#endif

// Stream sockets in the file system (AF_UNIX): what vsock's host side is made of. A listener
// that a host program connects to, and connections lguest makes to a host program's listener.
// Every descriptor is non-blocking and close-on-exec; writes never raise SIGPIPE.

/// Why a Unix socket could not be bound or reached, in words a user can act on.
public enum UnixSocketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The path does not fit in `sockaddr_un.sun_path` with its terminating NUL.
    case pathTooLong(String, limit: Int)
    case emptyPath
    /// A live listener answers on the path already.
    case inUse(String)
    /// Something that is not a socket is in the way.
    case notASocket(String)
    case call(String, path: String, SystemError)

    public var description: String {
        switch self {
        case let .pathTooLong(path, limit):
            return "the socket path \(path) is too long (\(path.utf8.count) bytes): a Unix socket path holds at most \(limit)"
        case .emptyPath:
            return "the socket path is empty"
        case let .inUse(path):
            return "the socket \(path) is in use by another program"
        case let .notASocket(path):
            return "\(path) exists and is not a socket"
        case let .call(call, path, error):
            if call == "bind", error.code == ENOENT { return "cannot create the socket \(path): its directory does not exist" }
            return "\(call) \(path): \(error)"
        }
    }
}

public enum UnixSocket {
    /// The longest path `sockaddr_un` holds (108 bytes with the NUL).
    public static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// Checks that `path` can name a socket at all.
    public static func validate(path: String) throws(UnixSocketError) {
        guard !path.isEmpty else { throw .emptyPath }
        guard path.utf8.count <= maximumPathLength, !path.utf8.contains(0) else {
            throw .pathTooLong(path, limit: maximumPathLength)
        }
    }

    /// Calls `body` with `path` as a `sockaddr_un` (already validated).
    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        // Safe: `path` was validated to fit in sun_path with its NUL, which the zeroed struct holds.
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            path.utf8.withContiguousStorageIfAvailable { raw.copyMemory(from: UnsafeRawBufferPointer($0)) }
                ?? { for (i, byte) in path.utf8.enumerated() { raw[i] = byte } }()
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// A new non-blocking, close-on-exec stream socket.
    static func stream() -> Result<OwnedDescriptor, SystemError> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        return fd >= 0 ? .success(OwnedDescriptor(adopting: fd)) : .failure(SystemError(code: errno))
    }

    /// Connects to the listener at `path` without waiting: a listener whose queue is full
    /// (EAGAIN) counts as a refusal, like one that is not there (ENOENT, ECONNREFUSED).
    public static func connect(to path: String) -> Result<OwnedDescriptor, SystemError> {
        do throws(UnixSocketError) { try validate(path: path) } catch { return .failure(SystemError(code: ENAMETOOLONG)) }
        let socket: OwnedDescriptor
        switch stream() {
        case let .success(s): socket = s
        case let .failure(error): return .failure(error)
        }
        let result = retryingEINTR { Int(withAddress(path) { Glibc.connect(socket.raw, $0, $1) }) }
        switch result {
        case .success: return .success(socket)
        case let .failure(error): return .failure(error)
        }
    }

    /// Whether a listener answers at `path` now.
    public static func isListening(_ path: String) -> Bool {
        if case .success = connect(to: path) { return true }
        return false
    }

    /// Sends what it can of `vectors` without blocking and without SIGPIPE. Returns the count
    /// sent (0 when the socket is full), or the error.
    public static func send(_ fd: CInt, _ vectors: UnsafeBufferPointer<iovec>) -> Result<Int, SystemError> {
        var message = msghdr()
        message.msg_iov = UnsafeMutablePointer(mutating: vectors.baseAddress)
        message.msg_iovlen = vectors.count
        switch retryingEINTR({ sendmsg(fd, &message, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }) {
        case let .success(n): return .success(n)
        case let .failure(error) where error.code == EAGAIN: return .success(0)
        case let .failure(error): return .failure(error)
        }
    }

    /// `send` for one buffer.
    public static func send(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) -> Result<Int, SystemError> {
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        return withUnsafePointer(to: &vector) { send(fd, UnsafeBufferPointer(start: $0, count: 1)) }
    }
}

/// A listening Unix socket at a path. The socket file stays when the listener goes (a sandboxed
/// thread may let go of it, and may not touch the file system); the next listener at the same
/// path replaces it, as a leftover.
public final class UnixListener: Sendable {
    public let path: String
    public let descriptor: OwnedDescriptor
    /// The socket file's device and inode, to know it is still ours at the end.
    private let identity: (dev_t, ino_t)

    /// Binds and listens at `path`. A socket file nobody answers on is a leftover and is
    /// replaced; a live listener, or a file that is not a socket, is refused.
    public init(path: String, backlog: Int32 = 128) throws(UnixSocketError) {
        try UnixSocket.validate(path: path)
        var status = stat()
        if lstat(path, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path) }
            if UnixSocket.isListening(path) { throw .inUse(path) }
            unlink(path)
        }
        let socket: OwnedDescriptor
        switch UnixSocket.stream() {
        case let .success(s): socket = s
        case let .failure(error): throw .call("socket", path: path, error)
        }
        if case let .failure(error) = retryingEINTR({ Int(UnixSocket.withAddress(path) { bind(socket.raw, $0, $1) }) }) {
            // Another program bound it between the check and here.
            if error.code == EADDRINUSE { throw .inUse(path) }
            throw .call("bind", path: path, error)
        }
        if listen(socket.raw, backlog) != 0 {
            let error = SystemError(code: errno)
            unlink(path)
            throw .call("listen", path: path, error)
        }
        guard lstat(path, &status) == 0 else { throw .call("stat", path: path, SystemError(code: errno)) }
        self.path = path
        descriptor = socket
        identity = (status.st_dev, status.st_ino)
    }

    /// Removes the socket file, if the path still names the socket this listener made (for a
    /// listener replaced before it was used). Host programs can no longer connect.
    public func removeSocketFile() {
        var status = stat()
        if lstat(path, &status) == 0, status.st_dev == identity.0, status.st_ino == identity.1 { unlink(path) }
    }

    /// The next waiting connection, non-blocking and close-on-exec; nil when none is waiting
    /// (or the kernel refused one, which the caller cannot fix either).
    public func accept() -> OwnedDescriptor? {
        while true {
            let fd = lg_accept4(descriptor.raw, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            if fd >= 0 { return OwnedDescriptor(adopting: fd) }
            if fd == -EINTR || fd == -ECONNABORTED { continue }
            return nil
        }
    }
}
