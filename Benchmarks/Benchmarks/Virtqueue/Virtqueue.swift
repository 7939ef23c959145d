import Benchmark
import GuestMemory
import Virtio
import VirtioTesting

// The split-ring code alone: the driver publishes one chain, the device pops it (which walks
// and checks every descriptor), looks at each buffer, and adds the used element. One
// benchmark iteration is one chain, so throughput is chains per second on one core and the
// malloc count is per chain.

/// A driver-side queue with one chain of `shape` written once; every iteration republishes it.
struct Ring {
    let memory: GuestMemory
    let driver: MockDriverQueue
    var device: Queue
    let head: UInt16

    enum Shape {
        /// One device-readable buffer (a TX packet in one piece, an rng or console buffer).
        case single
        /// A block request: 16-byte header, 4 KiB of data, 1-byte status.
        case block
        /// The same three buffers through an indirect table.
        case indirect
    }

    init(_ shape: Shape) throws {
        memory = try GuestMemory(size: 0x20_0000)
        driver = try MockDriverQueue(memory: memory, size: 256, base: 0x10000, dataAreaSize: 0x10_0000)
        device = try driver.makeQueue(eventIndex: true, indirectDescriptors: true)
        let header = try driver.allocate(16)
        let data = try driver.allocate(4096, alignment: 4096)
        let status = try driver.allocate(1)
        let blockRequest = [
            RawDescriptor(address: header, length: 16),
            RawDescriptor(address: data, length: 4096, flags: .write),
            RawDescriptor(address: status, length: 1, flags: .write),
        ]
        switch shape {
        case .single:
            head = try driver.addRawChain([RawDescriptor(address: data, length: 1500)], publish: false)
        case .block:
            head = try driver.addRawChain(blockRequest, publish: false)
        case .indirect:
            head = try driver.addIndirectChain(blockRequest, publish: false).head
        }
        // Take the set-up's own available entry back out, so every iteration starts empty.
        try driver.publish()
        guard let chain = try device.popAvailable() else { throw VirtqueueError.queueBroken }
        try device.addUsed(head: chain.head, length: 0)
    }

    /// Driver: publish the chain. Device: pop, walk, complete.
    @inline(__always)
    mutating func roundTrip() throws {
        try driver.pushAvail(head: head)
        try driver.publish()
        guard let chain = try device.popAvailable() else { throw VirtqueueError.queueBroken }
        var bytes: UInt32 = 0
        for descriptor in chain.descriptors { bytes &+= descriptor.length }
        blackHole(bytes)
        try device.addUsed(head: chain.head, length: chain.writableLength)
    }

    /// The same, with the device reading the request header and writing the status byte
    /// through `ChainReader`/`ChainWriter`, as the block device does.
    @inline(__always)
    mutating func blockRoundTrip() throws {
        try driver.pushAvail(head: head)
        try driver.publish()
        guard let chain = try device.popAvailable() else { throw VirtqueueError.queueBroken }
        var reader = chain.reader()
        let type = try reader.readLE(UInt32.self)
        try reader.skip(4)
        let sector = try reader.readLE(UInt64.self)
        blackHole(type &+ UInt32(truncatingIfNeeded: sector))
        var writer = chain.writer()
        try writer.advance(by: Int(chain.writableLength) - 1)
        try writer.writeLE(UInt8(0))
        try device.addUsed(head: chain.head, length: writer.bytesWritten)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal, .instructions],
        scalingFactor: .mega,
        maxDuration: .seconds(3),
        maxIterations: 20
    )

    for (name, shape) in [("1 descriptor", Ring.Shape.single), ("3 descriptors (block)", .block),
                          ("indirect, 3 in the table", .indirect)] {
        Benchmark("pop, walk, add used: \(name)") { benchmark in
            var ring = try Ring(shape)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { try ring.roundTrip() }
            benchmark.stopMeasurement()
        }
    }

    Benchmark("block request through ChainReader/ChainWriter") { benchmark in
        var ring = try Ring(.block)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try ring.blockRoundTrip() }
        benchmark.stopMeasurement()
    }
}
