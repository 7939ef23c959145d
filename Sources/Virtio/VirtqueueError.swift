import GuestMemory

/// Which of the three parts of a split virtqueue an address belongs to.
public enum QueueArea: String, Sendable, Hashable {
    case descriptorTable = "descriptor table"
    /// The available ring (the spec's "driver area").
    case driverArea = "driver area"
    /// The used ring (the spec's "device area").
    case deviceArea = "device area"
}

/// What is wrong with one descriptor chain. Each defect fails only the request it belongs to:
/// the queue returns the chain to the driver with a used length of 0 and goes on.
public enum ChainDefect: Error, Equatable, Sendable, CustomStringConvertible {
    /// A `next` field names a descriptor past the end of its table (`limit` entries).
    case nextOutOfRange(next: UInt16, limit: UInt32)
    /// More hops than the table has entries: a loop, or a chain longer than the queue.
    case tooLong(limit: UInt32)
    /// The buffer lengths add up to more than `UInt32.max` bytes.
    case lengthOverflow
    /// An indirect table contains another indirect descriptor.
    case nestedIndirect
    /// A descriptor is both INDIRECT and NEXT.
    case indirectWithNext
    /// INDIRECT was used although `VIRTIO_F_RING_INDIRECT_DESC` was not negotiated.
    case indirectNotNegotiated
    /// An indirect table's length is zero, not a multiple of 16, or above 65535 entries.
    case badIndirectLength(UInt32)
    /// An indirect table is not entirely inside guest memory.
    case indirectTableOutOfBounds(address: GuestAddress, length: UInt32)
    /// A buffer is not entirely inside guest memory.
    case bufferOutOfBounds(address: GuestAddress, length: UInt32)
    /// A device-readable descriptor follows a device-writable one.
    case readableAfterWritable

    public var kind: QueueErrorKind {
        switch self {
        case .nextOutOfRange: .nextOutOfRange
        case .tooLong: .chainTooLong
        case .lengthOverflow: .lengthOverflow
        case .nestedIndirect: .nestedIndirect
        case .indirectWithNext: .indirectWithNext
        case .indirectNotNegotiated: .indirectNotNegotiated
        case .badIndirectLength: .badIndirectLength
        case .indirectTableOutOfBounds: .indirectTableOutOfBounds
        case .bufferOutOfBounds: .bufferOutOfBounds
        case .readableAfterWritable: .readableAfterWritable
        }
    }

    public var description: String {
        switch self {
        case let .nextOutOfRange(next, limit): "next index \(next) is outside a table of \(limit)"
        case let .tooLong(limit): "chain has more than \(limit) descriptors (a loop?)"
        case .lengthOverflow: "buffer lengths add up to more than 4 GiB"
        case .nestedIndirect: "indirect descriptor inside an indirect table"
        case .indirectWithNext: "descriptor has both INDIRECT and NEXT"
        case .indirectNotNegotiated: "INDIRECT used without VIRTIO_F_RING_INDIRECT_DESC"
        case let .badIndirectLength(length): "indirect table length \(length) is not 16·n with 0 < n ≤ 65535"
        case let .indirectTableOutOfBounds(address, length): "indirect table \(address)+\(length) is outside guest memory"
        case let .bufferOutOfBounds(address, length): "buffer \(address)+\(length) is outside guest memory"
        case .readableAfterWritable: "device-readable descriptor after a device-writable one"
        }
    }
}

