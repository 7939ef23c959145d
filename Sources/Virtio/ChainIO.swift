import GuestMemory

/// A position in a list of guest buffers: which buffer, and how far into it.
///
/// It walks the chain's own descriptor slice in place and hands out pieces through a closure,
/// so moving through a request allocates nothing; only `peek`, which returns an array for
/// callers that keep the pieces, does.
struct BufferCursor: Sendable {
    let buffers: ArraySlice<Descriptor>
    private(set) var index: Int
    private(set) var offset: UInt32 = 0
    private(set) var consumed = 0
    let total: Int

    /// A cursor at the start of `buffers`, whose lengths add up to `total` (the chain walk
    /// summed them, and checked the sum fits in 32 bits).
    init(_ buffers: ArraySlice<Descriptor>, total: Int) {
        self.buffers = buffers
        self.index = buffers.startIndex
        self.total = total
    }

    var remaining: Int { total - consumed }

    /// Calls `body` with the next pieces covering up to `maxBytes`, in order, without moving.
    func forEachPiece<E: Error>(maxBytes: Int, _ body: (GuestAddress, Int) throws(E) -> Void) throws(E) {
        var want = min(max(maxBytes, 0), remaining)
        var i = index
        var off = offset
        while want > 0, i < buffers.endIndex {
            let buffer = buffers[i]
            let available = Int(buffer.length - off)
            if available > 0 {
                let take = min(available, want)
                // In range: `off < buffer.length`, and the walk checked the whole buffer.
                try body(buffer.address + UInt64(off), take)
                want -= take
            }
            i += 1
            off = 0
        }
    }

    /// The next pieces covering up to `maxBytes`, without moving.
    func peek(maxBytes: Int) -> [GuestBuffer] {
        var pieces: [GuestBuffer] = []
        forEachPiece(maxBytes: maxBytes) { address, length in
            pieces.append(GuestBuffer(address: address, length: UInt32(length)))
        }
        return pieces
    }

    /// Where the next byte is, if it and the `count - 1` after it lie in the current buffer.
    func contiguous(_ count: Int) -> GuestAddress? {
        guard count <= remaining, index < buffers.endIndex else { return nil }
        let buffer = buffers[index]
        guard Int(buffer.length - offset) >= count else { return nil }
        return buffer.address + UInt64(offset)
    }

    /// Moves forward by `count` bytes (at most `remaining`).
    mutating func advance(by count: Int) {
        var left = min(max(count, 0), remaining)
        consumed += left
        while left > 0, index < buffers.endIndex {
            let available = Int(buffers[index].length - offset)
            if left < available {
                offset += UInt32(left)
                return
            }
            left -= available
            index += 1
            offset = 0
        }
        // Step over empty buffers so `index` points at real bytes.
        while index < buffers.endIndex, buffers[index].length == offset {
            index += 1
            offset = 0
        }
    }
}

/// Reads the device-readable part of a chain as one byte stream, whatever way the driver
/// split it into descriptors ("devices MUST NOT make assumptions about the particular
/// arrangement of descriptors").
///
/// A read either succeeds completely or throws `.notEnoughReadable` and consumes nothing.
public struct ChainReader: Sendable {
    public let memory: GuestMemory
    private var cursor: BufferCursor

    init(memory: GuestMemory, buffers: ArraySlice<Descriptor>, total: Int) {
        self.memory = memory
        self.cursor = BufferCursor(buffers, total: total)
    }

    /// Bytes read (or skipped) so far.
    public var bytesRead: Int { cursor.consumed }
    /// Bytes left to read.
    public var remaining: Int { cursor.remaining }

    private func check(_ count: Int) throws(VirtqueueError) {
        guard count >= 0, count <= cursor.remaining else {
            throw .notEnoughReadable(requested: count, remaining: cursor.remaining)
        }
    }

