/// Builds a state file's payload: little-endian integers, length-prefixed byte strings, and
/// sections (a four-character tag and a length) that a reader can check and skip whole.
///
/// Everything a machine saves goes through here, so the format is in one place: a field is
/// written by the same type, in the same order, that reads it back (`StateReader`).
public struct StateWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func u8(_ value: UInt8) { bytes.append(value) }
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }
    public mutating func u16(_ value: UInt16) { integer(value) }
    public mutating func u32(_ value: UInt32) { integer(value) }
    public mutating func u64(_ value: UInt64) { integer(value) }

    private mutating func integer<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// A count, then the bytes.
    public mutating func data(_ value: some Collection<UInt8>) {
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func string(_ value: String) { data(Array(value.utf8)) }

    public mutating func optionalString(_ value: String?) {
        bool(value != nil)
        if let value { string(value) }
    }

    /// The bytes of a kernel structure (`kvm_regs`, `kvm_lapic_state`, ...), as KVM gave them.
    /// They are read back only into a structure of exactly the same size.
    public mutating func raw<T>(_ value: T) {
        withUnsafeBytes(of: value) { data($0) }
    }

    /// A tagged section: `tag` (four ASCII characters), the body's length, the body.
    public mutating func section(_ tag: String, _ body: (inout StateWriter) -> Void) {
        precondition(tag.utf8.count == 4, "a section tag is four characters")
        var inner = StateWriter()
        body(&inner)
        bytes.append(contentsOf: tag.utf8)
        data(inner.bytes)
    }
}
