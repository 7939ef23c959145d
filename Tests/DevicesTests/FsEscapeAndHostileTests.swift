import Foundation
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// Every way out of the share the issue lists, each shown to stay inside.
@Suite struct FsEscapeTests {
    @Test func dotDotAtTheRootIsTheRoot() throws {
        let rig = try FsRig()
        let up = try rig.lookup(Fuse.rootID, "..")
        #expect(up.error == 0)
        #expect(up.node == Fuse.rootID)
        #expect(try rig.lookup(Fuse.rootID, ".").node == Fuse.rootID)
        // Inside, `..` of a subdirectory is its parent.
        let dir = try rig.mkdir(Fuse.rootID, "d")
        #expect(try rig.lookup(dir.node, "..").node == Fuse.rootID)
    }

    @Test func namesWithSlashesOrDotsNeverWalk() throws {
        let rig = try FsRig()
        for name in ["../outside/secret", "../../etc/passwd", "/etc/passwd", "a/b", ""] {
            #expect(try rig.lookup(Fuse.rootID, name).error == EINVAL, "\(name)")
        }
        for name in [".", ".."] {
            #expect(try rig.create(Fuse.rootID, name).error == EINVAL)
            #expect(try rig.mkdir(Fuse.rootID, name).error == EINVAL)
            #expect(try rig.send(.unlink, node: Fuse.rootID, cName(name)).error == EINVAL)
            #expect(try rig.rename(Fuse.rootID, name, Fuse.rootID, "x").error == EINVAL)
        }
        #expect(try rig.rename(Fuse.rootID, "x", Fuse.rootID, "../escaped").error == EINVAL)
        #expect(try rig.symlink(Fuse.rootID, "../link", target: "x").error == EINVAL)
        #expect(!FileManager.default.fileExists(atPath: rig.scratch.root.appendingPathComponent("escaped").path))
    }

    @Test func absoluteAndEscapingSymlinksAreNeverFollowed() throws {
        let rig = try FsRig()
        try FileManager.default.createSymbolicLink(atPath: rig.scratch.path("passwd"), withDestinationPath: "/etc/passwd")
        try FileManager.default.createSymbolicLink(atPath: rig.scratch.path("up"), withDestinationPath: "../outside")
        try FileManager.default.createSymbolicLink(atPath: rig.scratch.path("slash"), withDestinationPath: "/")
        try FileManager.default.createSymbolicLink(atPath: rig.scratch.path("dangling"), withDestinationPath: "../outside/planted")
        for name in ["passwd", "up", "slash"] {
            let link = try rig.lookup(Fuse.rootID, name)
            #expect(link.error == 0)
            #expect(link.attrMode() & FileType.mask == FileType.symbolicLink, "\(name) is a link node, not its target")
            #expect(try rig.open(link.node, flags: O_RDONLY).error == ELOOP)
            #expect(try rig.lookup(link.node, "secret").error == ENOTDIR)
            #expect(try rig.lookup(link.node, "etc").error == ENOTDIR)
            #expect(try rig.opendir(link.node).error == ENOTDIR)
            #expect(try rig.send(.getxattr, node: link.node, le(UInt32(64)) + le(UInt32(0)) + cName("user.x")).error == EPERM)
            #expect(try rig.setattr(link.node, valid: Fuse.setMode, mode: 0o777).error == EOPNOTSUPP)
            #expect(try rig.setattr(link.node, valid: Fuse.setSize, size: 0).error == EINVAL)
        }
        // Creating through a dangling link to the outside makes nothing there.
        #expect(try rig.create(Fuse.rootID, "dangling").error == ELOOP)
        #expect(!rig.scratch.exists(rig.scratch.outside + "/planted"))
        #expect(try String(contentsOfFile: "/etc/passwd", encoding: .utf8).isEmpty == false)
        // LINK of the link makes another link, not a hard link to /etc/passwd.
        let passwd = try rig.lookup(Fuse.rootID, "passwd")
        #expect(try rig.send(.link, node: Fuse.rootID, le(passwd.node) + cName("copy")).error == 0)
        #expect(rig.scratch.mode("copy") & FileType.mask == FileType.symbolicLink)
    }