    /// The next `count` bytes.
    public mutating func read(count: Int) throws(VirtqueueError) -> [UInt8] {
        try check(count)
        var bytes = [UInt8](repeating: 0, count: count)
        let filled = bytes.withUnsafeMutableBytes { buffer -> Result<Void, VirtqueueError> in
            do throws(VirtqueueError) { try fill(buffer); return .success(()) } catch { return .failure(error) }
        }
        try filled.get()
        cursor.advance(by: count)
        return bytes
    }

    /// Fills `bytes` completely from the chain.
    public mutating func read(into bytes: inout [UInt8]) throws(VirtqueueError) {
        bytes = try read(count: bytes.count)
    }

    /// Fills `buffer` completely from the chain, without an intermediate array.
    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(VirtqueueError) {
        try check(buffer.count)
        try fill(buffer)
        cursor.advance(by: buffer.count)
    }

    /// Copies the next `buffer.count` bytes (already checked to be there) without moving.
    private func fill(_ buffer: UnsafeMutableRawBufferPointer) throws(VirtqueueError) {
        var position = 0
        try cursor.forEachPiece(maxBytes: buffer.count) { (address, length) throws(VirtqueueError) in
            // Safe: position + length ≤ buffer.count, because the pieces add up to buffer.count.
            let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[position ..< position + length])
            do throws(GuestMemoryError) { try memory.read(into: destination, at: address) } catch { throw .memory(error) }
            position += length
        }
    }

    /// A little-endian integer, which may straddle descriptors.
    public mutating func readLE<T: FixedWidthInteger>(_ type: T.Type = T.self) throws(VirtqueueError) -> T {
        let size = MemoryLayout<T>.size
        // Up to 64 bits the bytes are moved by non-generic code: a caller in another module
        // gets this function unspecialized, and generic memory access there is slow.
        if size <= 8 { return T(truncatingIfNeeded: try readLittleEndian(byteCount: size)) }
        try check(size)
        if let address = cursor.contiguous(size) {
            do {
                let value = try memory.read(T.self, at: address)
                cursor.advance(by: size)
                return value
            } catch { throw .memory(error) }
        }
        var value: T = 0
        var shift = 0
        try cursor.forEachPiece(maxBytes: size) { (address, length) throws(VirtqueueError) in
            for i in 0 ..< length {
                let byte: UInt8
                do throws(GuestMemoryError) { byte = try memory.read(UInt8.self, at: address + UInt64(i)) } catch { throw .memory(error) }
                value |= T(truncatingIfNeeded: byte) << shift
                shift += 8
            }
        }
        cursor.advance(by: size)
        return value
    }

    /// The next `byteCount` (≤ 8) bytes as a little-endian number.
    private mutating func readLittleEndian(byteCount: Int) throws(VirtqueueError) -> UInt64 {
        try check(byteCount)
        var raw: UInt64 = 0
        // Safe: the first `byteCount` ≤ 8 bytes of `raw` are filled; the value is read as
        // little-endian, so which end of `raw` they occupy is right on any host.
        try withUnsafeMutableBytes(of: &raw) { (bytes) throws(VirtqueueError) in
            try fill(UnsafeMutableRawBufferPointer(rebasing: bytes[0 ..< byteCount]))
        }
        cursor.advance(by: byteCount)
        return UInt64(littleEndian: raw)
    }

    /// Skips `count` bytes.
    public mutating func skip(_ count: Int) throws(VirtqueueError) {
        try check(count)
        cursor.advance(by: count)
    }

    /// The guest buffers holding the next `maxBytes` (or fewer, at the end), for I/O straight
    /// out of guest memory with `GuestMemory.withSlice`. Does not move; call `skip` after.
    public func segments(maxBytes: Int) -> [GuestBuffer] { cursor.peek(maxBytes: maxBytes) }
}

/// Writes into the device-writable part of a chain as one byte stream, and counts what it
/// wrote: `bytesWritten` is the `len` of the used element.
///
/// A write either succeeds completely or throws `.notEnoughWritable` and writes nothing.
public struct ChainWriter: Sendable {
    public let memory: GuestMemory
    private var cursor: BufferCursor

