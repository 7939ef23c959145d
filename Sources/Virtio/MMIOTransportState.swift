import GuestMemory
import Snapshot

// A snapshot of a virtio-mmio transport: the status the driver reached, the features it
// acked, each queue's size and addresses, and the interrupt bits it has not acknowledged.
// Restoring it into a transport over the same device (and the restored guest memory) brings
// the device back to life without the driver noticing: if the driver had set DRIVER_OK, the
// device is activated again with queues that go on from the used index in memory.
extension MMIOTransport {
    public func saveState(to writer: inout StateWriter) {
        let regs = registers.withLock { $0 }
        let bits = interruptState.bits.withLock { $0 }
        writer.u32(deviceType)
        writer.u64(deviceFeatures)
        writer.u32(regs.status.rawValue)
        writer.u32(regs.deviceFeaturesSel)
        writer.u32(regs.driverFeaturesSel)
        writer.u64(regs.driverFeatures)
        writer.bool(regs.unknownFeaturesAcked)
        writer.u32(regs.queueSel)
        writer.u32(UInt32(regs.queues.count))
        for queue in regs.queues {
            writer.u32(queue.size)
            writer.bool(queue.ready)
            writer.u64(queue.descriptorTable)
            writer.u64(queue.driverArea)
            writer.u64(queue.deviceArea)
        }
        writer.u32(bits.interruptStatus)
        writer.bool(bits.needsReset)
        writer.u32(bits.configGeneration)
        device.saveState(to: &writer)
    }

    /// Puts back what `saveState` wrote, into a transport that has never been used. Refuses a
    /// state for another kind of device, features this device does not offer, or queues it
    /// does not have or that do not fit in guest memory.
    public func restoreState(from reader: inout StateReader) throws(SnapshotError) {
        let type = try reader.u32()
        guard type == deviceType else { throw .malformed("a virtio device of type \(type) where type \(deviceType) belongs") }
        let offered = try reader.u64()
        guard offered & ~deviceFeatures == 0 else {
            throw .incompatible("virtio device type \(type) was offered features 0x\(String(offered, radix: 16)); this one offers 0x\(String(deviceFeatures, radix: 16))")
        }
        var regs = Registers(queueMaxSizes: queueMaxSizes)
        regs.status = DeviceStatus(rawValue: try reader.u32())
        regs.deviceFeaturesSel = try reader.u32()
        regs.driverFeaturesSel = try reader.u32()
        regs.driverFeatures = try reader.u64()
        regs.unknownFeaturesAcked = try reader.bool()
        regs.queueSel = try reader.u32()
        guard regs.driverFeatures & ~deviceFeatures == 0 else { throw .malformed("virtio device type \(type) acked features it was not offered") }
        let known: DeviceStatus = [.acknowledge, .driver, .featuresOK, .driverOK, .failed]
        guard known.isSuperset(of: regs.status) else { throw .malformed("virtio status 0x\(String(regs.status.rawValue, radix: 16))") }
        // Only a status the driver can reach through `writeStatus`: the bits in their order
        // (virtio §3.1.1), FAILED at any point; FEATURES_OK only for features it accepts; a
        // queue set up only from FEATURES_OK on. Anything else would activate a device in a
        // state no driver could have put it in.
        let steps: [DeviceStatus] = [[], [.acknowledge], [.acknowledge, .driver], [.acknowledge, .driver, .featuresOK],
                                     [.acknowledge, .driver, .featuresOK, .driverOK]]
        guard steps.contains(regs.status.subtracting(.failed)) else {
            throw .malformed("virtio status 0x\(String(regs.status.rawValue, radix: 16)) is not one a driver reaches")
        }
        if regs.status.contains(.featuresOK) {
            guard regs.driverFeatures & VirtioFeature.version1 != 0, !regs.unknownFeaturesAcked else {
                throw .malformed("virtio device type \(type) has FEATURES_OK for features it would have refused")
            }
        }
        let count = try reader.count(limit: queueMaxSizes.count, of: "queues")
        guard count == queueMaxSizes.count else { throw .malformed("virtio device type \(type) with \(count) queues, not \(queueMaxSizes.count)") }
        for index in 0..<count {
            var queue = QueueRegisters(size: try reader.u32())
            queue.ready = try reader.bool()
            queue.descriptorTable = try reader.u64()
            queue.driverArea = try reader.u64()
            queue.deviceArea = try reader.u64()
            guard !queue.ready || regs.status.contains(.featuresOK) else {
                throw .malformed("queue \(index) of virtio device type \(type) is ready before FEATURES_OK")
            }
            if queue.ready {
                guard queue.size <= UInt32(queueMaxSizes[index]),
                      (try? Queue.validate(memory: memory, size: UInt16(queue.size), layout: QueueLayout(
                        descriptorTable: GuestAddress(queue.descriptorTable), driverArea: GuestAddress(queue.driverArea),
                        deviceArea: GuestAddress(queue.deviceArea)), maxSize: queueMaxSizes[index])) != nil
                else { throw .malformed("queue \(index) of virtio device type \(type) does not fit in guest memory") }
            }
            regs.queues[index] = queue
        }
        let interruptStatus = try reader.u32()
        let needsReset = try reader.bool()
        let generation = try reader.u32()
        try device.restoreState(from: &reader)
        interruptState.bits.withLock { bits in
            bits.interruptStatus = interruptStatus & 0x3
            bits.needsReset = needsReset
            bits.configGeneration = generation
        }
        let restored = regs
        registers.withLock { regs in
            let statistics = regs.statistics
            regs = restored
            regs.statistics = statistics
            if regs.status.contains(.driverOK) && !needsReset { activate(&regs, restoring: true) }
        }
    }

    /// Whether queue `index` was set up by the driver: a restored machine rings each such
    /// queue's doorbell once, for requests the driver published before the snapshot.
    public func isQueueReady(_ index: Int) -> Bool {
        registers.withLock { index < $0.queues.count && $0.queues[index].ready }
    }
}
