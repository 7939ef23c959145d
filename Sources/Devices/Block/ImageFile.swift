import CKVM
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// `fallocate(2)` modes (linux/falloc.h). The numbers are kernel ABI and never change.
enum FallocateMode {
    /// Do not change the file size, even if the range reaches past the end.
    static let keepSize: Int32 = 0x01
    /// Deallocate the range; it reads back as zeros. Must be combined with `keepSize`.
    static let punchHole: Int32 = 0x02
    /// Zero the range, keeping (or allocating) its blocks.
    static let zeroRange: Int32 = 0x10
}

/// An open raw disk image — a regular file or a block device (an LVM volume, a partition, a
/// loop or nbd device) — and the handful of calls the block device makes on it.
///
/// Positioned I/O only (`preadv`/`pwritev`), so requests need no shared file offset and the
/// descriptor could be used from several threads. The descriptor is closed when the last
/// reference goes away.
final class ImageFile: Sendable {
    let fd: Int32
    let path: String
    let readOnly: Bool
    /// The image's size in bytes when it was opened: the file's length, or the device's size.
    let size: UInt64
    /// A block device rather than a regular file: discards go to the device (`BLKDISCARD`).
    let isBlockDevice: Bool

    private init(fd: Int32, path: String, readOnly: Bool, size: UInt64, isBlockDevice: Bool) {
        self.fd = fd
        self.path = path
        self.readOnly = readOnly
        self.size = size
        self.isBlockDevice = isBlockDevice
    }

    deinit { close(fd) }

    /// Opens `path` (O_RDWR, or O_RDONLY for a read-only disk) and makes sure no one else
    /// writes it while we serve it.
    ///
    /// A regular file gets an advisory lock: exclusive for a writable disk, shared for a
    /// read-only one, so two VMs cannot both write one image (and none can write an image
    /// another only reads). A block device is opened with O_EXCL, which the kernel enforces:
    /// it fails with EBUSY while the device is mounted or opened exclusively elsewhere (by
    /// another lguest, by LVM or device-mapper holding it). A read-only block device given as
    /// writable is refused: the guest would otherwise find out at its first write.
    static func open(path: String, readOnly: Bool) throws(BlockError) -> ImageFile {
        var named = stat()
        if case let .failure(error) = retryingEINTR({ Int(stat(path, &named)) }) {
            throw .opening(path, errno: error.code)
        }
        let isBlockDevice = named.st_mode & S_IFMT == S_IFBLK
        // O_NONBLOCK: a FIFO named by mistake must not hang us in open() waiting for a writer.
        // It means nothing for a regular file. O_NOCTTY: nor may a terminal become ours.
        var flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
        if isBlockDevice { flags |= O_EXCL }
        let opened = retryingEINTR { Int(Glibc.open(path, flags)) }
        let fd: Int32
        switch opened {
        case let .success(value): fd = Int32(value)
        case let .failure(error) where isBlockDevice && error.code == EBUSY:
            throw .deviceBusy(path: path)
        case let .failure(error) where isBlockDevice && !readOnly && (error.code == EROFS || error.code == EACCES)
            && deviceIsReadOnly(path):
            throw .readOnlyDevice(path: path)
        case let .failure(error): throw .opening(path, errno: error.code)
        }
        // Until `file` exists below, every way out closes the descriptor itself.
        var info = stat()
        if case let .failure(error) = retryingEINTR({ Int(fstat(fd, &info)) }) {
            close(fd)
            throw .opening(path, errno: error.code)
        }
        let size: UInt64
        switch info.st_mode & S_IFMT {
        case S_IFREG: size = UInt64(max(info.st_size, 0))
        case S_IFBLK:
            var bytes: UInt64 = 0
            if let code = ioctlError(lg_ioctl_pointer(fd, LG_BLKGETSIZE64, &bytes)) {
                close(fd)
                throw .system(path: path, errno: code)
            }
            if !readOnly, isReadOnly(fd) { close(fd); throw .readOnlyDevice(path: path) }
            size = bytes
        case S_IFDIR: close(fd); throw .isDirectory(path: path)
        default: close(fd); throw .notRegularFile(path: path)
        }
        // From here on `file` owns the descriptor; its deinit closes it if we throw.
        let file = ImageFile(fd: fd, path: path, readOnly: readOnly, size: size,
                             isBlockDevice: info.st_mode & S_IFMT == S_IFBLK)
        guard !file.isBlockDevice else { return file }

        let lock = readOnly ? LOCK_SH : LOCK_EX
        if case let .failure(error) = retryingEINTR({ Int(flock(fd, lock | LOCK_NB)) }) {
            // EWOULDBLOCK is someone else's lock. Anything else (ENOLCK on some network
            // filesystems) means locks are not available there; go on without one.
            if error.code == EWOULDBLOCK { throw .inUse(path: path) }
        }
        return file
    }

