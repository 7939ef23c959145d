import GuestMemory
import Testing
@testable import Virtio
import VirtioTesting

/// The echo device driven through the transport, as the guest would drive it.
@Suite struct EndToEndTests {
    @Test func echoThroughTheTransport() throws {
        let rig = try TransportRig()
        try rig.driver.initialize(queues: [rig.queue])
        let direct = try rig.queue.addChain(readable: [[1, 2], [3]], writable: [2, 2])
        let indirect = try rig.queue.addChain(readable: [[9, 8, 7, 6]], writable: [3], indirect: true)
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed() == [UsedElement(id: UInt32(direct.head), length: 3),
                                               UsedElement(id: UInt32(indirect.head), length: 3)])
        #expect(try rig.queue.read(direct.writable[0]) == [1, 2])
        #expect(try rig.queue.read(direct.writable[1]) == [3, 0])
        #expect(try rig.queue.read(indirect.writable[0]) == [9, 8, 7])
        // One interrupt for the batch, with the used-buffer bit set.
        #expect(rig.line.count == 1)
        #expect(rig.driver.acknowledgeInterrupt() == VirtioInterrupt.usedBufferBit)
    }

    @Test func aMalformedRequestFailsAloneAndIsCountedOnTheDevicesQueue() throws {
        let rig = try TransportRig()
        try rig.driver.initialize(queues: [rig.queue])
        let good = try rig.queue.addChain(readable: [[5]], writable: [1], publish: false)
        let bad = try rig.queue.addRawChain([RawDescriptor(address: 0xFFFF_0000, length: 4)], publish: false)
        let after = try rig.queue.addChain(readable: [[6]], writable: [1])
        rig.driver.kick(0)
        #expect(try rig.queue.drainUsed() == [UsedElement(id: UInt32(good.head), length: 1),
                                               UsedElement(id: UInt32(bad), length: 0),
                                               UsedElement(id: UInt32(after.head), length: 1)])
        let (errors, queue) = rig.device.state.withLock { ($0.errors, $0.queues[0]) }
        #expect(errors == [.malformedChain(head: bad, .bufferOutOfBounds(address: 0xFFFF_0000, length: 4))])
        #expect(queue.errorCount(.bufferOutOfBounds) == 1)
        #expect(!rig.driver.status.contains(.deviceNeedsReset))
    }

    @Test func aStructuralErrorStopsTheQueueAndAsksForAReset() throws {
        let rig = try TransportRig()
        try rig.driver.initialize(queues: [rig.queue])
        try rig.queue.setAvailIndex(100)
        rig.driver.kick(0)
        #expect(rig.driver.status.contains(.deviceNeedsReset))
        #expect(rig.driver.read(.interruptStatus) & VirtioInterrupt.configChangeBit != 0)
        // Further kicks cost one refused pop each: no guest memory read, no new interrupt.
        let pulses = rig.line.count
        for _ in 0 ..< 100 { rig.driver.kick(0) }
        let state = rig.device.state.withLock { ($0.errors.count, $0.queues[0].errorCount(.availIndexJump), $0.processCalls) }
        #expect(state.0 == 101 && state.1 == 1 && state.2 == 101)
        #expect(rig.line.count == pulses)
        #expect(try rig.queue.drainUsed().isEmpty)
        // The driver resets and starts again; the new queue works.
        try rig.driver.initialize(queues: [try MockDriverQueue(memory: rig.memory, size: 16, base: 0x10000)])
        #expect(!rig.driver.status.contains(.deviceNeedsReset))
        let fresh = try MockDriverQueue(memory: rig.memory, size: 16, base: 0x10000)
        try fresh.addChain(readable: [[1]], writable: [1])
        rig.driver.kick(0)
        #expect(try fresh.drainUsed().count == 1)
    }

    @Test func eventIndexSuppressesInterruptsUntilUsedEvent() throws {
        let rig = try TransportRig()
        try rig.driver.initialize(features: VirtioFeature.version1 | VirtioFeature.ringEventIndex, queues: [rig.queue])
        try rig.queue.setUsedEvent(2)  // "interrupt me once used.idx passes 2"
        for round in 0 ..< 4 {
            try rig.queue.addChain(readable: [[UInt8(round)]], writable: [1])
            rig.driver.kick(0)
        }
        // Completions 0,1,2,3: only the one that moved used.idx past 2 (2 → 3) interrupts.
        #expect(rig.line.count == 1)
        #expect(try rig.queue.drainUsed().count == 4)
        // The device asked for a kick at the next entry.
        #expect(try rig.queue.availEvent() == 4)
    }

    @Test func concurrentDriverAndDevice() async throws {
        // The driver publishes from this task while kicks are handled on other tasks, as an
        // ioeventfd thread would. Every request must complete exactly once.
        let rig = try TransportRig(device: EchoDevice(queueMaxSizes: [256]))
        let queue = try MockDriverQueue(memory: rig.memory, size: 256, base: 0x10000, dataAreaSize: 0x8_0000)
        try rig.driver.initialize(queues: [queue])
        let transport = rig.transport
        var completed = 0
        var sent = 0
        let total = 2000
        while completed < total {
            while sent < total, queue.freeDescriptorCount >= 2 {
                try queue.addChain(readable: [[UInt8(truncatingIfNeeded: sent)]], writable: [1])
                sent += 1
            }
            await withTaskGroup(of: Void.self) { group in
                for _ in 0 ..< 2 { group.addTask { transport.handleNotification(queue: 0) } }
            }
            for element in try queue.drainUsed() {
                #expect(element.length == 1)
                completed += 1
            }
            queue.resetDataArea()
        }
        #expect(completed == total)
        #expect(rig.device.state.withLock { $0.errors.isEmpty })
    }
}

