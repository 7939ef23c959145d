import CKVM
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// What became of one request.
enum FuseOutcome: Equatable {
    /// The answer's bytes, out header first.
    case reply([UInt8])
    /// FORGET and BATCH_FORGET are never answered.
    case noReply
    /// Too broken to answer (no header to take the `unique` from, no room for an out header):
    /// handed back with nothing written, and counted.
    case dropped
}

/// What a share's server has seen.
public struct FuseStatistics: Sendable, Equatable {
    public var requests = 0
    /// Requests answered with an error (the host's errno, or one of ours for a bad request).
    public var errors = 0
    /// Requests answered ENOSYS: opcodes we do not serve.
    public var unsupported = 0
    /// Requests too broken to answer at all.
    public var dropped = 0
    /// FORGETs of node ids we do not hold (a double FORGET, a made-up id).
    public var unknownForgets = 0
    /// Nodes and open handles held now.
    public var nodes = 0
    public var handles = 0
}

/// The FUSE server of one shared directory: request bytes in, answer bytes out, host file
/// system calls in between. Not thread-safe: `FsDevice` calls it with its lock held.
///
/// Containment. The share's root is an LG_O_PATH descriptor opened at setup; every other file
/// the guest reaches is an LG_O_PATH descriptor opened *relative to its parent's descriptor*,
/// one name at a time, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` and
/// O_NOFOLLOW. A name is one component (no `/`, no NUL), so no symbolic link is ever
/// followed on the host: the guest's kernel resolves links itself, inside its own view of the
/// share. `..` at the root is the root; elsewhere it is answered only if the parent is still
/// inside the share (a directory moved out on the host side cannot be climbed out of).
/// Files are opened for I/O by reopening their LG_O_PATH descriptor through /proc/self/fd, which
/// names a descriptor, never a path the guest chose.
final class FuseServer {
    let readOnly: Bool
    var table: FsNodeTable
    /// /proc/self/fd, opened at setup: `openat(procFD, "N")` reopens descriptor N.
    let procFD: CInt
    /// The process's umask, which the kernel applies to every file we create; modes it would
    /// clip are set again with chmod so the guest gets the mode it asked for.
    let hostUmask: UInt32
    private(set) var initialized = false
    private(set) var destroyed = false
    var statistics = FuseStatistics()

    /// Opens `share.path` and /proc/self/fd. Throws an `FsError` naming the directory.
    init(_ share: FsShareConfiguration, maxNodes: Int, maxHandles: Int) throws(FsError) {
        try share.validate()
        let root = lg_open(share.path, LG_O_PATH | O_DIRECTORY | O_CLOEXEC, 0)
        guard root >= 0 else {
            switch -root {
            case ENOENT: throw .notFound(path: share.path)
            case ENOTDIR: throw .notDirectory(path: share.path)
            case EACCES, EPERM: throw .permissionDenied(path: share.path)
            default: throw .system(path: share.path, errno: -root)
            }
        }
        let proc = lg_open("/proc/self/fd", LG_O_PATH | O_DIRECTORY | O_CLOEXEC, 0)
        guard proc >= 0 else {
            FileSystemCalls.close(root)
            throw .noProc(errno: -proc)
        }
        let status: stat
        do throws(SystemError) { status = try FileSystemCalls.status(root) } catch {
            FileSystemCalls.close(root)
            FileSystemCalls.close(proc)
            throw .system(path: share.path, errno: error.code)
        }
        procFD = proc
        readOnly = share.readOnly
        let mask = umask(0o022)
        umask(mask)
        hostUmask = UInt32(mask)
        table = FsNodeTable(root: FsNode(fd: root, device: UInt64(status.st_dev), inode: UInt64(status.st_ino),
                                         type: FileType.directory, lookups: 1),
                            maxNodes: maxNodes, maxHandles: maxHandles)
    }

    deinit {
        table.closeAll()
        FileSystemCalls.close(procFD)
    }

    /// Back to the state before FUSE_INIT (the device was reset): every node but the root and
    /// every handle let go.
    func reset() {
        table.clear()
        initialized = false
        destroyed = false
        refreshCounts()
    }

    private func refreshCounts() {
        statistics.nodes = table.nodes.count
        statistics.handles = table.handles.count
    }

