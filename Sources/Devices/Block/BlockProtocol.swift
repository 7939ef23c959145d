// The numbers of virtio-blk (virtio 1.x "Block Device", Linux's uapi virtio_blk.h), named as
// there. Everything on the wire is little-endian.

/// Device-specific feature bits of a block device.
public enum BlockFeature {
    /// `size_max` is the largest single data segment.
    public static let sizeMax: UInt64 = 1 << 1
    /// `seg_max` is the most data segments in one request.
    public static let segMax: UInt64 = 1 << 2
    /// The disk is read-only: the guest marks it so and never tries to write.
    public static let readOnly: UInt64 = 1 << 5
    /// `blk_size` is the block size to use (performance only; sectors stay 512 bytes).
    public static let blockSize: UInt64 = 1 << 6
    /// The device has a writeback cache and understands FLUSH.
    public static let flush: UInt64 = 1 << 9
    /// DISCARD requests, limited by `max_discard_sectors`/`max_discard_seg`.
    public static let discard: UInt64 = 1 << 13
    /// WRITE_ZEROES requests, limited by `max_write_zeroes_sectors`/`max_write_zeroes_seg`.
    public static let writeZeroes: UInt64 = 1 << 14
}

/// `virtio_blk_outhdr.type`.
public enum BlockRequestType {
    public static let read: UInt32 = 0        // VIRTIO_BLK_T_IN
    public static let write: UInt32 = 1       // VIRTIO_BLK_T_OUT
    public static let flush: UInt32 = 4       // VIRTIO_BLK_T_FLUSH
    public static let getID: UInt32 = 8       // VIRTIO_BLK_T_GET_ID
    public static let getLifetime: UInt32 = 10 // VIRTIO_BLK_T_GET_LIFETIME (not supported)
    public static let discard: UInt32 = 11    // VIRTIO_BLK_T_DISCARD
    public static let writeZeroes: UInt32 = 13 // VIRTIO_BLK_T_WRITE_ZEROES
    public static let secureErase: UInt32 = 14 // VIRTIO_BLK_T_SECURE_ERASE (not supported)
}

/// The status byte at the very end of every request.
public enum BlockStatus {
    public static let ok: UInt8 = 0
    public static let ioError: UInt8 = 1
    public static let unsupported: UInt8 = 2
}

/// Byte offsets in `struct virtio_blk_config` (checked against the 6.1 uapi header).
public enum BlockConfigOffset {
    public static let capacity = 0             // le64, in 512-byte sectors
    public static let sizeMax = 8              // le32
    public static let segMax = 12              // le32
    public static let geometry = 16            // le16 cylinders, u8 heads, u8 sectors
    public static let blockSize = 20           // le32
    public static let topology = 24            // u8, u8, le16, le32
    public static let writeback = 32           // u8 (then one unused byte)
    public static let numQueues = 34           // le16
    public static let maxDiscardSectors = 36   // le32
    public static let maxDiscardSegments = 40  // le32
    public static let discardSectorAlignment = 44 // le32
    public static let maxWriteZeroesSectors = 48 // le32
    public static let maxWriteZeroesSegments = 52 // le32
    public static let writeZeroesMayUnmap = 56 // u8 (then three unused bytes)
    /// Everything up to and including `write_zeroes_may_unmap` and its padding; the secure-erase
    /// and zoned fields that follow belong to features we do not offer.
    public static let size = 60
}
