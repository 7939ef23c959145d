import CKVM
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// The operations on open files and directories, and extended attributes: OPEN, CREATE,
/// READ, WRITE, FSYNC(DIR), FALLOCATE, LSEEK, OPENDIR, READDIR(PLUS), the xattr calls.
extension FuseServer {
    /// The open flags a guest may pass on to the host: access mode, append, synchronous and
    /// direct I/O. Creation, LG_O_PATH, O_TMPFILE, O_NOATIME and the rest are ours to decide.
    static func openFlags(_ flags: UInt32) throws(SystemError) -> Int32 {
        let guest = Int32(bitPattern: flags)
        guard guest & O_ACCMODE != O_ACCMODE else { throw SystemError(code: EINVAL) }
        return guest & (O_ACCMODE | O_APPEND | O_SYNC | O_DSYNC | LG_O_DIRECT | O_TRUNC)
    }

    private func openAnswer(_ fh: UInt64) -> [UInt8] {
        var w = FuseWriter(capacity: Fuse.openOutSize)
        w.u64(fh)
        w.u32(0)
        w.u32(0)
        return w.bytes
    }

    func open(_ id: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        guard let guestFlags = r.u32() else { throw SystemError(code: EINVAL) }
        try need(Fuse.openOutSize, room)
        let flags = try Self.openFlags(guestFlags)
        if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 { try writable() }
        switch node.type {
        case FileType.regular: break
        case FileType.directory: throw SystemError(code: EISDIR)
        case FileType.symbolicLink: throw SystemError(code: ELOOP)
        default: throw SystemError(code: ENXIO) // FIFOs and the rest are the guest kernel's business
        }
        let fd = try reopen(node, flags: flags | O_NONBLOCK)
        return openAnswer(try table.addHandle(fd: fd, isDirectory: false))
    }

    func create(_ parentID: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let parent = try directory(parentID)
        guard let guestFlags = r.u32(), let mode = r.u32(), r.skip(8) else { throw SystemError(code: EINVAL) }
        let name = try name(&r)
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        try need(Fuse.entryOutSize + Fuse.openOutSize, room)
        try writable()
        let excl = Int32(bitPattern: guestFlags) & O_EXCL
        let flags = try Self.openFlags(guestFlags) | excl | O_CREAT | O_NOFOLLOW
        let permissions = Self.safeMode(mode)
        let fd = try FileSystemCalls.openBeneath(parent.fd, name, flags: flags, mode: permissions)
        let id: UInt64
        var status: stat
        do throws(SystemError) {
            if permissions & hostUmask != 0 { try FileSystemCalls.changeMode(fd, mode: permissions) }
            // The node is the file just opened, whatever the name points at by now.
            let pathFD = try FileSystemCalls.openAt(procFD, Self.procName(fd), flags: LG_O_PATH)
            do throws(SystemError) { status = try FileSystemCalls.status(pathFD) } catch {
                FileSystemCalls.close(pathFD)
                throw error
            }
            id = try table.insert(fd: pathFD, status: status)
        } catch {
            FileSystemCalls.close(fd)
            throw error
        }
        let fh: UInt64
        do throws(SystemError) { fh = try table.addHandle(fd: fd, isDirectory: false) } catch {
            table.forget(id, count: 1)
            throw error
        }
        var w = FuseWriter(capacity: Fuse.entryOutSize + Fuse.openOutSize)
        entry(id, status, into: &w)
        w.append(openAnswer(fh))
        return w.bytes
    }

    func fileHandle(_ fh: UInt64, directory: Bool) throws(SystemError) -> FsHandle {
        guard let handle = table.handle(fh) else { throw SystemError(code: EBADF) }
        guard handle.isDirectory == directory else { throw SystemError(code: directory ? ENOTDIR : EISDIR) }
        return handle
    }

