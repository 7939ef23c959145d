import GuestMemory
import Testing
@testable import Virtio
import VirtioTesting

@Suite struct ChainWalkTests {
    @Test func emptyQueuePopsNothing() throws {
        var (_, queue) = try makeQueuePair()
        #expect(try queue.popAvailable() == nil)
        #expect(queue.nextAvail == 0)
    }

    @Test func directChainSplitsReadableAndWritable() throws {
        var (driver, queue) = try makeQueuePair()
        let sent = try driver.addChain(readable: [[1, 2, 3], [4, 5]], writable: [8, 4])
        let chain = try #require(try queue.popAvailable())
        #expect(chain.head == sent.head)
        #expect(chain.descriptors.count == 4)
        #expect(chain.readableCount == 2)
        #expect(chain.readable.map(\.address) == sent.readable.map(\.address))
        #expect(chain.writable.map(\.length) == [8, 4])
        #expect(chain.writable.allSatisfy { $0.isWritable })
        #expect(!chain.readable.contains { $0.isWritable })
        #expect(chain.readableLength == 5)
        #expect(chain.writableLength == 12)
        #expect(!chain.usedIndirectTable)
        #expect(try queue.popAvailable() == nil)
        #expect(queue.statistics.chainsPopped == 1)
    }

    @Test func indirectChain() throws {
        var (driver, queue) = try makeQueuePair()
        let sent = try driver.addChain(readable: [[9, 8, 7]], writable: [16, 16], indirect: true)
        #expect(sent.indirectTable != nil)
        let chain = try #require(try queue.popAvailable())
        #expect(chain.head == sent.head)
        #expect(chain.usedIndirectTable)
        #expect(chain.readable.map(\.address) == sent.readable.map(\.address))
        #expect(chain.writable.map(\.address) == sent.writable.map(\.address))
        #expect(chain.readableLength == 3 && chain.writableLength == 32)
        // Only one slot of the main table was used.
        #expect(driver.freeDescriptorCount == 15)
    }

    @Test func directDescriptorsFollowedByAnIndirectTable() throws {
        var (driver, queue) = try makeQueuePair()
        let header = try driver.allocate(4)
        try driver.memory.write([0xAA, 0xBB, 0xCC, 0xDD], at: header)
        let payload = try driver.allocate(8)
        let reply = try driver.allocate(2)
        let table = try driver.allocate(32)
        try driver.writeDescriptor(in: table, index: 0, RawDescriptor(address: payload, length: 8, flags: .next, next: 1))
        try driver.writeDescriptor(in: table, index: 1, RawDescriptor(address: reply, length: 2, flags: .write))
        try driver.addRawChain([
            RawDescriptor(address: header, length: 4),
            RawDescriptor(address: table, length: 32, flags: .indirect),
        ])
        let chain = try #require(try queue.popAvailable())
        #expect(chain.descriptors.map(\.address) == [header, payload, reply])
        #expect(chain.readableCount == 2)
        #expect(chain.usedIndirectTable)
    }

    @Test func writeFlagOnTheIndirectDescriptorIsIgnored() throws {
        var (driver, queue) = try makeQueuePair()
        let buffer = try driver.allocate(8)
        let table = try driver.allocate(16)
        try driver.writeDescriptor(in: table, index: 0, RawDescriptor(address: buffer, length: 8))
        try driver.addRawChain([RawDescriptor(address: table, length: 16, flags: [.indirect, .write])])
        let chain = try #require(try queue.popAvailable())
        #expect(chain.readableCount == 1 && chain.writable.isEmpty)
    }

