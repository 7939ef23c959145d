import Foundation
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// The FUSE server, operation by operation, through the device and the mock driver's queues,
/// against a scratch directory.
@Suite struct FsOperationTests {
    @Test func configurationSpaceHoldsTheTagAndOneRequestQueue() throws {
        let rig = try FsRig(initialize: false)
        let config = rig.device.configSpace
        #expect(config.count == 40)
        #expect(Array(config.prefix(4)) == Array("work".utf8))
        #expect(config[4 ..< 36].allSatisfy { $0 == 0 })
        #expect(config[36] == 1)
        #expect(rig.device.deviceType == 26)
        #expect(rig.device.queueMaxSizes.count == 2)
    }

    @Test func initNegotiates731AndRefusesOlderDrivers() throws {
        let rig = try FsRig(initialize: false)
        // Before INIT nothing is served.
        #expect(try rig.getattr(Fuse.rootID).error == EIO)
        let old = try rig.send(.initialize, node: 0, le(UInt32(7)) + le(UInt32(26)) + le(UInt32(0)) + le(UInt32(0)))
        #expect(old.error == EPROTO)
        let reply = try rig.send(.initialize, node: 0, le(UInt32(7)) + le(UInt32(38)) + le(UInt32(65536)) + le(Fuse.doReaddirplus | (1 << 31)) + [UInt8](repeating: 0, count: 48))
        #expect(reply.error == 0)
        #expect(reply.payload.count == 64)
        #expect(reply.u32(at: 0) == 7)
        #expect(reply.u32(at: 4) == 31)
        #expect(reply.u32(at: 12) == Fuse.doReaddirplus, "only flags both sides know")
        #expect(reply.u32(at: 20) == UInt32(Fuse.maxTransfer))
        #expect(try rig.getattr(Fuse.rootID).error == 0)
    }

    @Test func lookupAndGetattrDescribeHostFiles() throws {
        let rig = try FsRig()
        try rig.scratch.write("a.txt", "twelve bytes")
        let entry = try rig.lookup(Fuse.rootID, "a.txt")
        #expect(entry.error == 0)
        #expect(entry.node > Fuse.rootID)
        #expect(entry.attrSize() == 12)
        #expect(entry.attrMode() & FileType.mask == FileType.regular)
        let attr = try rig.getattr(entry.node)
        #expect(attr.attrSize(entry: false) == 12)
        // The same file looked up again is the same node.
        #expect(try rig.lookup(Fuse.rootID, "a.txt").node == entry.node)
        // The host's errno, passed through.
        #expect(try rig.lookup(Fuse.rootID, "missing").error == ENOENT)
        #expect(try rig.lookup(entry.node, "x").error == ENOTDIR)
    }

    @Test func createWriteReadFlushFsyncRelease() throws {
        let rig = try FsRig()
        let created = try rig.create(Fuse.rootID, "new.txt")
        #expect(created.error == 0)
        let fh = created.u64(at: Fuse.entryOutSize)
        let data = Array("written by the guest".utf8)
        let written = try rig.write(fh, data)
        #expect(written.error == 0)
        #expect(written.u32(at: 0) == UInt32(data.count))
        #expect(rig.scratch.read("new.txt") == "written by the guest")
        let read = try rig.read(fh, offset: 8, size: 100)
        #expect(read.payload == Array(data[8...]))
        #expect(try rig.send(.flush, node: created.node, le(fh) + le(UInt64(0)) + le(UInt64(0))).error == 0)
        #expect(try rig.send(.fsync, node: created.node, le(fh) + le(UInt32(1)) + le(UInt32(0))).error == 0)
        #expect(try rig.release(fh).error == 0)
        #expect(try rig.release(fh).error == EBADF, "a handle is released once")
        #expect(try rig.read(fh).error == EBADF)
        // OPEN of an existing file, and O_EXCL on it.
        let opened = try rig.open(created.node, flags: O_RDONLY)
        #expect(opened.error == 0)
        #expect(try rig.read(opened.u64(at: 0)).payload == data)
        #expect(try rig.create(Fuse.rootID, "new.txt", flags: O_RDWR | O_EXCL).error == EEXIST)
    }

