/// The fuzzer's bytes, consumed front to back. Past the end every read gives zeros, so a
/// harness never has to check lengths and a short input is simply a mostly-zero one.
public struct FuzzInput {
    public let bytes: [UInt8]
    public private(set) var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Copies libFuzzer's buffer (which is only valid during the call).
    public init(data: UnsafePointer<UInt8>?, count: Int) {
        // Safe: libFuzzer hands us `count` readable bytes at `data` for the duration of the call.
        self.init(data.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
    }

    public var isAtEnd: Bool { position >= bytes.count }
    public var remaining: Int { max(bytes.count - position, 0) }

    public mutating func byte() -> UInt8 {
        defer { position += 1 }
        return position < bytes.count ? bytes[position] : 0
    }

    public mutating func bool() -> Bool { byte() & 1 == 1 }

    /// A little-endian integer of `T`'s width.
    public mutating func le<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type = T.self) -> T {
        var value: T = 0
        for i in 0 ..< MemoryLayout<T>.size { value |= T(byte()) << (8 * i) }
        return value
    }

    /// The next `count` bytes (fewer at the end).
    public mutating func take(_ count: Int) -> [UInt8] {
        let start = min(position, bytes.count)
        let end = min(start + max(count, 0), bytes.count)
        position = end
        return Array(bytes[start ..< end])
    }

    /// Everything not consumed yet.
    public mutating func rest() -> [UInt8] { take(remaining) }

    /// The bytes up to `terminator` (consumed, not returned), or to the end.
    public mutating func bytes(until terminator: UInt8) -> [UInt8] {
        let start = min(position, bytes.count)
        let end = bytes[start...].firstIndex(of: terminator) ?? bytes.count
        position = min(end + 1, bytes.count)
        return Array(bytes[start ..< end])
    }
}

/// Builds an input for the formats above: the mirror of `FuzzInput`, for seeds.
public struct FuzzInputBuilder {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public mutating func byte(_ value: UInt8) { bytes.append(value) }
    public mutating func le<T: FixedWidthInteger>(_ value: T) {
        for i in 0 ..< MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) }
    }
    public mutating func append(_ more: [UInt8]) { bytes += more }
}
