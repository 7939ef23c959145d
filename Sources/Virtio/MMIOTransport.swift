import GuestMemory
import Synchronization

/// The virtio-mmio version 2 registers (transport-mmio.tex, Linux's `virtio_mmio.h`).
public enum MMIORegister: UInt64, Sendable, CaseIterable {
    case magicValue = 0x000
    case version = 0x004
    case deviceID = 0x008
    case vendorID = 0x00C
    case deviceFeatures = 0x010
    case deviceFeaturesSel = 0x014
    case driverFeatures = 0x020
    case driverFeaturesSel = 0x024
    case queueSel = 0x030
    case queueNumMax = 0x034
    case queueNum = 0x038
    case queueReady = 0x044
    case queueNotify = 0x050
    case interruptStatus = 0x060
    case interruptACK = 0x064
    case status = 0x070
    case queueDescLow = 0x080
    case queueDescHigh = 0x084
    case queueDriverLow = 0x090
    case queueDriverHigh = 0x094
    case queueDeviceLow = 0x0A0
    case queueDeviceHigh = 0x0A4
    case shmSel = 0x0AC
    case shmLenLow = 0x0B0
    case shmLenHigh = 0x0B4
    case shmBaseLow = 0x0B8
    case shmBaseHigh = 0x0BC
    case queueReset = 0x0C0
    case configGeneration = 0x0FC
}

/// What the transport refused, for tests and for a rate-limited log.
public struct TransportStatistics: Sendable, Equatable {
    /// Register accesses of the wrong width, misaligned, or at no register; config-space
    /// accesses of a bad width or outside the device's config space.
    public var ignoredAccesses = 0
    /// Status writes that skipped a step, went backwards or set unknown bits.
    public var ignoredStatusWrites = 0
    /// FEATURES_OK refused: features acked that were not offered, or VERSION_1 missing.
    public var rejectedFeatures = 0
    /// Writes to feature or queue registers at a time the state machine does not allow them.
    public var ignoredRegisterWrites = 0
    /// QueueReady=1 refused because the queue's size or areas were bad.
    public var refusedQueueConfigs = 0
    /// `VirtioDevice.activate` threw.
    public var activationFailures = 0
    /// QueueNotify for a queue that does not exist or before DRIVER_OK.
    public var ignoredNotifications = 0

    public init() {}
}

/// A virtio device behind a virtio-mmio version 2 register window.
///
/// It owns everything generic about a virtio device so the device does not have to: the
/// registers, the status state machine (ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK, and 0
/// for reset), feature negotiation, queue setup and validation, InterruptStatus and
/// DEVICE_NEEDS_RESET. The device sees `activate`, `processQueue` and `reset`.
///
/// vCPU threads call `read`/`write` on MMIO exits while the device works on its own thread;
/// the registers sit behind one `Mutex`. The interrupt bits have their own lock (see
/// `VirtioInterrupt`), so a device can signal while a vCPU holds the register lock.
public final class MMIOTransport: Sendable {
    /// "virt", little-endian.
    public static let magic: UInt32 = 0x7472_6976
    public static let version: UInt32 = 2
    /// "LGST", little-endian.
    public static let defaultVendorID: UInt32 = 0x5453_474C
    /// Device configuration space starts here.
    public static let configOffset: UInt64 = 0x100
    /// The smallest MMIO window a device needs (registers + up to 256 config bytes). A larger
    /// window (Firmware reserves a page, like Firecracker) is fine: accesses past the device's
    /// config space read as zeros and are ignored.
    public static let windowSize: UInt64 = 0x200

    public let device: any VirtioDevice
    public let memory: GuestMemory
    public let vendorID: UInt32
    /// What the device offers, as the driver reads it: the device's own bits plus VERSION_1,
    /// RING_INDIRECT_DESC and RING_EVENT_IDX.
    public let deviceFeatures: UInt64

    private let line: any InterruptLine
    let interruptState = InterruptState()
    let deviceType: UInt32
    let queueMaxSizes: [UInt16]
    let registers: Mutex<Registers>

