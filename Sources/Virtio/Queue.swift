import GuestMemory

/// Where the three parts of a split virtqueue live in guest memory.
public struct QueueLayout: Sendable, Hashable {
    /// `virtq_desc[size]`, 16-byte aligned.
    public var descriptorTable: GuestAddress
    /// The available ring (`flags, idx, ring[size], used_event`), 2-byte aligned.
    public var driverArea: GuestAddress
    /// The used ring (`flags, idx, ring[size]{id, len}, avail_event`), 4-byte aligned.
    public var deviceArea: GuestAddress

    public init(descriptorTable: GuestAddress, driverArea: GuestAddress, deviceArea: GuestAddress) {
        self.descriptorTable = descriptorTable
        self.driverArea = driverArea
        self.deviceArea = deviceArea
    }

    public static func descriptorTableSize(queueSize: UInt16) -> UInt64 { 16 * UInt64(queueSize) }
    public static func driverAreaSize(queueSize: UInt16) -> UInt64 { 6 + 2 * UInt64(queueSize) }
    public static func deviceAreaSize(queueSize: UInt16) -> UInt64 { 6 + 8 * UInt64(queueSize) }

    /// The legacy (virtio 0.9.5, lguest, virtio-mmio v1, legacy PCI) layout: one contiguous
    /// block starting at page `pfn` — descriptor table, available ring, padding up to
    /// `alignment`, used ring. `nil` if the block would not fit in the address space.
    public static func legacy(pfn: UInt32, queueSize: UInt16, pageSize: UInt64 = 4096,
                              alignment: UInt64 = 4096) -> QueueLayout? {
        let (base, overflow) = UInt64(pfn).multipliedReportingOverflow(by: pageSize)
        guard !overflow else { return nil }
        let table = GuestAddress(base)
        guard let avail = table.adding(descriptorTableSize(queueSize: queueSize)),
              let availEnd = avail.adding(driverAreaSize(queueSize: queueSize)),
              let used = availEnd.alignedUp(to: alignment),
              used.adding(deviceAreaSize(queueSize: queueSize)) != nil
        else { return nil }
        return QueueLayout(descriptorTable: table, driverArea: avail, deviceArea: used)
    }

    /// Bytes a legacy queue occupies (Linux's `vring_size(num, align)`).
    public static func legacySize(queueSize: UInt16, alignment: UInt64 = 4096) -> UInt64 {
        let front = descriptorTableSize(queueSize: queueSize) + driverAreaSize(queueSize: queueSize)
        return (front + alignment - 1) / alignment * alignment + deviceAreaSize(queueSize: queueSize)
    }
}

/// The device's side of one split virtqueue (split-ring.tex, virtio 1.x §2.7).
///
/// A `Queue` is a value owned by one device and used from that device's I/O thread. The
/// device pops chains, does the work, pushes used elements and asks whether the guest wants
/// an interrupt:
///
/// ```swift
/// while let chain = try queue.popAvailable() {
///     var writer = chain.writer()
///     try writer.write(response)
///     try queue.addUsed(head: chain.head, length: writer.bytesWritten)
/// }
/// queue.notifyGuestIfNeeded()
/// ```
///
/// Everything the guest wrote is hostile: the queue reads each ring field once, checks every
/// index, and turns bad input into a `VirtqueueError` — one failed request, or a broken queue
/// that stops touching guest memory until the driver resets the device. It never traps and
/// never loops more than the ring size on guest input.
public struct Queue: Sendable {
    public let memory: GuestMemory
    /// Number of entries (a power of two); 0 for a queue the driver never enabled.
    public let size: UInt16
    public let layout: QueueLayout
    /// False for a queue the driver did not set ready: it has no rings and pops nothing.
    public let isEnabled: Bool
    /// `VIRTIO_F_RING_EVENT_IDX` was negotiated.
    public let eventIndex: Bool
    /// `VIRTIO_F_RING_INDIRECT_DESC` was negotiated.
    public let indirectDescriptors: Bool
    /// Where used-buffer interrupts and DEVICE_NEEDS_RESET go; the transport fills it in.
    public var interrupt: VirtioInterrupt?

