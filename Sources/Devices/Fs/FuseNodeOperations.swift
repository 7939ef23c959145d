import CKVM
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// The operations on names and attributes: LOOKUP, GETATTR, SETATTR, READLINK, SYMLINK,
/// MKNOD, MKDIR, UNLINK, RMDIR, RENAME(2), LINK, STATFS, ACCESS.
extension FuseServer {
    func lookup(_ parentID: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let parent = try directory(parentID)
        let name = try name(&r, dots: true)
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        try need(Fuse.entryOutSize, room)
        if name == [0x2E, 0] {
            table.addLookup(parentID)
            var w = FuseWriter()
            entry(parentID, try FileSystemCalls.status(parent.fd), into: &w)
            return w.bytes
        }
        if name == [0x2E, 0x2E, 0] {
            let (id, s) = try parentInsideShare(parentID, parent)
            var w = FuseWriter()
            entry(id, s, into: &w)
            return w.bytes
        }
        return try lookupEntry(parent, name)
    }

    /// `..` of node `id`: the root's is the root; any other's only if, walking up from it,
    /// the share's root is met before the host's `/` (a directory moved out of the share on the
    /// host side has a parent outside it, and the guest gets EACCES instead).
    private func parentInsideShare(_ id: UInt64, _ node: FsNode) throws(SystemError) -> (UInt64, stat) {
        let root = table.root
        if id == Fuse.rootID {
            table.addLookup(id)
            return (id, try FileSystemCalls.status(root.fd))
        }
        let parent = try FileSystemCalls.openAt(node.fd, "..", flags: LG_O_PATH | O_DIRECTORY)
        var inside = false
        var current = parent
        var s: stat
        do throws(SystemError) {
            s = try FileSystemCalls.status(parent)
            var here = s
            for _ in 0 ..< 4096 {
                if UInt64(here.st_dev) == root.device, UInt64(here.st_ino) == root.inode { inside = true; break }
                let up = try FileSystemCalls.openAt(current, "..", flags: LG_O_PATH | O_DIRECTORY)
                let above = try FileSystemCalls.status(up)
                if current != parent { FileSystemCalls.close(current) }
                current = up
                if above.st_dev == here.st_dev, above.st_ino == here.st_ino { break } // the host's `/`
                here = above
            }
        } catch {
            if current != parent { FileSystemCalls.close(current) }
            FileSystemCalls.close(parent)
            throw error
        }
        if current != parent { FileSystemCalls.close(current) }
        guard inside else {
            FileSystemCalls.close(parent)
            throw SystemError(code: EACCES)
        }
        return (try table.insert(fd: parent, status: s), s)
    }

    func getattr(_ id: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        guard r.remaining >= 16 else { throw SystemError(code: EINVAL) }
        try need(Fuse.attrOutSize, room)
        return attributeAnswer(try FileSystemCalls.status(node.fd))
    }

