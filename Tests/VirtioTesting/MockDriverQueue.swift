import Virtio
import GuestMemory

/// What went wrong in a mock driver: a test set-up problem, not a device finding.
public enum MockDriverError: Error, Equatable, Sendable {
    case outOfDescriptors(needed: Int, free: Int)
    case outOfDataSpace(requested: UInt64)
    case memory(GuestMemoryError)
    /// The transport is not a virtio-mmio v2 device.
    case notVirtioMMIO(magic: UInt32, version: UInt32)
    /// The device left FEATURES_OK clear.
    case featuresRejected(UInt64)
    /// QueueReady read back 0 (the queue is absent, or its configuration was refused).
    case queueRefused(UInt32)
    /// A mock queue's base address is not page-aligned or too high for a legacy layout.
    case invalidBase(GuestAddress)
}

/// A descriptor exactly as a driver would write it, valid or not.
public struct RawDescriptor: Sendable, Hashable {
    public var address: GuestAddress
    public var length: UInt32
    public var flags: DescriptorFlags
    public var next: UInt16

    public init(address: GuestAddress, length: UInt32, flags: DescriptorFlags = [], next: UInt16 = 0) {
        self.address = address
        self.length = length
        self.flags = flags
        self.next = next
    }
}

/// A chain a `MockDriverQueue` published: where its buffers are, to check the device's work.
public struct MockChain: Sendable {
    public let head: UInt16
    public let readable: [GuestBuffer]
    public let writable: [GuestBuffer]
    /// The indirect table, if the chain was published as one.
    public let indirectTable: GuestAddress?
}

/// An entry of the used ring.
public struct UsedElement: Sendable, Hashable {
    public let id: UInt32
    public let length: UInt32

    public init(id: UInt32, length: UInt32) {
        self.id = id
        self.length = length
    }
}

/// The driver's side of a split virtqueue, in a `GuestMemory` the test owns.
///
/// It lays out a descriptor table, an available ring and a used ring, plus a data area for
/// buffers, and plays the guest driver: add chains (direct or through an indirect table),
/// publish them, read used elements back and recycle their descriptors. For hostile-guest
/// tests it also writes any raw value anywhere — descriptors, ring entries, indices, flags.
///
/// Not thread-safe: one test, one mock.
public final class MockDriverQueue {
    public let memory: GuestMemory
    public let size: UInt16
    public let layout: QueueLayout
    public let dataArea: GuestAddress
    public let dataAreaSize: UInt64

    private var dataUsed: UInt64 = 0
    private var freeDescriptors: [UInt16]
    private var chainDescriptors: [UInt16: [UInt16]] = [:]
    /// The next avail.idx to publish (entries up to here are written into the ring).
    public private(set) var pendingAvailIndex: UInt16 = 0
    /// The used.idx up to which `popUsed()` has read.
    public private(set) var lastUsedIndex: UInt16 = 0

    /// A queue whose rings are at `layout`, with buffers carved from `dataArea`. Zeroes the rings.
    public init(memory: GuestMemory, size: UInt16, layout: QueueLayout,
                dataArea: GuestAddress, dataAreaSize: UInt64) throws(MockDriverError) {
        self.memory = memory
        self.size = size
        self.layout = layout
        self.dataArea = dataArea
        self.dataAreaSize = dataAreaSize
        freeDescriptors = (0 ..< size).reversed()
        do {
            try memory.zero(at: layout.descriptorTable, length: QueueLayout.descriptorTableSize(queueSize: size))
            try memory.zero(at: layout.driverArea, length: QueueLayout.driverAreaSize(queueSize: size))
            try memory.zero(at: layout.deviceArea, length: QueueLayout.deviceAreaSize(queueSize: size))
        } catch { throw .memory(error) }
    }

    /// A queue laid out from `base` (page-aligned) the legacy way — table, avail ring, used
    /// ring on the next page — followed by `dataAreaSize` bytes of buffer space.
    public convenience init(memory: GuestMemory, size: UInt16, base: GuestAddress,
                            dataAreaSize: UInt64 = 0x10000) throws(MockDriverError) {
        guard base.isAligned(to: 4096), base.rawValue >> 12 <= UInt64(UInt32.max),
              let layout = QueueLayout.legacy(pfn: UInt32(base.rawValue >> 12), queueSize: size),
              let data = layout.deviceArea.adding(QueueLayout.deviceAreaSize(queueSize: size))?.alignedUp(to: 4096)
        else { throw .invalidBase(base) }
        try self.init(memory: memory, size: size, layout: layout, dataArea: data, dataAreaSize: dataAreaSize)
    }

