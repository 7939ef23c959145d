import Foundation
import GuestMemory
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// The block device doing its job for a well-behaved driver: what it offers, reads, writes,
/// flushes, serial numbers, discards and zeroing, read-only disks.
@Suite struct BlockTests {
    // MARK: - What the guest sees before any request

    @Test func identityFeaturesAndConfigSpace() throws {
        let rig = try BlockRig(sectors: 64)
        #expect(rig.driver.read(.deviceID) == 2)
        rig.driver.write(.queueSel, 0)
        #expect(rig.driver.read(.queueNumMax) == 256)

        let offered = rig.transport.deviceFeatures
        for bit in [BlockFeature.segMax, BlockFeature.blockSize, BlockFeature.flush,
                    BlockFeature.discard, BlockFeature.writeZeroes] {
            #expect(offered & bit != 0)
        }
        #expect(offered & BlockFeature.readOnly == 0)
        #expect(offered & BlockFeature.sizeMax == 0)
        #expect(rig.device.negotiatedFeatures == rig.features)

        #expect(rig.device.configSpace.count == 60)
        #expect(rig.config(BlockConfigOffset.capacity, as: UInt64.self) == 64)
        #expect(rig.config(BlockConfigOffset.segMax, as: UInt32.self) == 254)
        #expect(rig.config(BlockConfigOffset.geometry, as: UInt32.self) == 0)
        #expect(rig.config(BlockConfigOffset.blockSize, as: UInt32.self) == 512)
        #expect(rig.config(BlockConfigOffset.topology, as: UInt64.self) == 0)
        #expect(rig.config(BlockConfigOffset.writeback, as: UInt8.self) == 0)
        #expect(rig.config(BlockConfigOffset.numQueues, as: UInt16.self) == 1)
        #expect(rig.config(BlockConfigOffset.maxDiscardSectors, as: UInt32.self) == BlockDevice.maxDiscardSectors)
        #expect(rig.config(BlockConfigOffset.maxDiscardSegments, as: UInt32.self) == BlockDevice.maxDiscardSegments)
        #expect(rig.config(BlockConfigOffset.discardSectorAlignment, as: UInt32.self) == 8)
        #expect(rig.config(BlockConfigOffset.maxWriteZeroesSectors, as: UInt32.self) == BlockDevice.maxWriteZeroesSectors)
        #expect(rig.config(BlockConfigOffset.maxWriteZeroesSegments, as: UInt32.self) == 1)
        #expect(rig.config(BlockConfigOffset.writeZeroesMayUnmap, as: UInt8.self) == 1)
        // Past the end of what we describe: the transport reads zeros.
        #expect(rig.config(BlockConfigOffset.size, as: UInt32.self) == 0)
    }

    @Test func capacityRoundsDownAndAnEmptyImageIsAZeroSectorDisk() throws {
        let ragged = try BlockScratchImage(size: 10 * 512 + 100) { UInt8(truncatingIfNeeded: $0) }
        let rig = try BlockRig(image: ragged)
        #expect(rig.device.capacity == 10)
        #expect(rig.device.ignoredTrailingBytes == 100)
        // The last whole sector can be written; the ragged tail is never touched.
        let tail = try ragged.bytes()[5120...]
        #expect(try rig.write(sector: 9, blockPattern(512, seed: 1)).status == BlockStatus.ok)
        #expect(try ragged.bytes()[5120...] == tail)
        #expect(try rig.read(sector: 10, sectors: 1).status == BlockStatus.ioError)

        let empty = try BlockRig(image: try BlockScratchImage(size: 0))
        #expect(empty.device.capacity == 0)
        #expect(empty.config(BlockConfigOffset.capacity, as: UInt64.self) == 0)
        #expect(try empty.read(sector: 0, sectors: 1).status == BlockStatus.ioError)
        #expect(try empty.flush().status == BlockStatus.ok)
    }

