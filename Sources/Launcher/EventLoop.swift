import CKVM
import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// The device I/O thread: one epoll set watching every descriptor devices care about (the
/// terminal, the virtqueues' ioeventfds, TAP devices) and calling each one's handler when it is
/// readable. Device work runs here, never on a vCPU thread.
final class EventLoop: Sendable {
    let epoll: CInt
    private let handlers = Mutex<[CInt: @Sendable () -> Void]>([:])
    /// Written by `wake()` so that the loop looks at its gate (pause, stop) even when no device
    /// has anything to say.
    private let control: EventFD

    init() throws(LaunchError) {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw .setup("epoll_create1: \(String(cString: strerror(errno)))") }
        do { control = try EventFD() } catch {
            close(epoll)
            throw .setup("eventfd: \(error)")
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = control.raw
        epoll_ctl(epoll, EPOLL_CTL_ADD, control.raw, &event)
    }

    deinit { close(epoll) }

    /// Makes the loop return from `epoll_wait` and pass its checkpoint.
    func wake() { control.signal() }

    /// Forgets every handler. Handlers capture the devices they serve, and some devices hold
    /// the loop (to watch or unwatch their descriptors): a stopped machine breaks that cycle here.
    func removeAllHandlers() {
        let old = handlers.withLock { table -> [CInt: @Sendable () -> Void] in
            defer { table = [:] }
            return table
        }
        for fd in old.keys { epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nil) }
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

    /// Runs on the calling thread until `gate` says the machine is stopping (nil), or until
    /// `epoll_wait` fails other than by EINTR (why); parks while the machine is paused, between
    /// two batches of events, never in the middle of one.
    func run(gate: RunGate) -> LaunchError? {
        var events = [epoll_event](repeating: epoll_event(), count: 32)
        while gate.checkpoint() {
            let n = epoll_wait(epoll, &events, Int32(events.count), -1)
            if n < 0, errno == EINTR { continue }
            if n < 0 { return .setup("the I/O thread stopped: epoll_wait: \(String(cString: strerror(errno)))") }
            for event in events.prefix(Int(n)) {
                let fd = event.data.fd
                if fd == control.raw { control.drain(); continue }
                if let handler = handlers.withLock({ $0[fd] }) { handler() }
            }
        }
        return nil
    }
}
