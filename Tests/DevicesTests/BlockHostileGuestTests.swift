import Foundation
import GuestMemory
import Testing
@testable import Devices
import Virtio
#if canImport(Glibc)
import Glibc
import VirtioTesting
#endif

/// A guest that lies: bad lengths, wrong directions, sectors off the end of the disk, chains
/// with no header or nowhere to put the status. Each request must fail alone, be counted, leave
/// the file as it was, and not stop the next request from working.
@Suite struct BlockHostileGuestTests {
    /// The good request that must still work after each bad one.
    func stillWorks(_ rig: BlockRig, sector: UInt64 = 1) throws {
        let reply = try rig.read(sector: sector, sectors: 1)
        #expect(reply.status == BlockStatus.ok)
        #expect(reply.data == Array(try rig.image.bytes()[Int(sector) * 512 ..< Int(sector + 1) * 512]))
    }

    // MARK: - Lengths and ranges

    @Test func dataThatIsNotWholeSectorsIsAnIOError() throws {
        let rig = try BlockRig(sectors: 16)
        let before = try rig.image.bytes()
        let read = try rig.read(sector: 0, sectors: 1, split: [511])
        #expect(read.status == BlockStatus.ioError && read.used.length == 1)
        #expect(read.data == [UInt8](repeating: 0, count: 511)) // nothing was read into it
        #expect(try rig.write(sector: 0, blockPattern(100, seed: 1)).status == BlockStatus.ioError)
        #expect(try rig.write(sector: 0, blockPattern(513, seed: 1), split: [512, 1]).status == BlockStatus.ioError)
        #expect(rig.errors(.badLength) == 3)
        #expect(try rig.image.bytes() == before)
        try stillWorks(rig)
    }