    // MARK: - Reads and writes

    @Test func writtenSectorsReachTheFileAndReadBack() throws {
        let rig = try BlockRig(sectors: 64)
        let data = blockPattern(4 * 512, seed: 7)
        let before = try rig.image.bytes()

        let written = try rig.write(sector: 3, data)
        #expect(written.status == BlockStatus.ok)
        #expect(written.used.length == 1) // only the status byte is device-written

        // The host file: sectors 3...6 hold the pattern, everything else is as it was.
        let after = try rig.image.bytes()
        #expect(after.count == before.count)
        #expect(Array(after[1536 ..< 3584]) == data)
        #expect(after[..<1536] == before[..<1536])
        #expect(after[3584...] == before[3584...])

        let read = try rig.read(sector: 3, sectors: 4)
        #expect(read.status == BlockStatus.ok)
        #expect(read.used.length == 4 * 512 + 1)
        #expect(read.data == data)

        // Sectors nobody wrote read back as the file had them.
        let untouched = try rig.read(sector: 40, sectors: 2)
        #expect(untouched.data == Array(before[40 * 512 ..< 42 * 512]))

        let stats = rig.device.statistics
        #expect(stats.requests == 3 && stats.writes == 1 && stats.reads == 2)
        #expect(stats.bytesWritten == 2048 && stats.bytesRead == 3072)
        #expect(stats.totalErrors == 0)
        #expect(rig.line.count >= 1)
    }

    @Test func dataSplitAcrossDescriptorsAnyWay() throws {
        let rig = try BlockRig(sectors: 64)
        let data = blockPattern(2048, seed: 3)
        // Pieces that do not line up with sectors.
        #expect(try rig.write(sector: 10, data, split: [100, 412, 1, 1023, 512]).status == BlockStatus.ok)
        #expect(Array(try rig.image.bytes()[5120 ..< 7168]) == data)
        let read = try rig.read(sector: 10, sectors: 4, split: [7, 505, 1024, 512])
        #expect(read.status == BlockStatus.ok && read.data == data)

        // A header split across two descriptors, and the status sharing a descriptor with data.
        let header = blockHeader(BlockRequestType.read, sector: 10)
        let shared = try rig.submit(readable: [Array(header[..<5]), Array(header[5...])], writable: [2048 + 1])
        #expect(shared.status == BlockStatus.ok && shared.data == data)
        #expect(shared.used.length == 2049)
    }

    @Test func indirectTables() throws {
        let rig = try BlockRig(sectors: 64)
        let data = blockPattern(8 * 512, seed: 11)
        #expect(try rig.write(sector: 20, data, split: [512, 1536, 2048], indirect: true).status == BlockStatus.ok)
        #expect(Array(try rig.image.bytes()[20 * 512 ..< 28 * 512]) == data)
        let read = try rig.read(sector: 20, sectors: 8, split: [1024, 3072], indirect: true)
        #expect(read.status == BlockStatus.ok && read.data == data)
    }

