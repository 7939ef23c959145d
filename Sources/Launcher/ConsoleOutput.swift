import Devices
import HostSystem
import Sandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the guest's consoles print, on its way to a host descriptor (standard output, say).
///
/// The guest writes on a vCPU thread (the UART) or the I/O thread (virtio-console); neither may
/// wait for a slow or stuck reader. So bytes go into a buffer of `capacity` bytes and a thread
/// of the console's own writes them out; what does not fit while the reader lags is dropped and
/// counted (`dropped`), as Firecracker does. A reader that has gone (EPIPE) drops everything.
public final class ConsoleOutput: ByteSink, @unchecked Sendable {
    // @unchecked: the state is behind `state`'s mutex and the semaphore is thread-safe.
    public static let defaultCapacity = 64 * 1024

    private struct State {
        var buffer: [UInt8] = []
        var dropped: UInt64 = 0
        var closing = false
        var abandoned = false
    }

    public let descriptor: CInt
    let capacity: Int
    private let state = Mutex(State())
    private let ready: UnsafeMutablePointer<sem_t>
    private let finished: UnsafeMutablePointer<sem_t>
    private var writer: MachineThread?

    /// Starts the writer thread for `descriptor`, which stays open (and ours to write) until
    /// `close()`; closing it is the caller's business.
    /// With `sandboxed`, the writer thread runs under a filter that allows little more than
    /// `write` (docs/Sandbox.md).
    public init(descriptor: CInt, capacity: Int = ConsoleOutput.defaultCapacity, sandboxed: Bool = false) throws(LaunchError) {
        self.descriptor = descriptor
        self.capacity = capacity
        ready = .allocate(capacity: 1)
        finished = .allocate(capacity: 1)
        sem_init(ready, 0, 0)
        sem_init(finished, 0, 0)
        let filter = sandboxed ? ThreadSandbox.consoleWriter(process: getpid()) : nil
        writer = try MachineThread(name: "lguest-console") { [self] in
            if let filter {
                do throws(SandboxError) {
                    try Privileges.forbidNewPrivileges()
                    try Privileges.dropCapabilities()
                    try filter.install()
                } catch {
                    printError("lguest: the console writer cannot be confined: \(error)")
                    _exit(1)
                }
            }
            drain()
        }
    }

    deinit {
        sem_destroy(ready); ready.deallocate()
        sem_destroy(finished); finished.deallocate()
    }

    /// Bytes the guest printed that were dropped because the reader fell too far behind.
    public var dropped: UInt64 { state.withLock { $0.dropped } }

    public func write(_ bytes: UnsafeRawBufferPointer) {
        let wake = state.withLock { state -> Bool in
            guard !state.closing else { state.dropped += UInt64(bytes.count); return false }
            let room = max(0, capacity - state.buffer.count)
            let taken = min(room, bytes.count)
            state.buffer.append(contentsOf: bytes.prefix(taken))
            state.dropped += UInt64(bytes.count - taken)
            return taken > 0
        }
        if wake { sem_post(ready) }
    }

    /// The writer thread: waits for bytes, writes them, until closed and drained.
    private func drain() {
        KickSignal.unblock()
        while true {
            while sem_wait(ready) != 0 {}
            let (chunk, closing) = state.withLock { state -> ([UInt8], Bool) in
                defer { state.buffer.removeAll(keepingCapacity: true) }
                return (state.buffer, state.closing)
            }
            if !chunk.isEmpty, !writeOut(chunk) {
                state.withLock { $0.dropped += UInt64(chunk.count) }
            }
            if closing { break }
        }
        sem_post(finished)
    }

    /// Writes all of `chunk`, unless the reader has gone or `close` gave up waiting.
    private func writeOut(_ chunk: [UInt8]) -> Bool {
        chunk.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                // A kick from `close` may land after part of a write went through: look each time.
                if state.withLock({ $0.abandoned }) { return false }
                let n = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if n > 0 { offset += n; continue }
                if n < 0, errno == EINTR, !state.withLock({ $0.abandoned }) { continue }
                if n < 0, errno == EAGAIN {
                    var poller = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&poller, 1, 100)
                    if !state.withLock({ $0.abandoned }) { continue }
                }
                return false
            }
            return true
        }
    }

    /// Writes what is buffered (waiting up to `patience` seconds for a slow reader, then
    /// dropping the rest) and ends the writer thread. Later writes are dropped and counted.
    public func close(patience: Int = 1) {
        guard let writer else { return }
        state.withLock { $0.closing = true }
        sem_post(ready)
        var deadline = deadline(afterNanoseconds: patience * 1_000_000_000, clock: CLOCK_REALTIME)
        while sem_timedwait(finished, &deadline) != 0 {
            if errno == ETIMEDOUT {
                // Give up on the reader: kick the writer out of its `write` until it notices
                // (a kick that lands just before the call is lost, so kick again every 100 ms).
                state.withLock { $0.abandoned = true }
                while true {
                    writer.kick()
                    deadline = HostSystem.deadline(afterNanoseconds: 100_000_000, clock: CLOCK_REALTIME)
                    if sem_timedwait(finished, &deadline) == 0 { break }
                }
                break
            }
        }
        writer.join()
        self.writer = nil
    }
}