    /// Serves one request, `bytes` being the whole device-readable part of its chain, with
    /// `room` bytes of device-writable space for the answer.
    func handle(_ bytes: [UInt8], room: Int) -> FuseOutcome {
        statistics.requests += 1
        defer { refreshCounts() }
        guard let header = FuseRequestHeader.parse(bytes) else {
            statistics.dropped += 1
            return .dropped
        }
        let opcode = FuseOpcode(rawValue: header.opcode)
        let answered = opcode != .forget && opcode != .batchForget
        guard !answered || room >= Fuse.outHeaderSize else {
            statistics.dropped += 1
            return .dropped
        }
        let payload: [UInt8]?
        do throws(SystemError) {
            // The header's length must be the request's: a driver that disagrees with its own
            // buffers gets nothing done.
            guard Int(header.length) == bytes.count else { throw SystemError(code: EINVAL) }
            guard let opcode else { throw SystemError(code: ENOSYS) }
            if opcode != .initialize, !initialized { throw SystemError(code: EIO) }
            var reader = FuseReader(bytes, from: Fuse.inHeaderSize)
            payload = try perform(opcode, header, &reader, room: room - Fuse.outHeaderSize)
        } catch {
            guard answered else {
                statistics.dropped += 1
                return .dropped
            }
            statistics.errors += 1
            if error.code == ENOSYS { statistics.unsupported += 1 }
            return .reply(Self.answer(unique: header.unique, error: error.code, payload: []))
        }
        guard let payload else { return .noReply }
        return .reply(Self.answer(unique: header.unique, error: 0, payload: payload))
    }

    /// `fuse_out_header` (len, error as a negative errno, unique) and the payload.
    static func answer(unique: UInt64, error: Int32, payload: [UInt8]) -> [UInt8] {
        var w = FuseWriter(capacity: Fuse.outHeaderSize + payload.count)
        w.u32(UInt32(Fuse.outHeaderSize + payload.count))
        w.u32(UInt32(bitPattern: -error))
        w.u64(unique)
        w.append(payload)
        return w.bytes
    }

    private func perform(_ opcode: FuseOpcode, _ header: FuseRequestHeader, _ r: inout FuseReader,
                         room: Int) throws(SystemError) -> [UInt8]? {
        switch opcode {
        case .initialize: return try initialize(&r, room: room)
        case .destroy:
            table.clear()
            initialized = false
            destroyed = true
            return []
        case .forget:
            guard let count = r.u64() else { throw SystemError(code: EINVAL) }
            if !table.forget(header.nodeID, count: count) { statistics.unknownForgets += 1 }
            return nil
        case .batchForget: return try batchForget(&r)
        case .lookup: return try lookup(header.nodeID, &r, room: room)
        case .getattr: return try getattr(header.nodeID, &r, room: room)
        case .setattr: return try setattr(header.nodeID, &r, room: room)
        case .readlink: return try readlink(header.nodeID, room: room)
        case .symlink: return try symlink(header.nodeID, &r, room: room)
        case .mknod: return try mknod(header.nodeID, &r, room: room)
        case .mkdir: return try mkdir(header.nodeID, &r, room: room)
        case .unlink, .rmdir: return try remove(header.nodeID, &r, directory: opcode == .rmdir)
        case .rename: return try rename(header.nodeID, &r, withFlags: false)
        case .rename2: return try rename(header.nodeID, &r, withFlags: true)
        case .link: return try link(header.nodeID, &r, room: room)
        case .statfs: return try statfs(header.nodeID, room: room)
        case .access: return try access(header.nodeID, &r)
        case .open: return try open(header.nodeID, &r, room: room)
        case .create: return try create(header.nodeID, &r, room: room)
        case .read: return try read(&r, room: room)
        case .write: return try write(&r, room: room)
        case .flush:
            guard let fh = r.u64() else { throw SystemError(code: EINVAL) }
            guard table.handle(fh) != nil else { throw SystemError(code: EBADF) }
            return []
        case .release, .releasedir:
            guard let fh = r.u64() else { throw SystemError(code: EINVAL) }
            guard table.removeHandle(fh) else { throw SystemError(code: EBADF) }
            return []
        case .fsync, .fsyncdir: return try fsync(&r)
        case .fallocate: return try fallocate(&r)
        case .lseek: return try lseek(&r, room: room)
        case .opendir: return try opendir(header.nodeID, &r, room: room)
        case .readdir: return try readdir(&r, room: room, plus: false)
        case .readdirplus: return try readdir(&r, room: room, plus: true)
        case .setxattr: return try setxattr(header.nodeID, &r)
        case .getxattr: return try getxattr(header.nodeID, &r, room: room, list: false)
        case .listxattr: return try getxattr(header.nodeID, &r, room: room, list: true)
        case .removexattr: return try removexattr(header.nodeID, &r)
        case .interrupt: throw SystemError(code: ENOSYS)
        }
    }

