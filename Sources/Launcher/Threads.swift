import CKVM
import Devices
import Sandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One of a machine's OS threads. vCPUs and the I/O loop block in system calls for as long as
/// the VM runs, so they get threads of their own, never Swift's cooperative pool; the machine
/// joins every one of them when it stops, so nothing outlives it.
public final class MachineThread: @unchecked Sendable {
    // @unchecked: `handle` is written once, before the thread can be seen by anyone else.
    private(set) var handle = pthread_t()
    let name: String
    private let joined = Mutex(false)

    /// Starts `body` on a new OS thread named `name` (at most 15 bytes are kept).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(LaunchError) {
        final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        self.name = name
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let result = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            throw .setup("cannot start thread \(name): \(String(cString: strerror(result)))")
        }
        _ = lg_set_thread_name(handle, String(name.prefix(15)))
    }

    /// Interrupts whatever blocking call the thread is in (KVM_RUN, above all) with the kick
    /// signal, whose handler does nothing.
    func kick() {
        guard !joined.withLock({ $0 }) else { return }
        _ = pthread_kill(handle, lg_kick_signal())
    }

    /// Waits for the thread to finish. Only the first call waits.
    public func join() {
        let first = joined.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { pthread_join(handle, nil) }
    }
}

/// The kick signal's handler, installed once per process before the first vCPU thread starts
/// (the one process-wide thing a machine does on its own; docs/Architecture.md).
enum KickSignal {
    static let installed: Bool = lg_install_kick_handler() == 0

    /// Lets the kick signal through on this thread, whatever mask the parent handed down.
    static func unblock() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, lg_kick_signal())
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}

/// The first thing a vCPU or I/O thread does: leave the terminating signals to the main thread
/// (whose handler restores the terminal and whose filter expects it), then install the thread's
/// filter, if it has one. A thread that cannot be confined stops the VM instead of running.
func enterThreadSandbox(_ filter: SyscallFilter?, power: PowerControl) -> Bool {
    TerminatingSignals.block()
    guard let filter else { return true }
    do throws(SandboxError) { try filter.install() } catch {
        power.requestStop(.failure(error.description))
        return false
    }
    return true
}
