import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where a machine's threads stop while the VM is paused, and learn that it is stopping.
///
/// Every vCPU thread and the I/O thread passes through `checkpoint()` between two pieces of
/// work: after KVM_RUN returned and its exit was handled, after the I/O thread finished a
/// batch of events. So a paused VM has no vCPU inside KVM_RUN and no device half-way through
/// a request. `pause()` returns only once every running thread has parked.
final class RunGate: @unchecked Sendable {
    // @unchecked: every field below is read and written with `mutex` held.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let changed: UnsafeMutablePointer<pthread_cond_t>
    private var paused = false
    private var stopping = false
    private var parked = 0
    private var running = 0
    /// A lock-free copy of `paused || stopping`, so a busy thread's checkpoint costs one load.
    private let attention = Atomic<Bool>(false)

    init() {
        mutex = .allocate(capacity: 1)
        changed = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(changed, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        changed.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// A thread that will pass through checkpoints is starting.
    func enter() { locked { running += 1 } }

    /// A thread is leaving for good (the VM stopped, or its vCPU hit a fatal exit); a pause no
    /// longer waits for it.
    func leave() {
        locked { running -= 1; pthread_cond_broadcast(changed) }
    }

    /// Parks the calling thread while the VM is paused. Returns false once the VM is stopping:
    /// the caller's loop must end.
    func checkpoint() -> Bool {
        guard attention.load(ordering: .acquiring) else { return true }
        return locked {
            guard paused && !stopping else { return !stopping }
            // Say so once (for `pause()`), then sleep: broadcasting on every wake-up made two
            // parked threads wake each other in turn, spinning for as long as the VM was paused.
            parked += 1
            pthread_cond_broadcast(changed)
            while paused && !stopping { pthread_cond_wait(changed, mutex) }
            parked -= 1
            return !stopping
        }
    }

    /// Asks every thread to park, calls `kick` (which must make each one reach a checkpoint
    /// soon), and waits until all have. Kicks again every 20 ms in case one was missed. Returns
    /// false if the VM began stopping instead.
    func pause(kick: () -> Void) -> Bool {
        guard locked({ () -> Bool in
            guard !stopping else { return false }
            paused = true
            attention.store(true, ordering: .releasing)
            return true
        }) else { return false }
        while true {
            kick()
            let done: Bool? = locked {
                var deadline = deadline(afterNanoseconds: 20_000_000, clock: CLOCK_MONOTONIC)
                while parked < running && !stopping {
                    if pthread_cond_timedwait(changed, mutex, &deadline) == ETIMEDOUT { return nil }
                }
                return !stopping
            }
            if let done { return done }
        }
    }

    /// Whether a pause or stop has been asked for: a thread about to reach its checkpoint may
    /// want to tidy up first.
    var wantsAttention: Bool { attention.load(ordering: .acquiring) }

    /// Pauses a machine whose threads have not started: each parks at its first checkpoint.
    func pauseBeforeStart() {
        locked {
            paused = true
            attention.store(true, ordering: .releasing)
        }
    }

    /// Lets parked threads go on.
    func resume() {
        locked {
            paused = false
            attention.store(stopping, ordering: .releasing)
            pthread_cond_broadcast(changed)
        }
    }

    /// From now on every checkpoint returns false, parked threads included.
    func stop() {
        locked {
            stopping = true
            attention.store(true, ordering: .releasing)
            pthread_cond_broadcast(changed)
        }
    }

    var isPaused: Bool { locked { paused && !stopping } }
}