    @Test func directoriesAreMadeListedAndRemoved() throws {
        let rig = try FsRig()
        let dir = try rig.mkdir(Fuse.rootID, "d", mode: 0o750)
        #expect(dir.error == 0)
        #expect(dir.attrMode() & 0o7777 == 0o750)
        for name in ["one", "two", "three"] { _ = try rig.create(dir.node, name) }
        let handle = try rig.opendir(dir.node)
        #expect(handle.error == 0)
        let fh = handle.u64(at: 0)
        let listing = try rig.readdir(fh)
        #expect(Set(listing.directoryNames()) == [".", "..", "one", "two", "three"])
        let plus = try rig.readdir(fh, plus: true)
        #expect(Set(plus.directoryNames(plus: true)) == [".", "..", "one", "two", "three"])
        // A small buffer gets a prefix; the last entry's offset continues the listing.
        let small = try rig.readdir(fh, size: 64)
        #expect(small.directoryNames().count < 5)
        #expect(try rig.send(.fsyncdir, node: dir.node, le(fh) + le(UInt32(0)) + le(UInt32(0))).error == 0)
        #expect(try rig.release(fh, directory: true).error == 0)
        #expect(try rig.send(.rmdir, node: Fuse.rootID, cName("d")).error == ENOTEMPTY)
        for name in ["one", "two", "three"] { #expect(try rig.send(.unlink, node: dir.node, cName(name)).error == 0) }
        #expect(try rig.send(.rmdir, node: Fuse.rootID, cName("d")).error == 0)
        #expect(!rig.scratch.exists(rig.scratch.path("d")))
    }

    @Test func renameAndRename2() throws {
        let rig = try FsRig()
        _ = try rig.hostFile("a", "A")
        _ = try rig.hostFile("b", "B")
        #expect(try rig.rename(Fuse.rootID, "a", Fuse.rootID, "c").error == 0)
        #expect(rig.scratch.read("c") == "A")
        #expect(try rig.rename(Fuse.rootID, "c", Fuse.rootID, "b", flags: Fuse.renameNoReplace).error == EEXIST)
        #expect(try rig.rename(Fuse.rootID, "c", Fuse.rootID, "b", flags: Fuse.renameExchange).error == 0)
        #expect(rig.scratch.read("c") == "B")
        #expect(rig.scratch.read("b") == "A")
        #expect(try rig.rename(Fuse.rootID, "c", Fuse.rootID, "w", flags: 4).error == EINVAL, "no whiteouts")
        let dir = try rig.mkdir(Fuse.rootID, "sub")
        #expect(try rig.rename(Fuse.rootID, "b", dir.node, "moved").error == 0)
        #expect(rig.scratch.read("sub/moved") == "A")
    }

    @Test func symlinksReadlinkAndHardLinks() throws {
        let rig = try FsRig()
        let file = try rig.hostFile("target", "T")
        let link = try rig.symlink(Fuse.rootID, "link", target: "target")
        #expect(link.error == 0)
        #expect(link.attrMode() & FileType.mask == FileType.symbolicLink)
        let text = try rig.send(.readlink, node: link.node)
        #expect(String(decoding: text.payload, as: UTF8.self) == "target")
        let hard = try rig.send(.link, node: Fuse.rootID, le(file) + cName("hard"))
        #expect(hard.error == 0)
        #expect(hard.node == file, "two names, one node")
        #expect(hard.u32(at: 40 + 64) == 2, "nlink")
        #expect(rig.scratch.read("hard") == "T")
        // LINK of a symbolic link links the link itself.
        let linkLink = try rig.send(.link, node: Fuse.rootID, le(link.node) + cName("link2"))
        #expect(linkLink.error == 0)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: rig.scratch.path("link2"))) == "target")
    }

    @Test func setattrChangesModeSizeTimesAndStripsSetID() throws {
        let rig = try FsRig()
        let node = try rig.hostFile("f", "0123456789")
        let chmod = try rig.setattr(node, valid: Fuse.setMode, mode: 0o4755 | 0o2000)
        #expect(chmod.error == 0)
        #expect(rig.scratch.mode("f") & 0o7777 == 0o755, "no set-user-ID or set-group-ID on the host")
        #expect(try rig.setattr(node, valid: Fuse.setSize, size: 4).error == 0)
        #expect(rig.scratch.read("f") == "0123")
        let times = try rig.setattr(node, valid: Fuse.setAtime | Fuse.setMtime, atime: 1_000_000, mtime: 2_000_000)
        #expect(times.error == 0)
        #expect(times.u64(at: 16 + 32) == 2_000_000)
        // Owner: to ourselves, allowed.
        #expect(try rig.setattr(node, valid: Fuse.setUID | Fuse.setGID, uid: getuid(), gid: getgid()).error == 0)
        // Truncation through a handle.
        let fh = try rig.open(node).u64(at: 0)
        #expect(try rig.setattr(node, valid: Fuse.setSize | Fuse.setFileHandle, fh: fh, size: 1).error == 0)
        #expect(rig.scratch.read("f") == "0")
    }

    @Test func createAndMknodNeverMakeSetIDFilesOrDevices() throws {
        let rig = try FsRig()
        #expect(try rig.create(Fuse.rootID, "suid", mode: 0o6755).error == 0)
        #expect(rig.scratch.mode("suid") & 0o7777 == 0o755)
        #expect(try rig.mkdir(Fuse.rootID, "sgid", mode: 0o2775).error == 0)
        #expect(rig.scratch.mode("sgid") & 0o7777 == 0o775)
        let fifo = try rig.mknod(Fuse.rootID, "fifo", mode: FileType.fifo | 0o644)
        #expect(fifo.error == 0)
        #expect(rig.scratch.mode("fifo") & FileType.mask == FileType.fifo)
        #expect(try rig.mknod(Fuse.rootID, "plain", mode: FileType.regular | 0o600).error == 0)
        #expect(try rig.mknod(Fuse.rootID, "null", mode: 0o020000 | 0o666).error == EPERM, "character device")
        #expect(try rig.mknod(Fuse.rootID, "disk", mode: 0o060000 | 0o666).error == EPERM, "block device")
        #expect(try rig.mknod(Fuse.rootID, "sock", mode: 0o140000 | 0o666).error == EPERM, "socket")
        #expect(!rig.scratch.exists(rig.scratch.path("null")))
        // The guest's mode comes through even where the host's umask would clip it.
        #expect(try rig.create(Fuse.rootID, "shared", mode: 0o666).error == 0)
        #expect(rig.scratch.mode("shared") & 0o777 == 0o666)
    }

    @Test func statfsAccessFallocateAndLseek() throws {
        let rig = try FsRig()
        let statfs = try rig.send(.statfs, node: Fuse.rootID)
        #expect(statfs.error == 0)
        #expect(statfs.payload.count == 80)
        #expect(statfs.u32(at: 44) == 255, "namelen")
        let file = try rig.create(Fuse.rootID, "sparse")
        let fh = file.u64(at: Fuse.entryOutSize)
        #expect(try rig.send(.access, node: file.node, le(UInt32(R_OK | W_OK)) + le(UInt32(0))).error == 0)
        let allocate = try rig.send(.fallocate, node: file.node, le(fh) + le(UInt64(0)) + le(UInt64(1 << 20)) + le(UInt32(0)) + le(UInt32(0)))
        #expect(allocate.error == 0)
        #expect(try rig.getattr(file.node).attrSize(entry: false) == 1 << 20)
        // Data at 0 and at 3 MiB; whether the fallocated range counts as data is the host
        // file system's business, but past it, up to 3 MiB, is a hole.
        _ = try rig.write(fh, offset: 0, [1, 2, 3])
        _ = try rig.write(fh, offset: 3 << 20, [1, 2, 3])
        let data = try rig.send(.lseek, node: file.node, le(fh) + le(UInt64(0)) + le(UInt32(3)) + le(UInt32(0)))
        #expect(data.error == 0)
        #expect(data.u64(at: 0) == 0, "SEEK_DATA from 0 finds the data at 0")
        let hole = try rig.send(.lseek, node: file.node, le(fh) + le(UInt64(0)) + le(UInt32(4)) + le(UInt32(0)))
        #expect(hole.error == 0)
        #expect(hole.u64(at: 0) >= 3 && hole.u64(at: 0) < 3 << 20)
        #expect(try rig.send(.lseek, node: file.node, le(fh) + le(UInt64(0)) + le(UInt32(9)) + le(UInt32(0))).error == EINVAL)
    }

    @Test func extendedAttributes() throws {
        let rig = try FsRig()
        let node = try rig.hostFile("x")
        let value = Array("blue".utf8)
        let set = try rig.send(.setxattr, node: node, le(UInt32(value.count)) + le(UInt32(0)) + cName("user.colour") + value)
        guard set.error != EOPNOTSUPP else { return } // a temporary directory without user xattrs
        #expect(set.error == 0)
        let size = try rig.send(.getxattr, node: node, le(UInt32(0)) + le(UInt32(0)) + cName("user.colour"))
        #expect(size.u32(at: 0) == 4)
        let get = try rig.send(.getxattr, node: node, le(UInt32(64)) + le(UInt32(0)) + cName("user.colour"))
        #expect(get.payload == value)
        #expect(try rig.send(.getxattr, node: node, le(UInt32(2)) + le(UInt32(0)) + cName("user.colour")).error == ERANGE)
        let list = try rig.send(.listxattr, node: node, le(UInt32(256)) + le(UInt32(0)))
        #expect(String(decoding: list.payload, as: UTF8.self).contains("user.colour"))
        #expect(try rig.send(.removexattr, node: node, cName("user.colour")).error == 0)
        #expect(try rig.send(.getxattr, node: node, le(UInt32(64)) + le(UInt32(0)) + cName("user.colour")).error == ENODATA)
        // File capabilities never reach the host.
        let capability = try rig.send(.setxattr, node: node, le(UInt32(4)) + le(UInt32(0)) + cName("security.capability") + [1, 2, 3, 4])
        #expect(capability.error == EPERM)
    }

    @Test func aReadOnlyShareRefusesEveryWriteWithEROFS() throws {
        let scratch = try FsScratch()
        try scratch.write("f", "keep")
        let rig = try FsRig(readOnly: true, scratch: scratch)
        let file = try rig.lookup(Fuse.rootID, "f")
        #expect(file.error == 0)
        let readHandle = try rig.open(file.node, flags: O_RDONLY)
        #expect(readHandle.error == 0)
        #expect(try rig.read(readHandle.u64(at: 0)).payload == Array("keep".utf8))
        let refused: [FsReply] = [
            try rig.create(Fuse.rootID, "new"),
            try rig.mkdir(Fuse.rootID, "dir"),
            try rig.mknod(Fuse.rootID, "node", mode: FileType.regular | 0o644),
            try rig.symlink(Fuse.rootID, "link", target: "f"),
            try rig.send(.link, node: Fuse.rootID, le(file.node) + cName("hard")),
            try rig.send(.unlink, node: Fuse.rootID, cName("f")),
            try rig.send(.rmdir, node: Fuse.rootID, cName("f")),
            try rig.rename(Fuse.rootID, "f", Fuse.rootID, "g"),
            try rig.rename(Fuse.rootID, "f", Fuse.rootID, "g", flags: Fuse.renameExchange),
            try rig.setattr(file.node, valid: Fuse.setMode, mode: 0o777),
            try rig.setattr(file.node, valid: Fuse.setSize, size: 0),
            try rig.open(file.node, flags: O_WRONLY),
            try rig.open(file.node, flags: O_RDONLY | O_TRUNC),
            try rig.write(readHandle.u64(at: 0), [1]),
            try rig.send(.fallocate, node: file.node, le(readHandle.u64(at: 0)) + le(UInt64(0)) + le(UInt64(10)) + le(UInt32(0)) + le(UInt32(0))),
            try rig.send(.setxattr, node: file.node, le(UInt32(1)) + le(UInt32(0)) + cName("user.a") + [1]),
            try rig.send(.removexattr, node: file.node, cName("user.a")),
            try rig.send(.access, node: file.node, le(UInt32(W_OK)) + le(UInt32(0))),
        ]
        for (index, reply) in refused.enumerated() { #expect(reply.error == EROFS, "request \(index)") }
        #expect(scratch.read("f") == "keep")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.share) == ["f"])
    }

    @Test func unknownOpcodesAreENOSYS() throws {
        let rig = try FsRig()
        for opcode: UInt32 in [7, 19, 31, 32, 39, 40, 47, 48, 51, 52, 999] {
            let reply = try rig.submit([rig.header(opcode, node: Fuse.rootID, argsCount: 16) + [UInt8](repeating: 0, count: 16)], room: [256])
            #expect(reply.error == ENOSYS, "opcode \(opcode)")
        }
        #expect(rig.device.statistics.unsupported == 11)
    }

    @Test func forgetLetsNodesGoAndDoubleForgetIsCounted() throws {
        let rig = try FsRig()
        let node = try rig.hostFile("f")
        _ = try rig.lookup(Fuse.rootID, "f")
        let before = rig.device.statistics.nodes
        #expect(try rig.forget(node, 1).used == 0, "FORGET is never answered")
        #expect(rig.device.statistics.nodes == before, "one lookup still held")
        _ = try rig.forget(node, 1)
        #expect(rig.device.statistics.nodes == before - 1)
        #expect(try rig.getattr(node).error == ESTALE)
        _ = try rig.forget(node, 1)
        #expect(rig.device.statistics.unknownForgets == 1)
        // BATCH_FORGET, on the hiprio queue, with one id unknown.
        let a = try rig.hostFile("a"), b = try rig.hostFile("b")
        let batch = le(UInt32(3)) + le(UInt32(0)) + le(a) + le(UInt64(1)) + le(b) + le(UInt64(1)) + le(UInt64(12345)) + le(UInt64(1))
        _ = try rig.send(.batchForget, node: 0, batch, room: 0, queue: 0)
        #expect(try rig.getattr(a).error == ESTALE)
        #expect(try rig.getattr(b).error == ESTALE)
        #expect(rig.device.statistics.unknownForgets == 2)
        // The root is never forgotten.
        _ = try rig.forget(Fuse.rootID, 100)
        #expect(try rig.getattr(Fuse.rootID).error == 0)
    }

    @Test func descriptorUseIsBounded() throws {
        let rig = try FsRig(maxNodes: 10, maxHandles: 3)
        var nodes: [UInt64] = []
        var refused = 0
        for i in 0 ..< 30 {
            try rig.scratch.write("f\(i)", "x")
            let reply = try rig.lookup(Fuse.rootID, "f\(i)")
            if reply.error == 0 { nodes.append(reply.node) } else { #expect(reply.error == ENFILE); refused += 1 }
        }
        #expect(nodes.count == 9, "the root and nine more")
        #expect(refused == 21)
        var handles = 0
        for node in nodes {
            let reply = try rig.open(node, flags: O_RDONLY)
            if reply.error == 0 { handles += 1 } else { #expect(reply.error == EMFILE) }
        }
        #expect(handles == 3)
        // FORGET makes room again.
        _ = try rig.forget(nodes[0], 1)
        #expect(try rig.lookup(Fuse.rootID, "f20").error == 0)
    }

    @Test func destroyEndsTheSessionAndInitStartsANewOne() throws {
        let rig = try FsRig()
        let node = try rig.hostFile("f")
        #expect(try rig.send(.destroy, node: 0).error == 0)
        #expect(try rig.getattr(Fuse.rootID).error == EIO)
        #expect(try rig.lookup(Fuse.rootID, "f").error == EIO)
        let again = try rig.send(.initialize, node: 0, le(UInt32(7)) + le(UInt32(31)) + le(UInt32(0)) + le(UInt32(0)))
        #expect(again.error == 0)
        #expect(try rig.getattr(node).error == ESTALE, "the old session's nodes are gone")
        #expect(try rig.lookup(Fuse.rootID, "f").error == 0)
    }

    @Test func aDeviceResetDropsEveryNodeAndHandle() throws {
        let rig = try FsRig()
        let node = try rig.hostFile("f")
        _ = try rig.open(node)
        #expect(rig.device.statistics.handles == 1)
        rig.driver.reset()
        #expect(rig.device.statistics.nodes == 1)
        #expect(rig.device.statistics.handles == 0)
    }
}
