import GuestMemory
import Testing
@testable import Virtio
import VirtioTesting

/// Everything a hostile or buggy driver can do to a queue. Each case checks the error, its
/// counter, what happened to the bad request, and that the queue still serves good requests
/// (or, for structural errors, that it stops cleanly).
@Suite struct HostileGuestTests {
    /// Pops once expecting `expected`, then checks the bad chain came back with length 0 and a
    /// good chain after it still works.
    func expectRequestError(
        _ expected: VirtqueueError, kind: QueueErrorKind, driver: MockDriverQueue, queue: inout Queue,
        returned head: UInt16?, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        #expect(throws: expected, sourceLocation: sourceLocation) { try queue.popAvailable() }
        #expect(queue.errorCount(kind) == 1, sourceLocation: sourceLocation)
        #expect(queue.statistics.totalErrors == 1, sourceLocation: sourceLocation)
        #expect(!queue.isBroken, sourceLocation: sourceLocation)
        let used = try driver.drainUsed()
        if let head {
            #expect(used == [UsedElement(id: UInt32(head), length: 0)], sourceLocation: sourceLocation)
        } else {
            #expect(used.isEmpty, sourceLocation: sourceLocation)
        }
        let good = try driver.addChain(readable: [[0x42]], writable: [1])
        let chain = try #require(try queue.popAvailable(), sourceLocation: sourceLocation)
        #expect(chain.head == good.head, sourceLocation: sourceLocation)
        #expect(chain.readableLength == 1 && chain.writableLength == 1, sourceLocation: sourceLocation)
    }