    /// The next available-ring entry the device will take (the spec's `last_avail_idx`).
    public private(set) var nextAvail: UInt16 = 0
    /// The device's copy of `used.idx`. Never read back from the guest.
    public private(set) var nextUsed: UInt16 = 0
    /// Used elements written after `nextUsed` but not yet published (`stageUsed`).
    private var staged: UInt16 = 0
    /// A structural error happened; the queue refuses all work until it is rebuilt.
    public private(set) var isBroken = false
    public private(set) var statistics = QueueStatistics()
    /// Whether the device currently asks for kicks (see `disableNotifications()`).
    public private(set) var notificationsEnabled = true

    /// The descriptor array of the last chain popped. Once the device has let go of that
    /// chain, the next walk fills the same storage again instead of allocating.
    private var recycledDescriptors: [Descriptor] = []

    /// `used.idx` when `needsNotification()` last ran, and how many elements were added since.
    private var usedAtLastCheck: UInt16 = 0
    private var addedSinceCheck: UInt32 = 0

    /// The largest queue the split layout allows.
    public static let maxSize: UInt16 = 32768

    /// A queue over rings the driver placed at `layout`, after checking them: `size` a power of
    /// two no larger than `maxSize`, each area aligned (16/2/4) and entirely in guest memory.
    public init(memory: GuestMemory, size: UInt16, layout: QueueLayout, maxSize: UInt16 = Queue.maxSize,
                eventIndex: Bool = false, indirectDescriptors: Bool = true) throws(VirtqueueError) {
        try Queue.validate(memory: memory, size: size, layout: layout, maxSize: maxSize)
        self.memory = memory
        self.size = size
        self.layout = layout
        self.isEnabled = true
        self.eventIndex = eventIndex
        self.indirectDescriptors = indirectDescriptors
    }

    /// A legacy queue: one block at page frame `pfn` with the rings `alignment` apart.
    public init(memory: GuestMemory, size: UInt16, legacyPFN pfn: UInt32, pageSize: UInt64 = 4096,
                alignment: UInt64 = 4096, maxSize: UInt16 = Queue.maxSize,
                eventIndex: Bool = false, indirectDescriptors: Bool = true) throws(VirtqueueError) {
        guard let layout = QueueLayout.legacy(pfn: pfn, queueSize: size, pageSize: pageSize, alignment: alignment) else {
            throw .areaOutOfBounds(.descriptorTable, GuestAddress(UInt64(pfn) &* pageSize),
                                   length: QueueLayout.legacySize(queueSize: size, alignment: alignment))
        }
        try self.init(memory: memory, size: size, layout: layout, maxSize: maxSize,
                      eventIndex: eventIndex, indirectDescriptors: indirectDescriptors)
    }

    /// For a queue rebuilt from a snapshot: go on from the used index the guest's memory
    /// holds. Whatever chains the device had taken and not yet given back (a receive buffer
    /// waiting for a packet, a frame held back by a rate limit) are taken again: a device only
    /// ever holds the chains it took last, so they are exactly the ones past `used.idx`.
    public mutating func continueFromUsedIndex() throws(VirtqueueError) {
        guard isEnabled else { return }
        let used: UInt16
        do { used = try memory.loadAcquire16(at: usedIndexAddress) } catch { throw .ringAccess(error) }
        nextAvail = used
        nextUsed = used
        usedAtLastCheck = used
        staged = 0
        addedSinceCheck = 0
    }

    /// A queue the driver did not enable. It pops nothing and touches no memory.
    public static func disabled(memory: GuestMemory) -> Queue { Queue(disabled: memory) }

    private init(disabled memory: GuestMemory) {
        self.memory = memory
        self.size = 0
        self.layout = QueueLayout(descriptorTable: 0, driverArea: 0, deviceArea: 0)
        self.isEnabled = false
        self.eventIndex = false
        self.indirectDescriptors = false
    }

