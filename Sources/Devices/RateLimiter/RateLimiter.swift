#if canImport(Glibc)
import Glibc
#endif

/// A device's limits: a bandwidth bucket (bytes) and an operations bucket (requests), either
/// or both, as in Firecracker's `rate_limiter` object.
public struct RateLimit: Sendable, Hashable {
    public var bandwidth: TokenBucket.Configuration?
    public var operations: TokenBucket.Configuration?

    public init(bandwidth: TokenBucket.Configuration? = nil, operations: TokenBucket.Configuration? = nil) {
        self.bandwidth = bandwidth
        self.operations = operations
    }

    public static let unlimited = RateLimit()
}

/// Both buckets of a `RateLimit`, consumed together: a request takes one operation and its
/// bytes, from both buckets or from neither.
public struct RateLimiter: Sendable {
    public private(set) var bandwidth: TokenBucket?
    public private(set) var operations: TokenBucket?
    /// The clock the buckets run on (nanoseconds, monotonic); tests pass their own.
    public let clock: @Sendable () -> UInt64

    public init(_ limit: RateLimit, clock: @escaping @Sendable () -> UInt64 = RateLimiter.monotonicNow) {
        self.clock = clock
        let now = clock()
        bandwidth = limit.bandwidth.flatMap { TokenBucket($0, now: now) }
        operations = limit.operations.flatMap { TokenBucket($0, now: now) }
    }

    public var isUnlimited: Bool { bandwidth == nil && operations == nil }

    /// Takes one operation and `bytes` if both buckets have them; otherwise takes nothing.
    public mutating func consume(bytes: UInt64) -> Bool {
        guard !isUnlimited else { return true }
        let now = clock()
        var (b, o) = (bandwidth, operations)
        guard o?.reduce(1, now: now) ?? true, b?.reduce(bytes, now: now) ?? true else { return false }
        (bandwidth, operations) = (b, o)
        return true
    }

    /// Whether a request whose size is known only afterwards may start (each bucket has a token).
    public var mayStart: Bool {
        (bandwidth?.hasTokens ?? true) && (operations?.hasTokens ?? true)
    }

    /// Refills the buckets to now (before `mayStart`).
    public mutating func refill() {
        let now = clock()
        bandwidth?.refill(now: now)
        operations?.refill(now: now)
    }

    /// Charges one operation and `bytes` for work already done; the buckets may go into debt.
    public mutating func charge(bytes: UInt64) {
        guard !isUnlimited else { return }
        let now = clock()
        operations?.charge(1, now: now)
        bandwidth?.charge(bytes, now: now)
    }

    /// Nanoseconds until a request of `bytes` could go (for `bytes` 0: until each bucket has a
    /// token).
    public func nanosecondsUntil(bytes: UInt64) -> UInt64 {
        max(bandwidth?.nanosecondsUntil(max(bytes, 1)) ?? 0, operations?.nanosecondsUntil(1) ?? 0)
    }

    @Sendable public static func monotonicNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