    func read(_ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        guard let fh = r.u64(), let offset = r.u64(), let size = r.u32() else { throw SystemError(code: EINVAL) }
        let handle = try fileHandle(fh, directory: false)
        let count = min(Int(size), Fuse.maxTransfer, max(room, 0))
        var data = [UInt8](repeating: 0, count: count)
        var filled = 0
        try withMutableBytes(&data) { (buffer) throws(SystemError) in
            while filled < count {
                let n = try FileSystemCalls.read(handle.fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]),
                                                 at: offset + UInt64(filled))
                if n == 0 { break }
                filled += n
            }
        }
        return Array(data.prefix(filled))
    }

    func write(_ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        guard let fh = r.u64(), let offset = r.u64(), let size = r.u32(), r.skip(4), r.skip(8), r.skip(8) else {
            throw SystemError(code: EINVAL)
        }
        // The data must be exactly what the header says.
        guard Int(size) == r.remaining, Int(size) <= Fuse.maxTransfer else { throw SystemError(code: EINVAL) }
        try need(Fuse.writeOutSize, room)
        try writable()
        let handle = try fileHandle(fh, directory: false)
        let data = r.rest()
        var written = 0
        try withBytes(Array(data)) { (buffer) throws(SystemError) in
            while written < buffer.count {
                let n = try FileSystemCalls.write(handle.fd, from: UnsafeRawBufferPointer(rebasing: buffer[written...]),
                                                  at: offset + UInt64(written))
                if n == 0 { break }
                written += n
            }
        }
        var w = FuseWriter(capacity: Fuse.writeOutSize)
        w.u32(UInt32(written))
        w.u32(0)
        return w.bytes
    }

    func fsync(_ r: inout FuseReader) throws(SystemError) -> [UInt8] {
        guard let fh = r.u64(), let flags = r.u32() else { throw SystemError(code: EINVAL) }
        guard let handle = table.handle(fh) else { throw SystemError(code: EBADF) }
        try FileSystemCalls.sync(handle.fd, dataOnly: flags & Fuse.fsyncDataOnly != 0)
        return []
    }

    func fallocate(_ r: inout FuseReader) throws(SystemError) -> [UInt8] {
        guard let fh = r.u64(), let offset = r.u64(), let length = r.u64(), let mode = r.u32() else {
            throw SystemError(code: EINVAL)
        }
        try writable()
        let handle = try fileHandle(fh, directory: false)
        try FileSystemCalls.allocate(handle.fd, mode: Int32(bitPattern: mode), offset: offset, length: length)
        return []
    }

    func lseek(_ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        guard let fh = r.u64(), let offset = r.u64(), let whence = r.u32() else { throw SystemError(code: EINVAL) }
        // SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE.
        guard whence <= 4 else { throw SystemError(code: EINVAL) }
        try need(Fuse.lseekOutSize, room)
        let handle = try fileHandle(fh, directory: false)
        let position = try FileSystemCalls.seek(handle.fd, offset: Int64(bitPattern: offset), whence: Int32(whence))
        var w = FuseWriter(capacity: 8)
        w.u64(UInt64(bitPattern: position))
        return w.bytes
    }

    func opendir(_ id: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let node = try directory(id)
        guard r.u32() != nil else { throw SystemError(code: EINVAL) }
        try need(Fuse.openOutSize, room)
        let fd = try FileSystemCalls.openAt(node.fd, ".", flags: O_RDONLY | O_DIRECTORY)
        return openAnswer(try table.addHandle(fd: fd, isDirectory: true))
    }

    /// READDIR and READDIRPLUS: from `offset` (a cookie this server handed out earlier, 0 for
    /// the start), as many `fuse_dirent`s (or `fuse_direntplus`es) as fit in `size` bytes.
    /// In READDIRPLUS each name but `.` and `..` is looked up, which the guest will FORGET.
    func readdir(_ r: inout FuseReader, room: Int, plus: Bool) throws(SystemError) -> [UInt8] {
        guard let fh = r.u64(), let offset = r.u64(), let size = r.u32() else { throw SystemError(code: EINVAL) }
        let handle = try fileHandle(fh, directory: true)
        let limit = min(Int(size), max(room, 0), Fuse.maxTransfer)
        _ = try FileSystemCalls.seek(handle.fd, offset: Int64(bitPattern: offset), whence: SEEK_SET)
        var w = FuseWriter(capacity: min(limit, 64 * 1024))
        var buffer = [UInt8](repeating: 0, count: 32 * 1024)
        reading: while true {
            let filled = try withMutableBytes(&buffer) { (bytes) throws(SystemError) in
                try FileSystemCalls.readDirectory(handle.fd, into: bytes)
            }
            if filled == 0 { break }
            var position = 0
            // `struct linux_dirent64`: d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name.
            while position + 19 < filled {
                var record = FuseReader(Array(buffer[position ..< filled]))
                guard let inode = record.u64(), let next = record.u64(), let length = record.u16(),
                      Int(length) >= 20, position + Int(length) <= filled else { break reading }
                let type = buffer[position + 18]
                let nameBytes = buffer[(position + 19) ..< (position + Int(length))].prefix { $0 != 0 }
                position += Int(length)
                let entrySize = (plus ? Fuse.entryOutSize : 0) + Fuse.direntHeaderSize + nameBytes.count
                let padded = (entrySize + 7) & ~7
                guard w.bytes.count + padded <= limit else { break reading }
                if plus {
                    let isDot = nameBytes.elementsEqual([0x2E]) || nameBytes.elementsEqual([0x2E, 0x2E])
                    var looked: (UInt64, stat)? = nil
                    if !isDot { looked = try? lookUp(handle.fd, nameBytes.map { CChar(bitPattern: $0) } + [0]) }
                    entry(looked?.0 ?? 0, looked?.1, into: &w)
                }
                w.u64(inode)
                w.u64(next)
                w.u32(UInt32(nameBytes.count))
                w.u32(UInt32(type))
                w.append(nameBytes)
                w.align8()
            }
        }
        return w.bytes
    }

    // MARK: - Extended attributes

    /// Names the guest may not set on the host: file capabilities, and the trusted namespace.
    static func isForbiddenAttribute(_ name: [UInt8]) -> Bool {
        name.starts(with: Array("trusted.".utf8)) || name.elementsEqual("security.capability".utf8)
    }

    private func attributeName(_ r: inout FuseReader) throws(SystemError) -> [UInt8] {
        guard let name = r.cString(), !name.isEmpty else { throw SystemError(code: EINVAL) }
        guard name.count <= 255 else { throw SystemError(code: ERANGE) }
        return name
    }

    /// A real descriptor on `node` for the f*xattr calls (which refuse LG_O_PATH descriptors):
    /// regular files and directories only; the guest's user attributes on links and devices are
    /// EPERM on Linux anyway.
    private func withAttributeDescriptor<T>(_ node: FsNode, _ body: (CInt) throws(SystemError) -> T) throws(SystemError) -> T {
        guard node.type == FileType.regular || node.type == FileType.directory else { throw SystemError(code: EPERM) }
        let fd = try reopen(node, flags: O_RDONLY | O_NONBLOCK)
        defer { FileSystemCalls.close(fd) }
        return try body(fd)
    }

    func setxattr(_ id: UInt64, _ r: inout FuseReader) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        guard let size = r.u32(), let flags = r.u32() else { throw SystemError(code: EINVAL) }
        let name = try attributeName(&r)
        guard Int(size) == r.remaining else { throw SystemError(code: EINVAL) }
        guard size <= 65536 else { throw SystemError(code: E2BIG) }
        try writable()
        guard !Self.isForbiddenAttribute(name) else { throw SystemError(code: EPERM) }
        let value = Array(r.rest())
        let cName = name.map { CChar(bitPattern: $0) } + [0]
        try withAttributeDescriptor(node) { (fd) throws(SystemError) in
            try withBytes(value) { (bytes) throws(SystemError) in
                try FileSystemCalls.setExtendedAttribute(fd, cName, bytes, flags: Int32(bitPattern: flags) & 3)
            }
        }
        return []
    }

    func getxattr(_ id: UInt64, _ r: inout FuseReader, room: Int, list: Bool) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        guard let size = r.u32(), r.skip(4) else { throw SystemError(code: EINVAL) }
        let cName = list ? [] : try attributeName(&r).map { CChar(bitPattern: $0) } + [0]
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        let wanted = min(Int(size), 65536)
        try need(wanted == 0 ? Fuse.getxattrOutSize : wanted, room)
        var buffer = [UInt8](repeating: 0, count: wanted)
        let count = try withAttributeDescriptor(node) { (fd) throws(SystemError) -> Int in
            try withMutableBytes(&buffer) { (bytes) throws(SystemError) -> Int in
                list ? try FileSystemCalls.listExtendedAttributes(fd, into: bytes)
                     : try FileSystemCalls.getExtendedAttribute(fd, cName, into: bytes)
            }
        }
        if wanted == 0 {
            var w = FuseWriter(capacity: 8)
            w.u32(UInt32(count))
            w.u32(0)
            return w.bytes
        }
        return Array(buffer.prefix(count))
    }

    func removexattr(_ id: UInt64, _ r: inout FuseReader) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        let name = try attributeName(&r)
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        try writable()
        guard !Self.isForbiddenAttribute(name) else { throw SystemError(code: EPERM) }
        let cName = name.map { CChar(bitPattern: $0) } + [0]
        try withAttributeDescriptor(node) { (fd) throws(SystemError) in try FileSystemCalls.removeExtendedAttribute(fd, cName) }
        return []
    }
}
