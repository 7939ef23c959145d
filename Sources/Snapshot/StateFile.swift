import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// The state file: everything about a paused VM except its memory.
///
/// ```
/// offset  size  field
///      0     8  magic "LGUESTSN"
///      8     4  format version (little-endian)
///     12     4  reserved, 0
///     16     8  payload length
///     24     n  payload (StateWriter sections)
///   24+n     8  CRC-64/XZ of bytes 0 ..< 24+n
/// ```
///
/// A reader checks the magic, the version, the length against the file's size and the
/// checksum before it looks at a single field of the payload.
public enum StateFile {
    public static let magic: [UInt8] = Array("LGUESTSN".utf8)
    /// Bumped whenever any section's layout changes: a file of another version is refused.
    public static let formatVersion: UInt32 = 1
    public static let headerSize = 24
    /// No machine's state comes near this (a vCPU is a few KiB); a larger file is not ours.
    public static let maximumSize = 64 << 20

    /// The file's bytes for `payload`.
    public static func encode(payload: [UInt8]) -> [UInt8] {
        var header = StateWriter()
        header.u32(formatVersion)
        header.u32(0)
        header.u64(UInt64(payload.count))
        var bytes = magic + header.bytes + payload
        var trailer = StateWriter()
        trailer.u64(CRC64.checksum(bytes))
        bytes += trailer.bytes
        return bytes
    }

    /// The payload of a state file's `bytes`, once the header and checksum say it is whole.
    public static func decode(_ bytes: [UInt8]) throws(SnapshotError) -> [UInt8] {
        guard bytes.count >= magic.count, Array(bytes.prefix(magic.count)) == magic else { throw .notASnapshot }
        guard bytes.count >= headerSize else { throw .truncated("the header ends early") }
        var header = StateReader(Array(bytes[magic.count..<headerSize]), context: "the header")
        let version = try header.u32()
        guard version == formatVersion else { throw .version(found: version, expected: formatVersion) }
        guard try header.u32() == 0 else { throw .malformed("reserved header bits are set") }
        let length = try header.u64()
        let available = UInt64(bytes.count - headerSize)
        guard available >= 8, length <= available - 8 else {
            throw .truncated("the header promises \(length) bytes of state, the file holds \(max(Int64(available) - 8, 0))")
        }
        guard length == available - 8 else { throw .malformed("\(available - 8 - length) bytes follow the checksum") }
        let end = headerSize + Int(length)
        var trailer = StateReader(Array(bytes[end...]), context: "the checksum")
        guard try trailer.u64() == CRC64.checksum(bytes[..<end]) else { throw .checksum }
        return Array(bytes[headerSize..<end])
    }

    /// Reads and checks the state file at `path`.
    public static func read(path: String) throws(SnapshotError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .file(path: path, String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .file(path: path, String(cString: strerror(errno))) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .file(path: path, "not a regular file") }
        guard info.st_size <= maximumSize else { throw .file(path: path, "\(info.st_size) bytes is too large for a state file") }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var filled = 0
        while filled < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + filled, $0.count - filled, off_t(filled)) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw n == 0 ? .truncated("the file shrank while it was read") : .file(path: path, String(cString: strerror(errno))) }
            filled += n
        }
        return try decode(bytes)
    }

    /// Writes a state file holding `payload` at `path` (replacing any file there) and makes it
    /// durable before returning.
    public static func write(payload: [UInt8], path: String) throws(SnapshotError) {
        let bytes = encode(payload: payload)
        try AtomicFile.replace(path) { fd throws(SnapshotError) in
            guard bytes.withUnsafeBytes({ writeAll(fd, $0) }) == bytes.count else {
                throw .file(path: path, String(cString: strerror(errno)))
            }
        }
    }
}

/// CRC-64/XZ (the ECMA-182 polynomial, reflected, with all-ones start and end): catches a
/// flipped bit or a torn write anywhere in a state file.
public enum CRC64 {
    private static let table: [UInt64] = (0..<256).map { byte -> UInt64 in
        var crc = UInt64(byte)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xC96C_5795_D787_0F42 : crc >> 1 }
        return crc
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var crc = ~UInt64(0)
        for byte in bytes { crc = table[Int((crc ^ UInt64(byte)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }
}
