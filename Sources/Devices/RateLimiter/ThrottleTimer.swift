import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// A one-shot timerfd that wakes a throttled device: the launcher watches `descriptor` on the
/// I/O thread and calls the device when it fires, so a device out of tokens waits without
/// spinning and without holding up the others.
public final class ThrottleTimer: Sendable {
    /// The timerfd, or -1 if the kernel refused one (out of descriptors): see `isUsable`.
    public let descriptor: CInt

    public init() {
        descriptor = timerfd_create(CLOCK_MONOTONIC, LG_TFD_NONBLOCK | LG_TFD_CLOEXEC)
    }

    deinit { if descriptor >= 0 { close(descriptor) } }

    /// Whether there is a timer. Without one a device cannot wait, so it applies no limits.
    public var isUsable: Bool { descriptor >= 0 }

    /// Fires once, `nanoseconds` from now (at least 1 ns: 0 would disarm it).
    public func arm(afterNanoseconds nanoseconds: UInt64) {
        let delay = max(nanoseconds, 1)
        var spec = itimerspec()
        spec.it_value.tv_sec = Int(delay / 1_000_000_000)
        spec.it_value.tv_nsec = Int(delay % 1_000_000_000)
        timerfd_settime(descriptor, 0, &spec, nil)
    }

    public func disarm() {
        var spec = itimerspec()
        timerfd_settime(descriptor, 0, &spec, nil)
    }

    /// Nanoseconds until the timer fires; 0 when it is not set.
    public var remainingNanoseconds: UInt64 {
        var spec = itimerspec()
        guard timerfd_gettime(descriptor, &spec) == 0 else { return 0 }
        return UInt64(spec.it_value.tv_sec) * 1_000_000_000 + UInt64(spec.it_value.tv_nsec)
    }

    /// Whether the timer is set to fire.
    public var isArmed: Bool { remainingNanoseconds > 0 }

    /// Consumes the expiration, so a level-triggered epoll stops reporting it.
    public func acknowledge() {
        var count: UInt64 = 0
        // Safe: reads at most 8 bytes into a local.
        _ = withUnsafeMutableBytes(of: &count) { read(descriptor, $0.baseAddress, 8) }
    }
}

/// A device that a rate limiter can pause: the launcher watches `throttleTimer` and calls
/// `throttleTimerFired()` on the I/O thread; an API can change the limits while it runs.
public protocol RateLimitedDevice: AnyObject, Sendable {
    var throttleTimer: ThrottleTimer { get }
    /// The timer fired: take up the work the limit held back.
    func throttleTimerFired()
}