    // MARK: - INIT and FORGET

    private func initialize(_ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        guard let major = r.u32(), let minor = r.u32(), let readahead = r.u32(), let flags = r.u32() else {
            throw SystemError(code: EINVAL)
        }
        var w = FuseWriter(capacity: Fuse.initOutSize)
        if major > Fuse.kernelVersion {
            // The kernel offers a newer major version: tell it ours, and it asks again.
            w.u32(Fuse.kernelVersion)
            w.u32(Fuse.minor)
            w.zeros(Fuse.initOutSize - 8)
            try need(Fuse.initOutSize, room)
            return w.bytes
        }
        guard major == Fuse.kernelVersion, minor >= Fuse.minimumMinor else { throw SystemError(code: EPROTO) }
        try need(Fuse.initOutSize, room)
        table.clear()
        initialized = true
        destroyed = false
        w.u32(Fuse.kernelVersion)
        w.u32(Fuse.minor)
        w.u32(readahead)
        w.u32(flags & Fuse.grantable)
        w.u16(64) // max_background
        w.u16(48) // congestion_threshold
        w.u32(UInt32(Fuse.maxTransfer)) // max_write
        w.u32(1) // time_gran: nanoseconds
        w.u16(Fuse.maxPagesValue)
        w.u16(0) // map_alignment
        w.zeros(Fuse.initOutSize - w.bytes.count)
        return w.bytes
    }

    private func batchForget(_ r: inout FuseReader) throws(SystemError) -> [UInt8]? {
        guard let count = r.u32(), r.skip(4) else { throw SystemError(code: EINVAL) }
        for _ in 0 ..< count {
            guard let id = r.u64(), let lookups = r.u64() else {
                // Fewer entries than the count claims: the ones that were there are done.
                statistics.dropped += 1
                return nil
            }
            if !table.forget(id, count: lookups) { statistics.unknownForgets += 1 }
        }
        return nil
    }

    // MARK: - Helpers shared by the operations

    /// Throws EINVAL unless the answer's `size` bytes fit in `room`: checked before anything
    /// changes, so a request that cannot be answered changes nothing.
    func need(_ size: Int, _ room: Int) throws(SystemError) {
        guard room >= size else { throw SystemError(code: EINVAL) }
    }

    func node(_ id: UInt64) throws(SystemError) -> FsNode {
        guard let node = table.node(id) else { throw SystemError(code: ESTALE) }
        return node
    }

    func directory(_ id: UInt64) throws(SystemError) -> FsNode {
        let node = try node(id)
        guard node.type == FileType.directory else { throw SystemError(code: ENOTDIR) }
        return node
    }

    func writable() throws(SystemError) {
        if readOnly { throw SystemError(code: EROFS) }
    }

    /// A file name from the request: one path component, NUL-terminated, 1 to 255 bytes, no
    /// `/`; `.` and `..` only where `dots` allows them. Returned with its NUL, ready for C.
    func name(_ r: inout FuseReader, dots: Bool = false) throws(SystemError) -> [CChar] {
        guard let bytes = r.cString(), !bytes.isEmpty, !bytes.contains(UInt8(ascii: "/")) else {
            throw SystemError(code: EINVAL)
        }
        guard bytes.count <= Int(NAME_MAX) else { throw SystemError(code: ENAMETOOLONG) }
        if !dots, bytes == [0x2E] || bytes == [0x2E, 0x2E] { throw SystemError(code: EINVAL) }
        return bytes.map { CChar(bitPattern: $0) } + [0]
    }

