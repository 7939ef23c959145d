import GuestMemory
import Synchronization
import Testing
@testable import Virtio
import VirtioTesting

/// A transport over an `EchoDevice` with one mock queue in 1 MiB of memory.
struct TransportRig {
    let memory: GuestMemory
    let device: EchoDevice
    let line = CountingLine()
    let transport: MMIOTransport
    let driver: MockDriver
    let queue: MockDriverQueue

    init(device: EchoDevice = EchoDevice()) throws {
        memory = try makeMemory()
        self.device = device
        transport = MMIOTransport(device: device, memory: memory, interrupt: line)
        driver = MockDriver(transport: transport)
        queue = try MockDriverQueue(memory: memory, size: 16, base: 0x10000)
    }

    /// Reset, ACKNOWLEDGE, DRIVER.
    func begin() {
        driver.reset()
        driver.addStatus(.acknowledge)
        driver.addStatus(.driver)
    }

    func read(_ offset: UInt64, width: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xFF, count: width)
        transport.read(offset: offset, into: &bytes)
        return bytes
    }
}

@Suite struct MMIOTransportTests {
    @Test func identificationRegisters() throws {
        let rig = try TransportRig()
        #expect(rig.driver.read(.magicValue) == 0x7472_6976)
        #expect(rig.driver.read(.version) == 2)
        #expect(rig.driver.read(.deviceID) == 42)
        #expect(rig.driver.read(.vendorID) == MMIOTransport.defaultVendorID)
        #expect(rig.driver.read(.status) == 0)
        // No shared memory regions.
        for register in [MMIORegister.shmLenLow, .shmLenHigh, .shmBaseLow, .shmBaseHigh] {
            #expect(rig.driver.read(register) == 0xFFFF_FFFF)
        }
        #expect(rig.driver.read(.queueReset) == 0)
    }

