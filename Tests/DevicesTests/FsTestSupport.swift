import Foundation
import GuestMemory
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// A scratch directory holding `share/` (what the guest is given) and `outside/` (what it must
/// never reach), removed when the value goes away.
final class FsScratch {
    let root: URL
    var share: String { root.appendingPathComponent("share").path }
    var outside: String { root.appendingPathComponent("outside").path }

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("lguest-fs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: root.appendingPathComponent("share").path, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root.appendingPathComponent("outside").path, withIntermediateDirectories: true)
        try Data("secret".utf8).write(to: root.appendingPathComponent("outside/secret"))
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    func path(_ relative: String) -> String { share + "/" + relative }
    func write(_ relative: String, _ text: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: path(relative))) }
    func read(_ relative: String) -> String? { (try? Data(contentsOf: URL(fileURLWithPath: path(relative)))).map { String(decoding: $0, as: UTF8.self) } }
    func exists(_ path: String) -> Bool {
        var s = stat()
        return lstat(path, &s) == 0
    }
    func mode(_ relative: String) -> UInt32 {
        var s = stat()
        return lstat(path(relative), &s) == 0 ? UInt32(s.st_mode) : 0
    }
}

/// Little-endian bytes and NUL-terminated names for building requests.
func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
}
func cName(_ name: String) -> [UInt8] { Array(name.utf8) + [0] }

/// One answer: the out header's fields and the payload, and the used length the device gave.
struct FsReply {
    var used: UInt32
    var length: UInt32 = 0
    var error: Int32 = 0
    var unique: UInt64 = 0
    var payload: [UInt8] = []

    func u64(at offset: Int) -> UInt64 {
        (0 ..< 8).reduce(UInt64(0)) { $0 | UInt64(payload[offset + $1]) << (8 * $1) }
    }
    func u32(at offset: Int) -> UInt32 {
        (0 ..< 4).reduce(UInt32(0)) { $0 | UInt32(payload[offset + $1]) << (8 * $1) }
    }
    /// The node id of a `fuse_entry_out`.
    var node: UInt64 { u64(at: 0) }
    /// Fields of the `fuse_attr` in a `fuse_entry_out` (offset 40) or `fuse_attr_out` (16).
    func attrMode(entry: Bool = true) -> UInt32 { u32(at: (entry ? 40 : 16) + 60) }
    func attrSize(entry: Bool = true) -> UInt64 { u64(at: (entry ? 40 : 16) + 8) }
    func attrInode(entry: Bool = true) -> UInt64 { u64(at: (entry ? 40 : 16)) }
    /// The names in a READDIR (or READDIRPLUS) answer.
    func directoryNames(plus: Bool = false) -> [String] {
        var names: [String] = []
        var position = 0
        let skip = plus ? Fuse.entryOutSize : 0
        while position + skip + 24 <= payload.count {
            let length = Int(u32(at: position + skip + 16))
            let start = position + skip + 24
            guard start + length <= payload.count else { break }
            names.append(String(decoding: payload[start ..< start + length], as: UTF8.self))
            position += (skip + 24 + length + 7) & ~7
        }
        return names
    }
}

/// An `FsDevice` on a scratch share behind a real virtio-mmio transport, with the mock driver's
/// two queues (hiprio, requests), speaking FUSE to it as Linux's virtiofs driver does.
final class FsRig {
    let scratch: FsScratch
    let device: FsDevice
    let memory: GuestMemory
    let transport: MMIOTransport
    let driver: MockDriver
    let queues: [MockDriverQueue]
    private var unique: UInt64 = 0

    init(readOnly: Bool = false, maxNodes: Int = 1000, maxHandles: Int = 100, initialize: Bool = true,
         scratch: FsScratch? = nil) throws {
        let scratch = try scratch ?? FsScratch()
        self.scratch = scratch
        device = try FsDevice(FsShareConfiguration(path: scratch.share, tag: "work", readOnly: readOnly),
                              maxNodes: maxNodes, maxHandles: maxHandles)
        let memory = try GuestMemory(size: 0x80_0000)
        self.memory = memory
        transport = MMIOTransport(device: device, memory: memory, interrupt: BlockInterruptCounter())
        driver = MockDriver(transport: transport)
        queues = try (0 ..< 2).map { index in
            try MockDriverQueue(memory: memory, size: 64, base: GuestAddress(0x10000 + UInt64(index) * 0x30_0000),
                                dataAreaSize: 0x28_0000)
        }
        _ = try driver.initialize(queues: queues)
        if initialize {
            let reply = try send(.initialize, node: 0, le(UInt32(7)) + le(UInt32(38)) + le(UInt32(0x20000)) + le(UInt32(0xFFFF_FFFF)) + [UInt8](repeating: 0, count: 48))
            #expect(reply.error == 0)
        }
    }

    /// A request header: `len` covers header and `args` unless `length` overrides it.
    func header(_ opcode: UInt32, node: UInt64, argsCount: Int, length: UInt32? = nil) -> [UInt8] {
        unique += 1
        return le(length ?? UInt32(40 + argsCount)) + le(opcode) + le(unique) + le(node)
            + le(UInt32(0)) + le(UInt32(0)) + le(UInt32(1)) + le(UInt16(0)) + le(UInt16(0))
    }

