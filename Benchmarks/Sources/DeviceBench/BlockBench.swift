import Devices
import Foundation
import GuestMemory
import Virtio
#if canImport(Glibc)
import Glibc
import VirtioTesting
#endif

/// One block workload, run once through the device and once by fio on the same file.
struct BlockWorkload {
    let name: String
    /// fio's `rw=`: randread, randwrite, read or write.
    let pattern: String
    let blockSize: Int
    let depth: Int
    /// Data descriptors per request (a guest's scatter-gather list).
    let segments: Int

    var isRead: Bool { pattern.hasSuffix("read") }
    var isRandom: Bool { pattern.hasPrefix("rand") }

    static let all = [
        BlockWorkload(name: "4k randread QD1", pattern: "randread", blockSize: 4096, depth: 1, segments: 1),
        BlockWorkload(name: "4k randread QD32", pattern: "randread", blockSize: 4096, depth: 32, segments: 1),
        BlockWorkload(name: "4k randwrite QD1", pattern: "randwrite", blockSize: 4096, depth: 1, segments: 1),
        BlockWorkload(name: "4k randwrite QD32", pattern: "randwrite", blockSize: 4096, depth: 32, segments: 1),
        BlockWorkload(name: "1M read QD1", pattern: "read", blockSize: 1 << 20, depth: 1, segments: 16),
        BlockWorkload(name: "1M write QD1", pattern: "write", blockSize: 1 << 20, depth: 1, segments: 16),
    ]
}

/// Operations and bytes per second.
struct Rate {
    var iops: Double
    var bytesPerSecond: Double
    var megabytes: Double { bytesPerSecond / 1e6 }
}

/// The block device behind a real virtio-mmio transport, with `depth` requests laid out once in
/// guest memory: the loop only rewrites each header's sector, publishes, kicks and reaps, so
/// what is timed is the device's work and not the mock driver building chains. A kick goes
/// in the way an ioeventfd delivers it (`handleNotification` on the I/O thread), not as a
/// QueueNotify register write, which only happens when no ioeventfd is registered.
final class BlockDriverLoop {
    let memory: GuestMemory
    let device: BlockDevice
    let transport: MMIOTransport
    let driver: MockDriver
    let queue: MockDriverQueue
    let line = CountingLine()
    let workload: BlockWorkload
    /// Per request slot: where its header and status byte are, and its head descriptor.
    var headers: [GuestAddress] = []
    var statuses: [GuestAddress] = []
    var heads: [UInt16] = []
    let descriptorsPerRequest: Int

    init(path: String, workload: BlockWorkload) throws {
        self.workload = workload
        descriptorsPerRequest = workload.segments + 2
        let data = UInt64(workload.blockSize * workload.depth)
        memory = try GuestMemory(size: (data + UInt64(workload.depth) * 8192 + 0x20_0000 + 0xFFFFF) & ~0xFFFFF)
        device = try BlockDevice(BlockConfiguration(path: path, readOnly: false))
        transport = MMIOTransport(device: device, memory: memory, interrupt: line)
        driver = MockDriver(transport: transport)
        queue = try MockDriverQueue(memory: memory, size: BlockDevice.queueSize, base: 0x10000,
                                    dataAreaSize: memory.totalSize - 0x20000 - 0x10000)
        // Everything offered, FLUSH included, as Linux's virtio_blk acks it: writes complete into
        // the host's page cache, exactly like fio's buffered writes without fsync.
        try driver.initialize(queues: [queue])
        guard workload.depth * descriptorsPerRequest <= Int(queue.size) else {
            throw BenchError("\(workload.name): \(workload.depth) requests do not fit the ring")
        }

        let table = queue.layout.descriptorTable
        let segmentLength = workload.blockSize / workload.segments
        let fill = [UInt8](repeating: 0xA5, count: segmentLength)
        for slot in 0 ..< workload.depth {
            let first = UInt16(slot * descriptorsPerRequest)
            var index = first
            func link(_ address: GuestAddress, _ length: Int, _ flags: DescriptorFlags, last: Bool = false) throws {
                let next = last ? 0 : index + 1
                try queue.writeDescriptor(in: table, index: index, RawDescriptor(
                    address: address, length: UInt32(length), flags: last ? flags : flags.union(.next), next: next))
                index += 1
            }
            let header = try queue.allocate(16)
            try memory.write(workload.isRead ? BlockRequestType.read : BlockRequestType.write, at: header)
            try memory.write(UInt32(0), at: header + 4)
            try link(header, 16, [])
            for _ in 0 ..< workload.segments {
                let buffer = try queue.allocate(UInt64(segmentLength), alignment: 4096)
                try memory.write(fill, at: buffer)
                try link(buffer, segmentLength, workload.isRead ? .write : [])
            }
            let status = try queue.allocate(1)
            try link(status, 1, .write, last: true)
            headers.append(header)
            statuses.append(status)
            heads.append(first)
        }
    }