    struct QueueRegisters {
        var size: UInt32
        var ready = false
        var descriptorTable: UInt64 = 0
        var driverArea: UInt64 = 0
        var deviceArea: UInt64 = 0
    }

    struct Registers {
        var status: DeviceStatus = []
        var deviceFeaturesSel: UInt32 = 0
        var driverFeaturesSel: UInt32 = 0
        var driverFeatures: UInt64 = 0
        /// The driver wrote a non-zero feature word past the 64 bits we know.
        var unknownFeaturesAcked = false
        var queueSel: UInt32 = 0
        var queues: [QueueRegisters]
        var statistics = TransportStatistics()

        init(queueMaxSizes: [UInt16]) {
            queues = queueMaxSizes.map { QueueRegisters(size: UInt32($0)) }
        }
    }

    public init(device: any VirtioDevice, memory: GuestMemory, interrupt line: any InterruptLine,
                vendorID: UInt32 = MMIOTransport.defaultVendorID) {
        self.device = device
        self.memory = memory
        self.line = line
        self.vendorID = vendorID
        deviceType = device.deviceType
        queueMaxSizes = device.queueMaxSizes.map { min($0, Queue.maxSize) }
        deviceFeatures = (device.offeredFeatures & VirtioFeature.deviceSpecificMask)
            | VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors | VirtioFeature.ringEventIndex
        registers = Mutex(Registers(queueMaxSizes: queueMaxSizes))
    }

    /// Where QueueNotify writes that reach the transport go, once the launcher has doorbells.
    private let kickForwarder = Mutex<(@Sendable (UInt32) -> Void)?>(nil)

    /// From now on a QueueNotify write that reaches the transport (on a vCPU thread: an access
    /// the queue's ioeventfd did not match, of another width, say) is handed to `forward` with
    /// the queue's index instead of being served on the spot, so that no vCPU does device work.
    /// The launcher rings the queue's doorbell there, and the I/O thread serves the kick.
    public func forwardKicks(_ forward: @escaping @Sendable (UInt32) -> Void) {
        kickForwarder.withLock { $0 = forward }
    }

    // MARK: - State for tests and the launcher

    /// The Status register as the driver reads it (DEVICE_NEEDS_RESET included).
    public var status: DeviceStatus {
        let needsReset = interruptState.bits.withLock { $0.needsReset }
        let status = registers.withLock { $0.status }
        return needsReset ? status.union(.deviceNeedsReset) : status
    }

    public var interruptStatus: UInt32 { interruptState.bits.withLock { $0.interruptStatus } }

    /// The features the driver acked (meaningful once FEATURES_OK is set).
    public var driverFeatures: UInt64 { registers.withLock { $0.driverFeatures } }

    public var isActivated: Bool { registers.withLock { $0.status.contains(.driverOK) } }

    public var statistics: TransportStatistics { registers.withLock { $0.statistics } }

    // MARK: - MMIO access (vCPU threads)

    /// A guest read of `data.count` bytes at `offset` into the window. Accesses the transport
    /// ignores read as zeros.
    public func read(offset: UInt64, into data: inout [UInt8]) {
        data.withUnsafeMutableBytes { read(offset: offset, into: $0) }
    }

