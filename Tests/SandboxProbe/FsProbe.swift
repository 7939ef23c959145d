import CKVM
import Devices
#if canImport(Glibc)
import Glibc
#endif

/// A shared directory in a scratch directory and the FUSE requests a guest's mount makes,
/// every operation once, served under the file-system thread's filter: if the filter lacks a
/// call the server makes, the probe dies of SIGSYS.
final class FsProbe: @unchecked Sendable {
    // @unchecked: used by one thread at a time (set up on the main thread, then run on one other).
    static let shared = FsProbe()

    let path: String
    let directory: CInt
    let device: FsDevice
    /// Read before the filter, which has no getuid.
    let uid = getuid(), gid = getgid()
    private var unique: UInt64 = 0

    init() {
        path = "/tmp/lguest-fs-probe-\(getpid())"
        mkdir(path, 0o755)
        directory = open(path, O_RDONLY | O_DIRECTORY)
        do throws(FsError) {
            device = try FsDevice(FsShareConfiguration(path: path, tag: "probe"), maxNodes: 100, maxHandles: 10)
        } catch { die(error.description) }
    }

    func removeScratch() {
        // Setup's tools are free again here: the main thread has no filter in this kind.
        _ = system("rm -rf '\(path)'")
    }

    private func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }
    private func name(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }

    /// Sends one request; returns (error, payload).
    @discardableResult
    private func send(_ opcode: UInt32, node: UInt64, _ args: [UInt8] = []) -> (Int32, [UInt8]) {
        unique += 1
        let request = le(UInt32(40 + args.count)) + le(opcode) + le(unique) + le(node) + [UInt8](repeating: 0, count: 16) + args
        guard let answer = device.serve(request: request, room: 1 << 16), answer.count >= 16 else { return (0, []) }
        let error = -Int32(bitPattern: UInt32(answer[4]) | UInt32(answer[5]) << 8 | UInt32(answer[6]) << 16 | UInt32(answer[7]) << 24)
        return (error, Array(answer[16...]))
    }

    private func u64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        guard bytes.count >= offset + 8 else { return 0 }
        return (0 ..< 8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) }
    }

    /// Every operation once; returns how many failed (the probe only cares that it lives).
    func run() -> Int {
        var failures = 0
        func check(_ result: (Int32, [UInt8])) -> [UInt8] {
            if result.0 != 0 { failures += 1 }
            return result.1
        }
        let readIn = { (fh: UInt64, offset: UInt64, size: UInt32) in
            self.le(fh) + self.le(offset) + self.le(size) + [UInt8](repeating: 0, count: 20)
        }
        _ = check(send(26, node: 0, le(UInt32(7)) + le(UInt32(38)) + le(UInt32(0)) + le(UInt32(0xFFFF_FFFF)) + [UInt8](repeating: 0, count: 48)))
        let dir = u64(check(send(9, node: 1, le(UInt32(0o755)) + le(UInt32(0)) + name("d"))), at: 0)
        let created = check(send(35, node: dir, le(UInt32(O_RDWR)) + le(UInt32(0o666)) + le(UInt64(0)) + name("f")))
        let file = u64(created, at: 0), fh = u64(created, at: 128)
        _ = check(send(16, node: file, readIn(fh, 0, 5) + Array("hello".utf8)))
        _ = check(send(15, node: file, readIn(fh, 0, 5)))
        _ = check(send(43, node: file, le(fh) + le(UInt64(0)) + le(UInt64(8192)) + le(UInt64(0))))
        _ = check(send(46, node: file, le(fh) + le(UInt64(0)) + le(UInt32(4)) + le(UInt32(0))))
        _ = check(send(20, node: file, le(fh) + le(UInt32(1)) + le(UInt32(0))))
        _ = check(send(20, node: file, le(fh) + le(UInt32(0)) + le(UInt32(0))))
        _ = check(send(25, node: file, le(fh) + le(UInt64(0)) + le(UInt64(0))))
        _ = check(send(3, node: file, [UInt8](repeating: 0, count: 16)))
        let setattr = { (valid: UInt32, size: UInt64, mode: UInt32) in
            self.le(valid) + self.le(UInt32(0)) + self.le(fh) + self.le(size) + [UInt8](repeating: 0, count: 8)
                + self.le(UInt64(1000)) + self.le(UInt64(2000)) + [UInt8](repeating: 0, count: 20) + self.le(mode)
                + self.le(UInt32(0)) + self.le(self.uid) + self.le(self.gid) + self.le(UInt32(0))
        }
        _ = check(send(4, node: file, setattr(1, 0, 0o640)))
        _ = check(send(4, node: file, setattr(6, 0, 0)))
        _ = check(send(4, node: file, setattr(8, 3, 0)))
        _ = check(send(4, node: file, setattr(8 | 64, 2, 0)))
        _ = check(send(4, node: file, setattr(16 | 32, 0, 0)))
        _ = check(send(34, node: file, le(UInt32(4)) + le(UInt32(0))))
        _ = check(send(17, node: 1))
        _ = check(send(18, node: file, le(fh) + [UInt8](repeating: 0, count: 16)))
        let open = check(send(14, node: file, le(UInt32(O_RDONLY)) + le(UInt32(0))))
        _ = check(send(18, node: file, le(u64(open, at: 0)) + [UInt8](repeating: 0, count: 16)))
        // Extended attributes may be unsupported where the probe runs; any answer will do.
        send(21, node: file, le(UInt32(1)) + le(UInt32(0)) + name("user.a") + [1])
        send(22, node: file, le(UInt32(16)) + le(UInt32(0)) + name("user.a"))
        send(23, node: file, le(UInt32(256)) + le(UInt32(0)))
        send(24, node: file, name("user.a"))
        let link = u64(check(send(6, node: dir, name("l") + name("f"))), at: 0)
        _ = check(send(5, node: link))
        _ = check(send(13, node: dir, le(file) + name("hard")))
        _ = check(send(8, node: dir, le(UInt32(0o010644)) + le(UInt64(0)) + le(UInt32(0)) + name("fifo")))
        _ = check(send(45, node: dir, le(dir) + le(UInt32(2)) + le(UInt32(0)) + name("f") + name("hard")))
        _ = check(send(12, node: dir, le(dir) + name("hard") + name("moved")))
        _ = check(send(1, node: dir, name("..")))
        let opened = check(send(27, node: dir, le(UInt32(0)) + le(UInt32(0))))
        let dh = u64(opened, at: 0)
        _ = check(send(28, node: dir, readIn(dh, 0, 4096)))
        _ = check(send(44, node: dir, readIn(dh, 0, 4096)))
        _ = check(send(30, node: dir, le(dh) + le(UInt32(0)) + le(UInt32(0))))
        _ = check(send(29, node: dir, le(dh) + [UInt8](repeating: 0, count: 16)))
        for victim in ["f", "moved", "l", "fifo"] { _ = check(send(10, node: dir, name(victim))) }
        _ = check(send(11, node: 1, name("d")))
        send(2, node: file, le(UInt64(1)))
        send(42, node: 0, le(UInt32(1)) + le(UInt32(0)) + le(dir) + le(UInt64(1)))
        _ = check(send(38, node: 0))
        return failures
    }
}
