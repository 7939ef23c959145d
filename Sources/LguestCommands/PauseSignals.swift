import Launcher
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// SIGTSTP pauses the VM and SIGCONT resumes it, for a user with nothing but `kill` (the
/// terminal is raw: Ctrl-Z reaches the guest). Both signals are blocked in every thread and
/// taken by one thread of their own (`lguest-signals`) with `sigwaitinfo`: a handler could do
/// nothing a pause needs. That thread runs under its own filter (docs/Sandbox.md).
final class PauseSignals: @unchecked Sendable {
    // @unchecked: `ready` is a POSIX semaphore, safe from any thread; the rest is behind Mutexes.
    private let machine = Mutex<Machine?>(nil)
    private let ready: UnsafeMutablePointer<sem_t>
    private let thread = Mutex<MachineThread?>(nil)

    private static var set: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTSTP)
        sigaddset(&set, SIGCONT)
        return set
    }

    private init() {
        ready = .allocate(capacity: 1)
        sem_init(ready, 0, 0)
    }

    /// Blocks the two signals on the calling thread (every thread started later inherits the
    /// mask) and starts the thread that waits for them; it acts once `serve` names the machine.
    static func start() throws(LaunchError) -> PauseSignals {
        var set = Self.set
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let signals = PauseSignals()
        let thread = try MachineThread(name: "lguest-signals") { signals.run() }
        signals.thread.withLock { $0 = thread }
        return signals
    }

    /// The machine the signals pause and resume from now on.
    func serve(_ machine: Machine) {
        self.machine.withLock { $0 = machine }
        sem_post(ready)
    }

    private func run() {
        while sem_wait(ready) != 0 {}
        guard let machine = machine.withLock({ $0 }) else { return }
        do throws(LaunchError) { try machine.confineSignalThread() } catch {
            machine.requestStop(.failure(error.description))
            return
        }
        var set = Self.set
        while true {
            let signal = sigwaitinfo(&set, nil)
            switch signal {
            case SIGTSTP: machine.pause()
            case SIGCONT: machine.resume()
            default: continue
            }
        }
    }
}
