import CKVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The device I/O thread: one epoll set watching every descriptor devices care about (the
/// terminal, the virtqueues' ioeventfds, TAP devices) and calling each one's handler when it is
/// readable. Device work runs here, never on a vCPU thread.
final class EventLoop: Sendable {
    let epoll: CInt
    private let handlers = Mutex<[CInt: @Sendable () -> Void]>([:])

    init() throws(LaunchError) {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw .setup("epoll_create1: \(String(cString: strerror(errno)))") }
    }

    /// Calls `handler` on the I/O thread whenever `fd` is readable (level-triggered: the handler
    /// must drain what it can, or it is called again). Watching a descriptor again replaces its handler.
    /// Returns false if `fd` cannot be watched because it is always ready (a regular file or
    /// /dev/null: epoll refuses those with EPERM).
    @discardableResult
    func watch(_ fd: CInt, _ handler: @escaping @Sendable () -> Void) throws(LaunchError) -> Bool {
        handlers.withLock { $0[fd] = handler }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = fd
        guard epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) == 0 || errno == EEXIST else {
            handlers.withLock { $0[fd] = nil }
            if errno == EPERM { return false }
            throw .setup("epoll_ctl(\(fd)): \(String(cString: strerror(errno)))")
        }
        return true
    }

    /// Stops watching `fd` (for example a terminal that reached end of file).
    func unwatch(_ fd: CInt) {
        handlers.withLock { $0[fd] = nil }
        epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nil)
    }

    /// Runs on the calling thread until `epoll_wait` fails other than by EINTR; returns why.
    func run() -> LaunchError {
        var events = [epoll_event](repeating: epoll_event(), count: 32)
        while true {
            let n = epoll_wait(epoll, &events, Int32(events.count), -1)
            if n < 0, errno == EINTR { continue }
            if n < 0 { return .setup("the I/O thread stopped: epoll_wait: \(String(cString: strerror(errno)))") }
            for event in events.prefix(Int(n)) {
                let fd = event.data.fd
                if let handler = handlers.withLock({ $0[fd] }) { handler() }
            }
        }
    }
}