    /// The device side of this queue.
    public func makeQueue(maxSize: UInt16 = Queue.maxSize, eventIndex: Bool = false,
                          indirectDescriptors: Bool = true) throws(VirtqueueError) -> Queue {
        try Queue(memory: memory, size: size, layout: layout, maxSize: maxSize,
                  eventIndex: eventIndex, indirectDescriptors: indirectDescriptors)
    }

    // MARK: - Buffers

    /// `length` bytes of the data area.
    public func allocate(_ length: UInt64, alignment: UInt64 = 16) throws(MockDriverError) -> GuestAddress {
        let start = (dataUsed + alignment - 1) / alignment * alignment
        guard start + length <= dataAreaSize else { throw .outOfDataSpace(requested: length) }
        dataUsed = start + length
        return dataArea + start
    }

    /// Forget every allocation (the buffers of chains still in flight become garbage).
    public func resetDataArea() { dataUsed = 0 }

    public func read(_ buffer: GuestBuffer) throws(MockDriverError) -> [UInt8] {
        do { return try memory.readBytes(at: buffer.address, count: Int(buffer.length)) } catch { throw .memory(error) }
    }

    // MARK: - Well-formed chains

    /// Adds a chain of device-readable buffers holding `readable` and device-writable buffers
    /// of the `writable` lengths (zero-filled), directly or through one indirect table, and
    /// publishes it unless `publish` is false.
    @discardableResult
    public func addChain(readable: [[UInt8]] = [], writable: [UInt32] = [], indirect: Bool = false,
                         publish: Bool = true) throws(MockDriverError) -> MockChain {
        var readBuffers: [GuestBuffer] = []
        var writeBuffers: [GuestBuffer] = []
        for bytes in readable {
            let address = try allocate(UInt64(bytes.count))
            do { try memory.write(bytes, at: address) } catch { throw .memory(error) }
            readBuffers.append(GuestBuffer(address: address, length: UInt32(bytes.count)))
        }
        for length in writable {
            let address = try allocate(UInt64(length))
            do { try memory.zero(at: address, length: UInt64(length)) } catch { throw .memory(error) }
            writeBuffers.append(GuestBuffer(address: address, length: length))
        }
        let raw = readBuffers.map { RawDescriptor(address: $0.address, length: $0.length) }
            + writeBuffers.map { RawDescriptor(address: $0.address, length: $0.length, flags: .write) }
        let (head, table) = indirect ? try addIndirectChain(raw, publish: publish) : (try addRawChain(raw, publish: publish), nil)
        return MockChain(head: head, readable: readBuffers, writable: writeBuffers, indirectTable: table)
    }

    /// Writes `descriptors` into free slots of the descriptor table, linking them with NEXT
    /// (any `next` given is overwritten; other flags are kept as given, however wrong), and
    /// puts the head in the available ring. Returns the head.
    @discardableResult
    public func addRawChain(_ descriptors: [RawDescriptor], publish: Bool = true) throws(MockDriverError) -> UInt16 {
        guard !descriptors.isEmpty, descriptors.count <= freeDescriptors.count else {
            throw .outOfDescriptors(needed: descriptors.count, free: freeDescriptors.count)
        }
        let indices = (0 ..< descriptors.count).map { _ in freeDescriptors.removeLast() }
        for (i, descriptor) in descriptors.enumerated() {
            var d = descriptor
            if i + 1 < descriptors.count {
                d.flags.insert(.next)
                d.next = indices[i + 1]
            }
            try writeDescriptor(indices[i], d)
        }
        chainDescriptors[indices[0]] = indices
        try pushAvail(head: indices[0])
        if publish { try self.publish() }
        return indices[0]
    }