    @Test func manySegmentsTakeSeveralSystemCalls() throws {
        // More buffers than one preadv/pwritev takes (64): 200 in a direct chain, 600 indirect.
        let rig = try BlockRig(sectors: 1024)
        let direct = blockPattern(200 * 512, seed: 21)
        #expect(try rig.write(sector: 100, direct, split: Array(repeating: 512, count: 200)).status == BlockStatus.ok)
        let back = try rig.read(sector: 100, sectors: 200, split: Array(repeating: 512, count: 200))
        #expect(back.status == BlockStatus.ok && back.data == direct)

        let indirect = blockPattern(600 * 256, seed: 22)
        #expect(try rig.write(sector: 400, indirect, split: Array(repeating: 256, count: 600), indirect: true).status
            == BlockStatus.ok)
        #expect(Array(try rig.image.bytes()[400 * 512 ..< 400 * 512 + indirect.count]) == indirect)
        let again = try rig.read(sector: 400, sectors: 300, split: Array(repeating: 256, count: 600), indirect: true)
        #expect(again.status == BlockStatus.ok && again.data == indirect)
    }

    @Test func theLastSectorIsInsideAndTheNextIsNot() throws {
        let rig = try BlockRig(sectors: 16)
        let last = blockPattern(512, seed: 5)
        #expect(try rig.write(sector: 15, last).status == BlockStatus.ok)
        #expect(try rig.read(sector: 15, sectors: 1).data == last)
        #expect(try rig.read(sector: 16, sectors: 1).status == BlockStatus.ioError)
        #expect(try rig.read(sector: 15, sectors: 2).status == BlockStatus.ioError)
        #expect(try rig.write(sector: 16, last).status == BlockStatus.ioError)
        #expect(rig.errors(.outOfRange) == 3)
        // A zero-length read at the very end is inside (nothing to do).
        let empty = try rig.submit(readable: [blockHeader(BlockRequestType.read, sector: 16)], writable: [1])
        #expect(empty.status == BlockStatus.ok && empty.used.length == 1)
    }

    // MARK: - Flush

    @Test func flushSyncsBeforeAnsweringOK() throws {
        let rig = try BlockRig(sectors: 16)
        #expect(try rig.write(sector: 1, blockPattern(512, seed: 2)).status == BlockStatus.ok)
        #expect(rig.device.statistics.syncs == 0) // FLUSH negotiated: writes are cached
        let flushed = try rig.flush()
        #expect(flushed.status == BlockStatus.ok && flushed.used.length == 1)
        let stats = rig.device.statistics
        #expect(stats.flushes == 1 && stats.syncs == 1)
    }

    @Test func withoutFlushNegotiatedEveryWriteIsSynced() throws {
        let everything = BlockFeature.segMax | BlockFeature.blockSize | BlockFeature.discard
            | BlockFeature.writeZeroes | VirtioFeature.version1
        let rig = try BlockRig(sectors: 16, features: everything)
        #expect(try rig.write(sector: 2, blockPattern(1024, seed: 4)).status == BlockStatus.ok)
        #expect(try rig.write(sector: 8, blockPattern(512, seed: 5)).status == BlockStatus.ok)
        #expect(try rig.writeZeroes([blockSegment(sector: 9, sectors: 1)]).status == BlockStatus.ok)
        #expect(try rig.discard([blockSegment(sector: 10, sectors: 1)]).status == BlockStatus.ok)
        // Both writes and the zeroing were synced; a discard promises nothing to sync.
        #expect(rig.device.statistics.syncs == 3)
    }

    // MARK: - GET_ID

    @Test func getIDPadsAShortSerialWithNULs() throws {
        let rig = try BlockRig(sectors: 8, serial: "lguest-disk-0")
        let reply = try rig.getID()
        #expect(reply.status == BlockStatus.ok)
        #expect(reply.used.length == 21)
        #expect(reply.data == Array("lguest-disk-0".utf8) + [UInt8](repeating: 0, count: 7))
        #expect(rig.device.statistics.getIDs == 1)
    }

    @Test func getIDWithExactlyTwentyBytesHasNoNUL() throws {
        let serial = "ABCDEFGHIJ0123456789"
        let rig = try BlockRig(sectors: 8, serial: serial)
        let reply = try rig.getID()
        #expect(reply.status == BlockStatus.ok && reply.data == Array(serial.utf8))
        // A smaller buffer gets what fits; a larger one gets 20 bytes and no more.
        let short = try rig.getID(room: 4)
        #expect(short.data == Array("ABCD".utf8) && short.used.length == 5)
        let long = try rig.getID(room: 64)
        #expect(Array(long.data[..<20]) == Array(serial.utf8) && long.used.length == 21)
    }

    @Test func getIDWithoutASerialIsEmpty() throws {
        let rig = try BlockRig(sectors: 8)
        let reply = try rig.getID()
        #expect(reply.status == BlockStatus.ok && reply.data == [UInt8](repeating: 0, count: 20))
    }

    @Test func aSerialLongerThanTwentyBytesIsRefused() throws {
        let image = try BlockScratchImage(size: 512)
        let serial = "this-serial-is-too-long"
        #expect(throws: BlockError.serialTooLong(serial)) {
            try BlockDevice(BlockConfiguration(path: image.path, serial: serial))
        }
        #expect(BlockError.serialTooLong(serial).description == "disk serial \"\(serial)\" is longer than 20 bytes")
    }

    // MARK: - Discard and write zeroes

    @Test func discardAndWriteZeroesLeaveZerosAndKeepTheSize() throws {
        let rig = try BlockRig(sectors: 64)
        let size = try rig.image.size()
        let before = try rig.image.bytes()

        // Discard sectors 8..<16 and 32..<40 in one request (two segments).
        let discarded = try rig.discard([blockSegment(sector: 8, sectors: 8), blockSegment(sector: 32, sectors: 8)])
        #expect(discarded.status == BlockStatus.ok && discarded.used.length == 1)
        // Write zeroes to 0..<4 (keep the blocks) and 20..<24 (may unmap).
        #expect(try rig.writeZeroes([blockSegment(sector: 0, sectors: 4)]).status == BlockStatus.ok)
        #expect(try rig.writeZeroes([blockSegment(sector: 20, sectors: 4, flags: 1)]).status == BlockStatus.ok)

        let after = try rig.image.bytes()
        #expect(try rig.image.size() == size)
        let zero = [UInt8](repeating: 0, count: 4096)
        #expect(Array(after[8 * 512 ..< 16 * 512]) == zero)   // ext4/xfs/tmpfs all punch holes
        #expect(Array(after[32 * 512 ..< 40 * 512]) == zero)
        #expect(Array(after[0 ..< 2048]) == Array(zero[..<2048]))
        #expect(Array(after[20 * 512 ..< 24 * 512]) == Array(zero[..<2048]))
        // Everything else is untouched.
        for range in [2048 ..< 4096, 16 * 512 ..< 20 * 512, 24 * 512 ..< 32 * 512, 40 * 512 ..< 64 * 512] {
            #expect(after[range] == before[range])
        }
        // And the guest reads zeros back.
        #expect(try rig.read(sector: 20, sectors: 4).data == Array(zero[..<2048]))
        let stats = rig.device.statistics
        #expect(stats.discards == 1 && stats.writeZeroes == 2 && stats.totalErrors == 0)
    }

    @Test func writeZeroesFallsBackToWritingZerosWhereZeroRangeIsMissing() throws {
        // tmpfs can punch holes but has no FALLOC_FL_ZERO_RANGE: the device writes zeros.
        guard FileManager.default.fileExists(atPath: "/dev/shm") else { return }
        let image = try BlockScratchImage(size: 64 * 512, parent: "/dev/shm") { _ in 0xA5 }
        let rig = try BlockRig(image: image)
        #expect(try rig.writeZeroes([blockSegment(sector: 3, sectors: 5)]).status == BlockStatus.ok)
        #expect(try rig.writeZeroes([blockSegment(sector: 30, sectors: 2)]).status == BlockStatus.ok)
        let bytes = try image.bytes()
        #expect(bytes.count == 64 * 512)
        #expect(Array(bytes[1536 ..< 4096]) == [UInt8](repeating: 0, count: 2560))
        #expect(Array(bytes[30 * 512 ..< 32 * 512]) == [UInt8](repeating: 0, count: 1024))
        #expect(bytes[..<1536].allSatisfy { $0 == 0xA5 } && bytes[4096 ..< 30 * 512].allSatisfy { $0 == 0xA5 })
        #expect(bytes[(32 * 512)...].allSatisfy { $0 == 0xA5 })
        // It really was the fallback, and the device remembers not to ask again.
        #expect(rig.device.serving.withLock { $0.zeroRangeUnsupported })
    }

    @Test func aLargeWriteZeroesThroughTheFallback() throws {
        // 1 MiB + 512 bytes of zeros by hand: more than one 1 MiB pwritev.
        guard FileManager.default.fileExists(atPath: "/dev/shm") else { return }
        let image = try BlockScratchImage(size: 3000 * 512, parent: "/dev/shm") { _ in 0x5A }
        let rig = try BlockRig(image: image)
        #expect(try rig.writeZeroes([blockSegment(sector: 1, sectors: 2049)]).status == BlockStatus.ok)
        let bytes = try image.bytes()
        #expect(bytes[512 ..< 2050 * 512].allSatisfy { $0 == 0 })
        #expect(bytes[..<512].allSatisfy { $0 == 0x5A } && bytes[(2050 * 512)...].allSatisfy { $0 == 0x5A })
    }

    // MARK: - Read-only disks

    @Test func aReadOnlyDiskRefusesEveryWriteAndLeavesTheFileAlone() throws {
        let rig = try BlockRig(sectors: 32, readOnly: true)
        let before = try rig.image.bytes()

        let offered = rig.transport.deviceFeatures
        #expect(offered & BlockFeature.readOnly != 0)
        #expect(offered & BlockFeature.flush != 0)
        #expect(offered & (BlockFeature.discard | BlockFeature.writeZeroes) == 0)
        #expect(rig.config(BlockConfigOffset.maxDiscardSectors, as: UInt32.self) == 0)
        #expect(rig.config(BlockConfigOffset.writeZeroesMayUnmap, as: UInt8.self) == 0)

        #expect(try rig.write(sector: 0, blockPattern(512, seed: 9)).status == BlockStatus.ioError)
        #expect(try rig.discard([blockSegment(sector: 0, sectors: 8)]).status == BlockStatus.ioError)
        #expect(try rig.writeZeroes([blockSegment(sector: 0, sectors: 8)]).status == BlockStatus.ioError)
        // A write that is also out of range still counts as a refused write, not a range error.
        #expect(try rig.write(sector: 1000, blockPattern(512, seed: 9)).status == BlockStatus.ioError)
        #expect(rig.errors(.readOnly) == 4)
        #expect(try rig.image.bytes() == before)

        // Flush has nothing to do and succeeds; reads work.
        #expect(try rig.flush().status == BlockStatus.ok)
        #expect(rig.device.statistics.syncs == 0)
        let read = try rig.read(sector: 2, sectors: 2)
        #expect(read.status == BlockStatus.ok && read.data == Array(before[1024 ..< 2048]))
    }

    // MARK: - Unknown requests

    @Test func unknownTypesAreUnsupported() throws {
        let rig = try BlockRig(sectors: 8)
        for type: UInt32 in [2, 3, 5, BlockRequestType.getLifetime, BlockRequestType.secureErase, 99, .max] {
            let reply = try rig.submit(readable: [blockHeader(type)], writable: [1])
            #expect(reply.status == BlockStatus.unsupported, "type \(type)")
            #expect(reply.used.length == 1)
        }
        #expect(rig.errors(.unsupported) == 7)
        #expect(try rig.read(sector: 0, sectors: 1).status == BlockStatus.ok)
    }

    @Test func discardAndWriteZeroesNeedTheirFeatures() throws {
        let rig = try BlockRig(sectors: 16, features: BlockFeature.flush | VirtioFeature.version1)
        #expect(try rig.discard([blockSegment(sector: 0, sectors: 1)]).status == BlockStatus.unsupported)
        #expect(try rig.writeZeroes([blockSegment(sector: 0, sectors: 1)]).status == BlockStatus.unsupported)
    }

    // MARK: - Device lifecycle

    @Test func resetAndReinitialize() throws {
        let rig = try BlockRig(sectors: 16)
        #expect(try rig.write(sector: 4, blockPattern(512, seed: 8)).status == BlockStatus.ok)
        rig.driver.reset()
        #expect(rig.device.negotiatedFeatures == 0)
        #expect(rig.device.queueStatistics == nil)
        let fresh = try MockDriverQueue(memory: rig.memory, size: 256, base: 0x10000, dataAreaSize: 0x10_0000)
        try rig.driver.initialize(queues: [fresh])
        fresh.resetDataArea()
        let chain = try fresh.addChain(readable: [blockHeader(BlockRequestType.read, sector: 4)], writable: [512, 1])
        rig.driver.kick(0)
        #expect(try fresh.drainUsed() == [UsedElement(id: UInt32(chain.head), length: 513)])
        #expect(try fresh.read(chain.writable[0]) == blockPattern(512, seed: 8))
    }

    @Test func concurrentKicksCompleteEveryRequestOnce() async throws {
        let rig = try BlockRig(sectors: 256)
        let transport = rig.transport
        var completed = 0
        var sent = 0
        let total = 600
        while completed < total {
            rig.queue.resetDataArea()
            while sent < total, rig.queue.freeDescriptorCount >= 3, sent - completed < 60 {
                let sector = UInt64(sent % 256)
                if sent % 2 == 0 {
                    try rig.queue.addChain(readable: [blockHeader(BlockRequestType.write, sector: sector),
                                                      blockPattern(512, seed: sent)], writable: [1])
                } else {
                    try rig.queue.addChain(readable: [blockHeader(BlockRequestType.read, sector: sector)],
                                           writable: [512, 1])
                }
                sent += 1
            }
            await withTaskGroup(of: Void.self) { group in
                for _ in 0 ..< 2 { group.addTask { transport.handleNotification(queue: 0) } }
            }
            for element in try rig.queue.drainUsed() {
                #expect(element.length == 1 || element.length == 513)
                completed += 1
            }
        }
        let stats = rig.device.statistics
        #expect(stats.requests == UInt64(total) && stats.totalErrors == 0)
    }
}

