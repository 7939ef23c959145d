#if canImport(Glibc)
import Glibc
#endif

/// What the user asked for: one raw disk image, how to open it, and what to call it.
public struct BlockConfiguration: Sendable, Hashable {
    /// The raw image file. Its size, rounded down to whole 512-byte sectors, is the disk's size.
    public var path: String
    /// Open the image O_RDONLY, offer VIRTIO_BLK_F_RO and refuse every write.
    public var readOnly: Bool
    /// What GET_ID answers (Linux shows it in /sys/block/vdX/serial and /dev/disk/by-id):
    /// at most 20 bytes. `nil` answers an empty ID.
    public var serial: String?
    /// Bandwidth and operations limits (none by default).
    public var rateLimit: RateLimit
    /// The longest the I/O thread keeps watching the queue after draining it, with the guest's
    /// kicks turned off, in microseconds (0: never). Adaptive below it: `BlockQueuePoll`.
    /// Not kept in snapshots: a restored disk polls as the default says.
    public var pollMicroseconds: UInt32
    /// Threads that serve a batch's reads beside the I/O thread, which serves its writes meanwhile (`BlockWorkers`);
    /// 0 serves every request on the I/O thread. Not kept in snapshots either.
    public var workers: Int

    /// What a disk polls unless told otherwise: Cloud Hypervisor's and QEMU's order of magnitude.
    public static let defaultPollMicroseconds: UInt32 = 64
    /// The largest `pollMicroseconds`: beyond a millisecond, spinning costs more than any exit.
    public static let maxPollMicroseconds: UInt32 = 1000

    public init(path: String, readOnly: Bool = false, serial: String? = nil, rateLimit: RateLimit = .unlimited,
                pollMicroseconds: UInt32 = BlockConfiguration.defaultPollMicroseconds,
                workers: Int = BlockWorkers.defaultCount) {
        self.path = path
        self.readOnly = readOnly
        self.serial = serial
        self.rateLimit = rateLimit
        self.pollMicroseconds = pollMicroseconds
        self.workers = workers
    }
}

/// Why a disk image could not be opened. Each case prints as one line that names the file and
/// says what to fix; the launcher prints it and exits with status 2, before any guest runs.
public enum BlockError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No file at `path` (ENOENT, or ENOTDIR for a path through a non-directory).
    case notFound(path: String)
    /// The host's permissions say no (EACCES, EPERM).
    case permissionDenied(path: String)
    /// `path` names a directory.
    case isDirectory(path: String)
    /// `path` names something other than a regular file or a block device (a character
    /// device, a FIFO, a socket).
    case notRegularFile(path: String)
    /// A writable disk on a read-only filesystem (EROFS).
    case readOnlyFileSystem(path: String)
    /// Another process (another VM, most likely) holds a conflicting lock on the image.
    case inUse(path: String)
    /// A block device that is mounted or opened exclusively elsewhere (EBUSY on O_EXCL).
    case deviceBusy(path: String)
    /// A block device that is read-only (`BLKROGET`), given as a writable disk.
    case readOnlyDevice(path: String)
    /// The serial number does not fit the 20 bytes GET_ID has room for.
    case serialTooLong(String)
    /// Anything else the host said while opening or inspecting the image.
    case system(path: String, errno: Int32)

    public var description: String {
        switch self {
        case let .notFound(path):
            return "disk image \(path) does not exist"
        case let .permissionDenied(path):
            return "cannot open disk image \(path): permission denied"
        case let .isDirectory(path):
            return "disk image \(path) is a directory"
        case let .notRegularFile(path):
            return "disk image \(path) is not a regular file or a block device"
        case let .readOnlyFileSystem(path):
            return "cannot open disk image \(path) for writing: read-only file system (open it read-only)"
        case let .inUse(path):
            return "disk image \(path) is in use by another process"
        case let .deviceBusy(path):
            return "block device \(path) is busy: mounted, or opened exclusively by another program"
        case let .readOnlyDevice(path):
            return "block device \(path) is read-only: give it as \(path),readonly"
        case let .serialTooLong(serial):
            return "disk serial \"\(serial)\" is longer than \(BlockDevice.idBytes) bytes"
        case let .system(path, errno):
            return "cannot open disk image \(path): \(String(cString: strerror(errno)))"
        }
    }

    /// The error for a failed `open(2)`/`fstat(2)` of `path`.
    static func opening(_ path: String, errno: Int32) -> BlockError {
        switch errno {
        case ENOENT, ENOTDIR: return .notFound(path: path)
        case EACCES, EPERM: return .permissionDenied(path: path)
        case EISDIR: return .isDirectory(path: path)
        case EROFS: return .readOnlyFileSystem(path: path)
        default: return .system(path: path, errno: errno)
        }
    }
}
