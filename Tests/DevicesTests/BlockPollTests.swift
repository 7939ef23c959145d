import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// Polling the block queue after a drain (`BlockQueuePoll`): how the window adapts, and that a
/// drain always leaves the guest's kicks on when it returns.
@Suite struct BlockPollTests {
    @Test("the window starts at 4 µs, doubles when a poll found work up to the limit, and halves to nothing when it did not")
    func theWindowAdapts() {
        var poll = BlockQueuePoll(limitMicroseconds: 64)
        #expect(poll.isEnabled && poll.nextWindow == 4000)
        var windows: [UInt64] = []
        for _ in 0 ..< 6 {
            poll.record(found: true)
            windows.append(poll.nextWindow)
        }
        #expect(windows == [8000, 16000, 32000, 64000, 64000, 64000])
        windows = []
        for _ in 0 ..< 5 {
            poll.record(found: false)
            windows.append(poll.windowNanoseconds)
        }
        #expect(windows == [32000, 16000, 8000, 4000, 0])
        // Shrunk to nothing, the next drain still tries the first window once.
        #expect(poll.nextWindow == 4000)

        let off = BlockQueuePoll(limitMicroseconds: 0)
        #expect(!off.isEnabled && off.nextWindow == 0)
        #expect(BlockQueuePoll(limitMicroseconds: 5000).limitNanoseconds == 1_000_000)
    }

    @Test("after a drain that polled, the guest's kicks are on again: avail_event is current, NO_NOTIFY clear",
          arguments: [true, false])
    func kicksAreOnWhenTheDrainReturns(eventIndex: Bool) throws {
        let probe = try BlockRig(sectors: 64)
        let features = eventIndex ? nil : probe.transport.deviceFeatures & ~VirtioFeature.ringEventIndex
        let rig = try BlockRig(sectors: 64, features: features)
        for round in 0 ..< 3 {
            rig.queue.resetDataArea()
            for sector in 0 ..< 4 {
                try rig.queue.addChain(readable: [blockHeader(BlockRequestType.read, sector: UInt64(sector))],
                                       writable: [512, 1])
            }
            rig.driver.kick(0)
            #expect(try rig.queue.drainUsed().count == 4)
            #expect(try rig.queue.usedFlags() & RingFlags.usedNoNotify == 0, "round \(round)")
            if eventIndex {
                #expect(try rig.queue.availEvent() == UInt16(4 * (round + 1)), "round \(round)")
            }
        }
        #expect(rig.device.statistics.reads == 12)
    }

    @Test("a queue reports a request published and not yet taken, and nothing else")
    func hasAvailableSeesPublishedRequests() throws {
        let rig = try BlockRig(sectors: 64, features: nil)
        let queue = try rig.queue.makeQueue(maxSize: BlockDevice.queueSize)
        #expect(!queue.hasAvailable())
        try rig.queue.addChain(readable: [blockHeader(BlockRequestType.read, sector: 0)], writable: [512, 1])
        #expect(queue.hasAvailable())
    }
}
