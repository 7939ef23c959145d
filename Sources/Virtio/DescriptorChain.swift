import GuestMemory

/// One buffer of a descriptor chain, as the device saw it when it walked the chain.
public struct Descriptor: Sendable, Hashable {
    public let address: GuestAddress
    public let length: UInt32
    /// The flags as read (NEXT/WRITE; never INDIRECT, which the walk resolves).
    public let flags: DescriptorFlags

    public init(address: GuestAddress, length: UInt32, flags: DescriptorFlags) {
        self.address = address
        self.length = length
        self.flags = flags
    }

    /// Device-writable (the guest reads it back) rather than device-readable.
    public var isWritable: Bool { flags.contains(.write) }
}

/// A piece of guest memory: an address and a length, both checked against guest RAM when the
/// chain was walked. `ChainReader`/`ChainWriter` hand these out for zero-copy I/O.
public struct GuestBuffer: Sendable, Hashable {
    public let address: GuestAddress
    public let length: UInt32

    public init(address: GuestAddress, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// One request: the chain of buffers the driver published under one head index.
///
/// A chain is walked completely, and every rule checked, when the queue pops it: each
/// descriptor is read from guest memory exactly once, so what the device works on cannot
/// change afterwards however hard the guest scribbles on its descriptor table. Every buffer
/// lies inside guest memory, the device-readable buffers come first, and the total length
/// fits in 32 bits.
public struct DescriptorChain: Sendable {
    /// The memory the buffers live in.
    public let memory: GuestMemory
    /// The head index, to hand back with `Queue.addUsed(head:length:)`.
    public let head: UInt16
    /// Every buffer in chain order: device-readable first, then device-writable.
    public let descriptors: [Descriptor]
    /// How many of `descriptors` are device-readable.
    public let readableCount: Int
    /// Total bytes in the device-readable buffers.
    public let readableLength: UInt32
    /// Total bytes in the device-writable buffers.
    public let writableLength: UInt32
    /// Whether (part of) the chain came from an indirect table.
    public let usedIndirectTable: Bool

    /// The device-readable buffers (the request).
    public var readable: ArraySlice<Descriptor> { descriptors[..<readableCount] }
    /// The device-writable buffers (room for the response).
    public var writable: ArraySlice<Descriptor> { descriptors[readableCount...] }

    /// A cursor over the readable part that copies across descriptor boundaries.
    public func reader() -> ChainReader {
        ChainReader(memory: memory, buffers: readable, total: Int(readableLength))
    }
    /// A cursor over the writable part that copies across descriptor boundaries and counts
    /// bytes written (the `len` of the used element).
    public func writer() -> ChainWriter {
        ChainWriter(memory: memory, buffers: writable, total: Int(writableLength))
    }
}

extension DescriptorChain {
    /// Entries in an indirect table are limited to what a 16-bit `next` can address.
    static let maxIndirectEntries: UInt32 = 65535

    /// Walks the chain starting at `head` (already checked to be `< queueSize`).
    ///
    /// The hop budget (TTL) is the number of entries in the table being walked: a chain can
    /// visit each descriptor at most once, so one more hop means a loop. Entering an indirect
    /// table resets the budget to that table's length.
    ///
    /// The descriptors are collected in `storage`, emptied first, which the chain then shares:
    /// if the previous chain built there is gone, its memory is reused and the walk allocates
    /// nothing; if it is still alive, emptying `storage` gives it a buffer of its own.
    static func walk(
        memory: GuestMemory, table descriptorTable: GuestAddress, queueSize: UInt16,
        head: UInt16, indirectAllowed: Bool, storage descriptors: inout [Descriptor]
    ) throws(ChainDefect) -> DescriptorChain {
        descriptors.removeAll(keepingCapacity: true)
        if descriptors.capacity < 4 { descriptors.reserveCapacity(4) }
        var table = descriptorTable
        var tableSize = UInt32(queueSize)
        var ttl = tableSize
        var index = head
        var inIndirect = false
        var readableCount = 0
        var readableLength: UInt64 = 0
        var writableLength: UInt64 = 0

        while true {
            guard ttl > 0 else { throw .tooLong(limit: tableSize) }
            ttl -= 1
            guard UInt32(index) < tableSize else { throw .nextOutOfRange(next: index, limit: tableSize) }

            // Read the 16-byte descriptor once, as two 64-bit loads: {addr} and
            // {len, flags, next}, each an atomic load the compiler cannot repeat. Nothing below
            // looks at the guest's copy again.
            let entry = table + UInt64(index) * 16
            let address: UInt64
            let packed: UInt64
            do {
                address = try memory.loadRelaxed64(at: entry)
                packed = try memory.loadRelaxed64(at: entry + 8)
            } catch {
                // The tables were checked to lie in guest RAM; this cannot happen, but if it
                // does the chain is as bad as one pointing outside memory.
                throw inIndirect ? .indirectTableOutOfBounds(address: table, length: tableSize * 16)
                                 : .bufferOutOfBounds(address: entry, length: 16)
            }
            let length = UInt32(truncatingIfNeeded: packed)
            let flags = DescriptorFlags(rawValue: UInt16(truncatingIfNeeded: packed >> 32))
            let next = UInt16(truncatingIfNeeded: packed >> 48)

            if flags.contains(.indirect) {
                guard indirectAllowed else { throw .indirectNotNegotiated }
                guard !inIndirect else { throw .nestedIndirect }
                guard !flags.contains(.next) else { throw .indirectWithNext }
                guard length != 0, length % 16 == 0, length / 16 <= maxIndirectEntries else {
                    throw .badIndirectLength(length)
                }
                let tableAddress = GuestAddress(address)
                guard memory.contains(tableAddress, length: UInt64(length)) else {
                    throw .indirectTableOutOfBounds(address: tableAddress, length: length)
                }
                // The WRITE flag on the pointing descriptor means nothing (split-ring.tex
                // 2.7.5.3); the table's own descriptors say which way each buffer goes.
                table = tableAddress
                tableSize = length / 16
                ttl = tableSize
                index = 0
                inIndirect = true
                continue
            }

            let buffer = Descriptor(address: GuestAddress(address), length: length,
                                    flags: flags.intersection([.next, .write]))
            if buffer.isWritable {
                writableLength += UInt64(length)
            } else {
                guard descriptors.count == readableCount else { throw .readableAfterWritable }
                readableLength += UInt64(length)
                readableCount += 1
            }
            guard readableLength + writableLength <= UInt64(UInt32.max) else { throw .lengthOverflow }
            guard memory.contains(buffer.address, length: UInt64(length)) else {
                throw .bufferOutOfBounds(address: buffer.address, length: length)
            }
            descriptors.append(buffer)

            guard flags.contains(.next) else { break }
            index = next
        }

        return DescriptorChain(
            memory: memory, head: head, descriptors: descriptors, readableCount: readableCount,
            readableLength: UInt32(readableLength), writableLength: UInt32(writableLength),
            usedIndirectTable: inIndirect)
    }
}
