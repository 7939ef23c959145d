import GuestMemory
import Testing
@testable import Virtio
import VirtioTesting

@Suite struct UsedRingTests {
    @Test func addUsedWritesTheElementThenTheIndex() throws {
        var (driver, queue) = try makeQueuePair(size: 8)
        let sent = try driver.addChain(writable: [4])
        let chain = try #require(try queue.popAvailable())
        try queue.addUsed(head: chain.head, length: 3)
        #expect(try driver.usedIndex() == 1)
        let element = try driver.memory.read(UInt64.self, at: driver.layout.deviceArea + 4)
        #expect(element == UInt64(3) << 32 | UInt64(sent.head))
        #expect(try driver.popUsed() == UsedElement(id: UInt32(sent.head), length: 3))
        #expect(queue.statistics.usedPublished == 1)
    }

    @Test func usedElementsMayCompleteOutOfOrder() throws {
        var (driver, queue) = try makeQueuePair(size: 8)
        let a = try driver.addChain(writable: [1])
        let b = try driver.addChain(writable: [1])
        let first = try #require(try queue.popAvailable())
        let second = try #require(try queue.popAvailable())
        try queue.addUsed(head: second.head, length: 1)
        try queue.addUsed(head: first.head, length: 0)
        #expect(try driver.drainUsed() == [UsedElement(id: UInt32(b.head), length: 1),
                                           UsedElement(id: UInt32(a.head), length: 0)])
    }

    @Test func usedIndexWrapsAt16Bits() throws {
        var (driver, queue) = try makeQueuePair(size: 4)
        for _ in 0 ..< 65535 { try queue.addUsed(head: 0, length: 0) }
        #expect(try driver.usedIndex() == 65535)
        try queue.addUsed(head: 2, length: 7)
        #expect(try driver.usedIndex() == 0)
        #expect(queue.nextUsed == 0)
        // Slot 65535 % 4 == 3.
        #expect(try driver.memory.read(UInt32.self, at: driver.layout.deviceArea + 4 + 8 * 3) == 2)
    }

    @Test func availIndexWrapsAt16Bits() throws {
        var (driver, queue) = try makeQueuePair(size: 4)
        for _ in 0 ..< (65536 / 4 + 1) {
            for _ in 0 ..< 4 { try driver.addRawChain([RawDescriptor(address: driver.dataArea, length: 1)], publish: false) }
            try driver.publish()
            for _ in 0 ..< 4 {
                let chain = try #require(try queue.popAvailable())
                try queue.addUsed(head: chain.head, length: 0)
            }
            _ = try driver.drainUsed()
        }
        #expect(queue.nextAvail == 4 && queue.totalErrors == 0)
    }

    @Test func completingAHeadThatCannotExistIsRefused() throws {
        var (_, queue) = try makeQueuePair(size: 8)
        #expect(throws: VirtqueueError.usedHeadOutOfRange(head: 8, size: 8)) { try queue.addUsed(head: 8, length: 0) }
        #expect(queue.nextUsed == 0)
    }
}