    /// Sends readable `buffers` with writable `room` on `queue` and returns the answer.
    func submit(_ buffers: [[UInt8]], room: [UInt32], queue: Int = 1) throws -> FsReply {
        queues[queue].resetDataArea()
        let chain = try queues[queue].addChain(readable: buffers, writable: room)
        driver.kick(UInt32(queue))
        let used = try #require(try queues[queue].drainUsed().last)
        #expect(used.id == UInt32(chain.head))
        var bytes = try chain.writable.flatMap { try queues[queue].read($0) }
        bytes = Array(bytes.prefix(Int(used.length)))
        var reply = FsReply(used: used.length)
        guard bytes.count >= 16 else { return reply }
        let raw = FsReply(used: used.length, payload: bytes)
        reply.length = raw.u32(at: 0)
        reply.error = -Int32(bitPattern: raw.u32(at: 4))
        reply.unique = raw.u64(at: 8)
        reply.payload = Array(bytes[16...])
        return reply
    }

    @discardableResult
    func send(_ opcode: FuseOpcode, node: UInt64, _ args: [UInt8] = [], room: UInt32 = 8192, queue: Int = 1) throws -> FsReply {
        try submit([header(opcode.rawValue, node: node, argsCount: args.count) + args], room: room == 0 ? [] : [room], queue: queue)
    }

    // MARK: - Operations, as the guest's kernel would send them

    func lookup(_ parent: UInt64, _ name: String) throws -> FsReply { try send(.lookup, node: parent, cName(name)) }
    func getattr(_ node: UInt64) throws -> FsReply { try send(.getattr, node: node, [UInt8](repeating: 0, count: 16)) }
    func mkdir(_ parent: UInt64, _ name: String, mode: UInt32 = 0o755) throws -> FsReply {
        try send(.mkdir, node: parent, le(mode) + le(UInt32(0)) + cName(name))
    }
    func mknod(_ parent: UInt64, _ name: String, mode: UInt32) throws -> FsReply {
        try send(.mknod, node: parent, le(mode) + le(UInt32(0)) + le(UInt32(0)) + le(UInt32(0)) + cName(name))
    }
    /// CREATE: the answer's entry, and its file handle at payload offset 128.
    func create(_ parent: UInt64, _ name: String, flags: Int32 = O_RDWR, mode: UInt32 = 0o644) throws -> FsReply {
        try send(.create, node: parent, le(UInt32(bitPattern: flags)) + le(mode) + le(UInt32(0)) + le(UInt32(0)) + cName(name))
    }
    func open(_ node: UInt64, flags: Int32 = O_RDWR) throws -> FsReply {
        try send(.open, node: node, le(UInt32(bitPattern: flags)) + le(UInt32(0)))
    }
    func opendir(_ node: UInt64) throws -> FsReply { try send(.opendir, node: node, le(UInt32(0)) + le(UInt32(0))) }
    func readIn(_ fh: UInt64, offset: UInt64, size: UInt32) -> [UInt8] {
        le(fh) + le(offset) + le(size) + le(UInt32(0)) + le(UInt64(0)) + le(UInt32(0)) + le(UInt32(0))
    }
    func read(_ fh: UInt64, offset: UInt64 = 0, size: UInt32 = 4096, room: UInt32 = 8192) throws -> FsReply {
        try send(.read, node: 0, readIn(fh, offset: offset, size: size), room: room)
    }
    func write(_ fh: UInt64, offset: UInt64 = 0, _ data: [UInt8]) throws -> FsReply {
        try send(.write, node: 0, readIn(fh, offset: offset, size: UInt32(data.count)) + data)
    }
    func readdir(_ fh: UInt64, plus: Bool = false, offset: UInt64 = 0, size: UInt32 = 4096) throws -> FsReply {
        try send(plus ? .readdirplus : .readdir, node: 0, readIn(fh, offset: offset, size: size))
    }
    func release(_ fh: UInt64, directory: Bool = false) throws -> FsReply {
        try send(directory ? .releasedir : .release, node: 0, le(fh) + le(UInt32(0)) + le(UInt32(0)) + le(UInt64(0)))
    }
    func rename(_ parent: UInt64, _ old: String, _ newParent: UInt64, _ new: String, flags: UInt32? = nil) throws -> FsReply {
        if let flags {
            return try send(.rename2, node: parent, le(newParent) + le(flags) + le(UInt32(0)) + cName(old) + cName(new))
        }
        return try send(.rename, node: parent, le(newParent) + cName(old) + cName(new))
    }
    func symlink(_ parent: UInt64, _ name: String, target: String) throws -> FsReply {
        try send(.symlink, node: parent, cName(name) + cName(target))
    }
    func setattr(_ node: UInt64, valid: UInt32, fh: UInt64 = 0, size: UInt64 = 0, atime: UInt64 = 0, mtime: UInt64 = 0,
                 mode: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0) throws -> FsReply {
        var args = le(valid) + le(UInt32(0)) + le(fh) + le(size) + le(UInt64(0))
        args += le(atime) + le(mtime) + le(UInt64(0)) + le(UInt32(0)) + le(UInt32(0)) + le(UInt32(0))
        args += le(mode) + le(UInt32(0)) + le(uid) + le(gid) + le(UInt32(0))
        return try send(.setattr, node: node, args)
    }
    func forget(_ node: UInt64, _ count: UInt64) throws -> FsReply {
        try send(.forget, node: node, le(count), room: 0, queue: 0)
    }
    /// A file made on the host and looked up by the guest: its node id.
    func hostFile(_ name: String, _ text: String = "hello") throws -> UInt64 {
        try scratch.write(name, text)
        let reply = try lookup(Fuse.rootID, name)
        #expect(reply.error == 0)
        return reply.node
    }
}
