import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Why a VM stopped. The first reason reported wins; later ones are ignored.
public enum StopReason: Sendable, Equatable {
    /// The guest powered itself off (ACPI S5).
    case powerOff
    /// The guest asked to reboot (keyboard controller reset, ACPI reset register, the reset
    /// vector's code, or a triple fault after it announced its shutdown). lguest, like
    /// Firecracker, ends the VM then: a fresh boot is a fresh process.
    case reboot
    /// The guest kernel told us it panicked (pvpanic).
    case guestPanic
    /// The vCPU triple-faulted without the guest having announced a shutdown.
    case tripleFault(vcpu: Int)
    /// The VM cannot continue: KVM or the VMM failed. The string is the one-line reason.
    case failure(String)
    /// The user pressed the console escape (Ctrl-A x) or sent a signal.
    case userQuit
}

/// Where devices and vCPUs report that the VM must stop, and where the main thread waits for it.
public final class PowerControl: @unchecked Sendable {
    // @unchecked: `semaphore` is a POSIX semaphore, safe to post/wait from any thread; `reason`
    // is behind a Mutex.
    private let reason = Mutex<StopReason?>(nil)
    private let announced = Atomic<Bool>(false)
    private let semaphore: UnsafeMutablePointer<sem_t>

    public init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    /// Reports a reason to stop. Only the first report counts.
    public func requestStop(_ why: StopReason) {
        let first = reason.withLock { current -> Bool in
            guard current == nil else { return false }
            current = why
            return true
        }
        if first { sem_post(semaphore) }
    }

    /// The guest said, through ACPI `\_TTS(5)`, that it is about to restart, halt or power off.
    public func noteShutdownAnnounced() { announced.store(true, ordering: .releasing) }

    /// Whether the guest has announced a shutdown: a triple fault after that is how it chose to
    /// reset the machine (Linux's `reboot=t`), not a crash.
    public var shutdownAnnounced: Bool { announced.load(ordering: .acquiring) }

    /// Like `waitForStop()`, but gives up after `timeoutNanoseconds`: nil then.
    public func waitForStop(timeoutNanoseconds: Int) -> StopReason? {
        var limit = deadline(afterNanoseconds: timeoutNanoseconds, clock: CLOCK_REALTIME)
        while sem_timedwait(semaphore, &limit) != 0 {
            if errno == ETIMEDOUT { return nil }
        }
        sem_post(semaphore) // leave it signalled for any other waiter
        return reason.withLock { $0! }
    }

    /// The reason, if one was reported.
    public var stopReason: StopReason? { reason.withLock { $0 } }

    /// Blocks until some thread reports a reason to stop, and returns it.
    public func waitForStop() -> StopReason {
        while sem_wait(semaphore) != 0 {}
        sem_post(semaphore) // leave it signalled for any other waiter
        return reason.withLock { $0! }
    }
}