    @Test func chainsComeOutInAvailOrderAndDescriptorsAreRecycled() throws {
        var (driver, queue) = try makeQueuePair(size: 4)
        for round in 0 ..< 10 {
            let a = try driver.addChain(readable: [[UInt8(round)]])
            let b = try driver.addChain(writable: [1])
            let first = try #require(try queue.popAvailable())
            let second = try #require(try queue.popAvailable())
            #expect(first.head == a.head && second.head == b.head)
            try queue.addUsed(head: first.head, length: 0)
            try queue.addUsed(head: second.head, length: 1)
            #expect(try driver.drainUsed() == [UsedElement(id: UInt32(a.head), length: 0),
                                               UsedElement(id: UInt32(b.head), length: 1)])
            driver.resetDataArea()
        }
        #expect(queue.nextAvail == 20 && queue.nextUsed == 20)
    }

    @Test func aChainAsLongAsTheQueueIsFine() throws {
        var (driver, queue) = try makeQueuePair(size: 8)
        let buffer = try driver.allocate(1)
        try driver.addRawChain(Array(repeating: RawDescriptor(address: buffer, length: 1), count: 8))
        let chain = try #require(try queue.popAvailable())
        #expect(chain.descriptors.count == 8)
    }

    @Test func zeroLengthBuffersAreAllowed() throws {
        var (driver, queue) = try makeQueuePair()
        let buffer = try driver.allocate(1)
        try driver.addRawChain([RawDescriptor(address: buffer, length: 0),
                                RawDescriptor(address: buffer, length: 0, flags: .write)])
        let chain = try #require(try queue.popAvailable())
        #expect(chain.readableLength == 0 && chain.writableLength == 0)
        var writer = chain.writer()
        try writer.write([])
        #expect(writer.bytesWritten == 0)
    }

    /// The chain is copied out of guest memory at pop time: scribbling on the descriptor table
    /// afterwards changes nothing the device sees.
    @Test func descriptorsAreReadOnce() throws {
        var (driver, queue) = try makeQueuePair()
        let sent = try driver.addChain(readable: [[1, 2, 3, 4]])
        let chain = try #require(try queue.popAvailable())
        try driver.writeDescriptor(sent.head, RawDescriptor(address: 0xFFFF_FFFF_0000, length: 0xFFFF, flags: .write))
        #expect(chain.descriptors == [Descriptor(address: sent.readable[0].address, length: 4, flags: [])])
        var reader = chain.reader()
        #expect(try reader.read(count: 4) == [1, 2, 3, 4])
    }
}

@Suite struct ChainReaderWriterTests {
    /// Three readable buffers and three writable ones of awkward sizes.
    func makeChain() throws -> (MockDriverQueue, MockChain, DescriptorChain) {
        var (driver, queue) = try makeQueuePair()
        let sent = try driver.addChain(readable: [[0x01, 0x02, 0x03], [0x04], [0x05, 0x06, 0x07, 0x08, 0x09]],
                                       writable: [1, 2, 5])
        return (driver, sent, try #require(try queue.popAvailable()))
    }

    @Test func readsAcrossDescriptorBoundaries() throws {
        let (_, _, chain) = try makeChain()
        var reader = chain.reader()
        #expect(reader.remaining == 9)
        #expect(try reader.read(count: 2) == [1, 2])
        #expect(try reader.read(count: 3) == [3, 4, 5])
        #expect(reader.bytesRead == 5)
        var rest = [UInt8](repeating: 0, count: 4)
        try reader.read(into: &rest)
        #expect(rest == [6, 7, 8, 9])
        #expect(reader.remaining == 0)
    }

    @Test func readLEStraddlesDescriptors() throws {
        let (_, _, chain) = try makeChain()
        var reader = chain.reader()
        try reader.skip(1)
        // Bytes 2, 3 | 4 | 5, 6 ... little-endian.
        #expect(try reader.readLE(UInt32.self) == 0x0504_0302)
        #expect(try reader.readLE(UInt8.self) == 6)
        #expect(try reader.readLE(UInt16.self) == 0x0807)
    }

    @Test func readIntoRawBuffer() throws {
        let (_, _, chain) = try makeChain()
        var reader = chain.reader()
        var bytes = [UInt8](repeating: 0, count: 9)
        try bytes.withUnsafeMutableBytes { buffer in try reader.read(into: buffer) }
        #expect(bytes == [1, 2, 3, 4, 5, 6, 7, 8, 9])
    }

    @Test func overlongReadFailsAndConsumesNothing() throws {
        let (_, _, chain) = try makeChain()
        var reader = chain.reader()
        try reader.skip(7)
        #expect(throws: VirtqueueError.notEnoughReadable(requested: 4, remaining: 2)) {
            try reader.readLE(UInt32.self)
        }
        #expect(reader.remaining == 2)
        #expect(try reader.read(count: 2) == [8, 9])
    }

