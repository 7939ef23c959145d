import GuestMemory
import Snapshot
import Testing
@testable import Virtio
import VirtioTesting

/// A transport's state saved and restored into a new transport over a new device on the same
/// guest memory, as a restored machine does: the driver must not notice.
@Suite struct TransportSnapshotTests {
    /// Two queues (sizes 16 and 8) driven to DRIVER_OK over an echo device, one request served.
    struct Rig {
        let memory: GuestMemory
        let device: EchoDevice
        let transport: MMIOTransport
        let driver: MockDriver
        let queues: [MockDriverQueue]
        let features = VirtioFeature.version1 | VirtioFeature.ringEventIndex | 0b100

        init(memory: GuestMemory? = nil) throws {
            let memory = try memory ?? makeMemory()
            self.memory = memory
            device = EchoDevice(queueMaxSizes: [16, 16])
            transport = MMIOTransport(device: device, memory: memory, interrupt: CountingLine())
            driver = MockDriver(transport: transport)
            queues = [
                try MockDriverQueue(memory: memory, size: 16, base: 0x10000),
                try MockDriverQueue(memory: memory, size: 8, base: 0x40000),
            ]
            try driver.initialize(features: features, queues: queues)
        }

        func saved() -> [UInt8] {
            var w = StateWriter()
            transport.saveState(to: &w)
            return w.bytes
        }
    }

    /// What a driver can read back from a transport's registers, queue by queue.
    static func registers(_ driver: MockDriver, queues: Int) -> [UInt32] {
        var values = [driver.read(.status), driver.read(.interruptStatus), driver.read(.configGeneration),
                      driver.read(.deviceID)]
        for select: UInt32 in [0, 1] {
            driver.write(.deviceFeaturesSel, select)
            values.append(driver.read(.deviceFeatures))
        }
        for index in 0 ..< UInt32(queues + 1) {
            driver.write(.queueSel, index)
            values += [driver.read(.queueReady), driver.read(.queueNumMax)]
        }
        return values
    }

    static func restore(_ bytes: [UInt8], into transport: MMIOTransport) throws(SnapshotError) {
        var r = StateReader(bytes, context: "the transport")
        try transport.restoreState(from: &r)
        guard r.isAtEnd else { throw .malformed("\(r.remaining) bytes left") }
    }

    @Test("registers, features and queues come back; unserved requests are served once, after a kick")
    func roundTrip() throws {
        let rig = try Rig()
        // Served before the snapshot.
        try rig.queues[0].addChain(readable: [[1, 2, 3]], writable: [3])
        rig.driver.kick(0)
        #expect(try rig.queues[0].drainUsed().count == 1)
        // Published, never served: the old device was never kicked for these.
        let pending0 = [try rig.queues[0].addChain(readable: [[4, 5]], writable: [2]),
                        try rig.queues[0].addChain(readable: [[6]], writable: [1])]
        let pending1 = try rig.queues[1].addChain(readable: [[7, 8, 9]], writable: [3])
        // The driver left queue 1 selected and the high feature word selected.
        rig.driver.write(.queueSel, 1)
        rig.driver.write(.deviceFeaturesSel, 1)
        #expect(rig.transport.interruptStatus & 1 == 1) // the served request's interrupt, unacknowledged
        let bytes = rig.saved()

        let device = EchoDevice(queueMaxSizes: [16, 16])
        let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
        let driver = MockDriver(transport: transport)
        try Self.restore(bytes, into: transport)

        // The selectors the driver left are as it left them.
        #expect(driver.read(.queueReady) == 1 && driver.read(.queueNumMax) == 16)
        #expect(driver.read(.deviceFeatures) == UInt32(truncatingIfNeeded: rig.transport.deviceFeatures >> 32))
        #expect(Self.registers(driver, queues: 2) == Self.registers(rig.driver, queues: 2))
        #expect(transport.status == [.acknowledge, .driver, .featuresOK, .driverOK])
        #expect(transport.driverFeatures == rig.features)
        #expect(transport.interruptStatus == 1)
        #expect(transport.isActivated)

        // The new device was activated with both queues, as the driver set them up.
        let activated = device.state.withLock { ($0.activations, $0.features, $0.queues) }
        #expect(activated.0 == 1)
        #expect(activated.1 == rig.features)
        #expect(activated.2.count == 2)
        #expect(activated.2.map(\.isEnabled) == [true, true])
        #expect(activated.2.map(\.size) == [16, 8])
        #expect(activated.2.map(\.layout) == rig.queues.map(\.layout))
        #expect(activated.2.allSatisfy { $0.eventIndex && !$0.indirectDescriptors })

        // The unserved requests are served by the new device, each once, answered with its bytes.
        let oldCalls = rig.device.state.withLock { $0.processCalls }
        driver.kick(0)
        let used0 = try rig.queues[0].drainUsed()
        #expect(used0.map(\.id) == pending0.map { UInt32($0.head) })
        #expect(used0.map(\.length) == [2, 1])
        #expect(try rig.queues[0].read(pending0[0].writable[0]) == [4, 5])
        #expect(try rig.queues[0].read(pending0[1].writable[0]) == [6])
        driver.kick(1)
        #expect(try rig.queues[1].drainUsed() == [UsedElement(id: UInt32(pending1.head), length: 3)])
        #expect(try rig.queues[1].read(pending1.writable[0]) == [7, 8, 9])

        // Kicked again, nothing is served twice; a new request is served once.
        driver.kick(0)
        driver.kick(1)
        #expect(try rig.queues[0].drainUsed().isEmpty)
        #expect(try rig.queues[1].drainUsed().isEmpty)
        let next = try rig.queues[0].addChain(readable: [[0xAA]], writable: [1])
        driver.kick(0)
        #expect(try rig.queues[0].drainUsed() == [UsedElement(id: UInt32(next.head), length: 1)])
        #expect(try rig.memory.loadAcquire16(at: rig.queues[0].layout.deviceArea + 2) == 4)
        #expect(device.state.withLock { $0.errors }.isEmpty)
        // The old device did nothing more.
        #expect(rig.device.state.withLock { $0.processCalls } == oldCalls)
    }

