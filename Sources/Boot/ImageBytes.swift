/// Little-endian reads from a kernel image that can never trap.
///
/// A kernel image is untrusted input: it may be truncated, corrupted or hostile. Every read
/// names a byte offset (a `UInt64`, because ELF offsets are 64-bit), checks `offset + size`
/// against the file without overflowing, and returns `nil` when any byte is missing. Values are
/// assembled byte by byte, so alignment never matters and no pointer is involved.
///
/// It views bytes it does not own (a file read into memory, a note segment within it): the
/// caller keeps them alive while the image is parsed and loaded.
struct ImageBytes {
    let bytes: UnsafeRawBufferPointer

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var count: Int { bytes.count }

    /// Whether `[offset, offset + length)` lies inside the file.
    func contains(offset: UInt64, length: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= UInt64(bytes.count)
    }

    func read<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, at offset: UInt64) -> T? {
        let size = UInt64(MemoryLayout<T>.size)
        guard contains(offset: offset, length: size) else { return nil }
        let start = Int(offset)
        var value: T = 0
        for index in 0..<Int(size) {
            value |= T(bytes[start + index]) << (8 * index)
        }
        return value
    }

    func u8(_ offset: UInt64) -> UInt8? { read(UInt8.self, at: offset) }
    func u16(_ offset: UInt64) -> UInt16? { read(UInt16.self, at: offset) }
    func u32(_ offset: UInt64) -> UInt32? { read(UInt32.self, at: offset) }
    func u64(_ offset: UInt64) -> UInt64? { read(UInt64.self, at: offset) }

    /// The bytes `[offset, offset + length)`, or `nil` if any is missing.
    func slice(offset: UInt64, length: UInt64) -> UnsafeRawBufferPointer? {
        guard contains(offset: offset, length: length) else { return nil }
        return UnsafeRawBufferPointer(rebasing: bytes[Int(offset)..<Int(offset + length)])
    }
}

/// A fixed-size little-endian structure being built for the guest (the zero page,
/// `hvm_start_info`, an e820 table). Offsets are the VMM's own constants, so writing past the
/// end is a bug in the VMM and traps.
struct StructureBuilder {
    private(set) var bytes: [UInt8]

    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    mutating func set<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    mutating func set(bytes source: some Collection<UInt8>, at offset: Int) {
        bytes.replaceSubrange(offset..<(offset + source.count), with: source)
    }

    func u8(_ offset: Int) -> UInt8 { bytes[offset] }
}