/// Firecracker's `PATCH /drives` on a running VM: the device goes on with another image.
@Suite struct BlockReplaceImageTests {
    @Test func theGuestReadsTheNewImageAndHearsItsCapacity() throws {
        let rig = try BlockRig(sectors: 16)
        let replacement = try BlockScratchImage(size: 40 * 512) { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        #expect(rig.config(BlockConfigOffset.capacity, as: UInt64.self) == 16)
        let generation = rig.driver.read(.configGeneration)
        try rig.device.replaceImage(path: replacement.path)
        #expect(rig.config(BlockConfigOffset.capacity, as: UInt64.self) == 40)
        #expect(rig.driver.read(.configGeneration) != generation, "the config generation did not move")
        #expect(rig.driver.read(.interruptStatus) & 2 != 0, "no configuration-change interrupt")
        let reply = try rig.read(sector: 30, sectors: 2)
        #expect(reply.status == BlockStatus.ok)
        #expect(reply.data == Array(try replacement.bytes()[(30 * 512)..<(32 * 512)]))
        #expect(try rig.write(sector: 39, blockPattern(512, seed: 9)).status == BlockStatus.ok)
        #expect(Array(try replacement.bytes()[(39 * 512)...]) == blockPattern(512, seed: 9))
    }

    @Test func aMissingImageIsRefusedAndTheOldOneKeepsServing() throws {
        let rig = try BlockRig(sectors: 16)
        #expect(throws: BlockError.self) { try rig.device.replaceImage(path: "/no/such/image") }
        #expect(rig.config(BlockConfigOffset.capacity, as: UInt64.self) == 16)
        #expect(try rig.read(sector: 0, sectors: 1).status == BlockStatus.ok)
    }
}
