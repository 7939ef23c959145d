import HostSystem

/// The FUSE wire protocol as the Linux `virtiofs` driver speaks it (include/uapi/linux/fuse.h,
/// protocol 7.31 and later): every request is a 40-byte `fuse_in_header` and an opcode's
/// arguments, every answer a 16-byte `fuse_out_header` and an opcode's result, all
/// little-endian (x86-64's order, and the only one virtio-fs uses).
enum FuseOpcode: UInt32 {
    case lookup = 1, forget = 2, getattr = 3, setattr = 4, readlink = 5, symlink = 6
    case mknod = 8, mkdir = 9, unlink = 10, rmdir = 11, rename = 12, link = 13
    case open = 14, read = 15, write = 16, statfs = 17, release = 18, fsync = 20
    case setxattr = 21, getxattr = 22, listxattr = 23, removexattr = 24, flush = 25
    case initialize = 26, opendir = 27, readdir = 28, releasedir = 29, fsyncdir = 30
    case access = 34, create = 35, interrupt = 36, destroy = 38
    case batchForget = 42, fallocate = 43, readdirplus = 44, rename2 = 45, lseek = 46
}

enum Fuse {
    static let inHeaderSize = 40
    static let outHeaderSize = 16
    static let rootID: UInt64 = 1
    static let kernelVersion: UInt32 = 7
    /// The oldest minor version we talk to (the floor) and the one we answer with.
    static let minimumMinor: UInt32 = 31
    static let minor: UInt32 = 31

    // Sizes of the fixed argument and answer structures.
    static let attrSize = 88
    static let entryOutSize = 40 + attrSize
    static let attrOutSize = 16 + attrSize
    static let openOutSize = 16
    static let initOutSize = 64
    static let statfsOutSize = 80
    static let writeOutSize = 8
    static let getxattrOutSize = 8
    static let lseekOutSize = 8
    static let direntHeaderSize = 24

    // FUSE_INIT flags we may grant (each only if the driver asked for it).
    static let asyncRead: UInt32 = 1 << 0
    static let bigWrites: UInt32 = 1 << 5
    static let doReaddirplus: UInt32 = 1 << 13
    static let readdirplusAuto: UInt32 = 1 << 14
    static let parallelDirops: UInt32 = 1 << 18
    static let maxPages: UInt32 = 1 << 22
    static let grantable = asyncRead | bigWrites | doReaddirplus | readdirplusAuto | parallelDirops | maxPages

    /// Largest READ or WRITE payload: 128 pages. A request's chain is its pages plus a few
    /// headers, and must stay shorter than the queue (256): Linux before 6.11 does not cap
    /// `max_pages` by the queue's size itself.
    static let maxTransfer = 128 * 4096
    static let maxPagesValue: UInt16 = 128

    // SETATTR `valid` bits.
    static let setMode: UInt32 = 1 << 0
    static let setUID: UInt32 = 1 << 1
    static let setGID: UInt32 = 1 << 2
    static let setSize: UInt32 = 1 << 3
    static let setAtime: UInt32 = 1 << 4
    static let setMtime: UInt32 = 1 << 5
    static let setFileHandle: UInt32 = 1 << 6
    static let setAtimeNow: UInt32 = 1 << 7
    static let setMtimeNow: UInt32 = 1 << 8

    static let getattrFileHandle: UInt32 = 1
    static let fsyncDataOnly: UInt32 = 1
    static let renameNoReplace: UInt32 = 1
    static let renameExchange: UInt32 = 2

    /// How long the guest may trust a name or an attribute before asking again (1 s, as
    /// virtiofsd's default `cache=auto`).
    static let validSeconds: UInt64 = 1
}

/// Reads little-endian fields and NUL-terminated names out of a request's bytes. Every read
/// is checked against what is left; a short request is `nil`, never a trap.
struct FuseReader {
    let bytes: [UInt8]
    private(set) var position: Int

