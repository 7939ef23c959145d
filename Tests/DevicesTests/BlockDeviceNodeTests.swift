import Foundation
import TestSupport
import Testing
@testable import Devices
#if canImport(Glibc)
import Glibc
#endif

/// A scratch image with a loop device over it.
final class LoopImage {
    let image: BlockScratchImage
    let device: LoopDevice
    var path: String { device.path }

    init(sectors: Int, readOnly: Bool = false) throws {
        image = try BlockScratchImage(size: sectors * 512) { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        device = try LoopDevice(file: image.path, readOnly: readOnly)
    }
}

/// A block device (here a loop device) served as a disk: its size from the device, flushes,
/// discards through BLKDISCARD, write-zeroes, and the refusals.
@Suite(.enabled(if: LoopDevice.available, "no loop devices here (needs root, losetup, /dev/loop-control)"))
struct BlockDeviceNodeTests {
    @Test("capacity comes from the device; writes and flushes reach the file under it")
    func servedLikeAnImage() throws {
        let loop = try LoopImage(sectors: 2048)
        let rig = try BlockRig(image: loop.image, path: loop.path)
        #expect(rig.device.capacity == 2048)
        #expect(rig.config(BlockConfigOffset.capacity, as: UInt64.self) == 2048)
        #expect(rig.device.blockDeviceDescriptor != nil)
        let original = try loop.image.bytes()
        let read = try rig.read(sector: 3, sectors: 2)
        #expect(read.status == BlockStatus.ok && read.data == Array(original[1536 ..< 2560]))

        let data = blockPattern(4096, seed: 9)
        #expect(try rig.write(sector: 100, data).status == BlockStatus.ok)
        #expect(try rig.flush().status == BlockStatus.ok)
        #expect(Array(try loop.image.bytes()[51200 ..< 55296]) == data)
    }

    @Test("discard and write-zeroes on the device leave zeros in the file under it")
    func discardAndWriteZeroes() throws {
        let loop = try LoopImage(sectors: 4096)
        let rig = try BlockRig(image: loop.image, path: loop.path)
        // Loop devices discard by punching a hole in their file, which then reads as zeros.
        #expect(try rig.discard([blockSegment(sector: 64, sectors: 64)]).status == BlockStatus.ok)
        #expect(try rig.writeZeroes([blockSegment(sector: 1024, sectors: 16)]).status == BlockStatus.ok)
        #expect(try rig.writeZeroes([blockSegment(sector: 2048, sectors: 16, flags: 1)]).status == BlockStatus.ok)
        #expect(try rig.flush().status == BlockStatus.ok)
        let bytes = try loop.image.bytes()
        #expect(bytes[32768 ..< 65536].allSatisfy { $0 == 0 }, "discarded sectors 64..<128")
        #expect(bytes[524_288 ..< 532_480].allSatisfy { $0 == 0 }, "zeroed sectors 1024..<1040")
        #expect(bytes[1_048_576 ..< 1_056_768].allSatisfy { $0 == 0 }, "zeroed (unmap) sectors 2048..<2064")
        #expect(bytes[32767] != 0 || bytes[65536] != 0, "the neighbours stay")
        let read = try rig.read(sector: 1024, sectors: 16)
        #expect(read.data.allSatisfy { $0 == 0 })
    }

    @Test("a read-only device is refused as writable and served as readonly")
    func readOnlyDevice() throws {
        let loop = try LoopImage(sectors: 64, readOnly: true)
        #expect(throws: BlockError.readOnlyDevice(path: loop.path)) {
            try BlockDevice(BlockConfiguration(path: loop.path))
        }
        let device = try BlockDevice(BlockConfiguration(path: loop.path, readOnly: true))
        #expect(device.capacity == 64 && device.isReadOnly)
        #expect(BlockError.readOnlyDevice(path: "/dev/loop9").description
            == "block device /dev/loop9 is read-only: give it as /dev/loop9,readonly")
    }

    @Test("a device opened exclusively elsewhere is refused: busy")
    func busyDevice() throws {
        let loop = try LoopImage(sectors: 64)
        let first = try BlockDevice(BlockConfiguration(path: loop.path))
        withExtendedLifetime(first) {
            #expect(throws: BlockError.deviceBusy(path: loop.path)) {
                try BlockDevice(BlockConfiguration(path: loop.path))
            }
            #expect(throws: BlockError.deviceBusy(path: loop.path)) {
                try BlockDevice(BlockConfiguration(path: loop.path, readOnly: true))
            }
        }
        #expect(BlockError.deviceBusy(path: "/dev/vg0/vm1").description
            == "block device /dev/vg0/vm1 is busy: mounted, or opened exclusively by another program")
    }
}
