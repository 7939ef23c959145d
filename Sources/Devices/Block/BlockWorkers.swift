import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The threads that serve one disk's requests side by side: fork and join, one batch at a time.
///
/// The I/O thread takes a batch of reads and writes off the queue and calls `run`: the jobs
/// (each read, and all the writes together, `BlockDevice.drain`) are shared out between it and
/// as many workers as there are jobs beyond the first, each taking the next unserved one until
/// none is left, and `run` returns when every one has been served. Nothing is in flight
/// between two batches, so a paused machine has no request half done, a reset finds no worker
/// touching the queue, and a FLUSH served after the batch covers every write in it.
///
/// A batch of one job (every request at queue depth 1, a batch of writes alone) is served on
/// the I/O thread alone, with no thread woken. Before the workers start (and in tests that
/// build a device without them) every request is served that way too.
///
/// The workers are the machine's threads (started, sandboxed and joined by the launcher, which
/// runs `serveBatches` on each); they only ever run requests `run` hands them.
public final class BlockWorkers: @unchecked Sendable {
    // @unchecked: `job` and `jobCount` are written by the thread in `run` before it posts
    // `wake`, and read by workers only after their `sem_wait` returns (the semaphore orders
    // them); `run` clears them only after `done` says every woken worker has finished.

    /// How many workers a disk has unless told otherwise: with the I/O thread, four requests
    /// at a time.
    public static let defaultCount = 3
    /// The most a disk may ask for.
    public static let maxCount = 32

    /// Workers wanted (how many threads the launcher starts).
    public let count: Int
    /// Workers running `serveBatches`: the most `run` wakes.
    private let ready = Atomic<Int>(0)
    /// The next request index to take in the current batch.
    private let next = Atomic<Int>(0)
    /// Woken workers that have not finished the current batch yet.
    private let busy = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let wake: UnsafeMutablePointer<sem_t>
    private let done: UnsafeMutablePointer<sem_t>
    private var job: ((Int) -> Void)?
    private var jobCount = 0

    public init(count: Int) {
        self.count = max(0, min(count, Self.maxCount))
        wake = .allocate(capacity: 1)
        done = .allocate(capacity: 1)
        sem_init(wake, 0, 0)
        sem_init(done, 0, 0)
    }

    deinit {
        sem_destroy(wake)
        sem_destroy(done)
        wake.deallocate()
        done.deallocate()
    }

    /// Calls `body` once for each index in `0 ..< requests`, on this thread and on idle workers
    /// at the same time, and returns when every call has returned. One caller at a time (the
    /// block device's drain, which holds its `serving` lock).
    func run(_ requests: Int, _ body: (Int) -> Void) {
        let helpers = min(ready.load(ordering: .acquiring), requests - 1)
        guard helpers > 0 else {
            for index in 0 ..< requests { body(index) }
            return
        }
        withoutActuallyEscaping(body) { body in
            job = body
            jobCount = requests
            next.store(0, ordering: .relaxed)
            busy.store(helpers, ordering: .relaxed)
            for _ in 0 ..< helpers { sem_post(wake) }
            take(body, count: requests)
            Self.waitFor(done)
            job = nil
        }
    }

    /// A worker thread's loop: serves whatever batches `run` shares out, until `stop`.
    public func serveBatches() {
        ready.wrappingAdd(1, ordering: .releasing)
        while true {
            Self.waitFor(wake)
            if stopping.load(ordering: .acquiring) { return }
            // Set before the post that woke us: see the class's note.
            if let job { take(job, count: jobCount) }
            if busy.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { sem_post(done) }
        }
    }

    /// Workers in their loop now.
    var readyCount: Int { ready.load(ordering: .acquiring) }

    /// Ends every worker's loop (between batches: the I/O thread has stopped before this).
    public func stop() {
        stopping.store(true, ordering: .releasing)
        for _ in 0 ..< count { sem_post(wake) }
    }

    private func take(_ body: (Int) -> Void, count: Int) {
        while true {
            let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
            guard index < count else { return }
            body(index)
        }
    }

    private static func waitFor(_ semaphore: UnsafeMutablePointer<sem_t>) {
        while sem_wait(semaphore) != 0 && errno == EINTR {}
    }
}
