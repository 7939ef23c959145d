import CKVM
import Devices
import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// The device I/O thread: one epoll set watching every descriptor devices care about (the
/// terminal, the virtqueues' ioeventfds, TAP devices) and calling each one's handler when it is
/// readable. Device work runs here, never on a vCPU thread.
final class EventLoop: DescriptorWatcher {
    let epoll: CInt
    /// What to call for each descriptor, with the events that occurred.
    private let handlers = Mutex<[CInt: @Sendable (UInt32) -> Void]>([:])
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
        let old = handlers.withLock { table -> [CInt: @Sendable (UInt32) -> Void] in
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
        switch add(fd, events: EPOLLIN.rawValue, { _ in handler() }) {
        case 0: return true
        case EPERM: return false
        case let error: throw .setup("epoll_ctl(\(fd)): \(String(cString: strerror(error)))")
        }
    }

    /// `DescriptorWatcher`: watches `fd` for `events` (EPOLLIN, EPOLLOUT), or changes them.
    /// Failures are the device's descriptors being unusable; the device learns when it next
    /// reads or writes them.
    func watch(_ fd: Int32, events: UInt32, _ handler: @escaping @Sendable (UInt32) -> Void) {
        _ = add(fd, events: events, handler)
    }

    /// Adds `fd` to the epoll set, or changes its events; returns 0 or errno.
    private func add(_ fd: CInt, events: UInt32, _ handler: @escaping @Sendable (UInt32) -> Void) -> Int32 {
        let known = handlers.withLock { table -> Bool in
            defer { table[fd] = handler }
            return table[fd] != nil
        }
        var event = epoll_event()
        event.events = events
        event.data.fd = fd
        if epoll_ctl(epoll, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event) == 0 { return 0 }
        if errno == EEXIST, epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event) == 0 { return 0 }
        if errno == ENOENT, epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) == 0 { return 0 }
        let error = errno
        handlers.withLock { $0[fd] = nil }
        return error
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
                if let handler = handlers.withLock({ $0[fd] }) { handler(event.events) }
            }
        }
        return nil
    }
}
