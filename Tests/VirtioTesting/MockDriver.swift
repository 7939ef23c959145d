import GuestMemory
import Virtio
/// Plays the guest's virtio-mmio driver against an `MMIOTransport`, register by register, the
/// way Linux's `virtio_mmio.c` and the virtio core do (virtio §3.1.1):
/// reset → ACKNOWLEDGE → DRIVER → features → FEATURES_OK (and check it stuck) → queues →
/// DRIVER_OK.
public struct MockDriver: Sendable {
    public let transport: MMIOTransport

    public init(transport: MMIOTransport) { self.transport = transport }

    public func read(_ register: MMIORegister) -> UInt32 { transport.readRegister(register) }
    public func write(_ register: MMIORegister, _ value: UInt32) { transport.writeRegister(register, value) }

    public var status: DeviceStatus { DeviceStatus(rawValue: read(.status)) }

    /// Writes 0 to Status and checks it reads back 0.
    public func reset() { write(.status, 0) }

    /// Status ← Status | `bits`, as Linux's `virtio_add_status` does (read, or, write).
    public func addStatus(_ bits: DeviceStatus) { write(.status, read(.status) | bits.rawValue) }

    /// All 64 device feature bits.
    public func deviceFeatures() -> UInt64 {
        write(.deviceFeaturesSel, 0)
        let low = UInt64(read(.deviceFeatures))
        write(.deviceFeaturesSel, 1)
        return low | UInt64(read(.deviceFeatures)) << 32
    }

    /// Writes `features` and sets FEATURES_OK; returns whether the device kept it set.
    public func negotiate(_ features: UInt64) -> Bool {
        write(.driverFeaturesSel, 0)
        write(.driverFeatures, UInt32(truncatingIfNeeded: features))
        write(.driverFeaturesSel, 1)
        write(.driverFeatures, UInt32(truncatingIfNeeded: features >> 32))
        addStatus(.featuresOK)
        return status.contains(.featuresOK)
    }

    /// Programs queue `index` and sets QueueReady; returns whether it reads back 1.
    public func setUpQueue(_ index: UInt32, size: UInt16, layout: QueueLayout) -> Bool {
        write(.queueSel, index)
        guard read(.queueReady) == 0, read(.queueNumMax) != 0 else { return false }
        write(.queueNum, UInt32(size))
        write(.queueDescLow, UInt32(truncatingIfNeeded: layout.descriptorTable.rawValue))
        write(.queueDescHigh, UInt32(truncatingIfNeeded: layout.descriptorTable.rawValue >> 32))
        write(.queueDriverLow, UInt32(truncatingIfNeeded: layout.driverArea.rawValue))
        write(.queueDriverHigh, UInt32(truncatingIfNeeded: layout.driverArea.rawValue >> 32))
        write(.queueDeviceLow, UInt32(truncatingIfNeeded: layout.deviceArea.rawValue))
        write(.queueDeviceHigh, UInt32(truncatingIfNeeded: layout.deviceArea.rawValue >> 32))
        write(.queueReady, 1)
        return read(.queueReady) == 1
    }

    /// The whole initialization sequence. `features` defaults to everything offered; queue
    /// `i` is set up from `queues[i]`. Returns the negotiated features.
    @discardableResult
    public func initialize(features: UInt64? = nil, queues: [(size: UInt16, layout: QueueLayout)])
        throws(MockDriverError) -> UInt64 {
        let magic = read(.magicValue)
        let version = read(.version)
        guard magic == MMIOTransport.magic, version == 2 else { throw .notVirtioMMIO(magic: magic, version: version) }
        reset()
        addStatus(.acknowledge)
        addStatus(.driver)
        let wanted = features ?? deviceFeatures()
        guard negotiate(wanted) else {
            addStatus(.failed)
            throw .featuresRejected(wanted)
        }
        for (index, queue) in queues.enumerated() {
            guard setUpQueue(UInt32(index), size: queue.size, layout: queue.layout) else {
                addStatus(.failed)
                throw .queueRefused(UInt32(index))
            }
        }
        addStatus(.driverOK)
        return wanted
    }

    /// `initialize` with the rings of some mock queues.
    @discardableResult
    public func initialize(features: UInt64? = nil, queues: [MockDriverQueue]) throws(MockDriverError) -> UInt64 {
        try initialize(features: features, queues: queues.map { (size: $0.size, layout: $0.layout) })
    }

    /// A QueueNotify write (what an ioeventfd would swallow).
    public func kick(_ queue: UInt32) { write(.queueNotify, queue) }

    /// Reads InterruptStatus and acknowledges what it found, like Linux's `vm_interrupt`.
    @discardableResult
    public func acknowledgeInterrupt() -> UInt32 {
        let bits = read(.interruptStatus)
        write(.interruptACK, bits)
        return bits
    }
}
