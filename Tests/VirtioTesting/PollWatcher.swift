import Devices
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The I/O thread, played with `poll`: the device's watched descriptors, dispatched when ready.
public final class PollWatcher: DescriptorWatcher {
    public init() {}

    private let table = Mutex<[Int32: (events: UInt32, handler: @Sendable (UInt32) -> Void)]>([:])

    public func watch(_ fd: Int32, events: UInt32, _ handler: @escaping @Sendable (UInt32) -> Void) {
        table.withLock { $0[fd] = (events, handler) }
    }

    public func unwatch(_ fd: Int32) { table.withLock { $0[fd] = nil } }

    public var watched: [Int32: UInt32] { table.withLock { $0.mapValues(\.events) } }

    /// Polls once and calls the handler of each ready descriptor; returns how many were ready.
    @discardableResult
    public func pump(timeoutMilliseconds: Int32 = 0) -> Int {
        let entries = table.withLock { $0 }
        var fds = entries.map { pollfd(fd: $0.key, events: Int16(truncatingIfNeeded: $0.value.events), revents: 0) }
        guard !fds.isEmpty, poll(&fds, nfds_t(fds.count), timeoutMilliseconds) > 0 else { return 0 }
        var ready = 0
        for entry in fds where entry.revents != 0 {
            guard let handler = table.withLock({ $0[entry.fd]?.handler }) else { continue }
            handler(UInt32(UInt16(bitPattern: entry.revents)))
            ready += 1
        }
        return ready
    }

    /// Pumps until nothing has been ready for `quietMilliseconds`.
    public func settle(quietMilliseconds: Int32 = 30) {
        var rounds = 0
        while rounds < 10_000, pump(timeoutMilliseconds: quietMilliseconds) > 0 { rounds += 1 }
    }
}
