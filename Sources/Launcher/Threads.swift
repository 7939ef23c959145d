import CKVM
import Devices
import Sandbox
#if canImport(Glibc)
import Glibc
#endif

/// Starts `body` on a new OS thread. vCPUs and the I/O loop block in system calls for as long as
/// the VM runs, so they get threads of their own, never Swift's cooperative pool.
func spawnThread(name: String, _ body: @escaping @Sendable () -> Void) throws(LaunchError) {
    final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
    }, context)
    guard result == 0 else {
        Unmanaged<Box>.fromOpaque(context).release()
        throw .setup("cannot start thread \(name): \(String(cString: strerror(result)))")
    }
    _ = lg_set_thread_name(thread, String(name.prefix(15)))
    pthread_detach(thread)
}

/// The first thing a vCPU or I/O thread does: leave the terminating signals to the main thread
/// (whose handler restores the terminal and whose filter expects it), then install the thread's
/// filter, if it has one. A thread that cannot be confined stops the VM instead of running.
func enterThreadSandbox(_ filter: SyscallFilter?, power: PowerControl) -> Bool {
    Terminal.blockTerminatingSignals()
    guard let filter else { return true }
    do throws(SandboxError) { try filter.install() } catch {
        power.requestStop(.failure(error.description))
        return false
    }
    return true
}