    init(_ bytes: [UInt8], from position: Int = 0) {
        self.bytes = bytes
        self.position = min(max(position, 0), bytes.count)
    }

    var remaining: Int { bytes.count - position }

    mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        var value: UInt32 = 0
        for i in 0 ..< 4 { value |= UInt32(bytes[position + i]) << (8 * i) }
        position += 4
        return value
    }

    mutating func u64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        var value: UInt64 = 0
        for i in 0 ..< 8 { value |= UInt64(bytes[position + i]) << (8 * i) }
        position += 8
        return value
    }

    mutating func u16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        let value = UInt16(bytes[position]) | UInt16(bytes[position + 1]) << 8
        position += 2
        return value
    }

    mutating func skip(_ count: Int) -> Bool {
        guard count >= 0, remaining >= count else { return false }
        position += count
        return true
    }

    /// The bytes up to the next NUL, and the NUL itself consumed; `nil` without a NUL.
    mutating func cString() -> [UInt8]? {
        guard let end = bytes[position...].firstIndex(of: 0) else { return nil }
        let value = Array(bytes[position ..< end])
        position = end + 1
        return value
    }

    /// The rest of the request.
    mutating func rest() -> ArraySlice<UInt8> {
        defer { position = bytes.count }
        return bytes[position...]
    }
}

/// Builds an answer's bytes, little-endian.
struct FuseWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 128) { bytes.reserveCapacity(capacity) }

    mutating func u16(_ value: UInt16) { bytes.append(UInt8(truncatingIfNeeded: value)); bytes.append(UInt8(truncatingIfNeeded: value >> 8)) }
    mutating func u32(_ value: UInt32) { for i in 0 ..< 4 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) } }
    mutating func u64(_ value: UInt64) { for i in 0 ..< 8 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) } }
    mutating func zeros(_ count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }
    mutating func append(_ more: some Collection<UInt8>) { bytes.append(contentsOf: more) }
    /// Pads with zeros to a multiple of 8 (directory entries are 8-byte aligned).
    mutating func align8() { zeros((8 - bytes.count % 8) % 8) }
}

/// The part of `fuse_in_header` the server uses.
struct FuseRequestHeader {
    var length: UInt32
    var opcode: UInt32
    var unique: UInt64
    var nodeID: UInt64
    var uid: UInt32
    var gid: UInt32

    /// The header at the start of `bytes`, or nil for fewer than 40 bytes.
    static func parse(_ bytes: [UInt8]) -> FuseRequestHeader? {
        var r = FuseReader(bytes)
        guard let length = r.u32(), let opcode = r.u32(), let unique = r.u64(), let nodeID = r.u64(),
              let uid = r.u32(), let gid = r.u32(), r.skip(8) else { return nil }
        return FuseRequestHeader(length: length, opcode: opcode, unique: unique, nodeID: nodeID, uid: uid, gid: gid)
    }
}

/// The `S_IFMT` part of a mode, as the kernel numbers it.
enum FileType {
    static let mask: UInt32 = 0o170000
    static let directory: UInt32 = 0o040000
    static let regular: UInt32 = 0o100000
    static let symbolicLink: UInt32 = 0o120000
    static let fifo: UInt32 = 0o010000
}

/// Runs `body` on the bytes of `array`, keeping `body`'s typed error (the standard library's
/// `withUnsafeMutableBytes` only rethrows untyped).
func withMutableBytes<T>(_ array: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(SystemError) -> T) throws(SystemError) -> T {
    let result = array.withUnsafeMutableBytes { bytes in Result { () throws(SystemError) -> T in try body(bytes) } }
    return try result.get()
}

/// The same for reading `bytes`.
func withBytes<T>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(SystemError) -> T) throws(SystemError) -> T {
    let result = bytes.withUnsafeBytes { raw in Result { () throws(SystemError) -> T in try body(raw) } }
    return try result.get()
}