    @Test func featuresOfferedIncludeTheTransportBitsAndNoStrayReservedOnes() throws {
        // The device tries to offer RING_PACKED (34) and bit 24; both are dropped.
        let rig = try TransportRig(device: EchoDevice(offeredFeatures: 1 << 3 | 1 << 34 | 1 << 24 | 1 << 55))
        let features = rig.driver.deviceFeatures()
        #expect(features == 1 << 3 | 1 << 55 | VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors
            | VirtioFeature.ringEventIndex)
        rig.driver.write(.deviceFeaturesSel, 2)
        #expect(rig.driver.read(.deviceFeatures) == 0)
    }

    @Test func goodInitializationActivatesTheDevice() throws {
        let rig = try TransportRig()
        let wanted = VirtioFeature.version1 | VirtioFeature.ringEventIndex | 1
        try rig.driver.initialize(features: wanted, queues: [rig.queue])
        #expect(rig.driver.status == [.acknowledge, .driver, .featuresOK, .driverOK])
        #expect(rig.transport.isActivated)
        #expect(rig.transport.driverFeatures == wanted)
        let state = rig.device.state.withLock { ($0.activations, $0.features, $0.queues) }
        #expect(state.0 == 1)
        #expect(state.1 == wanted)
        #expect(state.2.count == 1)
        #expect(state.2[0].isEnabled && state.2[0].size == 16 && state.2[0].layout == rig.queue.layout)
        #expect(state.2[0].eventIndex && !state.2[0].indirectDescriptors)
        #expect(rig.transport.statistics == TransportStatistics())
    }

    @Test func queuesTheDriverDidNotEnableArriveDisabled() throws {
        let rig = try TransportRig(device: EchoDevice(queueMaxSizes: [16, 16]))
        try rig.driver.initialize(queues: [rig.queue])
        let queues = rig.device.state.withLock { $0.queues }
        #expect(queues.count == 2 && queues[0].isEnabled && !queues[1].isEnabled)
    }

    @Test func unofferedFeaturesAreRejected() throws {
        let rig = try TransportRig()
        rig.begin()
        #expect(!rig.driver.negotiate(VirtioFeature.version1 | 1 << 1))  // bit 1 not offered (0b101)
        #expect(rig.driver.status == [.acknowledge, .driver])
        #expect(rig.transport.statistics.rejectedFeatures == 1)
        // A corrected subset is accepted on the next try.
        #expect(rig.driver.negotiate(VirtioFeature.version1 | 1 << 2))
    }

    @Test func missingVersion1IsRejected() throws {
        let rig = try TransportRig()
        rig.begin()
        #expect(!rig.driver.negotiate(1))
        #expect(throws: MockDriverError.featuresRejected(1)) { try rig.driver.initialize(features: 1, queues: [rig.queue]) }
        #expect(rig.driver.status.contains(.failed))
        #expect(!rig.transport.isActivated)
    }

    @Test func featureWordsBeyondTheSecondAreRejectedIfNonZero() throws {
        let rig = try TransportRig()
        rig.begin()
        rig.driver.write(.driverFeaturesSel, 1)
        rig.driver.write(.driverFeatures, 1)  // VERSION_1
        rig.driver.write(.driverFeaturesSel, 2)
        rig.driver.write(.driverFeatures, 0x10)
        rig.driver.addStatus(.featuresOK)
        #expect(!rig.driver.status.contains(.featuresOK))
    }

    @Test func driverFeaturesOutsideTheirWindowAreIgnored() throws {
        let rig = try TransportRig()
        rig.driver.addStatus(.acknowledge)
        rig.driver.write(.driverFeaturesSel, 0)
        rig.driver.write(.driverFeatures, 1)  // before DRIVER
        #expect(rig.transport.driverFeatures == 0)
        #expect(rig.transport.statistics.ignoredRegisterWrites == 1)
    }

    @Test func statusWritesThatSkipOrGoBackAreIgnored() throws {
        let rig = try TransportRig()
        rig.driver.write(.status, DeviceStatus.driver.rawValue)  // DRIVER without ACKNOWLEDGE
        #expect(rig.driver.status == [])
        rig.driver.write(.status, 0x10)  // an undefined bit
        #expect(rig.driver.status == [])
        rig.begin()
        rig.driver.addStatus(.driverOK)  // DRIVER_OK without FEATURES_OK
        #expect(rig.driver.status == [.acknowledge, .driver])
        rig.driver.write(.status, DeviceStatus.acknowledge.rawValue)  // backwards
        #expect(rig.driver.status == [.acknowledge, .driver])
        rig.driver.write(.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)  // two steps
        #expect(rig.driver.status == [.acknowledge, .driver])
        #expect(rig.transport.statistics.ignoredStatusWrites == 5)
        #expect(!rig.transport.isActivated)
        // FAILED is always accepted.
        rig.driver.addStatus(.failed)
        #expect(rig.driver.status == [.acknowledge, .driver, .failed])
    }

    @Test func queueSetupBeforeFeaturesOKIsIgnored() throws {
        let rig = try TransportRig()
        rig.begin()
        #expect(!rig.driver.setUpQueue(0, size: 16, layout: rig.queue.layout))
        #expect(rig.transport.statistics.ignoredRegisterWrites == 8)
        #expect(rig.driver.negotiate(VirtioFeature.version1))
        #expect(rig.driver.setUpQueue(0, size: 16, layout: rig.queue.layout))
    }

    @Test func badQueueConfigurationsAreRefused() throws {
        let rig = try TransportRig(device: EchoDevice(queueMaxSizes: [16]))
        rig.begin()
        #expect(rig.driver.negotiate(VirtioFeature.version1))
        let good = rig.queue.layout
        var misaligned = good
        misaligned.driverArea = good.driverArea + 1
        var outside = good
        outside.deviceArea = 0x20_0000
        let cases: [(UInt16, QueueLayout)] = [(12, good), (32, good), (0, good), (16, misaligned), (16, outside)]
        for (size, layout) in cases {
            #expect(!rig.driver.setUpQueue(0, size: size, layout: layout), "size \(size) \(layout)")
        }
        #expect(rig.transport.statistics.refusedQueueConfigs == 5)
        #expect(rig.driver.setUpQueue(0, size: 8, layout: good))
    }

    @Test func queueRegistersAreFrozenWhileReady() throws {
        let rig = try TransportRig()
        rig.begin()
        #expect(rig.driver.negotiate(VirtioFeature.version1))
        #expect(rig.driver.setUpQueue(0, size: 16, layout: rig.queue.layout))
        rig.driver.write(.queueNum, 4)
        rig.driver.write(.queueDescLow, 0x5000)
        rig.driver.addStatus(.driverOK)
        let queue = try #require(rig.device.state.withLock { $0.queues.first })
        #expect(queue.size == 16 && queue.layout == rig.queue.layout)
        // And after DRIVER_OK nothing about queues can change.
        rig.driver.write(.queueReady, 0)
        #expect(rig.driver.read(.queueReady) == 1)
    }

    @Test func queueNumMaxOfAMissingQueueIsZero() throws {
        let rig = try TransportRig()
        rig.driver.write(.queueSel, 1)
        #expect(rig.driver.read(.queueNumMax) == 0)
        #expect(rig.driver.read(.queueReady) == 0)
        rig.begin()
        #expect(rig.driver.negotiate(VirtioFeature.version1))
        #expect(!rig.driver.setUpQueue(1, size: 16, layout: rig.queue.layout))
    }

    @Test func resetClearsEverything() throws {
        let rig = try TransportRig()
        try rig.driver.initialize(queues: [rig.queue])
        let resetsBefore = rig.device.state.withLock { $0.resets }
        let interrupt = try #require(rig.device.state.withLock { $0.interrupt })
        interrupt.signalUsedBuffers()
        #expect(rig.transport.interruptStatus == 1)
        rig.driver.reset()
        #expect(rig.driver.read(.status) == 0)
        #expect(rig.transport.interruptStatus == 0)
        #expect(rig.transport.driverFeatures == 0)
        #expect(rig.driver.read(.queueReady) == 0)
        #expect(!rig.transport.isActivated)
        #expect(rig.device.state.withLock { $0.resets } == resetsBefore + 1)
        // The old activation's interrupt is dead: a late completion raises nothing.
        let pulses = rig.line.count
        interrupt.signalUsedBuffers()
        interrupt.markNeedsReset()
        #expect(rig.transport.interruptStatus == 0)
        #expect(rig.line.count == pulses)
        #expect(!rig.driver.status.contains(.deviceNeedsReset))
        // And the device can be brought up again.
        try rig.driver.initialize(queues: [rig.queue])
        #expect(rig.device.state.withLock { $0.activations } == 2)
    }

    @Test func interruptStatusAndAcknowledge() throws {
        let rig = try TransportRig()
        try rig.driver.initialize(queues: [rig.queue])
        let interrupt = try #require(rig.device.state.withLock { $0.interrupt })
        let generation = rig.driver.read(.configGeneration)
        interrupt.signalUsedBuffers()
        interrupt.signalConfigChange()
        #expect(rig.line.count == 2)
        #expect(rig.driver.read(.interruptStatus) == 3)
        #expect(rig.driver.read(.configGeneration) == generation &+ 1)
        rig.driver.write(.interruptACK, 1)
        #expect(rig.driver.read(.interruptStatus) == 2)
        #expect(rig.driver.acknowledgeInterrupt() == 2)
        #expect(rig.driver.read(.interruptStatus) == 0)
    }

    @Test func interruptStatusIsSetBeforeTheLineFires() throws {
        final class Recorder: InterruptLine {
            let transport = Mutex<MMIOTransport?>(nil)
            let seen = Mutex<[UInt32]>([])
            func trigger() {
                let status = transport.withLock { $0?.interruptStatus } ?? 0
                seen.withLock { $0.append(status) }
            }
        }
        let recorder = Recorder()
        let device = EchoDevice()
        let memory = try makeMemory()
        let transport = MMIOTransport(device: device, memory: memory, interrupt: recorder)
        recorder.transport.withLock { $0 = transport }
        let queue = try MockDriverQueue(memory: memory, size: 16, base: 0x10000)
        try MockDriver(transport: transport).initialize(queues: [queue])
        try queue.addChain(readable: [[1]], writable: [1])
        transport.handleNotification(queue: 0)
        #expect(recorder.seen.withLock { $0 } == [VirtioInterrupt.usedBufferBit])
        recorder.transport.withLock { $0 = nil }
    }

    @Test func configSpaceAccesses() throws {
        let rig = try TransportRig()
        #expect(rig.read(0x100, width: 1) == [0x11])
        #expect(rig.read(0x101, width: 2) == [0x22, 0x33])
        #expect(rig.read(0x104, width: 4) == [0x55, 0x66, 0x77, 0x88])
        #expect(rig.read(0x104, width: 8) == [0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC])
        // Out of bounds (config is 12 bytes), straddling the end, odd widths: zeros, ignored.
        #expect(rig.read(0x10C, width: 1) == [0])
        #expect(rig.read(0x10A, width: 4) == [0, 0, 0, 0])
        #expect(rig.read(0x100, width: 3) == [0, 0, 0])
        #expect(rig.read(0x1FF, width: 8) == [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(rig.read(UInt64.max - 3, width: 4) == [0, 0, 0, 0])
        #expect(rig.transport.statistics.ignoredAccesses == 5)
        rig.transport.write(offset: 0x102, data: [0xE0, 0xE1])
        #expect(rig.read(0x100, width: 4) == [0x11, 0x22, 0xE0, 0xE1])
        rig.transport.write(offset: 0x10B, data: [1, 2])
        #expect(rig.read(0x108, width: 4) == [0x99, 0xAA, 0xBB, 0xCC])
    }

    @Test func misalignedAndWrongWidthRegisterAccessesAreIgnored() throws {
        let rig = try TransportRig()
        #expect(rig.read(0x000, width: 2) == [0, 0])
        #expect(rig.read(0x002, width: 4) == [0, 0, 0, 0])
        #expect(rig.read(0x000, width: 8) == [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(rig.read(0x000, width: 1) == [0])
        #expect(rig.read(0x018, width: 4) == [0, 0, 0, 0], "no register there")
        rig.transport.write(offset: 0x070, data: [1, 0])  // 16-bit Status write
        rig.transport.write(offset: 0x071, data: [1, 0, 0, 0])  // misaligned
        rig.transport.write(offset: 0x070, data: [1, 0, 0, 0, 0, 0, 0, 0])  // 64-bit
        #expect(rig.driver.read(.status) == 0)
        rig.transport.write(offset: 0x000, data: [0, 0, 0, 0])  // a read-only register
        #expect(rig.driver.read(.magicValue) == MMIOTransport.magic)
        #expect(rig.transport.statistics.ignoredAccesses == 9)
        // The proper access works, through the raw-pointer entry points too.
        let word: [UInt8] = [1, 0, 0, 0]
        word.withUnsafeBytes { rig.transport.write(offset: 0x070, data: $0) }
        var out = [UInt8](repeating: 0, count: 4)
        out.withUnsafeMutableBytes { rig.transport.read(offset: 0x070, into: $0) }
        #expect(out == [1, 0, 0, 0])
    }

    @Test func notificationsBeforeDriverOKAreIgnored() throws {
        let rig = try TransportRig()
        rig.driver.kick(0)
        rig.transport.handleNotification(queue: 0)
        #expect(rig.device.state.withLock { $0.processCalls } == 0)
        #expect(rig.transport.statistics.ignoredNotifications == 2)
        try rig.driver.initialize(queues: [rig.queue])
        rig.driver.kick(7)
        #expect(rig.device.state.withLock { $0.processCalls } == 0)
        rig.driver.kick(0)
        #expect(rig.device.state.withLock { $0.processCalls } == 1)
    }

    @Test func failedActivationSetsNeedsReset() throws {
        let device = EchoDevice()
        device.state.withLock { $0.failActivation = true }
        let rig = try TransportRig(device: device)
        try rig.driver.initialize(queues: [rig.queue])
        #expect(rig.driver.status.contains(.deviceNeedsReset))
        #expect(rig.driver.read(.interruptStatus) == VirtioInterrupt.configChangeBit)
        #expect(rig.line.count == 1)
        #expect(rig.transport.statistics.activationFailures == 1)
        // Linux writes back what it read; DEVICE_NEEDS_RESET in the value is harmless.
        rig.driver.addStatus(.failed)
        #expect(rig.driver.status.contains(.failed))
        rig.driver.reset()
        #expect(rig.driver.read(.status) == 0)
    }
}