    @Test func headIndexOutOfRange() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        try driver.pushAvail(head: 16)
        try driver.publish()
        try expectRequestError(.headOutOfRange(head: 16, size: 16), kind: .headOutOfRange,
                               driver: driver, queue: &queue, returned: nil)
    }

    @Test func nextIndexOutOfRange() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        try driver.writeDescriptor(3, RawDescriptor(address: driver.dataArea, length: 4, flags: .next, next: 16))
        try driver.pushAvail(head: 3)
        try driver.publish()
        try expectRequestError(.malformedChain(head: 3, .nextOutOfRange(next: 16, limit: 16)),
                               kind: .nextOutOfRange, driver: driver, queue: &queue, returned: 3)
    }

    @Test func loopInTheDescriptorTable() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        try driver.writeDescriptor(5, RawDescriptor(address: driver.dataArea, length: 4, flags: .next, next: 6))
        try driver.writeDescriptor(6, RawDescriptor(address: driver.dataArea, length: 4, flags: .next, next: 5))
        try driver.pushAvail(head: 5)
        try driver.publish()
        try expectRequestError(.malformedChain(head: 5, .tooLong(limit: 16)), kind: .chainTooLong,
                               driver: driver, queue: &queue, returned: 5)
    }

    @Test func selfLoop() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        try driver.writeDescriptor(0, RawDescriptor(address: driver.dataArea, length: 4, flags: .next, next: 0))
        try driver.pushAvail(head: 0)
        try driver.publish()
        try expectRequestError(.malformedChain(head: 0, .tooLong(limit: 16)), kind: .chainTooLong,
                               driver: driver, queue: &queue, returned: 0)
    }

    @Test func loopInsideAnIndirectTable() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        let table = try driver.allocate(48)
        try driver.writeDescriptor(in: table, index: 0, RawDescriptor(address: driver.dataArea, length: 1, flags: .next, next: 1))
        try driver.writeDescriptor(in: table, index: 1, RawDescriptor(address: driver.dataArea, length: 1, flags: .next, next: 2))
        try driver.writeDescriptor(in: table, index: 2, RawDescriptor(address: driver.dataArea, length: 1, flags: .next, next: 0))
        let head = try driver.addRawChain([RawDescriptor(address: table, length: 48, flags: .indirect)])
        try expectRequestError(.malformedChain(head: head, .tooLong(limit: 3)), kind: .chainTooLong,
                               driver: driver, queue: &queue, returned: head)
    }

    @Test func indirectNextBeyondTheTable() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        let table = try driver.allocate(32)
        try driver.writeDescriptor(in: table, index: 0, RawDescriptor(address: driver.dataArea, length: 1, flags: .next, next: 2))
        let head = try driver.addRawChain([RawDescriptor(address: table, length: 32, flags: .indirect)])
        try expectRequestError(.malformedChain(head: head, .nextOutOfRange(next: 2, limit: 2)), kind: .nextOutOfRange,
                               driver: driver, queue: &queue, returned: head)
    }

    @Test func totalLengthOverflowsUInt32() throws {
        // 17 readable buffers of 256 MiB, each inside a 256 MiB guest: 4.25 GiB in total.
        let memory = try makeMemory(size: 0x1000_0000)
        var (driver, queue) = try makeQueuePair(size: 32, memory: memory)
        let head = try driver.addRawChain(Array(repeating: RawDescriptor(address: 0, length: 0x1000_0000), count: 17))
        try expectRequestError(.malformedChain(head: head, .lengthOverflow), kind: .lengthOverflow,
                               driver: driver, queue: &queue, returned: head)
    }

    @Test func nestedIndirect() throws {
        var (driver, queue) = try makeQueuePair()
        let inner = try driver.allocate(16)
        try driver.writeDescriptor(in: inner, index: 0, RawDescriptor(address: driver.dataArea, length: 1))
        let outer = try driver.allocate(16)
        try driver.writeDescriptor(in: outer, index: 0, RawDescriptor(address: inner, length: 16, flags: .indirect))
        let head = try driver.addRawChain([RawDescriptor(address: outer, length: 16, flags: .indirect)])
        try expectRequestError(.malformedChain(head: head, .nestedIndirect), kind: .nestedIndirect,
                               driver: driver, queue: &queue, returned: head)
    }

    @Test func indirectWithNext() throws {
        var (driver, queue) = try makeQueuePair()
        let table = try driver.allocate(16)
        try driver.writeDescriptor(in: table, index: 0, RawDescriptor(address: driver.dataArea, length: 1))
        try driver.writeDescriptor(0, RawDescriptor(address: table, length: 16, flags: [.indirect, .next], next: 1))
        try driver.writeDescriptor(1, RawDescriptor(address: driver.dataArea, length: 1))
        try driver.pushAvail(head: 0)
        try driver.publish()
        try expectRequestError(.malformedChain(head: 0, .indirectWithNext), kind: .indirectWithNext,
                               driver: driver, queue: &queue, returned: 0)
    }

    @Test(arguments: [0, 8, 24, 17, 16 * 65536, 0xFFFF_FFF0] as [UInt32])
    func badIndirectLength(_ length: UInt32) throws {
        var (driver, queue) = try makeQueuePair()
        let table = try driver.allocate(32)
        let head = try driver.addRawChain([RawDescriptor(address: table, length: length, flags: .indirect)])
        try expectRequestError(.malformedChain(head: head, .badIndirectLength(length)), kind: .badIndirectLength,
                               driver: driver, queue: &queue, returned: head)
    }

    @Test func largestIndirectTableIsAccepted() throws {
        // 65535 entries is legal; the table itself must fit in memory (1 MiB here).
        var (driver, queue) = try makeQueuePair()
        let table = GuestAddress(0x80000)
        try driver.writeDescriptor(in: table, index: 0, RawDescriptor(address: driver.dataArea, length: 1))
        let head = try driver.addRawChain([RawDescriptor(address: table, length: 16 * 65535, flags: .indirect)])
        #expect(throws: VirtqueueError.malformedChain(head: head, .indirectTableOutOfBounds(address: table, length: 16 * 65535))) {
            try queue.popAvailable()
        }
        let big = try makeMemory(size: 0x20_0000)
        var (bigDriver, bigQueue) = try makeQueuePair(memory: big)
        try bigDriver.writeDescriptor(in: 0x100000, index: 0, RawDescriptor(address: bigDriver.dataArea, length: 1))
        try bigDriver.addRawChain([RawDescriptor(address: 0x100000, length: 16 * 65535, flags: .indirect)])
        let chain = try #require(try bigQueue.popAvailable())
        #expect(chain.descriptors.count == 1)
    }

    @Test func indirectTableOutsideMemory() throws {
        var (driver, queue) = try makeQueuePair()
        let head = try driver.addRawChain([RawDescriptor(address: 0xFFFF0, length: 32, flags: .indirect)])
        try expectRequestError(.malformedChain(head: head, .indirectTableOutOfBounds(address: 0xFFFF0, length: 32)),
                               kind: .indirectTableOutOfBounds, driver: driver, queue: &queue, returned: head)
    }

    @Test func indirectWithoutTheFeature() throws {
        var (driver, queue) = try makeQueuePair(indirect: false)
        let sent = try driver.addChain(readable: [[1]], indirect: true)
        try expectRequestError(.malformedChain(head: sent.head, .indirectNotNegotiated), kind: .indirectNotNegotiated,
                               driver: driver, queue: &queue, returned: sent.head)
    }

    @Test(arguments: [
        (GuestAddress(0x10_0000), UInt32(1)),       // just past the end
        (GuestAddress(0xFFFFC), UInt32(8)),         // straddles the end
        (GuestAddress(0x4000_0000), UInt32(0)),     // nowhere, even with no bytes
        (GuestAddress(UInt64.max - 3), UInt32(8)),  // wraps the address space
    ])
    func bufferOutsideGuestMemory(_ address: GuestAddress, _ length: UInt32) throws {
        var (driver, queue) = try makeQueuePair()
        let head = try driver.addRawChain([RawDescriptor(address: driver.dataArea, length: 4),
                                           RawDescriptor(address: address, length: length, flags: .write)])
        try expectRequestError(.malformedChain(head: head, .bufferOutOfBounds(address: address, length: length)),
                               kind: .bufferOutOfBounds, driver: driver, queue: &queue, returned: head)
    }

    @Test func readableAfterWritable() throws {
        var (driver, queue) = try makeQueuePair()
        let head = try driver.addRawChain([RawDescriptor(address: driver.dataArea, length: 4, flags: .write),
                                           RawDescriptor(address: driver.dataArea, length: 4)])
        try expectRequestError(.malformedChain(head: head, .readableAfterWritable), kind: .readableAfterWritable,
                               driver: driver, queue: &queue, returned: head)
    }

    @Test func readableAfterWritableAcrossAnIndirectTable() throws {
        var (driver, queue) = try makeQueuePair()
        let table = try driver.allocate(16)
        try driver.writeDescriptor(in: table, index: 0, RawDescriptor(address: driver.dataArea, length: 1))
        let head = try driver.addRawChain([RawDescriptor(address: driver.dataArea, length: 4, flags: .write),
                                           RawDescriptor(address: table, length: 16, flags: .indirect)])
        try expectRequestError(.malformedChain(head: head, .readableAfterWritable), kind: .readableAfterWritable,
                               driver: driver, queue: &queue, returned: head)
    }

    // MARK: - Structural errors

    @Test func availIndexJumpBreaksTheQueue() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        let line = CountingLine()
        let interrupt = VirtioInterrupt(line: line)
        queue.interrupt = interrupt
        try driver.addChain(readable: [[1]])
        #expect(try queue.popAvailable() != nil)
        // The driver claims 17 new entries on a queue of 16.
        try driver.setAvailIndex(1 &+ 17)
        #expect(throws: VirtqueueError.availIndexJump(lastSeen: 1, published: 18, size: 16)) {
            try queue.popAvailable()
        }
        #expect(queue.isBroken)
        #expect(queue.errorCount(.availIndexJump) == 1)
        #expect(interrupt.needsReset)
        #expect(interrupt.interruptStatus == VirtioInterrupt.configChangeBit)
        #expect(line.count == 1)

        // Broken means broken: even a now-sane ring is refused, without reading it, without
        // counting again and without more interrupts.
        try driver.setAvailIndex(2)
        for _ in 0 ..< 3 {
            #expect(throws: VirtqueueError.queueBroken) { try queue.popAvailable() }
        }
        #expect(throws: VirtqueueError.queueBroken) { try queue.addUsed(head: 0, length: 0) }
        do { let result = queue.needsNotification(); #expect(!result) }
        do { let result = queue.enableNotifications(); #expect(!result) }
        #expect(queue.errorCount(.availIndexJump) == 1)
        #expect(line.count == 1)
        #expect(queue.nextAvail == 1)
    }

    @Test func availIndexJumpBackwardsIsAJumpToo() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        try driver.setAvailIndex(0xFFFF)  // 65535 entries ahead of 0, i.e. "−1"
        #expect(throws: VirtqueueError.availIndexJump(lastSeen: 0, published: 0xFFFF, size: 16)) {
            try queue.popAvailable()
        }
        #expect(queue.isBroken)
    }

    @Test func exactlyAFullRingIsNotAJump() throws {
        var (driver, queue) = try makeQueuePair(size: 4)
        for _ in 0 ..< 4 { try driver.addChain(readable: [[1]], publish: false) }
        try driver.publish()
        for _ in 0 ..< 4 { #expect(try queue.popAvailable() != nil) }
        #expect(try queue.popAvailable() == nil)
        #expect(!queue.isBroken)
    }

    /// A device loop over a queue full of garbage finishes: every entry is consumed once, the
    /// loop ends when the ring is empty, and each bad chain is counted.
    @Test func garbageRingDrainsWithoutSpinning() throws {
        var (driver, queue) = try makeQueuePair(size: 16)
        for index in UInt16(0) ..< 16 {
            // Every descriptor points at the next one, and the last back at the first.
            try driver.writeDescriptor(index, RawDescriptor(address: 0xDEAD_0000, length: 0xFFFF_FFFF,
                                                            flags: [.next, .indirect], next: (index + 1) % 16))
            try driver.pushAvail(head: index &* 3)
        }
        try driver.publish()
        var pops = 0
        var errors = 0
        while pops < 1000 {
            pops += 1
            do throws(VirtqueueError) {
                guard try queue.popAvailable() != nil else { break }
            } catch {
                errors += 1
                #expect(!error.isStructural)
            }
        }
        #expect(pops == 17 && errors == 16)
        #expect(queue.statistics.totalErrors == 16)
        #expect(!queue.isBroken)
    }

    // MARK: - Setup

    @Test func misalignedAreasAreRefusedAtSetup() throws {
        let memory = try makeMemory()
        let good = QueueLayout(descriptorTable: 0x1000, driverArea: 0x2000, deviceArea: 0x3000)
        #expect(throws: Never.self) { try Queue(memory: memory, size: 16, layout: good) }
        var layout = good
        layout.descriptorTable = 0x1008
        #expect(throws: VirtqueueError.misalignedArea(.descriptorTable, 0x1008)) { try Queue(memory: memory, size: 16, layout: layout) }
        layout = good
        layout.driverArea = 0x2001
        #expect(throws: VirtqueueError.misalignedArea(.driverArea, 0x2001)) { try Queue(memory: memory, size: 16, layout: layout) }
        layout = good
        layout.deviceArea = 0x3002
        #expect(throws: VirtqueueError.misalignedArea(.deviceArea, 0x3002)) { try Queue(memory: memory, size: 16, layout: layout) }
    }

    @Test func areasOutsideMemoryAreRefusedAtSetup() throws {
        let memory = try makeMemory()
        let table = QueueLayout(descriptorTable: 0xFFF00, driverArea: 0x2000, deviceArea: 0x3000)
        #expect(throws: VirtqueueError.areaOutOfBounds(.descriptorTable, 0xFFF00, length: 256 * 16)) {
            try Queue(memory: memory, size: 256, layout: table)
        }
        let used = QueueLayout(descriptorTable: 0x1000, driverArea: 0x2000, deviceArea: 0xFFFFC)
        #expect(throws: VirtqueueError.areaOutOfBounds(.deviceArea, 0xFFFFC, length: 6 + 8 * 16)) {
            try Queue(memory: memory, size: 16, layout: used)
        }
        let wrap = QueueLayout(descriptorTable: 0x1000, driverArea: GuestAddress(UInt64.max - 1), deviceArea: 0x3000)
        #expect(throws: VirtqueueError.self) { try Queue(memory: memory, size: 16, layout: wrap) }
    }

    @Test(arguments: [UInt16(0), 3, 12, 100, 64])
    func badSizesAreRefusedAtSetup(_ size: UInt16) throws {
        let memory = try makeMemory()
        let layout = QueueLayout(descriptorTable: 0x1000, driverArea: 0x2000, deviceArea: 0x3000)
        #expect(throws: VirtqueueError.invalidSize(size: size, maxSize: 32)) {
            try Queue(memory: memory, size: size, layout: layout, maxSize: 32)
        }
    }

    @Test func disabledQueueDoesNothing() throws {
        var queue = Queue.disabled(memory: try makeMemory())
        #expect(!queue.isEnabled)
        #expect(try queue.popAvailable() == nil)
        do { let result = queue.needsNotification(); #expect(!result) }
        #expect(throws: VirtqueueError.usedHeadOutOfRange(head: 0, size: 0)) { try queue.addUsed(head: 0, length: 0) }
    }
}