    @Test("a state saved mid-initialization comes back without activating the device")
    func beforeDriverOK() throws {
        let memory = try makeMemory()
        let device = EchoDevice(queueMaxSizes: [16])
        let transport = MMIOTransport(device: device, memory: memory, interrupt: CountingLine())
        let driver = MockDriver(transport: transport)
        let queue = try MockDriverQueue(memory: memory, size: 16, base: 0x10000)
        driver.reset()
        driver.addStatus(.acknowledge)
        driver.addStatus(.driver)
        #expect(driver.negotiate(VirtioFeature.version1 | 1))
        #expect(driver.setUpQueue(0, size: 16, layout: queue.layout))
        var w = StateWriter()
        transport.saveState(to: &w)

        let newDevice = EchoDevice(queueMaxSizes: [16])
        let restored = MMIOTransport(device: newDevice, memory: memory, interrupt: CountingLine())
        try Self.restore(w.bytes, into: restored)
        #expect(restored.status == [.acknowledge, .driver, .featuresOK])
        #expect(!restored.isActivated)
        #expect(newDevice.state.withLock { $0.activations } == 0)
        // The driver finishes where it stopped, and the device comes up.
        let newDriver = MockDriver(transport: restored)
        #expect(newDriver.read(.queueReady) == 1)
        newDriver.addStatus(.driverOK)
        #expect(restored.isActivated)
        #expect(newDevice.state.withLock { $0.activations } == 1)
    }

    @Test("a reset device's state comes back as reset")
    func resetDevice() throws {
        let rig = try Rig()
        rig.driver.reset()
        let device = EchoDevice(queueMaxSizes: [16, 16])
        let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
        try Self.restore(rig.saved(), into: transport)
        #expect(transport.status == [])
        #expect(!transport.isActivated)
        #expect(Self.registers(MockDriver(transport: transport), queues: 2) == Self.registers(rig.driver, queues: 2))
    }

