import Devices
import Synchronization
import Testing

/// A clock the test moves by hand (nanoseconds).
final class ManualClock: Sendable {
    private let nanoseconds = Atomic<UInt64>(1_000_000_000)
    var now: UInt64 { nanoseconds.load(ordering: .relaxed) }
    func advance(milliseconds: UInt64) { advance(nanoseconds: milliseconds * 1_000_000) }
    func advance(nanoseconds delta: UInt64) { nanoseconds.add(delta, ordering: .relaxed) }
    var function: @Sendable () -> UInt64 { { self.now } }
}

/// `reduce` and `consume` outside `#expect`, which cannot call mutating methods.
func take(_ bucket: inout TokenBucket, _ tokens: UInt64, _ now: UInt64) -> Bool { bucket.reduce(tokens, now: now) }
func take(_ limiter: inout RateLimiter, _ bytes: UInt64) -> Bool { limiter.consume(bytes: bytes) }

/// Firecracker's token bucket: full at the start, refilled at size per refill time, a one-time
/// burst spent first, all-or-nothing requests, and a request larger than the bucket in debt.
@Suite struct TokenBucketTests {
    let start: UInt64 = 1_000_000_000
    func ms(_ value: UInt64) -> UInt64 { start + value * 1_000_000 }

    @Test func aSizeOrRefillTimeOfZeroMeansNoBucket() {
        #expect(TokenBucket(.init(size: 0, refillTime: 100), now: 0) == nil)
        #expect(TokenBucket(.init(size: 100, refillTime: 0), now: 0) == nil)
    }

    @Test func itStartsFullAndRefillsAtSizePerRefillTime() throws {
        var bucket = try #require(TokenBucket(.init(size: 1000, refillTime: 100), now: start))
        #expect(take(&bucket, 1000, start))
        #expect(!take(&bucket, 1, start))
        #expect(bucket.budget == 0)
        // 10 ms is a tenth of the refill time: 100 tokens.
        #expect(!take(&bucket, 101, ms(10)))
        #expect(take(&bucket, 100, ms(10)))
        // Never more than `size`, however long the wait.
        #expect(!take(&bucket, 1001, ms(10_000)) || bucket.budget < 0)
        #expect(bucket.budget <= 1000)
    }

    @Test func hugeValuesAreClampedNotTrapped() throws {
        var bucket = try #require(TokenBucket(.init(size: .max, refillTime: .max, oneTimeBurst: .max), now: start))
        #expect(bucket.configuration.size == TokenBucket.Configuration.maxTokens)
        #expect(take(&bucket, .max, ms(1))) // all from the burst
        #expect(take(&bucket, .max, ms(1))) // the whole (clamped) bucket
        #expect(bucket.nanosecondsUntil(.max) > 0)
        bucket.charge(.max, now: .max)
    }

    @Test func aRefusedRequestTakesNothing() throws {
        var bucket = try #require(TokenBucket(.init(size: 100, refillTime: 1000), now: start))
        #expect(take(&bucket, 60, start))
        #expect(!take(&bucket, 50, start))
        #expect(bucket.budget == 40)
        #expect(take(&bucket, 40, start))
    }

    @Test func fractionsOfATokenAreNotLost() throws {
        // 3 tokens per 1000 ms: one every 333.3 ms. Ten steps of 100 ms make exactly 3.
        var bucket = try #require(TokenBucket(.init(size: 3, refillTime: 1000), now: start))
        #expect(take(&bucket, 3, start))
        for step in 1 ... 10 { _ = bucket.reduce(0, now: ms(UInt64(step) * 100)) }
        #expect(bucket.budget == 3)
    }

    @Test func theOneTimeBurstIsSpentFirstAndNeverRefills() throws {
        var bucket = try #require(TokenBucket(.init(size: 100, refillTime: 1000, oneTimeBurst: 500), now: start))
        #expect(take(&bucket, 550, start)) // 500 of burst, 50 of budget
        #expect(bucket.oneTimeBurst == 0)
        #expect(bucket.budget == 50)
        #expect(!take(&bucket, 100, ms(100_000)) == false)
        #expect(bucket.oneTimeBurst == 0)
    }

    @Test func aRequestLargerThanTheBucketGoesWhenFullAndLeavesDebt() throws {
        var bucket = try #require(TokenBucket(.init(size: 100, refillTime: 100), now: start))
        #expect(take(&bucket, 250, start))
        #expect(bucket.budget == -150)
        #expect(!take(&bucket, 1, ms(100)))          // 100 ms pays 100 of the 150
        #expect(bucket.nanosecondsUntil(1) > 50_000_000)  // 51 tokens: 51 ms
        #expect(take(&bucket, 1, ms(151)))
        // A second oversized request waits for a full bucket.
        #expect(!take(&bucket, 250, ms(160)))
        #expect(take(&bucket, 250, ms(260)))
    }

    @Test func theWaitIsTheRefillTimeOfTheMissingTokens() throws {
        var bucket = try #require(TokenBucket(.init(size: 1000, refillTime: 1000), now: start))
        #expect(take(&bucket, 1000, start))
        #expect(bucket.nanosecondsUntil(0) == 0)
        let wait = bucket.nanosecondsUntil(250)
        #expect(wait > 249_000_000 && wait <= 250_000_001)
        #expect(!take(&bucket, 250, start + wait - 2_000_000))
        #expect(take(&bucket, 250, start + wait))
    }

    @Test func chargingAfterTheFactGoesIntoDebt() throws {
        var bucket = try #require(TokenBucket(.init(size: 100, refillTime: 100), now: start))
        #expect(bucket.hasTokens)
        bucket.charge(130, now: start)
        #expect(bucket.budget == -30)
        #expect(!bucket.hasTokens)
        #expect(take(&bucket, 0, ms(31)))
        #expect(bucket.hasTokens)
    }

    @Test func theLimiterTakesFromBothBucketsOrNeither() {
        let clock = ManualClock()
        var limiter = RateLimiter(RateLimit(bandwidth: .init(size: 1000, refillTime: 1000),
                                            operations: .init(size: 2, refillTime: 1000)), clock: clock.function)
        #expect(take(&limiter, 900))
        #expect(!take(&limiter, 200))      // bandwidth refuses: the operation is not spent
        #expect(limiter.operations?.budget == 1)
        #expect(take(&limiter, 100))
        #expect(!take(&limiter, 0))        // out of operations
        clock.advance(milliseconds: 500)
        #expect(take(&limiter, 0))
        #expect(RateLimiter(.unlimited).isUnlimited)
        var unlimited = RateLimiter(.unlimited)
        #expect(take(&unlimited, .max))
    }

    @Test(arguments: [
        ("10M/1000", TokenBucket.Configuration(size: 10 << 20, refillTime: 1000)),
        ("500/100/50", TokenBucket.Configuration(size: 500, refillTime: 100, oneTimeBurst: 50)),
        ("4k/10/1G", TokenBucket.Configuration(size: 4096, refillTime: 10, oneTimeBurst: 1 << 30)),
        ("0/0", TokenBucket.Configuration(size: 0, refillTime: 0)),
    ])
    func theOptionFormParses(text: String, expected: TokenBucket.Configuration) throws {
        #expect(try TokenBucket.Configuration(option: text) == expected)
    }

    @Test(arguments: ["", "10", "10/", "/10", "x/10", "10/x", "10/10/10/10", "10T/10", "-1/10", "2000000G/1", "1/99999999999"])
    func badOptionFormsAreRefused(text: String) {
        #expect(throws: RateLimitOptionError.self) { try TokenBucket.Configuration(option: text) }
    }
}