    @Test func writesAcrossDescriptorBoundariesAndCounts() throws {
        let (driver, sent, chain) = try makeChain()
        var writer = chain.writer()
        #expect(writer.remaining == 8)
        try writer.write([0xA0, 0xA1])
        try writer.writeLE(UInt32(0xB3B2_B1B0))
        #expect(writer.bytesWritten == 6)
        #expect(try driver.read(sent.writable[0]) == [0xA0])
        #expect(try driver.read(sent.writable[1]) == [0xA1, 0xB0])
        #expect(try driver.read(sent.writable[2]) == [0xB1, 0xB2, 0xB3, 0, 0])
    }

    @Test func overlongWriteFailsAndWritesNothing() throws {
        let (driver, sent, chain) = try makeChain()
        var writer = chain.writer()
        try writer.write([1, 2, 3])
        #expect(throws: VirtqueueError.notEnoughWritable(requested: 6, remaining: 5)) {
            try writer.write([9, 9, 9, 9, 9, 9])
        }
        #expect(writer.bytesWritten == 3)
        #expect(try driver.read(sent.writable[2]) == [0, 0, 0, 0, 0])
    }

    @Test func writeFromRawBufferAndZeros() throws {
        let (driver, sent, chain) = try makeChain()
        var writer = chain.writer()
        try [UInt8](repeating: 0xEE, count: 8).withUnsafeBytes { try writer.write(bytes: $0) }
        #expect(try driver.read(sent.writable[2]) == [0xEE, 0xEE, 0xEE, 0xEE, 0xEE])
        #expect(writer.remaining == 0)
        var again = chain.writer()
        try again.skipForTest(3)
        try again.writeZeros(count: 5)
        #expect(try driver.read(sent.writable[2]) == [0, 0, 0, 0, 0])
        #expect(again.bytesWritten == 8)
    }

    @Test func segmentsForZeroCopyIO() throws {
        let (_, sent, chain) = try makeChain()
        let reader = chain.reader()
        let pieces = reader.segments(maxBytes: 5)
        #expect(pieces == [sent.readable[0], sent.readable[1],
                           GuestBuffer(address: sent.readable[2].address, length: 1)])
        var writer = chain.writer()
        try writer.advance(by: 2)  // all of the first buffer, one byte of the second
        #expect(writer.segments(maxBytes: 100) == [GuestBuffer(address: sent.writable[1].address + 1, length: 1),
                                                   sent.writable[2]])
        #expect(throws: VirtqueueError.notEnoughWritable(requested: 7, remaining: 6)) { try writer.advance(by: 7) }
        try writer.advance(by: 6)
        #expect(writer.segments(maxBytes: 100).isEmpty)
        #expect(writer.bytesWritten == 8)
    }

    @Test func directionIsEnforcedByTheHelpers() throws {
        var (driver, queue) = try makeQueuePair()
        try driver.addChain(writable: [4])
        let chain = try #require(try queue.popAvailable())
        var reader = chain.reader()
        #expect(throws: VirtqueueError.notEnoughReadable(requested: 1, remaining: 0)) { try reader.readLE(UInt8.self) }
        try driver.addChain(readable: [[1]])
        let readOnly = try #require(try queue.popAvailable())
        var writer = readOnly.writer()
        #expect(throws: VirtqueueError.notEnoughWritable(requested: 1, remaining: 0)) { try writer.write([1]) }
    }
}

extension ChainWriter {
    mutating func skipForTest(_ count: Int) throws(VirtqueueError) { try advance(by: count) }
}
