#if canImport(Glibc)
import Glibc
#endif

/// The signals that end a process. A machine's threads block them, so that the kernel
/// delivers them to a thread of the embedding program's choosing (the command-line tool's main
/// thread, whose handler restores the terminal).
public enum TerminatingSignals {
    /// A parent can hand us a mask that blocks them (test runners and some supervisors do), and
    /// a blocked SIGTERM would leave the VM running forever.
    public static let all = [SIGTERM, SIGINT, SIGHUP, SIGQUIT]

    /// Unblocks them for this thread and every thread it starts afterwards.
    public static func unblock() { change(SIG_UNBLOCK) }

    /// Blocks them for this thread: vCPU and I/O threads start with this.
    public static func block() { change(SIG_BLOCK) }

    private static func change(_ how: CInt) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in all { sigaddset(&set, signal) }
        pthread_sigmask(how, &set, nil)
    }
}