    init(memory: GuestMemory, buffers: ArraySlice<Descriptor>, total: Int) {
        self.memory = memory
        self.cursor = BufferCursor(buffers, total: total)
    }

    /// Bytes written so far — the used length to report.
    public var bytesWritten: UInt32 { UInt32(cursor.consumed) }
    /// Room left.
    public var remaining: Int { cursor.remaining }

    private func check(_ count: Int) throws(VirtqueueError) {
        guard count >= 0, count <= cursor.remaining else {
            throw .notEnoughWritable(requested: count, remaining: cursor.remaining)
        }
    }

    /// Appends `bytes`.
    public mutating func write(_ bytes: some Collection<UInt8>) throws(VirtqueueError) {
        let array = Array(bytes)
        var copy = self
        let written = array.withUnsafeBytes { buffer -> Result<Void, VirtqueueError> in
            do throws(VirtqueueError) { try copy.write(bytes: buffer); return .success(()) } catch { return .failure(error) }
        }
        try written.get()
        self = copy
    }

    /// Appends the bytes of `buffer`, without an intermediate array.
    public mutating func write(bytes buffer: UnsafeRawBufferPointer) throws(VirtqueueError) {
        try check(buffer.count)
        var position = 0
        try cursor.forEachPiece(maxBytes: buffer.count) { (address, length) throws(VirtqueueError) in
            // Safe: position + length ≤ buffer.count, because the pieces add up to buffer.count.
            let source = UnsafeRawBufferPointer(rebasing: buffer[position ..< position + length])
            do throws(GuestMemoryError) { try memory.write(bytes: source, at: address) } catch { throw .memory(error) }
            position += length
        }
        cursor.advance(by: buffer.count)
    }

    /// Appends a little-endian integer, which may straddle descriptors.
    public mutating func writeLE<T: FixedWidthInteger>(_ value: T) throws(VirtqueueError) {
        let size = MemoryLayout<T>.size
        // As in `ChainReader.readLE`: non-generic code moves the bytes.
        if size <= 8 {
            var raw = UInt64(truncatingIfNeeded: value).littleEndian
            // Safe: the first `size` ≤ 8 bytes of `raw` hold the value in little-endian order.
            try withUnsafeBytes(of: &raw) { (bytes) throws(VirtqueueError) in
                try write(bytes: UnsafeRawBufferPointer(rebasing: bytes[0 ..< size]))
            }
            return
        }
        try check(size)
        if let address = cursor.contiguous(size) {
            do { try memory.write(value, at: address) } catch { throw .memory(error) }
            cursor.advance(by: size)
            return
        }
        var shift = 0
        try cursor.forEachPiece(maxBytes: size) { (address, length) throws(VirtqueueError) in
            for i in 0 ..< length {
                let byte = UInt8(truncatingIfNeeded: value >> shift)
                do throws(GuestMemoryError) { try memory.write(byte, at: address + UInt64(i)) } catch { throw .memory(error) }
                shift += 8
            }
        }
        cursor.advance(by: size)
    }

    /// Appends `count` zero bytes.
    public mutating func writeZeros(count: Int) throws(VirtqueueError) {
        try check(count)
        try cursor.forEachPiece(maxBytes: count) { (address, length) throws(VirtqueueError) in
            do throws(GuestMemoryError) { try memory.zero(at: address, length: UInt64(length)) } catch { throw .memory(error) }
        }
        cursor.advance(by: count)
    }

    /// The guest buffers for the next `maxBytes` (or fewer, at the end), for I/O straight into
    /// guest memory. Does not move; call `advance(by:)` with what was actually written.
    public func segments(maxBytes: Int) -> [GuestBuffer] { cursor.peek(maxBytes: maxBytes) }

    /// Counts `count` bytes the caller wrote through `segments(maxBytes:)`.
    public mutating func advance(by count: Int) throws(VirtqueueError) {
        try check(count)
        cursor.advance(by: count)
    }
}
