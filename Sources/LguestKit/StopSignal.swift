import Launcher
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A one-shot value: the reason a VM stopped, waited for by threads and by async callers.
final class StopSignal: Sendable {
    private struct State {
        var reason: StopReason?
        var waiters: [@Sendable (StopReason) -> Void] = []
    }
    private let state = Mutex(State())
    private let semaphore = Semaphore()

    func fulfil(_ reason: StopReason) {
        let waiters = state.withLock { state -> [@Sendable (StopReason) -> Void] in
            guard state.reason == nil else { return [] }
            state.reason = reason
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter(reason) }
        semaphore.post()
    }

    /// Calls `body` once the reason is known (at once if it already is).
    func notify(_ body: @escaping @Sendable (StopReason) -> Void) {
        let known = state.withLock { state -> StopReason? in
            if state.reason == nil { state.waiters.append(body) }
            return state.reason
        }
        if let known { body(known) }
    }

    func wait() -> StopReason {
        semaphore.wait()
        semaphore.post() // leave it signalled for the next waiter
        return state.withLock { $0.reason! }
    }
}

/// A POSIX semaphore, owned.
final class Semaphore: @unchecked Sendable {
    // @unchecked: sem_post and sem_wait are thread-safe.
    private let raw: UnsafeMutablePointer<sem_t>
    init() { raw = .allocate(capacity: 1); sem_init(raw, 0, 0) }
    deinit { sem_destroy(raw); raw.deallocate() }
    func post() { sem_post(raw) }
    func wait() { while sem_wait(raw) != 0 {} }
}
