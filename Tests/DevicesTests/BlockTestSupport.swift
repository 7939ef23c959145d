import Foundation
import GuestMemory
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// An interrupt line that counts its pulses.
final class BlockInterruptCounter: InterruptLine {
    private let pulses = Atomic<Int>(0)
    func trigger() { pulses.add(1, ordering: .sequentiallyConsistent) }
    var count: Int { pulses.load(ordering: .sequentiallyConsistent) }
}

/// A raw image in a fresh directory of its own, removed when the value goes away.
final class BlockScratchImage {
    let directory: URL
    let path: String

    /// `size` bytes, byte `i` = `fill(i)`. `parent` picks the filesystem (default: the temp dir).
    init(size: Int, parent: String? = nil, fill: (Int) -> UInt8 = { _ in 0 }) throws {
        let base = parent.map { URL(fileURLWithPath: $0) } ?? FileManager.default.temporaryDirectory
        directory = base.appendingPathComponent("lguest-block-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("disk.img").path
        try Data((0 ..< size).map(fill)).write(to: URL(fileURLWithPath: path))
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// The file's bytes now.
    func bytes() throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// The file's size now.
    func size() throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? -1
    }

    /// Overwrites bytes at `offset` behind the device's back.
    func poke(_ bytes: [UInt8], at offset: Int) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: Data(bytes))
    }

    func truncate(to size: Int) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: UInt64(size))
    }
}

/// A recognisable byte pattern: different for every byte, sector and seed.
func blockPattern(_ count: Int, seed: Int) -> [UInt8] {
    (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ ($0 >> 9) &* 7 &+ seed &* 101 &+ 1) }
}

/// `struct virtio_blk_outhdr`.
func blockHeader(_ type: UInt32, sector: UInt64 = 0, reserved: UInt32 = 0) -> [UInt8] {
    blockLE(type) + blockLE(reserved) + blockLE(sector)
}

/// `struct virtio_blk_discard_write_zeroes`.
func blockSegment(sector: UInt64, sectors: UInt32, flags: UInt32 = 0) -> [UInt8] {
    blockLE(sector) + blockLE(sectors) + blockLE(flags)
}

func blockLE<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
}

/// What came back for one request.
struct BlockReply {
    let used: UsedElement
    /// The last byte of the writable buffers (the status), if there were any.
    let status: UInt8?
    /// The writable bytes before the status byte.
    let data: [UInt8]
}

/// A block device behind a real virtio-mmio transport, driven by the mock driver the way
/// Linux's virtio_blk would drive it.
struct BlockRig {
    let image: BlockScratchImage
    let memory: GuestMemory
    let device: BlockDevice
    let line = BlockInterruptCounter()
    let transport: MMIOTransport
    let driver: MockDriver
    let queue: MockDriverQueue
    let features: UInt64

    /// A rig over `image`; `features: nil` accepts everything the device offers.
    /// `path` (default: the image itself) is what the device opens: a loop device over the
    /// image, say.
    init(image: BlockScratchImage, path: String? = nil, readOnly: Bool = false, serial: String? = nil,
         features: UInt64? = nil) throws {
        self.image = image
        memory = try GuestMemory(size: 0x20_0000)
        device = try BlockDevice(BlockConfiguration(path: path ?? image.path, readOnly: readOnly, serial: serial))
        transport = MMIOTransport(device: device, memory: memory, interrupt: line)
        driver = MockDriver(transport: transport)
        queue = try MockDriverQueue(memory: memory, size: BlockDevice.queueSize, base: 0x10000,
                                    dataAreaSize: 0x10_0000)
        self.features = try driver.initialize(features: features, queues: [queue])
    }

    /// A rig over a fresh image of `sectors` sectors filled with a pattern.
    init(sectors: Int = 64, readOnly: Bool = false, serial: String? = nil, features: UInt64? = nil) throws {
        let image = try BlockScratchImage(size: sectors * 512) { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        try self.init(image: image, readOnly: readOnly, serial: serial, features: features)
    }

    /// Publishes one chain, kicks, and collects the answer.
    func submit(readable: [[UInt8]], writable: [UInt32], indirect: Bool = false) throws -> BlockReply {
        queue.resetDataArea()
        let chain = try queue.addChain(readable: readable, writable: writable, indirect: indirect)
        driver.kick(0)
        let used = try queue.drainUsed()
        try #require(used.count == 1)
        #expect(used[0].id == UInt32(chain.head))
        var bytes: [UInt8] = []
        for buffer in chain.writable { bytes += try queue.read(buffer) }
        return BlockReply(used: used[0], status: bytes.last, data: Array(bytes.dropLast()))
    }

    /// Publishes raw descriptors (for chains `addChain` would not build), kicks, and returns
    /// the used element.
    func submitRaw(_ descriptors: [RawDescriptor]) throws -> UsedElement {
        try queue.addRawChain(descriptors)
        driver.kick(0)
        let used = try queue.drainUsed()
        try #require(used.count == 1)
        return used[0]
    }

    /// A read of `sectors` sectors at `sector`; the data buffers are `split` (default: one).
    func read(sector: UInt64, sectors: Int, split: [UInt32]? = nil, indirect: Bool = false) throws -> BlockReply {
        let lengths = split ?? [UInt32(sectors * 512)]
        return try submit(readable: [blockHeader(BlockRequestType.read, sector: sector)],
                          writable: lengths + [1], indirect: indirect)
    }

    /// A write of `data` at `sector`, the data cut into pieces of the `split` lengths.
    func write(sector: UInt64, _ data: [UInt8], split: [Int]? = nil, indirect: Bool = false) throws -> BlockReply {
        var pieces: [[UInt8]] = []
        var start = 0
        for length in split ?? [data.count] {
            pieces.append(Array(data[start ..< start + length]))
            start += length
        }
        return try submit(readable: [blockHeader(BlockRequestType.write, sector: sector)] + pieces,
                          writable: [1], indirect: indirect)
    }

    func flush() throws -> BlockReply {
        try submit(readable: [blockHeader(BlockRequestType.flush)], writable: [1])
    }

    func getID(room: UInt32 = 20) throws -> BlockReply {
        try submit(readable: [blockHeader(BlockRequestType.getID)], writable: [room, 1])
    }

    func discard(_ segments: [[UInt8]]) throws -> BlockReply {
        try submit(readable: [blockHeader(BlockRequestType.discard), segments.flatMap { $0 }], writable: [1])
    }

    func writeZeroes(_ segments: [[UInt8]]) throws -> BlockReply {
        try submit(readable: [blockHeader(BlockRequestType.writeZeroes), segments.flatMap { $0 }], writable: [1])
    }

    /// One config-space field, read through the transport as the guest would.
    func config<T: FixedWidthInteger>(_ offset: Int, as type: T.Type = T.self) -> T {
        var bytes = [UInt8](repeating: 0xFF, count: MemoryLayout<T>.size)
        transport.read(offset: MMIOTransport.configOffset + UInt64(offset), into: &bytes)
        return bytes.enumerated().reduce(T(0)) { $0 | T($1.element) << (8 * $1.offset) }
    }

    func errors(_ kind: BlockRequestErrorKind) -> UInt64 { device.statistics[kind] }
}
