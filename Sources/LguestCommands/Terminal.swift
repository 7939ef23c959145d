import Launcher
#if canImport(Glibc)
import Glibc
#endif

/// The host terminal, as the guest's console sees it: the command-line tool's business, never
/// the library's.
///
/// When standard input is a terminal it goes into raw mode, so every key (Ctrl-C included)
/// reaches the guest; it is restored on every way out of the process: a normal exit, a fatal
/// signal, or an error. Ctrl-A x quits (QEMU's escape, which people already know); Ctrl-A
/// Ctrl-A sends one Ctrl-A.
enum Terminal {
    /// The terminal settings to put back, kept where a signal handler can reach them.
    /// nonisolated(unsafe): written once before any handler is installed, then only read.
    nonisolated(unsafe) private static var saved = termios()
    nonisolated(unsafe) private static var isRaw = false

    static var inputIsTerminal: Bool { isatty(0) == 1 }

    /// Makes a write to a pipe or socket whose reader has gone fail with EPIPE rather than
    /// kill the process (`lguest … | tee log` when tee dies): the console output is dropped
    /// and counted, and the guest goes on.
    static func ignoreBrokenPipes() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// Puts standard input into raw mode if it is a terminal, and arranges for it to be restored.
    static func enterRawMode() {
        guard inputIsTerminal, tcgetattr(0, &saved) == 0 else { return }
        var raw = saved
        cfmakeraw(&raw)
        raw.c_oflag |= tcflag_t(OPOST | ONLCR) // keep "\n" → "\r\n" for our own messages
        // The handlers go in first: a signal that arrives the moment the terminal turns raw
        // must already find them (putting back settings that were never changed is harmless).
        isRaw = true
        atexit { Terminal.restore() }
        for signal in TerminatingSignals.all + [SIGSEGV, SIGBUS, SIGILL, SIGABRT, SIGFPE, SIGTRAP] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                Terminal.restore()
                // Die of the same signal, so the parent sees why.
                Glibc.signal(number, SIG_DFL)
                raise(number)
            }
            action.sa_flags = Int32(bitPattern: UInt32(SA_RESETHAND))
            sigaction(signal, &action, nil)
        }
        if tcsetattr(0, TCSANOW, &raw) != 0 { isRaw = false }
    }

    /// Puts the terminal back as it was. Safe to call from a signal handler (tcsetattr is
    /// async-signal-safe) and more than once.
    static func restore() {
        guard isRaw else { return }
        isRaw = false
        tcsetattr(0, TCSANOW, &saved)
    }
}
