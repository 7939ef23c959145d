@testable import GuestMemory
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting
#if canImport(Glibc)
import Glibc
#endif

/// A balloon behind a real virtio-mmio transport, driven by the mock driver as Linux's
/// virtio_balloon would, over 64 MiB of real guest memory: the rings and buffers in the first
/// 8 MiB, the pages it inflates above.
final class BalloonRig {
    static let memorySize: UInt64 = 64 << 20
    let memory: GuestMemory
    let device: BalloonDevice
    let line = BlockInterruptCounter()
    let transport: MMIOTransport
    let driver: MockDriver
    /// One mock queue per queue the driver set up, in the device's numbering.
    let queues: [MockDriverQueue]

    init(_ configuration: BalloonConfiguration, features: UInt64? = nil) throws {
        let memory = try GuestMemory(size: Self.memorySize)
        self.memory = memory
        device = BalloonDevice(configuration: configuration)
        transport = MMIOTransport(device: device, memory: memory, interrupt: line)
        driver = MockDriver(transport: transport)
        let wanted = features ?? driver.deviceFeatures()
        var count = 2
        if wanted & BalloonDevice.Feature.statisticsQueue != 0 { count += 1 }
        if wanted & BalloonDevice.Feature.freePageReporting != 0 { count += 1 }
        queues = try (0 ..< count).map { index in
            try MockDriverQueue(memory: memory, size: 64, base: GuestAddress(0x10000 + UInt64(index) * 0x20_0000),
                                dataAreaSize: 0x10_0000)
        }
        try driver.initialize(features: wanted, queues: queues)
    }

    /// Sends `frames` (le32 each) on queue `index` and returns what came back.
    @discardableResult
    func send(frames: [UInt32], on index: Int) throws -> [UsedElement] {
        let bytes = frames.flatMap { frame in (0 ..< 4).map { UInt8(truncatingIfNeeded: frame >> (8 * $0)) } }
        try queues[index].addChain(readable: [bytes])
        driver.kick(UInt32(index))
        return try queues[index].drainUsed()
    }

    /// Fills `pages` 4 KiB pages from `address` with a non-zero pattern, as a guest using them would.
    func touch(_ address: GuestAddress, pages: Int) throws {
        try memory.write([UInt8](repeating: 0xA5, count: pages * 4096), at: address)
    }

    func isZero(_ address: GuestAddress, pages: Int) throws -> Bool {
        try memory.readBytes(at: address, count: pages * 4096).allSatisfy { $0 == 0 }
    }

    /// How many of `pages` pages from `address` are resident in this process (mincore(2)).
    func residentPages(_ address: GuestAddress, pages: Int) throws -> Int {
        let pointer = try memory.pointer(at: address, length: UInt64(pages) * 4096)
        var vector = [UInt8](repeating: 0, count: pages)
        #expect(mincore(pointer, pages * 4096, &vector) == 0)
        return vector.filter { $0 & 1 != 0 }.count
    }

    /// The configuration space's two fields, as the driver reads them.
    func config() -> (numPages: UInt32, actual: UInt32) {
        var bytes = [UInt8](repeating: 0, count: 4)
        transport.read(offset: MMIOTransport.configOffset, into: &bytes)
        let target = bytes.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
        transport.read(offset: MMIOTransport.configOffset + 4, into: &bytes)
        let actual = bytes.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
        return (target, actual)
    }
}

/// Frame number of guest address `address`.
private func frame(_ address: UInt64) -> UInt32 { UInt32(address >> 12) }

@Suite struct BalloonTests {
    let high: UInt64 = 32 << 20

    @Test func offersOnlyWhatIsConfiguredAndNumbersItsQueuesByIt() {
        let plain = BalloonDevice(configuration: BalloonConfiguration(amountMiB: 0))
        #expect(plain.deviceType == 5)
        #expect(plain.offeredFeatures == 0)
        #expect(plain.queueMaxSizes.count == 2)
        let full = BalloonDevice(configuration: BalloonConfiguration(amountMiB: 0, deflateOnOOM: true,
                                                                    statisticsIntervalSeconds: 1, freePageReporting: true))
        #expect(full.offeredFeatures == (1 << 1) | (1 << 2) | (1 << 5))
        #expect(full.queueMaxSizes.count == 4)
    }

