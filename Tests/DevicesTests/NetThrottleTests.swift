import Foundation
import Testing
@testable import Devices
import Virtio

/// A rate-limited net device through the mock driver: each direction waits for its timer
/// when its buckets run dry, without spinning, and picks up where it stopped.
@Suite struct NetThrottleTests {
    @Test func framesBeyondTheTransmitBudgetWaitForTheTimer() throws {
        let clock = ManualClock()
        // Two frames per second.
        let rig = try NetRig(transmitLimit: RateLimit(operations: .init(size: 2, refillTime: 1000)), clock: clock)
        for seed in 0 ..< 4 { try rig.tx.addChain(readable: [netHeader(), netFrame(60, seed: UInt8(seed))]) }
        rig.driver.kick(1)
        #expect(try rig.tx.drainUsed().count == 2)
        #expect(rig.endpoint.allSent().count == 2)
        #expect(rig.device.statistics.txThrottled == 1)
        #expect(rig.device.throttleTimer.isArmed)
        rig.driver.kick(1) // nothing moves before the timer
        #expect(try rig.tx.drainUsed().isEmpty)

        clock.advance(milliseconds: 500)
        rig.device.throttleTimerFired()
        let sent = rig.endpoint.allSent()
        #expect(sent.count == 1)
        #expect(Array(sent.first?.dropFirst(12) ?? []) == netFrame(60, seed: 2)) // in order
        clock.advance(milliseconds: 500)
        rig.device.throttleTimerFired()
        #expect(rig.endpoint.allSent().count == 1)
        #expect(rig.device.statistics.txPackets == 4)
    }

    @Test func receptionOutOfTokensStopsWatchingTheTapUntilTheTimer() throws {
        let clock = ManualClock()
        // 1000 bytes per second: one 1000-byte frame empties the bucket.
        let rig = try NetRig(receiveLimit: RateLimit(bandwidth: .init(size: 1000, refillTime: 1000)), clock: clock)
        for _ in 0 ..< 4 { try rig.post([1526]) }
        rig.driver.kick(0)
        for seed in 0 ..< 3 { try rig.endpoint.inject(netHeader() + netFrame(1000, seed: UInt8(seed))) }
        rig.device.tapReadable()
        #expect(try rig.rx.drainUsed().count == 1)
        #expect(!rig.device.wantsTapReadable)
        #expect(rig.interest.values.last == false)
        #expect(rig.device.statistics.rxThrottled == 1)
        #expect(rig.device.throttleTimer.isArmed)
        // A receive kick while throttled does not bring the TAP back.
        rig.driver.kick(0)
        #expect(!rig.device.wantsTapReadable)

        clock.advance(milliseconds: 1000)
        rig.device.throttleTimerFired()
        #expect(try rig.rx.drainUsed().count == 1)
        #expect(rig.device.statistics.rxPackets == 2)
        clock.advance(milliseconds: 1000)
        rig.device.throttleTimerFired()
        #expect(try rig.rx.drainUsed().count == 1)
        // Everything read, tokens left: watching the TAP again.
        clock.advance(milliseconds: 1000)
        rig.device.throttleTimerFired()
        #expect(rig.device.wantsTapReadable)
        #expect(rig.interest.values.last == true)
    }

    @Test func limitsChangeWhileTheDeviceRuns() throws {
        let clock = ManualClock()
        let rig = try NetRig(transmitLimit: RateLimit(operations: .init(size: 1, refillTime: 60_000)), clock: clock)
        for _ in 0 ..< 3 { try rig.tx.addChain(readable: [netHeader(), netFrame(60)]) }
        rig.driver.kick(1)
        #expect(rig.endpoint.allSent().count == 1)
        #expect(rig.device.throttleTimer.remainingNanoseconds > 59_000_000_000)
        rig.device.setRateLimit(receive: .unlimited, transmit: .unlimited)
        var poller = pollfd(fd: rig.device.throttleTimer.descriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&poller, 1, 1000) == 1) // set to fire at once
        rig.device.throttleTimerFired()
        #expect(rig.endpoint.allSent().count == 2)
    }

    @Test func netRateLimitOptionsParse() throws {
        let configuration = try NetConfiguration(option: "tap=lg0,rx-bw=20M/1000,tx-ops=100/1000/10")
        #expect(configuration.receiveLimit == RateLimit(bandwidth: .init(size: 20 << 20, refillTime: 1000)))
        #expect(configuration.transmitLimit == RateLimit(operations: .init(size: 100, refillTime: 1000, oneTimeBurst: 10)))
        #expect(throws: NetConfigurationError("invalid network option 'tap=lg0,tx-bw=1M': tx-bw: '1M' is not SIZE/REFILL_MS or SIZE/REFILL_MS/BURST")) {
            try NetConfiguration(option: "tap=lg0,tx-bw=1M")
        }
    }
}