    func setattr(_ id: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        guard let valid = r.u32(), r.skip(4), let fh = r.u64(), let size = r.u64(), r.skip(8),
              let atime = r.u64(), let mtime = r.u64(), r.skip(8),
              let atimeNanoseconds = r.u32(), let mtimeNanoseconds = r.u32(), r.skip(4),
              let mode = r.u32(), r.skip(4), let uid = r.u32(), let gid = r.u32(), r.skip(4) else {
            throw SystemError(code: EINVAL)
        }
        try need(Fuse.attrOutSize, room)
        try writable()
        let isLink = node.type == FileType.symbolicLink
        if valid & Fuse.setMode != 0 {
            // chmod on a symbolic link means nothing on Linux (lchmod is EOPNOTSUPP there too).
            guard !isLink else { throw SystemError(code: EOPNOTSUPP) }
            try FileSystemCalls.changeMode(procFD, Self.procName(node.fd), mode: Self.safeMode(mode))
        }
        if valid & (Fuse.setUID | Fuse.setGID) != 0 {
            try FileSystemCalls.changeOwner(node.fd, uid: valid & Fuse.setUID != 0 ? uid : UInt32.max,
                                            gid: valid & Fuse.setGID != 0 ? gid : UInt32.max)
        }
        if valid & Fuse.setSize != 0 {
            if valid & Fuse.setFileHandle != 0, let handle = table.handle(fh), !handle.isDirectory {
                try FileSystemCalls.truncate(handle.fd, size: size)
            } else {
                guard node.type == FileType.regular else {
                    throw SystemError(code: node.type == FileType.directory ? EISDIR : EINVAL)
                }
                let fd = try reopen(node, flags: O_WRONLY | O_NONBLOCK)
                defer { FileSystemCalls.close(fd) }
                try FileSystemCalls.truncate(fd, size: size)
            }
        }
        if valid & (Fuse.setAtime | Fuse.setMtime) != 0 {
            func time(_ set: UInt32, _ now: UInt32, _ seconds: UInt64, _ nanoseconds: UInt32) -> timespec {
                if valid & set == 0 { return timespec(tv_sec: 0, tv_nsec: LG_UTIME_OMIT) }
                if valid & now != 0 { return timespec(tv_sec: 0, tv_nsec: LG_UTIME_NOW) }
                return timespec(tv_sec: Int(truncatingIfNeeded: Int64(bitPattern: seconds)),
                                tv_nsec: Int(min(nanoseconds, 999_999_999)))
            }
            let times = (time(Fuse.setAtime, Fuse.setAtimeNow, atime, atimeNanoseconds),
                         time(Fuse.setMtime, Fuse.setMtimeNow, mtime, mtimeNanoseconds))
            if isLink {
                try FileSystemCalls.setTimes(node.fd, "", times, flags: LG_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
            } else {
                try FileSystemCalls.setTimes(procFD, Self.procName(node.fd), times, flags: 0)
            }
        }
        return attributeAnswer(try FileSystemCalls.status(node.fd))
    }

    func readlink(_ id: UInt64, room: Int) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        guard node.type == FileType.symbolicLink else { throw SystemError(code: EINVAL) }
        let target = try FileSystemCalls.readSymbolicLink(node.fd)
        try need(target.count, room)
        return target
    }

    func symlink(_ parentID: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let parent = try directory(parentID)
        let name = try name(&r)
        guard let target = r.cString(), !target.isEmpty, target.count < Int(PATH_MAX), r.remaining == 0 else {
            throw SystemError(code: EINVAL)
        }
        try need(Fuse.entryOutSize, room)
        try writable()
        // The target is stored, never followed by us: the guest resolves it in its own view.
        try FileSystemCalls.makeSymbolicLink(target: target.map { CChar(bitPattern: $0) } + [0], parent.fd, name)
        return try lookupEntry(parent, name)
    }

    func mknod(_ parentID: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let parent = try directory(parentID)
        guard let mode = r.u32(), r.skip(12) else { throw SystemError(code: EINVAL) }
        let name = try name(&r)
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        try need(Fuse.entryOutSize, room)
        try writable()
        // Regular files and FIFOs only: no device node, no socket, appears on the host.
        var type = mode & FileType.mask
        if type == 0 { type = FileType.regular }
        guard type == FileType.regular || type == FileType.fifo else { throw SystemError(code: EPERM) }
        let permissions = Self.safeMode(mode)
        try FileSystemCalls.makeNode(parent.fd, name, mode: type | permissions)
        return try created(parent, name, permissions: permissions)
    }

    func mkdir(_ parentID: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let parent = try directory(parentID)
        guard let mode = r.u32(), r.skip(4) else { throw SystemError(code: EINVAL) }
        let name = try name(&r)
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        try need(Fuse.entryOutSize, room)
        try writable()
        let permissions = Self.safeMode(mode)
        try FileSystemCalls.makeDirectory(parent.fd, name, mode: permissions)
        return try created(parent, name, permissions: permissions)
    }

