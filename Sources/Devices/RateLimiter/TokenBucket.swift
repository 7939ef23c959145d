/// A token bucket, with Firecracker's semantics: it holds up to `size` tokens, starts full, and
/// refills at `size` tokens per `refillTime` milliseconds. `oneTimeBurst` extra tokens are
/// spent first and never come back. A request takes its tokens at once or waits; one larger
/// than the whole bucket goes through when the bucket is full and leaves it in debt, so the
/// average rate still holds.
///
/// Tokens are bytes for a bandwidth bucket and requests for an operations bucket. Time comes
/// from the caller (nanoseconds on a monotonic clock), so the arithmetic is testable.
public struct TokenBucket: Sendable, Equatable {
    /// What the user configures (Firecracker's `size`, `refill_time`, `one_time_burst`).
    public struct Configuration: Sendable, Hashable {
        public var size: UInt64
        /// Milliseconds to refill an empty bucket.
        public var refillTime: UInt64
        public var oneTimeBurst: UInt64

        public init(size: UInt64, refillTime: UInt64, oneTimeBurst: UInt64 = 0) {
            self.size = size
            self.refillTime = refillTime
            self.oneTimeBurst = oneTimeBurst
        }

        /// The largest size, burst and refill time accepted: far beyond any real disk or link,
        /// small enough that no product in the arithmetic overflows.
        public static let maxTokens: UInt64 = 1 << 50
        public static let maxRefillTime: UInt64 = 1 << 32
    }

    public let configuration: Configuration
    /// Tokens in the bucket; negative after a request larger than the bucket (debt).
    public private(set) var budget: Int64
    /// What is left of the one-time burst.
    public private(set) var oneTimeBurst: UInt64
    /// When the refill last credited tokens (ns).
    private var lastRefill: UInt64
    private var refillNanoseconds: UInt64 { configuration.refillTime * 1_000_000 }
    private var size: Int64 { Int64(configuration.size) }

    /// A full bucket, or `nil` for a size or refill time of 0, which Firecracker takes to mean
    /// "no limit". A size or refill time beyond the maxima is taken as the maximum.
    public init?(_ configuration: Configuration, now: UInt64) {
        guard configuration.size > 0, configuration.refillTime > 0 else { return nil }
        var configuration = configuration
        configuration.size = min(configuration.size, Configuration.maxTokens)
        configuration.refillTime = min(configuration.refillTime, Configuration.maxRefillTime)
        self.configuration = configuration
        budget = Int64(configuration.size)
        oneTimeBurst = configuration.oneTimeBurst
        lastRefill = now
    }

    /// Takes `tokens` if the bucket has them (after the one-time burst), or takes nothing.
    public mutating func reduce(_ tokens: UInt64, now: UInt64) -> Bool {
        refill(now: now)
        let fromBurst = min(oneTimeBurst, tokens)
        let need = Int64(min(tokens - fromBurst, Configuration.maxTokens))
        guard need <= budget || (need > size && budget >= size) else { return false }
        oneTimeBurst -= fromBurst
        budget -= need
        return true
    }

    /// Takes `tokens` whether or not the bucket has them (work already done, such as a packet
    /// already read), leaving it in debt if need be.
    public mutating func charge(_ tokens: UInt64, now: UInt64) {
        refill(now: now)
        let fromBurst = min(oneTimeBurst, tokens)
        oneTimeBurst -= fromBurst
        budget -= Int64(min(tokens - fromBurst, Configuration.maxTokens))
    }

    /// Whether any token is left (for work whose size is known only afterwards).
    public var hasTokens: Bool { budget > 0 || oneTimeBurst > 0 }

    /// Nanoseconds until `reduce(tokens)` could succeed (0 if it could now): the refill time
    /// of the tokens missing, a request larger than the bucket waiting for a full one.
    public func nanosecondsUntil(_ tokens: UInt64) -> UInt64 {
        let need = min(Int64(min(tokens - min(oneTimeBurst, tokens), Configuration.maxTokens)), size)
        guard need > budget else { return 0 }
        let missing = UInt64(need - budget)
        let (high, low) = missing.multipliedFullWidth(by: refillNanoseconds)
        let (quotient, _) = configuration.size.dividingFullWidth((high, low))
        return quotient + 1
    }

    /// Credits the tokens earned since the last refill, keeping the fraction of a token.
    mutating func refill(now: UInt64) {
        guard now > lastRefill else { return }
        guard budget < size else {
            lastRefill = now
            return
        }
        let elapsed = now - lastRefill
        let (high, low) = elapsed.multipliedFullWidth(by: configuration.size)
        // More than 2⁶⁴ tokens' worth of nanoseconds: the bucket is certainly full.
        guard high < refillNanoseconds else {
            budget = size
            lastRefill = now
            return
        }
        let (earned, _) = refillNanoseconds.dividingFullWidth((high, low))
        guard earned > 0 else { return }
        if earned >= UInt64(size - budget) {
            budget = size
            lastRefill = now
        } else {
            budget += Int64(earned)
            // Advance by the time those tokens took, so the remainder counts toward the next.
            lastRefill += earned * refillNanoseconds / configuration.size
        }
    }
}