    @Test func inflatedPagesLeaveTheProcessAndReadBackAsZeroes() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 8))
        let start = GuestAddress(high)
        try rig.touch(start, pages: 64)
        #expect(try rig.residentPages(start, pages: 64) == 64)
        // 48 consecutive pages (one discard) and every other page of the next 16.
        let frames = (0 ..< 48).map { frame(high) + UInt32($0) } + stride(from: 48, to: 64, by: 2).map { frame(high) + UInt32($0) }
        let used = try rig.send(frames: frames, on: 0)
        #expect(used.count == 1 && used[0].length == 0)
        // Residency first: reading a discarded page maps the shared zero page, which mincore counts.
        #expect(try rig.residentPages(start, pages: 48) == 0)
        #expect(try rig.isZero(start, pages: 48))
        for page in 48 ..< 64 {
            let address = start + UInt64(page) * 4096
            #expect(try rig.residentPages(address, pages: 1) == (page % 2 == 0 ? 0 : 1), "page \(page)")
            #expect(try rig.isZero(address, pages: 1) == (page % 2 == 0), "page \(page)")
        }
        let stats = rig.device.statistics
        #expect(stats.inflateRequests == 1 && stats.pagesInflated == 56)
        #expect(stats.invalidPages == 0 && stats.malformed == 0 && stats.discardFailures == 0)
        #expect(rig.line.count >= 1)
    }

    @Test func deflatedPagesAreTheGuestsAgain() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 8))
        let start = GuestAddress(high)
        try rig.touch(start, pages: 4)
        try rig.send(frames: (0 ..< 4).map { frame(high) + UInt32($0) }, on: 0)
        #expect(try rig.send(frames: (0 ..< 4).map { frame(high) + UInt32($0) }, on: 1).count == 1)
        try rig.touch(start, pages: 4)
        #expect(try rig.residentPages(start, pages: 4) == 4)
        #expect(try rig.memory.readBytes(at: start, count: 1) == [0xA5])
        let stats = rig.device.statistics
        #expect(stats.deflateRequests == 1 && stats.pagesDeflated == 4)
    }

    @Test func hostileFramesAreIgnoredAndCountedAndTheRestStillWorks() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 8))
        let start = GuestAddress(high)
        try rig.touch(start, pages: 2)
        let end = frame(BalloonRig.memorySize)
        // Past RAM, the last frame number there is, one past the end, then a good one.
        let used = try rig.send(frames: [end, UInt32.max, end + 1, frame(high)], on: 0)
        #expect(used.count == 1)
        #expect(rig.device.statistics.invalidPages == 3)
        #expect(try rig.isZero(start, pages: 1))
        #expect(try !rig.isZero(start + 4096, pages: 1))
        // A length that is not whole frame numbers: the whole ones are served, the rest counted.
        try rig.queues[0].addChain(readable: [[0, 0, 0, 0], [1, 2]])
        rig.driver.kick(0)
        #expect(try rig.queues[0].drainUsed().count == 1)
        #expect(rig.device.statistics.malformed == 1)
        // Device-writable buffers on the inflate queue: a confused driver; nothing is discarded.
        let buffer = try rig.queues[0].allocate(8)
        try rig.memory.write(frame(high) + 1, at: buffer)
        try rig.queues[0].addRawChain([RawDescriptor(address: buffer, length: 8, flags: .write)])
        rig.driver.kick(0)
        #expect(try rig.queues[0].drainUsed().count == 1)
        #expect(rig.device.statistics.malformed == 2)
        #expect(try !rig.isZero(start + 4096, pages: 1))
        // A buffer outside RAM, or one whose end overflows: the queue refuses the chain.
        try rig.queues[0].addRawChain([RawDescriptor(address: GuestAddress(UInt64.max - 2), length: 8)])
        try rig.queues[0].addRawChain([RawDescriptor(address: GuestAddress(BalloonRig.memorySize - 4), length: 8)])
        rig.driver.kick(0)
        #expect(try rig.queues[0].drainUsed().count == 2)
        #expect(rig.device.statistics.malformed == 4)
        // And the queue goes on.
        #expect(try rig.send(frames: [frame(high) + 1], on: 0).count == 1)
        #expect(try rig.isZero(start + 4096, pages: 1))
        #expect(!rig.transport.status.contains(.deviceNeedsReset))
    }

    @Test func aHugeRequestIsReadInPieces() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 8))
        // 1000 frames in one buffer, all of them the same page: bounded work, one page discarded.
        try rig.touch(GuestAddress(high), pages: 1)
        #expect(try rig.send(frames: Array(repeating: frame(high), count: 1000), on: 0).count == 1)
        #expect(rig.device.statistics.pagesInflated == 1000)
        #expect(try rig.isZero(GuestAddress(high), pages: 1))
    }

    @Test func theTargetIsInTheConfigurationSpaceAndAChangeInterruptsTheGuest() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 16))
        #expect(rig.config().numPages == 16 * 256)
        let generation = rig.driver.read(.configGeneration)
        rig.device.setTarget(pages: 64 * 256)
        #expect(rig.config().numPages == 64 * 256)
        #expect(rig.driver.read(.configGeneration) != generation)
        #expect(rig.driver.read(.interruptStatus) & 2 != 0)
        // The driver writes `actual`; a write to `num_pages` is ignored and counted.
        rig.transport.write(offset: MMIOTransport.configOffset + 4, data: [0x00, 0x10, 0, 0])
        rig.transport.write(offset: MMIOTransport.configOffset, data: [1, 0, 0, 0])
        #expect(rig.config() == (64 * 256, 4096))
        #expect(rig.device.status.actualMiB == 16 && rig.device.status.targetMiB == 64)
        #expect(rig.device.statistics.malformed == 4)
        // A reset forgets what the guest held, not what the host wants.
        rig.driver.reset()
        #expect(rig.config() == (64 * 256, 0))
    }

    /// `(tag, value)` entries as Linux packs them: le16, le64.
    func statistics(_ entries: [(UInt16, UInt64)]) -> [UInt8] {
        entries.flatMap { tag, value in
            (0 ..< 2).map { UInt8(truncatingIfNeeded: tag >> (8 * $0)) } + (0 ..< 8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
        }
    }

    @Test func statisticsAreKeptUntilThePollAndReturnedWhenItComes() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 0, statisticsIntervalSeconds: 60))
        let stats = rig.queues[2]
        let first = try stats.addChain(readable: [statistics([(4, 1 << 20), (5, 64 << 20), (7, 4096), (99, 1)])])
        rig.driver.kick(2)
        #expect(try stats.drainUsed().isEmpty, "the buffer stays with the device until the poll")
        #expect(rig.device.status.guestStatistics == [.freeMemory: 1 << 20, .totalMemory: 64 << 20, .diskCaches: 4096])
        #expect(rig.device.statisticsTimer.isArmed)
        rig.device.statisticsTimerFired()
        #expect(try stats.drainUsed() == [UsedElement(id: UInt32(first.head), length: 0)])
        // The refill arrives; the timer is set again for the next poll.
        try stats.addChain(readable: [statistics([(4, 2 << 20), (15, 7)])])
        rig.driver.kick(2)
        #expect(rig.device.status.guestStatistics == [.freeMemory: 2 << 20, .directReclaim: 7])
        #expect(rig.device.statistics.statisticsUpdates == 2)
        // A change of interval asks at once; statistics cannot be switched off.
        #expect(throws: BalloonError.statisticsStateChange) { try rig.device.setStatisticsInterval(seconds: 0) }
        try rig.device.setStatisticsInterval(seconds: 5)
        let watcher = PollWatcher(), device = rig.device
        watcher.watch(device.statisticsTimer.descriptor, events: DescriptorEvents.readable) { _ in device.statisticsTimerFired() }
        #expect(watcher.pump(timeoutMilliseconds: 1000) == 1)
        #expect(try stats.drainUsed().count == 1)
        #expect(rig.device.status.statisticsIntervalSeconds == 5)
    }

    @Test func malformedStatisticsAreCountedAndTheProtocolGoesOn() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 0, statisticsIntervalSeconds: 1))
        let stats = rig.queues[2]
        try stats.addChain(readable: [statistics([(4, 1)]) + [1, 2, 3]])
        rig.driver.kick(2)
        #expect(rig.device.statistics.statisticsFailures == 1)
        #expect(rig.device.status.guestStatistics.isEmpty)
        // A second buffer while one is held sends the first back; a writable one is not read.
        try stats.addChain(readable: [statistics([(4, 1)])], writable: [10])
        rig.driver.kick(2)
        #expect(try stats.drainUsed().count == 1)
        #expect(rig.device.statistics.statisticsFailures == 2)
        #expect(rig.device.status.guestStatistics.isEmpty)
        rig.device.statisticsTimerFired()
        #expect(try stats.drainUsed().count == 1)
        // Without statistics there is no statistics queue to kick, and no interval to change.
        let plain = try BalloonRig(BalloonConfiguration(amountMiB: 0))
        #expect(throws: BalloonError.statisticsStateChange) { try plain.device.setStatisticsInterval(seconds: 1) }
        plain.driver.kick(2)
        plain.device.statisticsTimerFired()
        #expect(plain.device.statistics == BalloonStatistics())
    }

    @Test func reportedFreePagesAreDiscarded() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 0, statisticsIntervalSeconds: 1, freePageReporting: true))
        let report = rig.queues[3]
        let start = GuestAddress(high)
        try rig.touch(start, pages: 1024)
        try report.addRawChain([RawDescriptor(address: start, length: 2 << 20, flags: .write),
                                RawDescriptor(address: start + (3 << 20), length: 1 << 20, flags: .write)])
        rig.driver.kick(3)
        #expect(try report.drainUsed().count == 1)
        #expect(try rig.residentPages(start, pages: 512) == 0)
        #expect(try rig.isZero(start, pages: 512))
        #expect(try !rig.isZero(start + (2 << 20), pages: 1))
        #expect(rig.device.statistics.freePageReports == 1)
        #expect(rig.device.statistics.freePageReportedBytes == 3 << 20)
        // A range that is not whole pages, and a device-readable report: refused and counted.
        try report.addRawChain([RawDescriptor(address: start + (2 << 20) + 100, length: 4096, flags: .write)])
        try report.addRawChain([RawDescriptor(address: start + (2 << 20), length: 4096)])
        rig.driver.kick(3)
        #expect(try report.drainUsed().count == 2)
        #expect(rig.device.statistics.freePageReportFailures == 2)
        #expect(try !rig.isZero(start + (2 << 20), pages: 1))
    }

    @Test func withoutStatisticsReportingTakesTheThirdQueue() throws {
        let configuration = BalloonConfiguration(amountMiB: 0, statisticsIntervalSeconds: 1, freePageReporting: true)
        let features = VirtioFeature.version1 | BalloonDevice.Feature.freePageReporting
        let rig = try BalloonRig(configuration, features: features)
        let start = GuestAddress(high)
        try rig.touch(start, pages: 1)
        try rig.queues[2].addRawChain([RawDescriptor(address: start, length: 4096, flags: .write)])
        rig.driver.kick(2)
        #expect(try rig.queues[2].drainUsed().count == 1)
        #expect(rig.device.statistics.freePageReports == 1)
        #expect(try rig.isZero(start, pages: 1))
        rig.driver.kick(3)
        #expect(rig.device.statistics.statisticsUpdates == 0)
    }

    @Test func optionsParseAsTheCommandLineGivesThem() throws {
        #expect(try BalloonConfiguration(option: "amount_mib=64") == BalloonConfiguration(amountMiB: 64))
        #expect(try BalloonConfiguration(option: "amount_mib=1,deflate_on_oom,stats_polling_interval_s=5,free_page_reporting")
                == BalloonConfiguration(amountMiB: 1, deflateOnOOM: true, statisticsIntervalSeconds: 5, freePageReporting: true))
        for bad in ["", "deflate_on_oom", "amount_mib=x", "amount_mib=-1", "amount_mib=1,amount_mib=2", "amount_mib",
                    "amount_mib=1,stats_polling_interval_s=70000", "amount_mib=1,bogus", "amount_mib=1,deflate_on_oom=yes"] {
            #expect(throws: BalloonError.self, "\(bad)") { try BalloonConfiguration(option: bad) }
        }
        #expect(throws: BalloonError.tooLarge(amountMiB: 300, memoryMiB: 256)) {
            try BalloonConfiguration(amountMiB: 300).validate(memoryMiB: 256)
        }
    }
}