    /// `errno` from a CKVM wrapper's `-errno` result, or nil when it succeeded.
    private static func ioctlError(_ result: CInt) -> Int32? { result < 0 ? -result : nil }

    /// `BLKROGET`: whether the block device open at `fd` is read-only.
    private static func isReadOnly(_ fd: Int32) -> Bool {
        var flag: CInt = 0
        return lg_ioctl_pointer(fd, LG_BLKROGET, &flag) == 0 && flag != 0
    }

    /// Whether the block device at `path`, opened read-only for a moment, says it is read-only.
    private static func deviceIsReadOnly(_ path: String) -> Bool {
        guard case let .success(fd) = retryingEINTR({ Int(Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) })
        else { return false }
        defer { close(Int32(fd)) }
        return isReadOnly(Int32(fd))
    }

    /// `BLKDISCARD` on `[offset, offset + length)` of a block device: the device may forget
    /// those blocks (an SSD trims them, a thin LVM volume or a loop device's file frees them).
    func discardBlocks(offset: UInt64, length: UInt64) -> Result<Void, SystemError> {
        var range: (UInt64, UInt64) = (offset, length)
        let result = lg_ioctl_pointer(fd, LG_BLKDISCARD, &range)
        return result < 0 ? .failure(SystemError(code: -result)) : .success(())
    }

    /// Reads into the buffers of `iovecs` from byte `offset`. Returns the bytes read (0 at EOF).
    func preadv(_ iovecs: UnsafeBufferPointer<iovec>, at offset: UInt64) -> Result<Int, SystemError> {
        // Safe: the caller lends `iovecs`, and the buffers they describe, for the whole call.
        retryingEINTR { Glibc.preadv(fd, iovecs.baseAddress, Int32(iovecs.count), off_t(offset)) }
    }

    /// Writes the buffers of `iovecs` at byte `offset`. Returns the bytes written.
    func pwritev(_ iovecs: UnsafeBufferPointer<iovec>, at offset: UInt64) -> Result<Int, SystemError> {
        // Safe: the caller lends `iovecs`, and the buffers they describe, for the whole call.
        retryingEINTR { Glibc.pwritev(fd, iovecs.baseAddress, Int32(iovecs.count), off_t(offset)) }
    }

    /// Pushes the file's dirty data, and the metadata needed to read it back, to stable storage.
    func fdatasync() -> Result<Void, SystemError> {
        retryingEINTR { Int(Glibc.fdatasync(fd)) }.map { _ in () }
    }

    /// `fallocate(2)` on `[offset, offset + length)`.
    func fallocate(mode: Int32, offset: UInt64, length: UInt64) -> Result<Void, SystemError> {
        retryingEINTR { () -> Int in
            let result = lg_fallocate(fd, mode, Int64(offset), Int64(length))
            if result < 0 { errno = -result; return -1 }
            return Int(result)
        }.map { _ in () }
    }
}
