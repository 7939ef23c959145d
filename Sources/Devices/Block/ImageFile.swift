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

/// An open raw disk image: the descriptor, and the handful of calls the block device makes on it.
///
/// Positioned I/O only (`preadv`/`pwritev`), so requests need no shared file offset and the
/// descriptor could be used from several threads. The descriptor is closed when the last
/// reference goes away.
final class ImageFile: Sendable {
    let fd: Int32
    let path: String
    let readOnly: Bool
    /// The file's size in bytes when it was opened.
    let size: UInt64

    private init(fd: Int32, path: String, readOnly: Bool, size: UInt64) {
        self.fd = fd
        self.path = path
        self.readOnly = readOnly
        self.size = size
    }

    deinit { close(fd) }

    /// Opens `path` (O_RDWR, or O_RDONLY for a read-only disk), checks it is a regular file and
    /// takes an advisory lock on it: exclusive for a writable disk, shared for a read-only one,
    /// so two VMs cannot both write one image (and none can write an image another only reads).
    static func open(path: String, readOnly: Bool) throws(BlockError) -> ImageFile {
        // O_NONBLOCK: a FIFO named by mistake must not hang us in open() waiting for a writer.
        // It means nothing for a regular file. O_NOCTTY: nor may a terminal become ours.
        let flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
        let opened = retryingEINTR { Int(Glibc.open(path, flags)) }
        let fd: Int32
        switch opened {
        case let .success(value): fd = Int32(value)
        case let .failure(error): throw .opening(path, errno: error.code)
        }
        // Until `file` exists below, every way out closes the descriptor itself.
        var info = stat()
        if case let .failure(error) = retryingEINTR({ Int(fstat(fd, &info)) }) {
            close(fd)
            throw .opening(path, errno: error.code)
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: close(fd); throw .isDirectory(path: path)
        default: close(fd); throw .notRegularFile(path: path)
        }
        // From here on `file` owns the descriptor; its deinit closes it if we throw.
        let file = ImageFile(fd: fd, path: path, readOnly: readOnly, size: UInt64(max(info.st_size, 0)))

        let lock = readOnly ? LOCK_SH : LOCK_EX
        if case let .failure(error) = retryingEINTR({ Int(flock(fd, lock | LOCK_NB)) }) {
            // EWOULDBLOCK is someone else's lock. Anything else (ENOLCK on some network
            // filesystems) means locks are not available there; go on without one.
            if error.code == EWOULDBLOCK { throw .inUse(path: path) }
        }
        return file
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