    /// Runs the workload for `seconds` after `warmUp` seconds; returns the measured rate.
    func run(seconds: Double, warmUp: Double, capacityBytes: UInt64) throws -> Rate {
        let sectorsPerBlock = UInt64(workload.blockSize / 512)
        let blocks = capacityBytes / UInt64(workload.blockSize)
        var random = Xorshift(seed: 0x1BAD_5EED)
        var nextSequential: UInt64 = 0
        var completed = 0
        var start = now()
        var measuring = false
        // Locals, so the loop does not pay for exclusivity checks on this object's properties;
        // and the clock is read every 64 requests, not every round, to keep the harness light.
        let headers = self.headers, statuses = self.statuses, heads = self.heads
        let rounds = max(1, 64 / workload.depth)
        var round = 0
        while true {
            for slot in 0 ..< workload.depth {
                let block: UInt64
                if workload.isRandom {
                    block = random.next(below: blocks)
                } else {
                    block = nextSequential
                    nextSequential = (nextSequential + 1) % blocks
                }
                try memory.write(block * sectorsPerBlock, at: headers[slot] + 8)
                try memory.write(UInt8(0xFF), at: statuses[slot])
                try queue.pushAvail(head: heads[slot])
            }
            try queue.publish()
            transport.handleNotification(queue: 0)
            var reaped = 0
            while let used = try queue.popUsed() {
                let slot = Int(used.id) / descriptorsPerRequest
                guard try memory.read(UInt8.self, at: statuses[slot]) == BlockStatus.ok else {
                    throw BenchError("\(workload.name): request failed (status \(try memory.read(UInt8.self, at: statuses[slot])))")
                }
                reaped += 1
            }
            guard reaped == workload.depth else {
                throw BenchError("\(workload.name): \(reaped) of \(workload.depth) requests completed")
            }
            completed += reaped
            round += 1
            if round % rounds != 0 { continue }
            let t = now()
            if !measuring {
                if t - start >= warmUp {
                    measuring = true
                    start = t
                    completed = 0
                }
            } else if t - start >= seconds {
                let rate = Double(completed) / (t - start)
                return Rate(iops: rate, bytesPerSecond: rate * Double(workload.blockSize))
            }
        }
    }
}

/// The block benchmark: each workload through the device, then through fio, on one file.
enum BlockBench {
    struct Options {
        var directory = "/var/tmp/lguest-bench"
        var sizeMiB = 1024
        var seconds = 5.0
        var warmUp = 1.0
        /// Also run fio with io_uring and libaio at the workload's depth (QD > 1 only).
        var asyncPeers = true
        var only: String?
        /// Skip fio (for profiling the device alone).
        var devicesOnly = false
    }

