import Foundation
import HostSystem
import KVM
import Testing

/// A signal whose handler does nothing and does not restart system calls, so a blocked call
/// fails with EINTR; unblocked on the calling thread (the test runner's threads block signals)
/// until the returned closure blocks it again.
func installInterruptingSignal(_ number: Int32) -> () -> Void {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { _ in }
    action.sa_flags = 0
    sigaction(number, &action, nil)
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, number)
    var old = sigset_t()
    pthread_sigmask(SIG_UNBLOCK, &set, &old)
    return { pthread_sigmask(SIG_SETMASK, &old, nil) }
}

@Suite struct EventFDTests {
    /// A blocking read that a signal interrupts is retried: the count that arrives afterwards
    /// is read, not lost as a spurious 0.
    @Test func drainRetriesAfterASignal() throws {
        let restore = installInterruptingSignal(SIGUSR2)
        defer { restore() }
        let event = try EventFD(nonBlocking: false)
        let me = pthread_self()
        let poker = Thread {
            usleep(100_000)
            pthread_kill(me, SIGUSR2)
            usleep(100_000)
            event.signal()
        }
        poker.start()
        #expect(event.drain() == 1)
    }
}
