import CKVM
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