/// Everything that can go wrong with a virtqueue, from the guest's side or the device's.
///
/// Three families:
/// - **request errors** (`headOutOfRange`, `malformedChain`): one request fails, the queue
///   carries on;
/// - **structural errors** (`availIndexJump`, `ringAccess`, then `queueBroken` on every later
///   call): the queue stops until the driver resets the device, and the transport shows
///   DEVICE_NEEDS_RESET;
/// - **setup and usage errors** (`invalidSize`, `misalignedArea`, `areaOutOfBounds`,
///   `usedHeadOutOfRange`, `notEnoughReadable`, `notEnoughWritable`, `memory`).
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    // Request errors.
    case headOutOfRange(head: UInt16, size: UInt16)
    case malformedChain(head: UInt16, ChainDefect)

    // Structural errors.
    /// `avail.idx` moved more than `size` entries past the last one the device took.
    case availIndexJump(lastSeen: UInt16, published: UInt16, size: UInt16)
    /// A ring the queue validated at setup could not be read or written.
    case ringAccess(GuestMemoryError)
    /// The queue hit a structural error earlier and refuses work until it is rebuilt.
    case queueBroken

    // Setup errors (the transport refuses QueueReady on these).
    case invalidSize(size: UInt16, maxSize: UInt16)
    case misalignedArea(QueueArea, GuestAddress)
    case areaOutOfBounds(QueueArea, GuestAddress, length: UInt64)

    // Device-side usage errors.
    /// The device completed a head that cannot exist (a device bug, not the guest's).
    case usedHeadOutOfRange(head: UInt16, size: UInt16)
    /// A `ChainReader` was asked for more bytes than the readable buffers hold.
    case notEnoughReadable(requested: Int, remaining: Int)
    /// A `ChainWriter` was asked to write more bytes than the writable buffers hold.
    case notEnoughWritable(requested: Int, remaining: Int)
    /// A buffer access was refused by `GuestMemory`.
    case memory(GuestMemoryError)

    /// The counter this error is filed under, for errors a queue counts.
    public var kind: QueueErrorKind? {
        switch self {
        case .headOutOfRange: .headOutOfRange
        case let .malformedChain(_, defect): defect.kind
        case .availIndexJump: .availIndexJump
        case .ringAccess: .ringAccess
        default: nil
        }
    }

    /// Whether this error broke the queue (DEVICE_NEEDS_RESET).
    public var isStructural: Bool {
        switch self {
        case .availIndexJump, .ringAccess, .queueBroken: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case let .headOutOfRange(head, size): "head index \(head) is outside a queue of \(size)"
        case let .malformedChain(head, defect): "chain at head \(head): \(defect)"
        case let .availIndexJump(lastSeen, published, size):
            "avail.idx jumped from \(lastSeen) to \(published) on a queue of \(size)"
        case let .ringAccess(error): "ring access failed: \(error)"
        case .queueBroken: "queue is broken until the device is reset"
        case let .invalidSize(size, maxSize): "queue size \(size) is not a power of two ≤ \(maxSize)"
        case let .misalignedArea(area, address): "\(area.rawValue) at \(address) is misaligned"
        case let .areaOutOfBounds(area, address, length):
            "\(area.rawValue) \(address)+\(length) is outside guest memory"
        case let .usedHeadOutOfRange(head, size): "device completed head \(head) on a queue of \(size)"
        case let .notEnoughReadable(requested, remaining):
            "wanted \(requested) readable bytes, the chain has \(remaining) left"
        case let .notEnoughWritable(requested, remaining):
            "wanted to write \(requested) bytes, the chain has room for \(remaining)"
        case let .memory(error): "\(error)"
        }
    }
}

/// The per-queue error counters, one per thing a hostile guest can do to a queue.
public enum QueueErrorKind: String, Sendable, Hashable, CaseIterable {
    case headOutOfRange
    case nextOutOfRange
    case chainTooLong
    case lengthOverflow
    case nestedIndirect
    case indirectWithNext
    case indirectNotNegotiated
    case badIndirectLength
    case indirectTableOutOfBounds
    case bufferOutOfBounds
    case readableAfterWritable
    case availIndexJump
    case ringAccess
}

/// What a queue has seen since it was built. Read it in tests, metrics and logs.
public struct QueueStatistics: Sendable, Equatable {
    /// Well-formed chains handed to the device.
    public var chainsPopped: UInt64 = 0
    /// Used elements published (including malformed chains returned with length 0).
    public var usedPublished: UInt64 = 0
    /// Interrupts the queue asked for (`needsNotification()` answered true).
    public var notificationsRequested: UInt64 = 0
    /// Error counters by kind.
    public var errors: [QueueErrorKind: Int] = [:]

    public init() {}

    public subscript(kind: QueueErrorKind) -> Int { errors[kind, default: 0] }

    /// All errors of all kinds.
    public var totalErrors: Int { errors.values.reduce(0, +) }
}
