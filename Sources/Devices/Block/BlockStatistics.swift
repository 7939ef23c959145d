/// The ways a block request can fail, one counter each.
public enum BlockRequestErrorKind: String, Sendable, Hashable, CaseIterable {
    /// No 16-byte header, or no device-writable byte for the status: there is nowhere to put an
    /// answer, so the chain goes back with a used length of 0.
    case malformedRequest
    /// The data is not a whole number of 512-byte sectors.
    case badLength
    /// The request reaches past the last sector (or its sector arithmetic would overflow).
    case outOfRange
    /// Buffers going the wrong way: device-writable data in a write (or a discard), or
    /// device-readable data in a read.
    case wrongDirection
    /// A write, discard or write-zeroes request to a read-only disk.
    case readOnly
    /// A discard/write-zeroes payload that is empty, not a whole number of 16-byte segments,
    /// has more segments than the device allows, or a segment larger than it allows.
    case badSegments
    /// A request type, or a discard/write-zeroes flag, this device does not implement
    /// (status UNSUPP rather than IOERR).
    case unsupported
    /// The host said no: EIO, ENOSPC, a failed flush, an image that shrank under us.
    case hostIO
}

/// What a block device has done since it was created. Read it in tests, metrics and logs.
public struct BlockStatistics: Sendable, Equatable {
    /// Every request the device took off its queue, malformed ones included.
    public var requests: UInt64 = 0
    /// Requests by type (whatever their outcome).
    public var reads: UInt64 = 0
    public var writes: UInt64 = 0
    public var flushes: UInt64 = 0
    public var getIDs: UInt64 = 0
    public var discards: UInt64 = 0
    public var writeZeroes: UInt64 = 0
    /// Bytes copied from the image into the guest.
    public var bytesRead: UInt64 = 0
    /// Bytes copied from the guest into the image.
    public var bytesWritten: UInt64 = 0
    /// Syncs asked for: FLUSH requests on a writable disk, and every write when the driver did
    /// not take FLUSH (after one `fdatasync` failed, later ones fail without a system call).
    public var syncs: UInt64 = 0
    /// Times the rate limiter held a request back until its timer.
    public var throttled: UInt64 = 0
    /// Failed requests by kind.
    public var errors: [BlockRequestErrorKind: UInt64] = [:]
    /// The `errno` of the most recent host I/O error, for the log line that says why.
    public var lastHostErrno: Int32?

    public init() {}

    public subscript(kind: BlockRequestErrorKind) -> UInt64 { errors[kind, default: 0] }

    /// All failed requests.
    public var totalErrors: UInt64 { errors.values.reduce(0, +) }
}
