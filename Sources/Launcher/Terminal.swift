import Devices
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The host terminal, as the guest's console sees it.
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

    /// The signals that end lguest. A parent can hand us a mask that blocks them (test runners
    /// and some supervisors do), and a blocked SIGTERM would leave the VM running forever.
    static let terminatingSignals = [SIGTERM, SIGINT, SIGHUP, SIGQUIT]

    /// Unblocks `terminatingSignals` for this thread and every thread it starts afterwards.
    static func unblockTerminatingSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in terminatingSignals { sigaddset(&set, signal) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Blocks `terminatingSignals` for this thread, so that the kernel delivers them to the
    /// main thread instead: vCPU and I/O threads start with this.
    static func blockTerminatingSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in terminatingSignals { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

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
        guard tcsetattr(0, TCSANOW, &raw) == 0 else { return }
        isRaw = true
        atexit { Terminal.restore() }
        for signal in terminatingSignals + [SIGSEGV, SIGBUS, SIGILL, SIGABRT, SIGFPE, SIGTRAP] {
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
    }

    /// Puts the terminal back as it was. Safe to call from a signal handler (tcsetattr is
    /// async-signal-safe) and more than once.
    static func restore() {
        guard isRaw else { return }
        isRaw = false
        tcsetattr(0, TCSANOW, &saved)
    }
}

/// Writes what the guest's console prints to a host descriptor (standard output by default).
/// What the descriptor does not take (a pipe whose reader went away) is dropped and counted.
final class DescriptorSink: ByteSink {
    let fd: CInt
    private let dropped = Atomic<Int>(0)
    init(fd: CInt) { self.fd = fd }
    func write(_ bytes: UnsafeRawBufferPointer) {
        let written = writeAll(fd, bytes)
        if written < bytes.count { dropped.add(bytes.count - written, ordering: .relaxed) }
    }
    /// Bytes the descriptor did not take.
    var droppedBytes: Int { dropped.load(ordering: .relaxed) }
}

/// Turns keys read from the host into bytes for the guest, watching for the escape sequence.
struct EscapeFilter {
    static let escape: UInt8 = 0x01 // Ctrl-A
    private var sawEscape = false

    enum Action: Equatable { case send([UInt8]), quit }

    mutating func filter(_ input: some Sequence<UInt8>) -> Action {
        var out: [UInt8] = []
        for byte in input {
            if sawEscape {
                sawEscape = false
                switch byte {
                case UInt8(ascii: "x"), UInt8(ascii: "X"): return .quit
                case Self.escape: out.append(Self.escape)
                default: out.append(Self.escape); out.append(byte)
                }
            } else if byte == Self.escape {
                sawEscape = true
            } else {
                out.append(byte)
            }
        }
        return .send(out)
    }
}