    @Test func sectorsThatWouldOverflowAreOutOfRange() throws {
        let rig = try BlockRig(sectors: 16)
        let before = try rig.image.bytes()
        for sector: UInt64 in [.max, .max - 1, .max / 512, .max / 512 + 1, 1 << 55, 17] {
            #expect(try rig.read(sector: sector, sectors: 2).status == BlockStatus.ioError, "read at \(sector)")
            #expect(try rig.write(sector: sector, blockPattern(1024, seed: 2)).status == BlockStatus.ioError,
                    "write at \(sector)")
        }
        #expect(try rig.discard([blockSegment(sector: .max, sectors: 1)]).status == BlockStatus.ioError)
        #expect(try rig.writeZeroes([blockSegment(sector: .max - 3, sectors: 8)]).status == BlockStatus.ioError)
        #expect(rig.errors(.outOfRange) == 14)
        #expect(try rig.image.bytes() == before)
        try stillWorks(rig)
    }

    // MARK: - Chains with no header or no status

    @Test func aChainWithoutAFullHeaderIsReturnedWithLengthZero() throws {
        let rig = try BlockRig(sectors: 16)
        let header = blockHeader(BlockRequestType.read, sector: 0)
        let status = try rig.queue.allocate(1)
        try rig.memory.write(UInt8(0xEE), at: status)
        let short = try rig.queue.allocate(15)
        try rig.memory.write(Array(header[..<15]), at: short)
        let used = try rig.submitRaw([RawDescriptor(address: short, length: 15),
                                      RawDescriptor(address: status, length: 1, flags: .write)])
        #expect(used.length == 0)
        #expect(try rig.memory.read(UInt8.self, at: status) == 0xEE) // no status was written
        #expect(rig.errors(.malformedRequest) == 1)
        try stillWorks(rig)
    }

    @Test func aChainWithNowhereToPutTheStatusIsReturnedWithLengthZero() throws {
        let rig = try BlockRig(sectors: 16)
        let before = try rig.image.bytes()
        // A write with its data but no writable byte at all.
        let noStatus = try rig.submit(readable: [blockHeader(BlockRequestType.write, sector: 2),
                                                 blockPattern(512, seed: 3)], writable: [])
        #expect(noStatus.used.length == 0)
        // Only writable buffers: no header.
        let noHeader = try rig.submit(readable: [], writable: [512, 1])
        #expect(noHeader.used.length == 0 && noHeader.data.allSatisfy { $0 == 0 } && noHeader.status == 0)
        // A header with zero-length writable buffers.
        let empty = try rig.submit(readable: [blockHeader(BlockRequestType.flush)], writable: [0, 0])
        #expect(empty.used.length == 0)
        #expect(rig.errors(.malformedRequest) == 3)
        #expect(rig.device.statistics.requests == 3)
        #expect(try rig.image.bytes() == before)
        try stillWorks(rig)
    }

    @Test func chainsTheQueueRejectsNeverReachTheDevice() throws {
        let rig = try BlockRig(sectors: 16)
        let used = try rig.submitRaw([RawDescriptor(address: 0xFFFF_F000, length: 16),
                                      RawDescriptor(address: 0x1000, length: 1, flags: .write)])
        #expect(used.length == 0)
        #expect(rig.device.queueStatistics?[.bufferOutOfBounds] == 1)
        #expect(rig.device.statistics.requests == 0)
        #expect(!rig.driver.status.contains(.deviceNeedsReset))
        try stillWorks(rig)
    }

    // MARK: - Buffers going the wrong way

    @Test func aWriteWithDeviceWritableDataIsRefused() throws {
        let rig = try BlockRig(sectors: 16)
        let before = try rig.image.bytes()
        let reply = try rig.submit(readable: [blockHeader(BlockRequestType.write, sector: 1), blockPattern(512, seed: 4)],
                                   writable: [512, 1])
        #expect(reply.status == BlockStatus.ioError && reply.used.length == 1)
        #expect(reply.data.allSatisfy { $0 == 0 })
        #expect(rig.errors(.wrongDirection) == 1)
        #expect(try rig.image.bytes() == before)
        try stillWorks(rig)
    }

    @Test func aReadWithDeviceReadableDataIsRefused() throws {
        let rig = try BlockRig(sectors: 16)
        let reply = try rig.submit(readable: [blockHeader(BlockRequestType.read, sector: 1), blockPattern(512, seed: 5)],
                                   writable: [512, 1])
        #expect(reply.status == BlockStatus.ioError)
        #expect(reply.data.allSatisfy { $0 == 0 })
        let discardWithWritable = try rig.submit(
            readable: [blockHeader(BlockRequestType.discard), blockSegment(sector: 0, sectors: 1)], writable: [16, 1])
        #expect(discardWithWritable.status == BlockStatus.ioError)
        #expect(rig.errors(.wrongDirection) == 2)
        try stillWorks(rig)
    }

    // MARK: - Discard and write-zeroes payloads

    @Test func badDiscardPayloads() throws {
        let rig = try BlockRig(sectors: 64)
        let before = try rig.image.bytes()
        let tooMany = (0 ..< 17).map { blockSegment(sector: UInt64($0), sectors: 1) }
        #expect(try rig.discard(tooMany).status == BlockStatus.ioError)
        #expect(try rig.discard([]).status == BlockStatus.ioError)                          // no segments
        #expect(try rig.discard([Array(blockSegment(sector: 0, sectors: 1)[..<15])]).status
            == BlockStatus.ioError)                                                            // 15 bytes
        #expect(try rig.discard([blockSegment(sector: 0, sectors: BlockDevice.maxDiscardSectors + 1)]).status
            == BlockStatus.ioError)                                                            // too large
        #expect(try rig.writeZeroes([blockSegment(sector: 0, sectors: 1), blockSegment(sector: 4, sectors: 1)]).status
            == BlockStatus.ioError)                                                            // max 1 segment
        #expect(rig.errors(.badSegments) == 5)

        // One good segment and one out of range: nothing happens at all.
        #expect(try rig.discard([blockSegment(sector: 0, sectors: 8), blockSegment(sector: 60, sectors: 8)]).status
            == BlockStatus.ioError)
        #expect(try rig.writeZeroes([blockSegment(sector: 64, sectors: 1)]).status == BlockStatus.ioError)
        #expect(rig.errors(.outOfRange) == 2)

        // Flags: unmap on a discard, or any unknown bit, is UNSUPP.
        #expect(try rig.discard([blockSegment(sector: 0, sectors: 8, flags: 1)]).status == BlockStatus.unsupported)
        #expect(try rig.discard([blockSegment(sector: 0, sectors: 8, flags: 2)]).status == BlockStatus.unsupported)
        #expect(try rig.writeZeroes([blockSegment(sector: 0, sectors: 8, flags: 0x8000_0001)]).status
            == BlockStatus.unsupported)
        #expect(rig.errors(.unsupported) == 3)

        #expect(try rig.image.bytes() == before)
        try stillWorks(rig)
        // Sixteen segments are fine; so is a segment of zero sectors.
        let sixteen = (0 ..< 16).map { blockSegment(sector: UInt64($0 * 4), sectors: $0 == 3 ? 0 : 1) }
        #expect(try rig.discard(sixteen).status == BlockStatus.ok)
    }

    // MARK: - The host says no

    /// Runs `body` with the device's descriptor number pointing at `replacement` instead of the
    /// image, then puts the image back.
    func withImageDescriptor(of rig: BlockRig, replacedBy replacement: Int32, _ body: () throws -> Void) throws {
        let fd = rig.device.file.fd
        let saved = dup(fd)
        try #require(saved >= 0)
        try #require(dup2(replacement, fd) == fd)
        defer {
            _ = dup2(saved, fd)
            close(saved)
        }
        try body()
    }

    @Test func hostWriteErrorsAreIOErrors() throws {
        let rig = try BlockRig(sectors: 16)
        let before = try rig.image.bytes()
        let readOnly = open(rig.image.path, O_RDONLY | O_CLOEXEC)
        try #require(readOnly >= 0)
        defer { close(readOnly) }
        try withImageDescriptor(of: rig, replacedBy: readOnly) { () throws in
            #expect(try rig.write(sector: 3, blockPattern(512, seed: 6)).status == BlockStatus.ioError)
            #expect(try rig.writeZeroes([blockSegment(sector: 3, sectors: 1)]).status == BlockStatus.ioError)
        }
        let stats = rig.device.statistics
        #expect(stats[.hostIO] == 2)
        #expect(stats.lastHostErrno == EBADF)
        #expect(try rig.image.bytes() == before)
        #expect(try rig.write(sector: 3, blockPattern(512, seed: 6)).status == BlockStatus.ok)
    }

    @Test func hostReadErrorsAreIOErrors() throws {
        let rig = try BlockRig(sectors: 16)
        let writeOnly = open(rig.image.path, O_WRONLY | O_CLOEXEC)
        try #require(writeOnly >= 0)
        defer { close(writeOnly) }
        try withImageDescriptor(of: rig, replacedBy: writeOnly) { () throws in
            let reply = try rig.read(sector: 1, sectors: 1)
            #expect(reply.status == BlockStatus.ioError && reply.used.length == 1)
        }
        #expect(rig.errors(.hostIO) == 1)
        try stillWorks(rig)
    }

    @Test func aFailedSyncFailsEveryLaterFlush() throws {
        let rig = try BlockRig(sectors: 16)
        var pipeEnds: [Int32] = [0, 0]
        try #require(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[0]); close(pipeEnds[1]) }
        // fdatasync on a pipe fails (EINVAL): a stand-in for a disk that lost our writes.
        try withImageDescriptor(of: rig, replacedBy: pipeEnds[0]) { () throws in
            #expect(try rig.flush().status == BlockStatus.ioError)
        }
        // The image is back, but the lost writes are not: flushes keep failing.
        #expect(try rig.flush().status == BlockStatus.ioError)
        #expect(rig.errors(.hostIO) == 2)
        try stillWorks(rig)
    }

    @Test func anImageThatShrinksUnderUsGivesIOErrorsNotGarbage() throws {
        let rig = try BlockRig(sectors: 8)
        let before = try rig.image.bytes()
        try rig.image.truncate(to: 2304) // 4.5 sectors
        // Sectors 2..<6 from offset 1024: 1280 bytes are there, then the file ends. The first
        // preadv stops short inside the second buffer; the resumed one finds end of file.
        let reply = try rig.read(sector: 2, sectors: 4, split: [1000, 1048])
        #expect(reply.status == BlockStatus.ioError)
        #expect(reply.used.length == 1280 + 1)
        #expect(Array(reply.data[..<1280]) == Array(before[1024 ..< 2304]))
        #expect(rig.errors(.hostIO) == 1)
        #expect(try rig.read(sector: 0, sectors: 2).status == BlockStatus.ok)
    }
}