    /// The entry of a file just made with `permissions`, which the host's umask may have
    /// clipped: set again if so (the guest's kernel already applied the guest's umask).
    private func created(_ parent: FsNode, _ name: [CChar], permissions: UInt32) throws(SystemError) -> [UInt8] {
        let (id, s) = try lookUp(parent.fd, name)
        var status = s
        if permissions & hostUmask != 0, let node = table.node(id) {
            try FileSystemCalls.changeMode(procFD, Self.procName(node.fd), mode: permissions)
            status = try FileSystemCalls.status(node.fd)
        }
        var w = FuseWriter(capacity: Fuse.entryOutSize)
        entry(id, status, into: &w)
        return w.bytes
    }

    func remove(_ parentID: UInt64, _ r: inout FuseReader, directory isDirectory: Bool) throws(SystemError) -> [UInt8] {
        let parent = try directory(parentID)
        let name = try name(&r)
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        try writable()
        try FileSystemCalls.unlink(parent.fd, name, flags: isDirectory ? AT_REMOVEDIR : 0)
        return []
    }

    func rename(_ parentID: UInt64, _ r: inout FuseReader, withFlags: Bool) throws(SystemError) -> [UInt8] {
        let parent = try directory(parentID)
        guard let newParentID = r.u64() else { throw SystemError(code: EINVAL) }
        var flags: UInt32 = 0
        if withFlags {
            guard let value = r.u32(), r.skip(4) else { throw SystemError(code: EINVAL) }
            flags = value
        }
        let oldName = try name(&r)
        let newName = try name(&r)
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        // NOREPLACE and EXCHANGE; WHITEOUT (an overlayfs device node) and anything newer are not ours to make.
        guard flags & ~(Fuse.renameNoReplace | Fuse.renameExchange) == 0 else { throw SystemError(code: EINVAL) }
        let newParent = try directory(newParentID)
        try writable()
        try FileSystemCalls.rename(parent.fd, oldName, newParent.fd, newName, flags: flags)
        return []
    }

    func link(_ parentID: UInt64, _ r: inout FuseReader, room: Int) throws(SystemError) -> [UInt8] {
        let parent = try directory(parentID)
        guard let oldID = r.u64() else { throw SystemError(code: EINVAL) }
        let name = try name(&r)
        guard r.remaining == 0 else { throw SystemError(code: EINVAL) }
        let old = try node(oldID)
        try need(Fuse.entryOutSize, room)
        try writable()
        guard old.type != FileType.directory else { throw SystemError(code: EPERM) }
        // linkat through /proc/self/fd/N links the inode the descriptor holds.
        try FileSystemCalls.link(procFD, Self.procName(old.fd), parent.fd, name, flags: AT_SYMLINK_FOLLOW)
        return try lookupEntry(parent, name)
    }

    func statfs(_ id: UInt64, room: Int) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        try need(Fuse.statfsOutSize, room)
        let s = try FileSystemCalls.fileSystemStatus(node.fd)
        var w = FuseWriter(capacity: Fuse.statfsOutSize)
        w.u64(UInt64(s.f_blocks))
        w.u64(UInt64(s.f_bfree))
        w.u64(UInt64(s.f_bavail))
        w.u64(UInt64(s.f_files))
        w.u64(UInt64(s.f_ffree))
        w.u32(UInt32(truncatingIfNeeded: s.f_bsize))
        w.u32(UInt32(truncatingIfNeeded: s.f_namelen))
        w.u32(UInt32(truncatingIfNeeded: s.f_frsize))
        w.zeros(Fuse.statfsOutSize - w.bytes.count)
        return w.bytes
    }

    func access(_ id: UInt64, _ r: inout FuseReader) throws(SystemError) -> [UInt8] {
        let node = try node(id)
        guard let mask = r.u32() else { throw SystemError(code: EINVAL) }
        if mask & UInt32(W_OK) != 0 { try writable() }
        try FileSystemCalls.access(node.fd, mask: Int32(bitPattern: mask & 7))
        return []
    }
}
