import Foundation
import GuestMemory
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// A rate-limited block device driven through the mock queue: requests beyond the budget wait,
/// the device arms its timer instead of spinning, and the timer brings them back.
@Suite struct BlockThrottleTests {
    struct Rig {
        let clock = ManualClock()
        let image: BlockScratchImage
        let memory: GuestMemory
        let device: BlockDevice
        let transport: MMIOTransport
        let driver: MockDriver
        let queue: MockDriverQueue

        init(_ limit: RateLimit) throws {
            image = try BlockScratchImage(size: 64 * 512)
            memory = try GuestMemory(size: 0x20_0000)
            device = try BlockDevice(BlockConfiguration(path: image.path, rateLimit: limit), clock: clock.function)
            transport = MMIOTransport(device: device, memory: memory, interrupt: BlockInterruptCounter())
            driver = MockDriver(transport: transport)
            queue = try MockDriverQueue(memory: memory, size: BlockDevice.queueSize, base: 0x10000, dataAreaSize: 0x10_0000)
            try driver.initialize(queues: [queue])
        }

        /// Publishes `count` reads of one 4 KiB block each (not kicked).
        func postReads(_ count: Int) throws {
            for index in 0 ..< count {
                try queue.addChain(readable: [blockHeader(BlockRequestType.read, sector: UInt64(index * 8))],
                                   writable: [4096, 1])
            }
        }
    }

    @Test func requestsBeyondTheBandwidthWaitForTheTimer() throws {
        // 8 KiB per second: two 4 KiB reads now, the next after 500 ms.
        let rig = try Rig(RateLimit(bandwidth: .init(size: 8192, refillTime: 1000)))
        try rig.postReads(4)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed().count == 2)
        #expect(rig.device.statistics.throttled == 1)
        #expect(rig.device.throttleTimer.isArmed)

        // Kicks while throttled do nothing (and cost no work).
        rig.driver.kick(0)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed().isEmpty)
        #expect(rig.device.statistics.reads == 2)

        // The timer fires early (the clock has not moved): the request waits again.
        rig.device.throttleTimerFired()
        #expect(try rig.queue.drainUsed().isEmpty)
        #expect(rig.device.throttleTimer.isArmed)

        rig.clock.advance(milliseconds: 500)
        rig.device.throttleTimerFired()
        #expect(try rig.queue.drainUsed().count == 1)
        rig.clock.advance(milliseconds: 500)
        rig.device.throttleTimerFired()
        #expect(try rig.queue.drainUsed().count == 1)
        #expect(rig.device.statistics.reads == 4)
    }

    @Test func theOperationsBucketLimitsRequestsWhateverTheirSize() throws {
        let rig = try Rig(RateLimit(operations: .init(size: 3, refillTime: 300)))
        try rig.postReads(5)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed().count == 3)
        rig.clock.advance(milliseconds: 200)
        rig.device.throttleTimerFired()
        #expect(try rig.queue.drainUsed().count == 2)
    }

    @Test func theTimerIsSetForWhenTheTokensWillBeThere() throws {
        let rig = try Rig(RateLimit(bandwidth: .init(size: 4096, refillTime: 60_000)))
        try rig.postReads(2)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed().count == 1)
        // A whole bucket's refill: a minute, not a busy loop.
        #expect(rig.device.throttleTimer.remainingNanoseconds >= 59_000_000_000)
    }

    @Test func changingTheLimitWhileThrottledLetsTheHeldRequestGo() throws {
        let rig = try Rig(RateLimit(bandwidth: .init(size: 4096, refillTime: 60_000)))
        try rig.postReads(3)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed().count == 1)
        rig.device.setRateLimit(.unlimited)
        // The timer is set to fire at once: the I/O thread picks up the held request.
        var poller = pollfd(fd: rig.device.throttleTimer.descriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&poller, 1, 1000) == 1)
        rig.device.throttleTimerFired()
        #expect(try rig.queue.drainUsed().count == 2)
        #expect(!rig.device.throttleTimer.isArmed)
    }

    @Test func aRaisedLimitServesAtTheNewRate() throws {
        // 40 KiB/s, then 80 KiB/s: one 4 KiB read at a time, as a guest's dd at queue depth 1.
        let rig = try Rig(RateLimit(bandwidth: .init(size: 8192, refillTime: 200)))
        try rig.postReads(2)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed().count == 2)
        rig.device.setRateLimit(RateLimit(bandwidth: .init(size: 16384, refillTime: 200)))
        try rig.postReads(4)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed().count == 4, "the new bucket starts full")
        var waited: UInt64 = 0
        for _ in 0 ..< 8 {
            try rig.postReads(1)
            rig.driver.kick(0)
            #expect(try rig.queue.drainUsed().isEmpty)
            // The timer's remaining time, read a moment after it was set, rounded up to a millisecond.
            let wait = (rig.device.throttleTimer.remainingNanoseconds / 1_000_000 + 1) * 1_000_000
            rig.clock.advance(nanoseconds: wait)
            waited += wait
            rig.device.throttleTimerFired()
            #expect(try rig.queue.drainUsed().count == 1)
        }
        // 8 × 4 KiB at 80 KiB/s: 400 ms, and at most a millisecond more for each rounding.
        #expect((400_000_000 ... 408_000_000).contains(waited), "waited \(waited) ns")
    }

    @Test func anUnlimitedDeviceNeverThrottles() throws {
        let rig = try Rig(.unlimited)
        try rig.postReads(50)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed().count == 50)
        #expect(rig.device.statistics.throttled == 0)
        #expect(!rig.device.throttleTimer.isArmed)
    }
}