    @Test("a state for another device type is refused")
    func anotherDeviceType() throws {
        let rig = try Rig()
        let device = EchoDevice(deviceType: 43, queueMaxSizes: [16, 16])
        let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
        #expect(throws: SnapshotError.malformed("a virtio device of type 42 where type 43 belongs")) {
            try Self.restore(rig.saved(), into: transport)
        }
        #expect(!transport.isActivated && device.state.withLock { $0.activations } == 0)
    }

    @Test("a state whose device was offered features this one does not offer is refused")
    func featuresNotOffered() throws {
        let rig = try Rig()
        let device = EchoDevice(queueMaxSizes: [16, 16], offeredFeatures: 0b001)
        let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
        let error = refusal { () throws(SnapshotError) in try Self.restore(rig.saved(), into: transport) }
        guard case .incompatible = error else { Issue.record("\(String(describing: error))"); return }
        #expect(!transport.isActivated && device.state.withLock { $0.activations } == 0)
    }

    @Test("acked features beyond the offered ones, or status bits that do not exist, are refused")
    func ackedFeaturesAndStatus() throws {
        let rig = try Rig()
        let bytes = rig.saved()
        // type u32 @0, offered u64 @4, status u32 @12, selectors @16 @20, driver features u64 @24.
        var acked = bytes
        acked[24 + 1] |= 0x80 // bit 15, never offered
        var status = bytes
        status[12] |= 0x40 // DEVICE_NEEDS_RESET is the device's, never the driver's
        var unknown = bytes
        unknown[13] = 0x01 // bit 8
        for (name, state) in [("acked", acked), ("needs reset", status), ("bit 8", unknown)] {
            let device = EchoDevice(queueMaxSizes: [16, 16])
            let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
            let error = refusal { () throws(SnapshotError) in try Self.restore(state, into: transport) }
            guard case .malformed = error else { Issue.record("\(name): \(String(describing: error))"); continue }
            #expect(!transport.isActivated)
        }
    }

    @Test("a status no driver could reach is refused: bits out of order, FEATURES_OK without VERSION_1, a queue ready before FEATURES_OK")
    func unreachableStatus() throws {
        let rig = try Rig()
        let bytes = rig.saved()
        // Status is the u32 at 12; the driver's features the u64 at 24 (VERSION_1 is bit 32: byte 28, bit 0).
        var cases: [(String, [UInt8])] = []
        for status: UInt8 in [0x04, 0x0C, 0x02, 0x08, 0x05, 0x0D, 0x84] {
            var state = bytes
            state[12] = status
            cases.append(("status 0x\(String(status, radix: 16))", state))
        }
        var withoutVersion1 = bytes
        #expect(withoutVersion1[28] & 1 == 1)
        withoutVersion1[28] &= ~1
        cases.append(("FEATURES_OK without VERSION_1", withoutVersion1))
        var unknownAcked = bytes
        unknownAcked[32] = 1
        cases.append(("FEATURES_OK with unknown features acked", unknownAcked))
        var readyTooEarly = bytes
        readyTooEarly[12] = 0x03 // ACKNOWLEDGE | DRIVER, queues still ready
        cases.append(("queues ready before FEATURES_OK", readyTooEarly))

        for (name, state) in cases {
            let device = EchoDevice(queueMaxSizes: [16, 16])
            let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
            let error = refusal { () throws(SnapshotError) in try Self.restore(state, into: transport) }
            guard case .malformed = error else { Issue.record("\(name): \(String(describing: error))"); continue }
            #expect(!transport.isActivated && device.state.withLock { $0.activations } == 0, "\(name)")
        }

        // FAILED may come at any point, also after DRIVER_OK: the device stays as it was.
        var failed = bytes
        failed[12] |= 0x80
        let device = EchoDevice(queueMaxSizes: [16, 16])
        let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
        try Self.restore(failed, into: transport)
        #expect(transport.status == [.acknowledge, .driver, .featuresOK, .driverOK, .failed])
        #expect(device.state.withLock { $0.activations } == 1)
    }

    @Test("a ready queue that does not fit in guest memory, or is larger than the device allows, is refused")
    func queueOutsideMemory() throws {
        let rig = try Rig()
        // The same machine restored over less memory: queue 1's rings at 0x40000 are not in it.
        let small = try makeMemory(size: 0x20000)
        let device = EchoDevice(queueMaxSizes: [16, 16])
        let transport = MMIOTransport(device: device, memory: small, interrupt: CountingLine())
        #expect(throws: SnapshotError.malformed("queue 1 of virtio device type 42 does not fit in guest memory")) {
            try Self.restore(rig.saved(), into: transport)
        }
        #expect(!transport.isActivated && device.state.withLock { $0.activations } == 0)

        // A device whose queue 0 may only be 8 long, given a ready queue of 16.
        let shorter = EchoDevice(queueMaxSizes: [8, 16])
        let other = MMIOTransport(device: shorter, memory: rig.memory, interrupt: CountingLine())
        #expect(throws: SnapshotError.malformed("queue 0 of virtio device type 42 does not fit in guest memory")) {
            try Self.restore(rig.saved(), into: other)
        }

        // The queue's size field itself out of range (past UInt16), the queue ready.
        var bytes = rig.saved()
        let queue0Size = 41 // after type, offered, status, two selectors, features, flag, queueSel, count
        #expect(bytes[queue0Size] == 16 && bytes[queue0Size + 4] == 1)
        bytes[queue0Size + 2] = 0x01 // 0x10010
        let third = MMIOTransport(device: EchoDevice(queueMaxSizes: [16, 16]), memory: rig.memory, interrupt: CountingLine())
        #expect(refusal { () throws(SnapshotError) in try Self.restore(bytes, into: third) }?.description.contains("queue 0") == true)
    }

    @Test("a state with another number of queues than the device has is refused")
    func wrongQueueCount() throws {
        let rig = try Rig()
        for sizes: [UInt16] in [[16], [16, 16, 16]] {
            let device = EchoDevice(queueMaxSizes: sizes)
            let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
            let error = refusal { () throws(SnapshotError) in try Self.restore(rig.saved(), into: transport) }
            guard case .malformed = error else { Issue.record("\(sizes.count) queues: \(String(describing: error))"); continue }
            #expect(!transport.isActivated && device.state.withLock { $0.activations } == 0)
        }
    }

    @Test("every truncation of a transport's state is refused, and the transport is left unused")
    func everyTruncation() throws {
        let rig = try Rig()
        let bytes = rig.saved()
        for length in 0 ..< bytes.count {
            let device = EchoDevice(queueMaxSizes: [16, 16])
            let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: CountingLine())
            var r = StateReader(Array(bytes.prefix(length)))
            let error = refusal { () throws(SnapshotError) in try transport.restoreState(from: &r) }
            #expect(error != nil, "\(length) of \(bytes.count) bytes")
            #expect(transport.status == [] && device.state.withLock { $0.activations } == 0)
        }
    }
}

/// The error `body` throws, or nil if it returns.
func refusal<T>(_ body: () throws(SnapshotError) -> T) -> SnapshotError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}
