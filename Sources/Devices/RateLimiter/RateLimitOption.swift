/// The command line's form of a token bucket: `SIZE/REFILL_MS[/BURST]`, as in
/// `--disk disk.img,bw=10M/1000,ops=500/1000/100`. Sizes and bursts take a K, M or G suffix
/// (powers of 1024). A size or refill time of 0 means no limit, as in Firecracker.
extension TokenBucket.Configuration {
    /// Parses `text`; the error is the rest of a one-line refusal ("size 'x' is not a number").
    public init(option text: String) throws(RateLimitOptionError) {
        let fields = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 2 || fields.count == 3 else { throw RateLimitOptionError("'\(text)' is not SIZE/REFILL_MS or SIZE/REFILL_MS/BURST") }
        let size = try Self.amount(fields[0], what: "size")
        guard let refill = UInt64(fields[1]), refill <= Self.maxRefillTime else {
            throw RateLimitOptionError("refill time '\(fields[1])' is not a number of milliseconds up to \(Self.maxRefillTime)")
        }
        let burst = fields.count == 3 ? try Self.amount(fields[2], what: "burst") : 0
        self.init(size: size, refillTime: refill, oneTimeBurst: burst)
    }

    static func amount(_ text: String, what: String) throws(RateLimitOptionError) -> UInt64 {
        var digits = Substring(text)
        var unit: UInt64 = 1
        switch digits.last {
        case "K", "k": unit = 1 << 10
        case "M", "m": unit = 1 << 20
        case "G", "g": unit = 1 << 30
        default: break
        }
        if unit > 1 { digits = digits.dropLast() }
        guard let value = UInt64(digits), case let (product, overflow) = value.multipliedReportingOverflow(by: unit),
              !overflow, product <= maxTokens
        else { throw RateLimitOptionError("\(what) '\(text)' is not a number (with K, M or G) up to 2^50") }
        return product
    }
}

/// Why a rate-limit option was refused.
public struct RateLimitOptionError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension RateLimit {
    /// Applies one `bw=…` or `ops=…` flag; false if `flag` is neither.
    public mutating func apply(flag: String) throws(RateLimitOptionError) -> Bool {
        if flag.hasPrefix("bw=") {
            bandwidth = try TokenBucket.Configuration(option: String(flag.dropFirst(3)))
        } else if flag.hasPrefix("ops=") {
            operations = try TokenBucket.Configuration(option: String(flag.dropFirst(4)))
        } else {
            return false
        }
        return true
    }
}