    @Test func magicLinksUnderProcAreNotFollowed() throws {
        let rig = try FsRig()
        try FileManager.default.createSymbolicLink(atPath: rig.scratch.path("root"), withDestinationPath: "/proc/self/root")
        try FileManager.default.createSymbolicLink(atPath: rig.scratch.path("proc"), withDestinationPath: "/proc/self")
        let root = try rig.lookup(Fuse.rootID, "root")
        #expect(root.attrMode() & FileType.mask == FileType.symbolicLink)
        #expect(try rig.lookup(root.node, "etc").error == ENOTDIR)
        let proc = try rig.lookup(Fuse.rootID, "proc")
        #expect(try rig.lookup(proc.node, "fd").error == ENOTDIR)
    }

    @Test func aDirectoryMovedOutOnTheHostCannotBeClimbedOutOf() throws {
        let rig = try FsRig()
        try FileManager.default.createDirectory(atPath: rig.scratch.path("d"), withIntermediateDirectories: true)
        let dir = try rig.lookup(Fuse.rootID, "d")
        #expect(try rig.lookup(dir.node, "..").node == Fuse.rootID)
        // The host moves d out of the share, next to the secret.
        try FileManager.default.moveItem(atPath: rig.scratch.path("d"), toPath: rig.scratch.outside + "/d")
        #expect(try rig.lookup(dir.node, "..").error == EACCES, "its parent is outside the share now")
        #expect(try rig.lookup(dir.node, "secret").error == ENOENT, "the secret is beside it, not under it")
        #expect(try rig.create(dir.node, "../secret").error == EINVAL)
        #expect(try rig.symlink(dir.node, "s", target: "../secret").error == 0)
        let link = try rig.lookup(dir.node, "s")
        #expect(try rig.open(link.node, flags: O_RDONLY).error == ELOOP)
        #expect(String(decoding: try rig.send(.readlink, node: link.node).payload, as: UTF8.self) == "../secret")
    }

    @Test func unknownNodeIdsAreStale() throws {
        let rig = try FsRig()
        for node: UInt64 in [0, 2, 999, UInt64.max] {
            #expect(try rig.getattr(node).error == ESTALE, "\(node)")
            #expect(try rig.lookup(node, "x").error == ESTALE)
            #expect(try rig.open(node).error == ESTALE)
        }
        #expect(try rig.send(.link, node: Fuse.rootID, le(UInt64(999)) + cName("x")).error == ESTALE)
        #expect(try rig.rename(Fuse.rootID, "x", 999, "y").error != 0)
    }
}

/// A guest that breaks the rules: each bad request gets an error answer, or is dropped and
/// counted when there is nothing to answer, and the device goes on serving.
@Suite struct FsHostileGuestTests {
    @Test func aShortHeaderIsDroppedAndCounted() throws {
        let rig = try FsRig()
        let reply = try rig.submit([[1, 2, 3]], room: [256])
        #expect(reply.used == 0)
        #expect(rig.device.statistics.dropped == 1)
        #expect(try rig.getattr(Fuse.rootID).error == 0)
    }

    @Test func aHeaderLengthThatDisagreesWithTheBuffersIsEINVAL() throws {
        let rig = try FsRig()
        for length: UInt32 in [0, 39, 40 + 10, 40 + 100, UInt32.max] {
            let request = rig.header(FuseOpcode.lookup.rawValue, node: Fuse.rootID, argsCount: 2, length: length) + cName("a")
            let reply = try rig.submit([request], room: [256])
            #expect(reply.error == EINVAL, "len \(length)")
        }
    }

    @Test func noRoomForAnAnswerIsDroppedAndCounted() throws {
        let rig = try FsRig()
        let request = rig.header(FuseOpcode.getattr.rawValue, node: Fuse.rootID, argsCount: 16) + [UInt8](repeating: 0, count: 16)
        #expect(try rig.submit([request], room: []).used == 0)
        #expect(try rig.submit([request], room: [8]).used == 0)
        #expect(rig.device.statistics.dropped == 2)
        // Room for the header but not the attributes: an error header.
        #expect(try rig.submit([request], room: [20]).error == EINVAL)
    }