    /// The checks `init` makes, for a transport deciding whether to accept QueueReady.
    public static func validate(memory: GuestMemory, size: UInt16, layout: QueueLayout,
                                maxSize: UInt16 = Queue.maxSize) throws(VirtqueueError) {
        guard size != 0, size.nonzeroBitCount == 1, size <= min(maxSize, Queue.maxSize) else {
            throw .invalidSize(size: size, maxSize: min(maxSize, Queue.maxSize))
        }
        let areas: [(QueueArea, GuestAddress, UInt64, UInt64)] = [
            (.descriptorTable, layout.descriptorTable, 16, QueueLayout.descriptorTableSize(queueSize: size)),
            (.driverArea, layout.driverArea, 2, QueueLayout.driverAreaSize(queueSize: size)),
            (.deviceArea, layout.deviceArea, 4, QueueLayout.deviceAreaSize(queueSize: size)),
        ]
        for (area, address, alignment, length) in areas {
            guard address.isAligned(to: alignment) else { throw .misalignedArea(area, address) }
            guard memory.contains(address, length: length) else {
                throw .areaOutOfBounds(area, address, length: length)
            }
        }
    }

    // MARK: - Ring addresses (all inside the areas `validate` checked)

    private var availIndexAddress: GuestAddress { layout.driverArea + 2 }
    private func availRingAddress(_ slot: UInt16) -> GuestAddress {
        layout.driverArea + 4 + 2 * UInt64(slot & (size - 1))
    }
    /// `used_event`, just past the available ring.
    private var usedEventAddress: GuestAddress { layout.driverArea + 4 + 2 * UInt64(size) }
    private var usedIndexAddress: GuestAddress { layout.deviceArea + 2 }
    private func usedRingAddress(_ slot: UInt16) -> GuestAddress {
        layout.deviceArea + 4 + 8 * UInt64(slot & (size - 1))
    }
    /// `avail_event`, just past the used ring.
    private var availEventAddress: GuestAddress { layout.deviceArea + 4 + 8 * UInt64(size) }

    // MARK: - Taking requests

    /// The next request the driver published, or `nil` if there is none.
    ///
    /// - A head index outside the queue throws `.headOutOfRange`; the entry is consumed.
    /// - A chain that breaks a rule throws `.malformedChain(head:_:)`; the queue has already
    ///   returned it to the driver with a used length of 0, so its descriptors are not lost.
    /// - `avail.idx` running more than `size` entries ahead throws `.availIndexJump` and breaks
    ///   the queue: every later call throws `.queueBroken` without reading guest memory.
    ///
    /// Each error is counted in `statistics`. After a request error, keep popping.
    public mutating func popAvailable() throws(VirtqueueError) -> DescriptorChain? {
        guard isEnabled else { return nil }
        guard !isBroken else { throw .queueBroken }

        // Journey 6: the guest's kick arrives here as a call from the device's I/O thread —
        // the vCPU wrote QueueNotify, KVM matched the ioeventfd and woke us, and we never left
        // the kernel on the way. A kick carries no data; it only says "look at the available
        // ring". So we read `avail.idx` (with acquire ordering, see below), and if it is ahead
        // of the entry we took last, the next slot of the ring holds the head of a chain. The
        // chain is walked in full here, once, before the device sees any of it: from now on
        // the request is a Swift value and the guest can no longer change what we act on.
        var published = try loadAvailIndex()
        if published == nextAvail {
            guard eventIndex, notificationsEnabled else { return nil }
            // Empty: with EVENT_IDX, ask for a kick when the driver publishes entry
            // `nextAvail`, then look once more in case it already did.
            do { try memory.write(nextAvail, at: availEventAddress) } catch { throw breakQueue(.ringAccess(error)) }
            // Full fence: orders the avail_event store above before the avail.idx re-load below.
            GuestMemory.fullBarrier()
            published = try loadAvailIndex()
            if published == nextAvail { return nil }
        }

        let pending = published &- nextAvail
        guard pending <= size else {
            throw breakQueue(.availIndexJump(lastSeen: nextAvail, published: published, size: size))
        }

        let head: UInt16
        do { head = try memory.loadRelaxed16(at: availRingAddress(nextAvail)) } catch {
            throw breakQueue(.ringAccess(error))
        }
        nextAvail &+= 1

        guard head < size else {
            count(.headOutOfRange)
            throw .headOutOfRange(head: head, size: size)
        }

        // Journey 7: walk the chain — every `next` checked, a hop budget against loops,
        // indirect tables resolved, every buffer checked against guest RAM.
        do throws(ChainDefect) {
            let chain = try DescriptorChain.walk(
                memory: memory, table: layout.descriptorTable, queueSize: size, head: head,
                indirectAllowed: indirectDescriptors, storage: &recycledDescriptors)
            statistics.chainsPopped += 1
            return chain
        } catch {
            count(error.kind)
            // Give the descriptors back so the driver does not leak them; it sees length 0.
            try writeUsedElement(head: head, length: 0)
            try publishUsed()
            throw .malformedChain(head: head, error)
        }
    }