    /// The name of descriptor `fd` under /proc/self/fd, NUL-terminated.
    static func procName(_ fd: CInt) -> [CChar] {
        var digits: [CChar] = []
        var value = Int(max(fd, 0))
        repeat {
            digits.append(CChar(48 + value % 10))
            value /= 10
        } while value > 0
        return digits.reversed() + [0]
    }

    /// Reopens node `node` for I/O with `flags` (through /proc/self/fd, so the open follows
    /// the descriptor, never a name).
    func reopen(_ node: FsNode, flags: Int32) throws(SystemError) -> CInt {
        if node.type == FileType.directory { return try FileSystemCalls.openAt(node.fd, ".", flags: flags | O_DIRECTORY) }
        return try FileSystemCalls.openAt(procFD, Self.procName(node.fd), flags: flags)
    }

    /// `fuse_attr` for `s`.
    func attributes(_ s: stat, into w: inout FuseWriter) {
        w.u64(UInt64(s.st_ino))
        w.u64(UInt64(s.st_size))
        w.u64(UInt64(s.st_blocks))
        w.u64(UInt64(bitPattern: Int64(s.st_atim.tv_sec)))
        w.u64(UInt64(bitPattern: Int64(s.st_mtim.tv_sec)))
        w.u64(UInt64(bitPattern: Int64(s.st_ctim.tv_sec)))
        w.u32(UInt32(truncatingIfNeeded: s.st_atim.tv_nsec))
        w.u32(UInt32(truncatingIfNeeded: s.st_mtim.tv_nsec))
        w.u32(UInt32(truncatingIfNeeded: s.st_ctim.tv_nsec))
        w.u32(UInt32(s.st_mode))
        w.u32(UInt32(truncatingIfNeeded: s.st_nlink))
        w.u32(UInt32(s.st_uid))
        w.u32(UInt32(s.st_gid))
        w.u32(UInt32(truncatingIfNeeded: s.st_rdev))
        w.u32(UInt32(truncatingIfNeeded: s.st_blksize))
        w.u32(0)
    }

    /// `fuse_entry_out` for node `id` (0: a name without a node, in READDIRPLUS).
    func entry(_ id: UInt64, _ s: stat?, into w: inout FuseWriter) {
        guard let s, id != 0 else {
            w.zeros(Fuse.entryOutSize)
            return
        }
        w.u64(id)
        w.u64(0) // generation: node ids are never reused
        w.u64(Fuse.validSeconds)
        w.u64(Fuse.validSeconds)
        w.u32(0)
        w.u32(0)
        attributes(s, into: &w)
    }

    /// `fuse_attr_out` for `s`.
    func attributeAnswer(_ s: stat) -> [UInt8] {
        var w = FuseWriter(capacity: Fuse.attrOutSize)
        w.u64(Fuse.validSeconds)
        w.u32(0)
        w.u32(0)
        attributes(s, into: &w)
        return w.bytes
    }

    /// Looks `name` up in `parent` (one more lookup of its node) and answers its entry.
    func lookupEntry(_ parent: FsNode, _ name: [CChar]) throws(SystemError) -> [UInt8] {
        let (id, s) = try lookUp(parent.fd, name)
        var w = FuseWriter(capacity: Fuse.entryOutSize)
        entry(id, s, into: &w)
        return w.bytes
    }

    /// Opens `name` under the directory `directory` as an LG_O_PATH descriptor, without following
    /// it and without leaving `directory`, and records the lookup.
    func lookUp(_ directory: CInt, _ name: [CChar]) throws(SystemError) -> (UInt64, stat) {
        let fd = try FileSystemCalls.openBeneath(directory, name, flags: LG_O_PATH | O_NOFOLLOW)
        let s: stat
        do throws(SystemError) { s = try FileSystemCalls.status(fd) } catch {
            FileSystemCalls.close(fd)
            throw error
        }
        return (try table.insert(fd: fd, status: s), s)
    }

    /// Permission bits the guest may set on the host: no set-user-ID, no set-group-ID.
    static func safeMode(_ mode: UInt32) -> UInt32 { mode & 0o1777 }
}
