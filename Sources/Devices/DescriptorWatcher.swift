/// The I/O thread's view of the host descriptors a device serves, for devices whose set of
/// descriptors changes while the guest runs (vsock's connections come and go). The Launcher's
/// event loop implements it; tests implement it with `poll`.
///
/// `events` are epoll's bits (`EPOLLIN`, `EPOLLOUT`); the handler is called on the I/O thread
/// with the events that occurred (which may include `EPOLLHUP` and `EPOLLERR`) as long as the
/// descriptor stays ready: a handler must do what it can, or say it wants fewer events.
public protocol DescriptorWatcher: Sendable {
    /// Starts watching `fd` for `events`, or changes what it is watched for.
    func watch(_ fd: Int32, events: UInt32, _ handler: @escaping @Sendable (UInt32) -> Void)
    /// Stops watching `fd` (before it is closed).
    func unwatch(_ fd: Int32)
}

/// epoll's event bits (`<sys/epoll.h>`), as `DescriptorWatcher` takes and reports them.
public enum DescriptorEvents {
    public static let readable: UInt32 = 0x001
    public static let writable: UInt32 = 0x004
    public static let error: UInt32 = 0x008
    public static let hangUp: UInt32 = 0x010
}