@Suite struct LegacyLayoutTests {
    @Test func addressesFollowVringSize() throws {
        let layout = try #require(QueueLayout.legacy(pfn: 0x10, queueSize: 256))
        #expect(layout.descriptorTable == 0x10000)
        #expect(layout.driverArea == 0x11000)
        // 4096 + 6 + 512 = 4614 → rounded up to 8192.
        #expect(layout.deviceArea == 0x12000)
        #expect(QueueLayout.legacySize(queueSize: 256) == 8192 + 6 + 8 * 256)

        let small = try #require(QueueLayout.legacy(pfn: 1, queueSize: 128))
        #expect(small.descriptorTable == 0x1000)
        #expect(small.driverArea == GuestAddress(0x1000 + 2048))
        #expect(small.deviceArea == 0x2000)
        #expect(QueueLayout.legacySize(queueSize: 128) == 4096 + 6 + 8 * 128)

        // A smaller alignment packs the used ring right after the avail ring.
        let packed = try #require(QueueLayout.legacy(pfn: 1, queueSize: 16, alignment: 64))
        #expect(packed.driverArea == 0x1100)
        #expect(packed.deviceArea == 0x1140)  // 0x1100 + 6 + 32 = 0x1126 → 0x1140
    }

    @Test func legacyQueueWorks() throws {
        let memory = try makeMemory()
        // The mock's convenience layout is the legacy one at `base`.
        let driver = try MockDriverQueue(memory: memory, size: 64, base: 0x20000)
        var queue = try Queue(memory: memory, size: 64, legacyPFN: 0x20)
        #expect(queue.layout == driver.layout)
        let sent = try driver.addChain(readable: [[1, 2, 3]], writable: [3])
        let chain = try #require(try queue.popAvailable())
        #expect(chain.head == sent.head)
        try queue.addUsed(head: chain.head, length: 0)
        #expect(try driver.popUsed() == UsedElement(id: UInt32(sent.head), length: 0))
    }

    @Test func legacyQueueOutsideMemoryIsRefused() throws {
        let memory = try makeMemory()
        #expect(throws: VirtqueueError.self) { try Queue(memory: memory, size: 256, legacyPFN: 0xFF) }
        #expect(throws: VirtqueueError.self) { try Queue(memory: memory, size: 256, legacyPFN: .max) }
    }
}