    /// Whether the driver has published a request not taken yet: one load of `avail.idx`, which
    /// changes nothing (a device polling the ring calls it in a loop). False for a disabled or
    /// broken queue, or a ring outside guest memory (`popAvailable` reports that).
    public func hasAvailable() -> Bool {
        guard isEnabled, !isBroken else { return false }
        guard let published = try? memory.loadAcquire16(at: availIndexAddress) else { return false }
        return published != nextAvail
    }

    /// Acquire-loads `avail.idx`.
    private mutating func loadAvailIndex() throws(VirtqueueError) -> UInt16 {
        do {
            // Acquire: orders this avail.idx load before our reads of ring entries and descriptors.
            return try memory.loadAcquire16(at: availIndexAddress)
        } catch {
            throw breakQueue(.ringAccess(error))
        }
    }

    // MARK: - Completing requests

    /// Publishes the used element `(head, length)`: `length` is the number of bytes the device
    /// wrote into the chain's writable buffers (0 for a request with no response).
    public mutating func addUsed(head: UInt16, length: UInt32) throws(VirtqueueError) {
        try stageUsed(head: head, length: length)
        try publishUsed()
    }

    /// Writes the used element `(head, length)` into the ring without moving `used.idx`: the
    /// driver does not see it until `publishUsed()`. For one reply spread over several chains
    /// (a mergeable-buffer packet), which the driver must see whole or not at all.
    public mutating func stageUsed(head: UInt16, length: UInt32) throws(VirtqueueError) {
        guard !isBroken else { throw .queueBroken }
        guard head < size else { throw .usedHeadOutOfRange(head: head, size: size) }
        try writeUsedElement(head: head, length: length)
    }

    /// Moves `used.idx` past every element staged since the last publication, in one store.
    public mutating func publishUsed() throws(VirtqueueError) {
        guard staged > 0 else { return }
        guard !isBroken else { throw .queueBroken }
        do {
            // Journey 10: publish. The device's writes into the chains' buffers and the elements
            // above must reach the driver before the index that announces them.
            // Release: orders the buffer and used-element writes before this used.idx store.
            try memory.storeRelease16(nextUsed &+ staged, at: usedIndexAddress)
        } catch {
            throw breakQueue(.ringAccess(error))
        }
        nextUsed &+= staged
        addedSinceCheck &+= UInt32(staged)
        statistics.usedPublished += UInt64(staged)
        staged = 0
    }

    private mutating func writeUsedElement(head: UInt16, length: UInt32) throws(VirtqueueError) {
        // More staged elements than ring slots would overwrite the first: a device bug.
        guard staged < size else { throw breakQueue(.queueBroken) }
        let slot = usedRingAddress(nextUsed &+ staged)
        do {
            try memory.write(UInt32(head), at: slot)
            try memory.write(length, at: slot + 4)
        } catch {
            throw breakQueue(.ringAccess(error))
        }
        staged &+= 1
    }

    // MARK: - Interrupt suppression (used buffer notifications)