    /// Writes `descriptors` as an indirect table in the data area (linked with NEXT from entry
    /// 0) and one INDIRECT descriptor pointing at it. Returns the head and the table address.
    public func addIndirectChain(_ descriptors: [RawDescriptor], publish: Bool = true)
        throws(MockDriverError) -> (head: UInt16, table: GuestAddress) {
        let table = try allocate(UInt64(descriptors.count) * 16)
        for (i, descriptor) in descriptors.enumerated() {
            var d = descriptor
            if i + 1 < descriptors.count {
                d.flags.insert(.next)
                d.next = UInt16(i + 1)
            }
            try writeDescriptor(in: table, index: UInt16(i), d)
        }
        let head = try addRawChain(
            [RawDescriptor(address: table, length: UInt32(descriptors.count * 16), flags: .indirect)], publish: publish)
        return (head, table)
    }

    /// Stores `avail.idx` with release ordering, making every pushed entry visible.
    public func publish() throws(MockDriverError) {
        do { try memory.storeRelease16(pendingAvailIndex, at: layout.driverArea + 2) } catch { throw .memory(error) }
    }

    // MARK: - The used ring

    /// The next used element the device published, if any; recycles its descriptors.
    public func popUsed() throws(MockDriverError) -> UsedElement? {
        do {
            let published = try memory.loadAcquire16(at: layout.deviceArea + 2)
            guard published != lastUsedIndex else { return nil }
            let slot = layout.deviceArea + 4 + 8 * UInt64(lastUsedIndex % size)
            let element = UsedElement(id: try memory.read(UInt32.self, at: slot),
                                      length: try memory.read(UInt32.self, at: slot + 4))
            lastUsedIndex &+= 1
            if element.id < UInt32(size), let indices = chainDescriptors.removeValue(forKey: UInt16(element.id)) {
                freeDescriptors.append(contentsOf: indices)
            }
            return element
        } catch { throw .memory(error) }
    }

    /// Every used element published since the last call.
    public func drainUsed() throws(MockDriverError) -> [UsedElement] {
        var elements: [UsedElement] = []
        while let element = try popUsed() { elements.append(element) }
        return elements
    }

    // MARK: - Raw access, for hostile-guest tests

    public func writeDescriptor(_ index: UInt16, _ descriptor: RawDescriptor) throws(MockDriverError) {
        try writeDescriptor(in: layout.descriptorTable, index: index, descriptor)
    }

    public func writeDescriptor(in table: GuestAddress, index: UInt16, _ d: RawDescriptor) throws(MockDriverError) {
        let entry = table + UInt64(index) * 16
        do {
            try memory.write(d.address.rawValue, at: entry)
            try memory.write(d.length, at: entry + 8)
            try memory.write(d.flags.rawValue, at: entry + 12)
            try memory.write(d.next, at: entry + 14)
        } catch { throw .memory(error) }
    }

    /// Puts `head` in the next available-ring slot without publishing it.
    public func pushAvail(head: UInt16) throws(MockDriverError) {
        do { try memory.write(head, at: layout.driverArea + 4 + 2 * UInt64(pendingAvailIndex % size)) } catch {
            throw .memory(error)
        }
        pendingAvailIndex &+= 1
    }

    /// Publishes an arbitrary `avail.idx` (and continues from there).
    public func setAvailIndex(_ index: UInt16) throws(MockDriverError) {
        pendingAvailIndex = index
        try publish()
    }

    public func setAvailFlags(_ flags: UInt16) throws(MockDriverError) {
        do { try memory.write(flags, at: layout.driverArea) } catch { throw .memory(error) }
    }

    /// `used_event`: "interrupt me when used.idx passes this".
    public func setUsedEvent(_ index: UInt16) throws(MockDriverError) {
        do { try memory.write(index, at: layout.driverArea + 4 + 2 * UInt64(size)) } catch { throw .memory(error) }
    }

    public func usedFlags() throws(MockDriverError) -> UInt16 {
        do { return try memory.read(UInt16.self, at: layout.deviceArea) } catch { throw .memory(error) }
    }

    public func usedIndex() throws(MockDriverError) -> UInt16 {
        do { return try memory.read(UInt16.self, at: layout.deviceArea + 2) } catch { throw .memory(error) }
    }

    /// `avail_event`: "kick me when you publish this entry".
    public func availEvent() throws(MockDriverError) -> UInt16 {
        do { return try memory.read(UInt16.self, at: layout.deviceArea + 4 + 8 * UInt64(size)) } catch {
            throw .memory(error)
        }
    }

    public var freeDescriptorCount: Int { freeDescriptors.count }
}
