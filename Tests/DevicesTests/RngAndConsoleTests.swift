import GuestMemory
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// A device behind a real virtio-mmio transport, with one mock driver queue per device queue.
struct DeviceRig<D: VirtioDevice> {
    let memory: GuestMemory
    let device: D
    let line = BlockInterruptCounter()
    let transport: MMIOTransport
    let driver: MockDriver
    let queues: [MockDriverQueue]

    init(_ device: D) throws {
        let memory = try GuestMemory(size: 0x40_0000)
        self.memory = memory
        self.device = device
        transport = MMIOTransport(device: device, memory: memory, interrupt: line)
        driver = MockDriver(transport: transport)
        queues = try device.queueMaxSizes.indices.map { index in
            try MockDriverQueue(memory: memory, size: 64, base: GuestAddress(0x10000 + UInt64(index) * 0x10_0000),
                                dataAreaSize: 0x8_0000)
        }
        _ = try driver.initialize(queues: queues)
    }
}

@Suite struct RngDeviceTests {
    @Test func fillsEveryWritableBufferWithRandomBytes() throws {
        let rig = try DeviceRig(RngDevice())
        let chain = try rig.queues[0].addChain(writable: [16, 48])
        rig.driver.kick(0)
        let used = try rig.queues[0].drainUsed()
        #expect(used == [UsedElement(id: UInt32(chain.head), length: 64)])
        let bytes = try chain.writable.flatMap { try rig.queues[0].read($0) }
        #expect(bytes.count == 64)
        #expect(Set(bytes).count > 16, "64 random bytes have many distinct values")
        #expect(rig.line.count >= 1)
        #expect(rig.device.statistics.bytes == 64)
    }

    @Test func capsAHugeRequest() throws {
        let rig = try DeviceRig(RngDevice())
        _ = try rig.queues[0].addChain(writable: [0x7_0000])
        rig.driver.kick(0)
        #expect(try rig.queues[0].drainUsed().first?.length == UInt32(RngDevice.maximumRequest))
    }

    @Test func aReadableBufferIsAMalformedRequestAndTheNextOneStillWorks() throws {
        let rig = try DeviceRig(RngDevice())
        let bad = try rig.queues[0].addChain(readable: [[1, 2, 3]], writable: [8])
        let good = try rig.queues[0].addChain(writable: [8])
        rig.driver.kick(0)
        let used = try rig.queues[0].drainUsed()
        #expect(used == [UsedElement(id: UInt32(bad.head), length: 0), UsedElement(id: UInt32(good.head), length: 8)])
        #expect(rig.device.statistics.malformed == 1)
    }

    @Test func aLoopingChainFailsThatRequestOnly() throws {
        let rig = try DeviceRig(RngDevice())
        let buffer = try rig.queues[0].allocate(16)
        // Descriptor 0 points to itself.
        try rig.queues[0].addRawChain([RawDescriptor(address: buffer, length: 16, flags: [.write, .next], next: 0)])
        let good = try rig.queues[0].addChain(writable: [8])
        rig.driver.kick(0)
        let used = try rig.queues[0].drainUsed()
        #expect(used.last == UsedElement(id: UInt32(good.head), length: 8))
        #expect(rig.device.statistics.malformed == 1)
    }

    @Test func anAvailIndexJumpStopsTheQueueWithoutSpinning() throws {
        let rig = try DeviceRig(RngDevice())
        try rig.queues[0].setAvailIndex(1000)
        rig.driver.kick(0)
        rig.driver.kick(0)
        #expect(try rig.queues[0].drainUsed().isEmpty)
        #expect(rig.transport.status.contains(.deviceNeedsReset))
    }
}

@Suite struct ConsoleDeviceTests {
    func rig() throws -> (DeviceRig<ConsoleDevice>, RecordingSink) {
        let sink = RecordingSink()
        return (try DeviceRig(ConsoleDevice(output: sink)), sink)
    }

    @Test func transmittedBytesReachTheHostWhateverTheSplit() throws {
        let (rig, sink) = try rig()
        let tx = rig.queues[1]
        let chain = try tx.addChain(readable: [Array("hello ".utf8), Array("from ".utf8), Array("hvc0\n".utf8)])
        rig.driver.kick(1)
        #expect(sink.text == "hello from hvc0\n")
        #expect(try tx.drainUsed() == [UsedElement(id: UInt32(chain.head), length: 0)])
    }

    @Test func inputWaitsForReceiveBuffersAndIsNotLost() throws {
        let (rig, _) = try rig()
        rig.device.enqueueInput(Array("typed early".utf8))
        let rx = rig.queues[0]
        let first = try rx.addChain(writable: [5])
        let second = try rx.addChain(writable: [64])
        rig.driver.kick(0)
        let used = try rx.drainUsed()
        #expect(used == [UsedElement(id: UInt32(first.head), length: 5), UsedElement(id: UInt32(second.head), length: 6)])
        #expect(try rx.read(first.writable[0]) == Array("typed".utf8))
        #expect(try Array(rx.read(second.writable[0]).prefix(6)) == Array(" early".utf8))
    }

    @Test func inputArrivingLaterFillsAPostedBuffer() throws {
        let (rig, _) = try rig()
        let rx = rig.queues[0]
        let chain = try rx.addChain(writable: [32])
        rig.driver.kick(0)
        #expect(try rx.drainUsed().isEmpty, "nothing to deliver yet: the buffer stays with the device")
        let interruptsBefore = rig.line.count
        rig.device.enqueueInput([0x0D])
        #expect(try rx.drainUsed() == [UsedElement(id: UInt32(chain.head), length: 1)])
        #expect(rig.line.count > interruptsBefore)
    }

    @Test func aWritableBufferOnTransmitIsCountedAndSkipped() throws {
        let (rig, sink) = try rig()
        let tx = rig.queues[1]
        _ = try tx.addChain(writable: [16])
        _ = try tx.addChain(readable: [Array("ok".utf8)])
        rig.driver.kick(1)
        #expect(sink.text == "ok")
        #expect(try tx.drainUsed().count == 2)
    }

    @Test func resetDropsTheQueuesButKeepsPendingInput() throws {
        let (rig, _) = try rig()
        rig.device.enqueueInput(Array("kept".utf8))
        rig.driver.reset()
        #expect(rig.transport.status.rawValue == 0)
        // A driver coming back finds the input still waiting.
        let queues = try (0..<2).map { index in
            try MockDriverQueue(memory: rig.memory, size: 64, base: GuestAddress(0x10000 + UInt64(index) * 0x10_0000),
                                dataAreaSize: 0x8_0000)
        }
        _ = try rig.driver.initialize(queues: queues)
        let chain = try queues[0].addChain(writable: [16])
        rig.driver.kick(0)
        #expect(try queues[0].drainUsed() == [UsedElement(id: UInt32(chain.head), length: 4)])
    }
}