    /// A guest read straight into the vCPU's exit buffer. A register read allocates nothing:
    /// every MMIO exit of a guest's driver comes through here.
    public func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) {
        if offset >= Self.configOffset {
            let config = device.configSpace
            guard let start = configRange(offset: offset, count: buffer.count, configSize: config.count) else {
                countIgnoredAccess()
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                return
            }
            // Safe: `configRange` keeps `start ..< start + buffer.count` inside `config`.
            config.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start ..< start + buffer.count])) }
            return
        }
        guard buffer.count == 4, offset % 4 == 0 else {
            countIgnoredAccess()
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        buffer.storeBytes(of: readRegister(offset: offset).littleEndian, as: UInt32.self)
    }

    /// A guest write of `data` at `offset` into the window.
    public func write(offset: UInt64, data: [UInt8]) {
        data.withUnsafeBytes { write(offset: offset, data: $0) }
    }

    /// A guest write straight from the vCPU's exit buffer; a register write allocates nothing.
    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        if offset >= Self.configOffset {
            guard let start = configRange(offset: offset, count: data.count, configSize: device.configSpace.count) else {
                countIgnoredAccess()
                return
            }
            device.writeConfig(offset: start, bytes: Array(data))
            return
        }
        guard data.count == 4, offset % 4 == 0 else {
            countIgnoredAccess()
            return
        }
        writeRegister(offset: offset, value: UInt32(littleEndian: data.loadUnaligned(as: UInt32.self)))
    }

    /// A 32-bit register read (what a well-behaved driver does).
    public func readRegister(_ register: MMIORegister) -> UInt32 {
        readRegister(offset: register.rawValue)
    }

    /// A 32-bit register write.
    public func writeRegister(_ register: MMIORegister, _ value: UInt32) {
        writeRegister(offset: register.rawValue, value: value)
    }

    // MARK: - Notifications (device I/O thread or vCPU thread)

    /// The driver kicked queue `index`: through an ioeventfd (the launcher calls this from the
    /// device's I/O thread) or through a QueueNotify write that reached us.
    public func handleNotification(queue index: UInt32) {
        let deliver = registers.withLock { regs in
            guard regs.status.contains(.driverOK), Int(index) < regs.queues.count else {
                regs.statistics.ignoredNotifications += 1
                return false
            }
            return true
        }
        // Outside the register lock: the device may do slow I/O, and vCPUs must not wait on it.
        if deliver { device.processQueue(Int(index)) }
    }

    // MARK: - Decoding

    /// The start of a config-space access of `count` bytes, if it is a 1/2/4/8-byte access
    /// entirely inside the device's configuration space.
    private func configRange(offset: UInt64, count: Int, configSize: Int) -> Int? {
        switch count {
        case 1, 2, 4, 8: break
        default: return nil
        }
        let start = offset - Self.configOffset
        guard start < UInt64(configSize), UInt64(count) <= UInt64(configSize) - start else { return nil }
        return Int(start)
    }

    private func countIgnoredAccess() {
        registers.withLock { $0.statistics.ignoredAccesses += 1 }
    }

    // MARK: - Register reads

    private func readRegister(offset: UInt64) -> UInt32 {
        guard let register = MMIORegister(rawValue: offset) else {
            countIgnoredAccess()
            return 0
        }
        switch register {
        case .magicValue: return Self.magic
        case .version: return Self.version
        case .deviceID: return deviceType
        case .vendorID: return vendorID
        case .interruptStatus: return interruptStatus
        case .configGeneration: return interruptState.bits.withLock { $0.configGeneration }
        case .status: return status.rawValue
        // No shared memory regions: length −1 and base all-ones mean "none".
        case .shmLenLow, .shmLenHigh, .shmBaseLow, .shmBaseHigh: return UInt32.max
        default: break
        }
        return registers.withLock { regs -> UInt32 in
            switch register {
            case .deviceFeatures:
                switch regs.deviceFeaturesSel {
                case 0: return UInt32(truncatingIfNeeded: deviceFeatures)
                case 1: return UInt32(truncatingIfNeeded: deviceFeatures >> 32)
                default: return 0
                }
            case .queueNumMax:
                let index = Int(regs.queueSel)
                return index < queueMaxSizes.count ? UInt32(queueMaxSizes[index]) : 0
            case .queueReady:
                let index = Int(regs.queueSel)
                return index < regs.queues.count && regs.queues[index].ready ? 1 : 0
            default:
                // Write-only registers (and QueueReset, which we do not offer) read as 0.
                return 0
            }
        }
    }

    // MARK: - Register writes

    private func writeRegister(offset: UInt64, value: UInt32) {
        guard let register = MMIORegister(rawValue: offset) else {
            countIgnoredAccess()
            return
        }
        switch register {
        case .queueNotify:
            // Normally an ioeventfd catches this write before it becomes an exit.
            if let forward = kickForwarder.withLock({ $0 }) {
                forward(value)
            } else {
                handleNotification(queue: value)
            }
        case .interruptACK:
            interruptState.bits.withLock { $0.interruptStatus &= ~value }
        default:
            registers.withLock { regs in write(register, value, &regs) }
        }
    }

    private func write(_ register: MMIORegister, _ value: UInt32, _ regs: inout Registers) {
        switch register {
        case .status:
            writeStatus(value, &regs)
        case .deviceFeaturesSel:
            regs.deviceFeaturesSel = value
        case .driverFeaturesSel:
            regs.driverFeaturesSel = value
        case .driverFeatures:
            // Only between DRIVER and FEATURES_OK (virtio §3.1.1 steps 4–5).
            guard regs.status == [.acknowledge, .driver] else {
                regs.statistics.ignoredRegisterWrites += 1
                return
            }
            switch regs.driverFeaturesSel {
            case 0: regs.driverFeatures = regs.driverFeatures & ~0xFFFF_FFFF | UInt64(value)
            case 1: regs.driverFeatures = regs.driverFeatures & 0xFFFF_FFFF | UInt64(value) << 32
            default: if value != 0 { regs.unknownFeaturesAcked = true }
            }
        case .queueSel:
            regs.queueSel = value
        case .queueNum, .queueDescLow, .queueDescHigh, .queueDriverLow, .queueDriverHigh,
             .queueDeviceLow, .queueDeviceHigh:
            guard let index = queueOpenForSetup(regs) else {
                regs.statistics.ignoredRegisterWrites += 1
                return
            }
            let high = UInt64(value) << 32
            let low = UInt64(value)
            switch register {
            case .queueNum: regs.queues[index].size = value
            case .queueDescLow: regs.queues[index].descriptorTable = regs.queues[index].descriptorTable & ~0xFFFF_FFFF | low
            case .queueDescHigh: regs.queues[index].descriptorTable = regs.queues[index].descriptorTable & 0xFFFF_FFFF | high
            case .queueDriverLow: regs.queues[index].driverArea = regs.queues[index].driverArea & ~0xFFFF_FFFF | low
            case .queueDriverHigh: regs.queues[index].driverArea = regs.queues[index].driverArea & 0xFFFF_FFFF | high
            case .queueDeviceLow: regs.queues[index].deviceArea = regs.queues[index].deviceArea & ~0xFFFF_FFFF | low
            case .queueDeviceHigh: regs.queues[index].deviceArea = regs.queues[index].deviceArea & 0xFFFF_FFFF | high
            default: break
            }
        case .queueReady:
            writeQueueReady(value, &regs)
        case .shmSel, .queueReset:
            // No shared memory regions, no VIRTIO_F_RING_RESET: nothing to select or reset.
            break
        default:
            // A read-only register.
            regs.statistics.ignoredAccesses += 1
        }
    }

    /// The selected queue, if its setup registers may be written now: after FEATURES_OK,
    /// before DRIVER_OK, and while the queue is not ready.
    private func queueOpenForSetup(_ regs: Registers) -> Int? {
        guard regs.status == [.acknowledge, .driver, .featuresOK] else { return nil }
        let index = Int(regs.queueSel)
        guard index < regs.queues.count, !regs.queues[index].ready else { return nil }
        return index
    }

    private func writeQueueReady(_ value: UInt32, _ regs: inout Registers) {
        switch value {
        case 0:
            // Stopping a queue is allowed until DRIVER_OK (after that it needs RING_RESET).
            let index = Int(regs.queueSel)
            guard !regs.status.contains(.driverOK), index < regs.queues.count else {
                regs.statistics.ignoredRegisterWrites += 1
                return
            }
            regs.queues[index].ready = false
        case 1:
            guard let index = queueOpenForSetup(regs) else {
                regs.statistics.ignoredRegisterWrites += 1
                return
            }
            // Check the queue now, not at DRIVER_OK: a refused QueueReady reads back 0, which
            // is the only way a virtio-mmio device can say "no" to a queue.
            let q = regs.queues[index]
            guard q.size <= UInt32(Queue.maxSize),
                  (try? Queue.validate(memory: memory, size: UInt16(q.size), layout: layout(of: q),
                                       maxSize: queueMaxSizes[index])) != nil
            else {
                regs.statistics.refusedQueueConfigs += 1
                return
            }
            regs.queues[index].ready = true
        default:
            regs.statistics.ignoredRegisterWrites += 1
        }
    }

    private func layout(of q: QueueRegisters) -> QueueLayout {
        QueueLayout(descriptorTable: GuestAddress(q.descriptorTable), driverArea: GuestAddress(q.driverArea),
                    deviceArea: GuestAddress(q.deviceArea))
    }

    // MARK: - The status state machine (content.tex "Device Initialization")

    private func writeStatus(_ value: UInt32, _ regs: inout Registers) {
        if value == 0 {
            reset(&regs)
            return
        }
        // DEVICE_NEEDS_RESET belongs to the device; Linux writes back what it read, so drop it.
        let requested = DeviceStatus(rawValue: value).subtracting(.deviceNeedsReset)
        let current = regs.status
        guard requested != current else { return }
        let known: DeviceStatus = [.acknowledge, .driver, .featuresOK, .driverOK, .failed]
        // Bits are only ever added, one step at a time; anything else is ignored.
        guard known.isSuperset(of: requested), requested.isSuperset(of: current) else {
            regs.statistics.ignoredStatusWrites += 1
            return
        }
        let added = requested.subtracting(current)
        switch (added, current) {
        case (.failed, _):
            // The driver gave up on us. Nothing to undo; it will reset.
            regs.status = requested
        case (.acknowledge, []),
             (.driver, [.acknowledge]):
            regs.status = requested
        case (.featuresOK, [.acknowledge, .driver]):
            let acked = regs.driverFeatures
            let acceptable = acked & ~deviceFeatures == 0 && acked & VirtioFeature.version1 != 0
                && !regs.unknownFeaturesAcked
            guard acceptable else {
                // Leave FEATURES_OK clear: the driver re-reads Status and sees the refusal.
                regs.statistics.rejectedFeatures += 1
                return
            }
            regs.status = requested
        case (.driverOK, [.acknowledge, .driver, .featuresOK]):
            regs.status = requested
            activate(&regs)
        default:
            regs.statistics.ignoredStatusWrites += 1
        }
    }

    func activate(_ regs: inout Registers, restoring: Bool = false) {
        let features = regs.driverFeatures
        let epoch = interruptState.bits.withLock { $0.epoch }
        let interrupt = VirtioInterrupt(line: line, state: interruptState, epoch: epoch)
        var queues: [Queue] = []
        for (index, q) in regs.queues.enumerated() {
            guard q.ready else {
                queues.append(.disabled(memory: memory))
                continue
            }
            do {
                var queue = try Queue(memory: memory, size: UInt16(q.size), layout: layout(of: q),
                                      maxSize: queueMaxSizes[index],
                                      eventIndex: features & VirtioFeature.ringEventIndex != 0,
                                      indirectDescriptors: features & VirtioFeature.ringIndirectDescriptors != 0)
                queue.interrupt = interrupt
                // A restored queue goes on from the used index in the guest's memory.
                if restoring { try queue.continueFromUsedIndex() }
                queues.append(queue)
            } catch {
                // Checked at QueueReady, so this cannot happen; be safe anyway.
                queues.append(.disabled(memory: memory))
            }
        }
        do {
            try device.activate(features: features, memory: memory, queues: queues, interrupt: interrupt)
        } catch {
            regs.statistics.activationFailures += 1
            interrupt.markNeedsReset()
        }
    }

    /// Status ← 0: forget everything the driver told us, and reset the device.
    private func reset(_ regs: inout Registers) {
        let statistics = regs.statistics
        regs = Registers(queueMaxSizes: queueMaxSizes)
        regs.statistics = statistics
        // Silence every VirtioInterrupt handed out so far before the device winds down.
        interruptState.bits.withLock { bits in
            bits.interruptStatus = 0
            bits.needsReset = false
            bits.epoch &+= 1
        }
        device.reset()
    }
}