    static func main(_ options: Options) throws {
        let path = options.directory + "/disk.img"
        let size = UInt64(options.sizeMiB) << 20
        try FileManager.default.createDirectory(atPath: options.directory, withIntermediateDirectories: true)
        defer { unlink(path) }
        print("block: preparing \(options.sizeMiB) MiB image at \(path)")
        try prefill(path: path, size: size)

        var table = Table(header: ["workload", "lguest IOPS", "lguest MB/s", "fio IOPS", "fio MB/s", "ratio", "fio engine"])
        var extras: [[String]] = []
        for workload in BlockWorkload.all where options.only.map({ workload.name.contains($0) }) ?? true {
            try settle(path: path, size: size)
            let loop = try BlockDriverLoop(path: path, workload: workload)
            let ours = try loop.run(seconds: options.seconds, warmUp: options.warmUp, capacityBytes: size)
            if options.devicesOnly {
                print("  \(workload.name): lguest \(format(ours.iops)) IOPS, \(format(ours.megabytes)) MB/s")
                continue
            }
            try settle(path: path, size: size)
            let peer = try fio(path: path, size: size, workload: workload, engine: "pvsync", options: options)
            table.rows.append([workload.name, format(ours.iops), format(ours.megabytes), format(peer.iops),
                               format(peer.megabytes), percent(ours.iops / peer.iops), "pvsync"])
            if options.asyncPeers, workload.depth > 1 {
                for engine in ["io_uring", "libaio"] {
                    try settle(path: path, size: size)
                    let other = try fio(path: path, size: size, workload: workload, engine: engine, options: options)
                    extras.append([workload.name, format(ours.iops), format(ours.megabytes), format(other.iops),
                                   format(other.megabytes), percent(ours.iops / other.iops), engine])
                }
            }
            print("  \(workload.name): lguest \(format(ours.iops)) IOPS, fio \(format(peer.iops)) IOPS")
        }
        print("")
        print(table.render())
        if !extras.isEmpty {
            print("")
            print("For reference, fio with asynchronous engines at the same depth (the device serves its")
            print("queue one request at a time, so these are not its peer):")
            var other = table
            other.rows = extras
            print(other.render())
        }
    }

    /// The fio command line for `workload` on `engine`.
    static func fioArguments(path: String, size: UInt64, workload: BlockWorkload, engine: String,
                             options: Options) -> [String] {
        var arguments = [
            "fio", "--name=\(workload.pattern)", "--filename=\(path)", "--size=\(size)",
            "--rw=\(workload.pattern)", "--bs=\(workload.blockSize)", "--ioengine=\(engine)",
            "--iodepth=\(engine.hasSuffix("sync") ? 1 : workload.depth)", "--direct=0", "--invalidate=0",
            "--time_based", "--runtime=\(Int(options.seconds))", "--ramp_time=\(Int(options.warmUp))",
            "--numjobs=1", "--thread", "--output-format=json",
        ]
        if workload.isRandom { arguments += ["--norandommap", "--randrepeat=0"] }
        if engine == "io_uring" || engine == "libaio" {
            arguments += ["--iodepth_batch_submit=\(workload.depth)", "--iodepth_batch_complete_max=\(workload.depth)"]
        }
        return arguments
    }

    static func fio(path: String, size: UInt64, workload: BlockWorkload, engine: String, options: Options) throws -> Rate {
        let output = try run(fioArguments(path: path, size: size, workload: workload, engine: engine, options: options))
        // fio may print warnings before the JSON object.
        guard let start = output.firstIndex(of: "{"),
              let json = try JSONSerialization.jsonObject(with: Data(output[start...].utf8)) as? [String: Any],
              let jobs = json["jobs"] as? [[String: Any]], let job = jobs.first,
              let side = job[workload.isRead ? "read" : "write"] as? [String: Any],
              let iops = side["iops"] as? Double, let bandwidth = side["bw_bytes"] as? Double
        else { throw BenchError("cannot read fio's output:\n\(output)") }
        return Rate(iops: iops, bytesPerSecond: bandwidth)
    }

    /// Writes `size` bytes of a non-zero pattern, so reads move real data, and pushes it to disk.
    static func prefill(path: String, size: UInt64) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BenchError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        for i in chunk.indices { chunk[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        var offset: UInt64 = 0
        while offset < size {
            let n = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard n == chunk.count else { throw BenchError("cannot fill \(path): \(String(cString: strerror(errno)))") }
            offset += UInt64(n)
        }
        fsync(fd)
    }

    /// Before every run, device or fio: dirty pages from the last write run go to disk (so their
    /// writeback does not land in the next measurement) and the whole file is read once (so
    /// every read run, ours and fio's, finds it in the page cache).
    static func settle(path: String, size: UInt64) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BenchError("cannot open \(path)") }
        defer { close(fd) }
        fsync(fd)
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var offset: UInt64 = 0
        while offset < size {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard n > 0 else { break }
            offset += UInt64(n)
        }
    }
}