    @Test func namesWithoutNULOrWithTrailingBytesAreEINVAL() throws {
        let rig = try FsRig()
        try rig.scratch.write("ab", "x")
        #expect(try rig.send(.lookup, node: Fuse.rootID, Array("ab".utf8)).error == EINVAL)
        #expect(try rig.send(.lookup, node: Fuse.rootID, Array("ab".utf8) + [0, 99]).error == EINVAL)
        #expect(try rig.send(.lookup, node: Fuse.rootID, Array("a".utf8) + [0] + Array("b".utf8) + [0]).error == EINVAL)
        #expect(try rig.send(.lookup, node: Fuse.rootID, [UInt8](repeating: 0x61, count: 300) + [0]).error == ENAMETOOLONG)
        #expect(try rig.send(.symlink, node: Fuse.rootID, cName("l")).error == EINVAL, "no target")
        #expect(try rig.send(.rename, node: Fuse.rootID, le(Fuse.rootID) + cName("ab")).error == EINVAL, "one name")
        #expect(try rig.send(.mkdir, node: Fuse.rootID, [1, 2]).error == EINVAL, "short arguments")
        #expect(try rig.send(.setattr, node: Fuse.rootID, [UInt8](repeating: 0, count: 40)).error == EINVAL)
    }

    @Test func writesWhoseSizeDisagreesWithTheirDataAreEINVAL() throws {
        let rig = try FsRig()
        let fh = try rig.create(Fuse.rootID, "f").u64(at: Fuse.entryOutSize)
        let lying = rig.readIn(fh, offset: 0, size: 100) + [1, 2, 3]
        #expect(try rig.send(.write, node: 0, lying).error == EINVAL)
        let huge = rig.readIn(fh, offset: UInt64.max - 1, size: 1) + [1]
        #expect(try rig.send(.write, node: 0, huge).error != 0)
        #expect(rig.scratch.read("f") == "")
        // A READ asking for more than there is room for gets what fits.
        _ = try rig.write(fh, [UInt8](repeating: 7, count: 4000))
        let read = try rig.read(fh, size: UInt32.max, room: 1016)
        #expect(read.error == 0)
        #expect(read.payload.count == 1000)
        // Handles of the wrong kind.
        let dirHandle = try rig.opendir(Fuse.rootID).u64(at: 0)
        #expect(try rig.read(dirHandle).error == EISDIR)
        #expect(try rig.readdir(fh).error == ENOTDIR)
    }

    @Test func aBatchForgetShorterThanItsCountIsCounted() throws {
        let rig = try FsRig()
        let node = try rig.hostFile("f")
        let batch = le(UInt32(1000)) + le(UInt32(0)) + le(node) + le(UInt64(1))
        #expect(try rig.send(.batchForget, node: 0, batch, room: 0, queue: 0).used == 0)
        #expect(try rig.getattr(node).error == ESTALE)
        #expect(rig.device.statistics.dropped == 1)
    }

    @Test func aRequestSplitAcrossManyBuffersIsServed() throws {
        let rig = try FsRig()
        try rig.scratch.write("split", "x")
        let request = rig.header(FuseOpcode.lookup.rawValue, node: Fuse.rootID, argsCount: 6) + cName("split")
        let pieces = stride(from: 0, to: request.count, by: 3).map { Array(request[$0 ..< min($0 + 3, request.count)]) }
        let reply = try rig.submit(pieces, room: [10, 6, 200])
        #expect(reply.error == 0)
        #expect(reply.unique != 0)
    }

    @Test func randomBytesNeverStopTheDevice() throws {
        let rig = try FsRig()
        var generator = SystemRandomNumberGenerator()
        for round in 0 ..< 1500 {
            let opcode = UInt32.random(in: 0 ... 50, using: &generator)
            let count = Int.random(in: 0 ... 200, using: &generator)
            var args = (0 ..< count).map { _ in UInt8.random(in: 0 ... 255, using: &generator) }
            if round % 3 == 0 { args += cName("n\(round % 7)") }
            let node = [0, 1, 2, 3, UInt64.random(in: 0 ... 10, using: &generator)].randomElement()!
            let length: UInt32? = round % 5 == 0 ? UInt32.random(in: 0 ... 300, using: &generator) : nil
            if opcode == FuseOpcode.destroy.rawValue { continue }
            let request = rig.header(opcode, node: node, argsCount: args.count, length: length) + args
            _ = try rig.submit([request], room: [UInt32.random(in: 0 ... 512, using: &generator)])
        }
        #expect(try rig.getattr(Fuse.rootID).error == 0)
        #expect(!rig.transport.status.contains(.deviceNeedsReset))
        // Nothing escaped into the outside directory.
        #expect(try FileManager.default.contentsOfDirectory(atPath: rig.scratch.outside) == ["secret"])
    }
}