    /// Whether the driver wants an interrupt for the used elements added since the last call.
    ///
    /// Without EVENT_IDX: yes unless `avail.flags` has NO_INTERRUPT. With EVENT_IDX: yes iff
    /// `used_event` lies in the window of indices just published, computed in 16 bits so it
    /// survives the wrap from 65535 to 0: `(new − used_event − 1) mod 2¹⁶ < (new − old) mod 2¹⁶`.
    /// Nothing added since the last call means no interrupt.
    public mutating func needsNotification() -> Bool {
        guard isEnabled, !isBroken, addedSinceCheck > 0 else { return false }
        let old = usedAtLastCheck
        let new = nextUsed
        let added = addedSinceCheck
        usedAtLastCheck = new
        addedSinceCheck = 0

        // (Without the fence below, the driver could sleep on a stale used.idx while we read a
        // stale "don't interrupt me", and nobody would wake it.)
        // Full fence: orders our used.idx store before the avail.flags / used_event load below.
        GuestMemory.fullBarrier()
        let notify: Bool
        if eventIndex {
            guard let usedEvent = try? memory.loadRelaxed16(at: usedEventAddress) else { return true }
            // More than 2¹⁶ completions since the last check defeats 16-bit arithmetic; the
            // driver's event index is certainly among them.
            notify = added > UInt32(UInt16.max) || Queue.needsEvent(usedEvent, newIndex: new, oldIndex: old)
        } else {
            guard let flags = try? memory.loadRelaxed16(at: layout.driverArea) else { return true }
            notify = flags & RingFlags.availNoInterrupt == 0
        }
        if notify { statistics.notificationsRequested += 1 }
        return notify
    }

    /// The EVENT_IDX rule (Linux's `vring_need_event`): having moved an index from `old` to
    /// `new`, has it passed `event`, i.e. is `event` in `[old, new)` modulo 2¹⁶?
    @inlinable
    public static func needsEvent(_ event: UInt16, newIndex new: UInt16, oldIndex old: UInt16) -> Bool {
        (new &- event &- 1) < (new &- old)
    }

    /// `needsNotification()`, and if so, a used-buffer interrupt through `interrupt`.
    /// Returns whether it signalled.
    @discardableResult
    public mutating func notifyGuestIfNeeded() -> Bool {
        guard needsNotification() else { return false }
        interrupt?.signalUsedBuffers()
        return true
    }

    // MARK: - Kick suppression (driver notifications)

    /// Tell the driver not to kick while the device is busy draining the ring anyway.
    /// Without EVENT_IDX this sets NO_NOTIFY in `used.flags`; with EVENT_IDX the device just
    /// stops moving `avail_event` forward, which has the same effect.
    public mutating func disableNotifications() {
        guard isEnabled, !isBroken, notificationsEnabled else { return }
        notificationsEnabled = false
        if !eventIndex {
            do { try memory.write(RingFlags.usedNoNotify, at: layout.deviceArea) } catch {
                _ = breakQueue(.ringAccess(error))
            }
        }
    }

    /// Ask for kicks again, then re-check the ring. Returns true if buffers arrived in the
    /// meantime — the caller must process them, since the driver may not kick for them.
    @discardableResult
    public mutating func enableNotifications() -> Bool {
        guard isEnabled, !isBroken else { return false }
        notificationsEnabled = true
        do {
            if eventIndex {
                try memory.write(nextAvail, at: availEventAddress)
            } else {
                try memory.write(UInt16(0), at: layout.deviceArea)
            }
        } catch {
            _ = breakQueue(.ringAccess(error))
            return false
        }
        // Full fence: orders the used.flags / avail_event store above before the avail.idx re-load.
        GuestMemory.fullBarrier()
        guard let published = try? loadAvailIndex() else { return false }
        return published != nextAvail
    }

    // MARK: - Errors

    /// Marks the queue broken after a structural error the device itself found.
    public mutating func markBroken() {
        guard !isBroken else { return }
        isBroken = true
        interrupt?.markNeedsReset()
    }

    /// How many errors of `kind` this queue has seen.
    public func errorCount(_ kind: QueueErrorKind) -> Int { statistics[kind] }

    private mutating func count(_ kind: QueueErrorKind) {
        statistics.errors[kind, default: 0] += 1
    }

    private mutating func breakQueue(_ error: VirtqueueError) -> VirtqueueError {
        if let kind = error.kind { count(kind) }
        markBroken()
        return error
    }
}