@Suite struct NotificationTests {
    @Test func withoutEventIndexTheFlagDecides() throws {
        var (driver, queue) = try makeQueuePair()
        do { let result = queue.needsNotification(); #expect(!result, "nothing added, nothing to say") }
        try queue.addUsed(head: 0, length: 0)
        do { let result = queue.needsNotification(); #expect(result) }
        do { let result = queue.needsNotification(); #expect(!result, "already reported") }
        try driver.setAvailFlags(RingFlags.availNoInterrupt)
        try queue.addUsed(head: 0, length: 0)
        do { let result = queue.needsNotification(); #expect(!result) }
        try driver.setAvailFlags(0)
        try queue.addUsed(head: 0, length: 0)
        do { let result = queue.needsNotification(); #expect(result) }
        #expect(queue.statistics.notificationsRequested == 2)
    }

    @Test func eventIndexFormula() {
        // vring_need_event(event, new, old): is `event` in [old, new)?
        #expect(Queue.needsEvent(0, newIndex: 1, oldIndex: 0))
        #expect(!Queue.needsEvent(1, newIndex: 1, oldIndex: 0))
        #expect(Queue.needsEvent(2, newIndex: 3, oldIndex: 0))
        #expect(!Queue.needsEvent(5, newIndex: 3, oldIndex: 0))
        // Across the wrap: old 65534, new 0 (two elements: 65534 and 65535).
        #expect(Queue.needsEvent(65534, newIndex: 0, oldIndex: 65534))
        #expect(Queue.needsEvent(65535, newIndex: 0, oldIndex: 65534))
        #expect(!Queue.needsEvent(0, newIndex: 0, oldIndex: 65534))
        #expect(!Queue.needsEvent(65533, newIndex: 0, oldIndex: 65534))
        // Exhaustively against the obvious definition, for a window straddling the wrap.
        let old: UInt16 = 65530
        for count in 0 ..< 12 {
            let new = old &+ UInt16(count)
            for offset in -3 ..< 15 {
                let event = old &+ UInt16(truncatingIfNeeded: offset)
                #expect(Queue.needsEvent(event, newIndex: new, oldIndex: old) == (offset >= 0 && offset < count))
            }
        }
    }

    @Test func eventIndexDecisions() throws {
        var (driver, queue) = try makeQueuePair(eventIndex: true)
        try driver.setUsedEvent(0)
        try queue.addUsed(head: 0, length: 0)             // used 0 → 1 passes event 0
        do { let result = queue.needsNotification(); #expect(result) }
        try queue.addUsed(head: 0, length: 0)             // 1 → 2; event still 0: already signalled
        do { let result = queue.needsNotification(); #expect(!result) }
        try driver.setUsedEvent(4)
        for _ in 0 ..< 2 { try queue.addUsed(head: 0, length: 0) }  // 2 → 4: event 4 not reached
        do { let result = queue.needsNotification(); #expect(!result) }
        try queue.addUsed(head: 0, length: 0)             // 4 → 5 passes 4
        do { let result = queue.needsNotification(); #expect(result) }
        // NO_INTERRUPT means nothing once EVENT_IDX is negotiated.
        try driver.setAvailFlags(RingFlags.availNoInterrupt)
        try driver.setUsedEvent(5)
        try queue.addUsed(head: 0, length: 0)
        do { let result = queue.needsNotification(); #expect(result) }
    }

    @Test func eventIndexAcrossTheWrap() throws {
        for (event, expected) in [(UInt16(65535), true), (65534, true), (0, false), (65533, false)] {
            var (driver, queue) = try makeQueuePair(size: 4, eventIndex: true)
            try driver.setUsedEvent(60000)
            for _ in 0 ..< 65534 { try queue.addUsed(head: 0, length: 0) }
            _ = queue.needsNotification()
            try driver.setUsedEvent(event)
            try queue.addUsed(head: 0, length: 0)
            try queue.addUsed(head: 0, length: 0)
            #expect(queue.nextUsed == 0)
            do { let result = queue.needsNotification(); #expect(result == expected, "used_event \(event)") }
        }
    }

    @Test func notifyGuestIfNeededRaisesTheUsedBufferInterrupt() throws {
        var (_, queue) = try makeQueuePair()
        let line = CountingLine()
        queue.interrupt = VirtioInterrupt(line: line)
        try queue.addUsed(head: 1, length: 0)
        do { let result = queue.notifyGuestIfNeeded(); #expect(result) }
        #expect(line.count == 1)
        #expect(queue.interrupt?.interruptStatus == VirtioInterrupt.usedBufferBit)
        do { let result = queue.notifyGuestIfNeeded(); #expect(!result) }
        #expect(line.count == 1)
    }

    @Test func disableAndEnableWithoutEventIndex() throws {
        var (driver, queue) = try makeQueuePair()
        queue.disableNotifications()
        #expect(try driver.usedFlags() == RingFlags.usedNoNotify)
        do { let result = queue.enableNotifications(); #expect(!result) }
        #expect(try driver.usedFlags() == 0)
        // A buffer that arrives while kicks were off is reported by the re-check.
        queue.disableNotifications()
        try driver.addChain(readable: [[1]])
        do { let result = queue.enableNotifications(); #expect(result) }
        #expect(try queue.popAvailable() != nil)
    }

    @Test func eventIndexAsksForTheNextKick() throws {
        var (driver, queue) = try makeQueuePair(eventIndex: true)
        try driver.addChain(readable: [[1]])
        try driver.addChain(readable: [[2]])
        #expect(try queue.popAvailable() != nil)
        #expect(try queue.popAvailable() != nil)
        // Draining to empty publishes avail_event = the next entry we want to hear about.
        #expect(try queue.popAvailable() == nil)
        #expect(try driver.availEvent() == 2)
        // Disabled: avail_event stays where it was.
        queue.disableNotifications()
        try driver.addChain(readable: [[3]])
        #expect(try queue.popAvailable() != nil)
        #expect(try queue.popAvailable() == nil)
        #expect(try driver.availEvent() == 2)
        #expect(try driver.usedFlags() == 0, "used.flags is not used with EVENT_IDX")
        do { let result = queue.enableNotifications(); #expect(!result) }
        #expect(try driver.availEvent() == 3)
    }

    @Test func emptyPopWithEventIndexNoticesALateArrival() throws {
        var (driver, queue) = try makeQueuePair(eventIndex: true)
        #expect(try queue.popAvailable() == nil)
        try driver.addChain(readable: [[1]])
        #expect(try queue.popAvailable() != nil)
    }
}

extension Queue {
    var totalErrors: Int { statistics.totalErrors }
}
