/// Reads what `StateWriter` wrote, checking every length against what is left: a state file
/// comes from the user, and a count or size in it is never trusted.
public struct StateReader: Sendable {
    private let bytes: [UInt8]
    private var offset: Int
    private let end: Int
    /// What is being read, for the error that says where a file fell short.
    private let context: String

    public init(_ bytes: [UInt8], context: String = "state") {
        self.bytes = bytes
        offset = 0
        end = bytes.count
        self.context = context
    }

    private init(_ bytes: [UInt8], from start: Int, to end: Int, context: String) {
        self.bytes = bytes
        offset = start
        self.end = end
        self.context = context
    }

    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset == end }

    private mutating func take(_ count: Int) throws(SnapshotError) -> Range<Int> {
        guard count >= 0, count <= remaining else { throw .truncated("\(context) ends early") }
        defer { offset += count }
        return offset..<(offset + count)
    }

    public mutating func u8() throws(SnapshotError) -> UInt8 {
        let range = try take(1)
        return bytes[range.lowerBound]
    }

    public mutating func bool() throws(SnapshotError) -> Bool {
        switch try u8() {
        case 0: return false
        case 1: return true
        case let other: throw .malformed("\(context): \(other) where a yes/no belongs")
        }
    }

    public mutating func u16() throws(SnapshotError) -> UInt16 { try integer() }
    public mutating func u32() throws(SnapshotError) -> UInt32 { try integer() }
    public mutating func u64() throws(SnapshotError) -> UInt64 { try integer() }

    private mutating func integer<T: FixedWidthInteger>() throws(SnapshotError) -> T {
        let range = try take(MemoryLayout<T>.size)
        var value = T.zero
        for (shift, index) in range.enumerated() { value |= T(bytes[index]) << (8 * shift) }
        return value
    }

    /// A count, then that many bytes; at most `limit` of them.
    public mutating func data(limit: Int = 1 << 24) throws(SnapshotError) -> [UInt8] {
        let count = Int(try u32())
        guard count <= limit else { throw .malformed("\(context): \(count) bytes where at most \(limit) belong") }
        return Array(bytes[try take(count)])
    }

    public mutating func string(limit: Int = 4096) throws(SnapshotError) -> String {
        let data = try self.data(limit: limit)
        guard let text = String(validating: data, as: UTF8.self) else { throw .malformed("\(context): a string that is not UTF-8") }
        return text
    }

    public mutating func optionalString(limit: Int = 4096) throws(SnapshotError) -> String? {
        if try bool() { return try string(limit: limit) }
        return nil
    }

    /// A count that must not exceed `limit` (the number of vCPUs, of disks, ...).
    public mutating func count(limit: Int, of what: String) throws(SnapshotError) -> Int {
        let value = Int(try u32())
        guard value <= limit else { throw .malformed("\(value) \(what) where at most \(limit) belong") }
        return value
    }

    /// A kernel structure saved with `StateWriter.raw`: its size must be exactly `T`'s.
    public mutating func raw<T>(_ type: T.Type, zero: T) throws(SnapshotError) -> T {
        let data = try self.data(limit: 1 << 20)
        guard data.count == MemoryLayout<T>.size else {
            throw .malformed("\(context): a \(T.self) of \(data.count) bytes, not \(MemoryLayout<T>.size)")
        }
        var value = zero
        withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: data) }
        return value
    }

    /// The body of the section tagged `tag`, which must come next, unread: for state that is
    /// read later by its owner (a device, once it exists).
    public mutating func sectionBody(_ tag: String) throws(SnapshotError) -> [UInt8] {
        try section(tag) { (inner: inout StateReader) throws(SnapshotError) in
            let rest = Array(inner.bytes[inner.offset..<inner.end])
            inner.offset = inner.end
            return rest
        }
    }

    /// The section tagged `tag`, which must come next; its body is read by `body` and must be
    /// consumed whole.
    public mutating func section<T>(_ tag: String, _ body: (inout StateReader) throws(SnapshotError) -> T) throws(SnapshotError) -> T {
        let tagRange = try take(4)
        let found = String(decoding: bytes[tagRange], as: UTF8.self)
        guard found == tag else { throw .malformed("section \(tag) expected, \(found.debugDescription) found") }
        let length = Int(try u32())
        let range = try take(length)
        var inner = StateReader(bytes, from: range.lowerBound, to: range.upperBound, context: "section \(tag)")
        let value = try body(&inner)
        guard inner.isAtEnd else { throw .malformed("section \(tag) has \(inner.remaining) bytes nobody reads") }
        return value
    }
}
