import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The VMM thread's work: API requests and the VM's end, run one at a time, in order, on the
/// thread that calls `run()` (the process's main thread, as Firecracker's `fc_vmm`).
public final class VMMQueue: @unchecked Sendable {
    // @unchecked: the semaphore is a POSIX semaphore, safe from any thread; the rest is atomic
    // or behind a Mutex.
    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let semaphore: UnsafeMutablePointer<sem_t>
    private let stopped = Atomic<Bool>(false)

    public init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit { sem_destroy(semaphore); semaphore.deallocate() }

    /// Runs `job` on the VMM thread, after those submitted before it.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        jobs.withLock { $0.append(job) }
        sem_post(semaphore)
    }

    /// Runs jobs until `stop()`; returns then.
    public func run() {
        while !stopped.load(ordering: .acquiring) {
            while sem_wait(semaphore) != 0 {}
            let job = jobs.withLock { $0.isEmpty ? nil : $0.removeFirst() }
            job?()
        }
    }

    /// Makes `run()` return after the job running now.
    public func stop() {
        stopped.store(true, ordering: .releasing)
        sem_post(semaphore)
    }
}
