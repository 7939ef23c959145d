import Devices
import FuzzSupport
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// virtio-fs and its FUSE server, on a scratch share rebuilt for every input.
///
/// Input: one mode byte, then the mode's bytes.
/// - mode bit 0 clear: a session of FUSE requests straight into the request parser and
///   dispatcher (`FsDevice.serve`): `room: le16, length: le16, request[length]`, repeated to the
///   end of the input. Unless mode bit 1 is set, the harness sends FUSE_INIT first, so the
///   fuzzer need not discover it.
/// - mode bit 0 set: the rest is a `HostileGuest` script on the device behind the virtio-mmio
///   transport (chains of any shape on the hiprio and request queues).
///
/// After each input the harness checks that the directory beside the share still holds only
/// its one file: a request that made something appear outside the share is a finding.
enum FsHarness {
    static let base = "/tmp/lguest-fuzz-fs-\(getpid())"
    static var share: String { base + "/share" }
    static var outside: String { base + "/outside" }

    static func prepare() {
        // libFuzzer ends a timed run with _exit, past atexit: sweep what earlier runs left.
        if let tmp = opendir("/tmp") {
            var stale: [String] = []
            while let entry = readdir(tmp) {
                let name = entryName(entry)
                if name.hasPrefix("lguest-fuzz-fs-"), let pid = Int32(name.dropFirst(15)), kill(pid, 0) != 0, errno == ESRCH {
                    stale.append("/tmp/" + name)
                }
            }
            closedir(tmp)
            for path in stale { removeTree(path) }
        }
        mkdir(base, 0o700)
        mkdir(outside, 0o700)
        let fd = open(outside + "/secret", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        if fd >= 0 { close(fd) }
    }

    /// The share as every input finds it: a file, a directory with a file, a link out of the
    /// share and an absolute one.
    static func resetShare() {
        removeTree(share)
        mkdir(share, 0o755)
        for file in ["a", "d/b"] {
            if file.hasPrefix("d/") { mkdir(share + "/d", 0o755) }
            let fd = open(share + "/" + file, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            if fd >= 0 { _ = write(fd, "contents", 8); close(fd) }
        }
        symlink("../outside", share + "/up")
        symlink("/etc/passwd", share + "/abs")
    }

    /// A directory entry's name, read in place: the record may be shorter than `struct dirent`.
    static func entryName(_ entry: UnsafeMutablePointer<dirent>) -> String {
        // Safe: d_name is NUL-terminated inside the record readdir returned.
        String(cString: UnsafeRawPointer(entry).advanced(by: MemoryLayout<dirent>.offset(of: \.d_name)!)
            .assumingMemoryBound(to: CChar.self))
    }

    /// `rm -rf path`, making directories the guest locked (chmod 0) searchable first.
    static func removeTree(_ path: String) {
        var s = stat()
        guard lstat(path, &s) == 0 else { return }
        if s.st_mode & S_IFMT == S_IFDIR {
            chmod(path, 0o700)
            if let dir = opendir(path) {
                var names: [String] = []
                while let entry = readdir(dir) {
                    let name = entryName(entry)
                    if name != ".", name != ".." { names.append(name) }
                }
                closedir(dir)
                for name in names { removeTree(path + "/" + name) }
            }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// Fails the run (abort: libFuzzer keeps the input) if anything appeared outside the share.
    static func checkOutside() {
        guard let dir = opendir(outside) else { abort() }
        var count = 0
        while let entry = readdir(dir) {
            let name = entryName(entry)
            if name != ".", name != ".." { count += 1 }
        }
        closedir(dir)
        if count != 1 { abort() }
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    static let initRequest: [UInt8] = {
        let args = le(UInt32(7)) + le(UInt32(38)) + le(UInt32(0x20000)) + le(UInt32(0xFFFF_FFFF)) + [UInt8](repeating: 0, count: 48)
        return le(UInt32(40 + args.count)) + le(UInt32(26)) + le(UInt64(1)) + le(UInt64(0)) + [UInt8](repeating: 0, count: 16) + args
    }()

    /// Keeps a FALLOCATE from reserving real space in /tmp (a memory file system on many
    /// hosts): its length is cut to 64 KiB. Everything else goes through untouched.
    static func tame(_ request: [UInt8]) -> [UInt8] {
        guard request.count >= 40 + 24, request[4] == 43, request[5] == 0, request[6] == 0, request[7] == 0 else { return request }
        var copy = request
        copy[40 + 16 + 2 ..< 40 + 24] = [0, 0, 0, 0, 0, 0]
        return copy
    }

    static func run(_ input: inout FuzzInput) {
        resetShare()
        defer { checkOutside() }
        let mode = input.byte()
        // The transport-level script's requests sit in guest memory, where FALLOCATE lengths
        // cannot be cut down byte by byte: it gets a read-only share, which refuses them.
        let script = mode & 1 == 1
        guard let device = try? FsDevice(FsShareConfiguration(path: share, tag: "fuzz", readOnly: script),
                                         maxNodes: 64, maxHandles: 16) else { abort() }
        if script {
            guard let guest = try? HostileGuest(device: device, input: &input) else { return }
            guest.play(&input)
            return
        }
        if mode & 2 == 0 { _ = device.serve(request: initRequest, room: 4096) }
        while !input.isAtEnd {
            let room = Int(input.le(UInt16.self))
            let request = tame(input.take(Int(input.le(UInt16.self))))
            _ = device.serve(request: request, room: room)
        }
    }

    // MARK: - Seeds

    static func request(_ opcode: UInt32, node: UInt64, _ args: [UInt8], room: UInt16 = 4096) -> [UInt8] {
        let bytes = le(UInt32(40 + args.count)) + le(opcode) + le(UInt64(2)) + le(node) + [UInt8](repeating: 0, count: 16) + args
        return le(room) + le(UInt16(bytes.count)) + bytes
    }
    static func name(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }
    static func readIn(_ fh: UInt64, size: UInt32) -> [UInt8] { le(fh) + le(UInt64(0)) + le(size) + [UInt8](repeating: 0, count: 20) }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        // Node ids are handed out in order from 2, handles from 1, so a seed can name them.
        [
            ("lookup-read", [0] + request(1, node: 1, name("a")) + request(14, node: 2, le(UInt32(0)) + le(UInt32(0)))
                + request(15, node: 2, readIn(1, size: 100)) + request(18, node: 2, le(UInt64(1)) + [UInt8](repeating: 0, count: 16))),
            ("create-write-setattr", [0] + request(35, node: 1, le(UInt32(2)) + le(UInt32(0o644)) + le(UInt64(0)) + name("n"))
                + request(16, node: 2, readIn(1, size: 5) + Array("hello".utf8))
                + request(4, node: 2, le(UInt32(1 | 8)) + le(UInt32(0)) + le(UInt64(1)) + le(UInt64(2)) + [UInt8](repeating: 0, count: 68))),
            ("mkdir-readdirplus", [0] + request(9, node: 1, le(UInt32(0o755)) + le(UInt32(0)) + name("sub"))
                + request(27, node: 1, le(UInt64(0))) + request(44, node: 1, readIn(1, size: 4096))
                + request(28, node: 1, readIn(1, size: 100))),
            ("symlink-rename2-link", [0] + request(6, node: 1, name("l") + name("a"))
                + request(5, node: 2, []) + request(45, node: 1, le(UInt64(1)) + le(UInt32(2)) + le(UInt32(0)) + name("l") + name("a"))
                + request(1, node: 1, name("up")) + request(1, node: 1, name("..")) + request(13, node: 1, le(UInt64(2)) + name("h"))),
            ("xattr-forget", [0] + request(1, node: 1, name("a"))
                + request(21, node: 2, le(UInt32(1)) + le(UInt32(0)) + name("user.x") + [7])
                + request(22, node: 2, le(UInt32(0)) + le(UInt32(0)) + name("user.x"))
                + request(23, node: 2, le(UInt32(64)) + le(UInt32(0)))
                + request(2, node: 2, le(UInt64(1)), room: 0)
                + request(42, node: 0, le(UInt32(2)) + le(UInt32(0)) + le(UInt64(2)) + le(UInt64(1)) + le(UInt64(9)) + le(UInt64(1)), room: 0)),
            ("malformed", [0] + le(UInt16(64)) + le(UInt16(3)) + [1, 2, 3]
                + le(UInt16(4096)) + le(UInt16(44)) + le(UInt32(999)) + le(UInt32(1)) + [UInt8](repeating: 0, count: 36)),
            ("destroy-then-use", [0] + request(38, node: 0, []) + request(3, node: 1, [UInt8](repeating: 0, count: 16))),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(FsHarness.seeds)
    FsHarness.prepare()
    atexit { FsHarness.removeTree(FsHarness.base) }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    FsHarness.run(&input)
    return 0
}

@_cdecl("fuzz_fs_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
