#if canImport(Glibc)
import Glibc
#endif

/// A signal whose handler does nothing and does not restart system calls, so a blocked call
/// fails with EINTR; unblocked on the calling thread (the test runner's threads block signals)
/// until the returned closure blocks it again.
public func installInterruptingSignal(_ number: Int32) -> () -> Void {
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
