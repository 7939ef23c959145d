import GuestMemory

/// A position in a list of guest buffers: which buffer, and how far into it.
struct BufferCursor: Sendable {
    let buffers: [Descriptor]
    private(set) var index = 0
    private(set) var offset: UInt32 = 0
    private(set) var consumed = 0
    let total: Int

    init(_ buffers: ArraySlice<Descriptor>) {
        self.buffers = Array(buffers)
        total = buffers.reduce(0) { $0 + Int($1.length) }
    }

    var remaining: Int { total - consumed }

    /// The next pieces covering up to `maxBytes`, without moving.
    func peek(maxBytes: Int) -> [GuestBuffer] {
        var pieces: [GuestBuffer] = []
        var want = min(max(maxBytes, 0), remaining)
        var i = index
        var off = offset
        while want > 0, i < buffers.count {
            let buffer = buffers[i]
            let available = Int(buffer.length - off)
            if available > 0 {
                let take = min(available, want)
                // In range: `off < buffer.length`, and the walk checked the whole buffer.
                pieces.append(GuestBuffer(address: buffer.address + UInt64(off), length: UInt32(take)))
                want -= take
            }
            i += 1
            off = 0
        }
        return pieces
    }

    /// Moves forward by `count` bytes (at most `remaining`).
    mutating func advance(by count: Int) {
        var left = min(max(count, 0), remaining)
        consumed += left
        while left > 0, index < buffers.count {
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
        while index < buffers.count, buffers[index].length == offset {
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

    init(memory: GuestMemory, buffers: ArraySlice<Descriptor>) {
        self.memory = memory
        self.cursor = BufferCursor(buffers)
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
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        for piece in cursor.peek(maxBytes: count) {
            do { bytes += try memory.readBytes(at: piece.address, count: Int(piece.length)) } catch {
                throw .memory(error)
            }
        }
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
        var position = 0
        for piece in cursor.peek(maxBytes: buffer.count) {
            let length = Int(piece.length)
            // Safe: position + length ≤ buffer.count, because the pieces add up to buffer.count.
            let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[position ..< position + length])
            do { try memory.read(into: destination, at: piece.address) } catch { throw .memory(error) }
            position += length
        }
        cursor.advance(by: buffer.count)
    }

    /// A little-endian integer, which may straddle descriptors.
    public mutating func readLE<T: FixedWidthInteger>(_ type: T.Type = T.self) throws(VirtqueueError) -> T {
        let size = MemoryLayout<T>.size
        try check(size)
        let pieces = cursor.peek(maxBytes: size)
        if pieces.count == 1 {
            do {
                let value = try memory.read(T.self, at: pieces[0].address)
                cursor.advance(by: size)
                return value
            } catch { throw .memory(error) }
        }
        let bytes = try read(count: size)
        var value: T = 0
        for (i, byte) in bytes.enumerated() { value |= T(truncatingIfNeeded: byte) << (8 * i) }
        return value
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

    init(memory: GuestMemory, buffers: ArraySlice<Descriptor>) {
        self.memory = memory
        self.cursor = BufferCursor(buffers)
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
        try check(array.count)
        var position = 0
        for piece in cursor.peek(maxBytes: array.count) {
            let length = Int(piece.length)
            do { try memory.write(array[position ..< position + length], at: piece.address) } catch {
                throw .memory(error)
            }
            position += length
        }
        cursor.advance(by: array.count)
    }

    /// Appends the bytes of `buffer`, without an intermediate array.
    public mutating func write(bytes buffer: UnsafeRawBufferPointer) throws(VirtqueueError) {
        try check(buffer.count)
        var position = 0
        for piece in cursor.peek(maxBytes: buffer.count) {
            let length = Int(piece.length)
            // Safe: position + length ≤ buffer.count, because the pieces add up to buffer.count.
            let source = UnsafeRawBufferPointer(rebasing: buffer[position ..< position + length])
            do { try memory.write(bytes: source, at: piece.address) } catch { throw .memory(error) }
            position += length
        }
        cursor.advance(by: buffer.count)
    }

    /// Appends a little-endian integer, which may straddle descriptors.
    public mutating func writeLE<T: FixedWidthInteger>(_ value: T) throws(VirtqueueError) {
        let size = MemoryLayout<T>.size
        try check(size)
        let pieces = cursor.peek(maxBytes: size)
        if pieces.count == 1 {
            do { try memory.write(value, at: pieces[0].address) } catch { throw .memory(error) }
            cursor.advance(by: size)
            return
        }
        try write((0 ..< size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) })
    }

    /// Appends `count` zero bytes.
    public mutating func writeZeros(count: Int) throws(VirtqueueError) {
        try check(count)
        for piece in cursor.peek(maxBytes: count) {
            do { try memory.zero(at: piece.address, length: UInt64(piece.length)) } catch { throw .memory(error) }
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
