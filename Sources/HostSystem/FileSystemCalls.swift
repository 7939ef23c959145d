import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// The file-system calls a shared directory is served with, each wrapped once: errno captured
/// straight after the call, EINTR retried, failures as `SystemError`.
///
/// Every call that takes a path takes it relative to a directory descriptor, never to the
/// working directory: a negative `directory` (AT_FDCWD among them) is refused with EBADF
/// before the kernel sees it. The thread that makes these calls runs under a filter that
/// kills the process for any of them made with AT_FDCWD.
public enum FileSystemCalls {
    @inline(__always)
    static func result(_ value: Int) throws(SystemError) -> Int {
        if value >= 0 { return value }
        throw SystemError(code: errno)
    }

    /// Runs `call` (which returns -1 and sets errno on failure) until it stops failing with EINTR.
    @inline(__always)
    static func retrying(_ call: () -> Int) throws(SystemError) -> Int {
        switch retryingEINTR(call) {
        case let .success(value): return value
        case let .failure(error): throw error
        }
    }

    @inline(__always)
    static func relative(_ directory: CInt) throws(SystemError) {
        guard directory >= 0 else { throw SystemError(code: EBADF) }
    }

    /// `openat2(directory, name, flags, mode)` with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS:
    /// the kernel refuses to resolve anything outside `directory` (`..` past it, an absolute
    /// path or symbolic link, a /proc magic link).
    public static func openBeneath(_ directory: CInt, _ name: UnsafePointer<CChar>, flags: Int32, mode: UInt32 = 0) throws(SystemError) -> CInt {
        try relative(directory)
        let fd = lg_openat2(directory, name, UInt64(UInt32(bitPattern: flags | O_CLOEXEC)), UInt64(mode),
                            LG_RESOLVE_BENEATH | LG_RESOLVE_NO_MAGICLINKS)
        if fd < 0 { throw SystemError(code: -fd) }
        return fd
    }

    /// `openat(directory, name, flags)`, for names lguest made itself: `.` and `..` of a
    /// directory, a descriptor's number under /proc/self/fd.
    public static func openAt(_ directory: CInt, _ name: UnsafePointer<CChar>, flags: Int32) throws(SystemError) -> CInt {
        try relative(directory)
        return CInt(try retrying { Int(Glibc.openat(directory, name, flags | O_CLOEXEC)) })
    }

    /// `fstatat(fd, "", LG_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`: what `fd` itself is, an
    /// O_PATH descriptor included.
    public static func status(_ fd: CInt) throws(SystemError) -> stat {
        try relative(fd)
        var buffer = stat()
        _ = try result(Int(fstatat(fd, "", &buffer, LG_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)))
        return buffer
    }

    /// `fstatfs(fd)` (allowed on O_PATH descriptors).
    public static func fileSystemStatus(_ fd: CInt) throws(SystemError) -> statfs {
        var buffer = statfs()
        _ = try result(Int(fstatfs(fd, &buffer)))
        return buffer
    }

    public static func makeDirectory(_ directory: CInt, _ name: UnsafePointer<CChar>, mode: UInt32) throws(SystemError) {
        try relative(directory)
        _ = try result(Int(mkdirat(directory, name, mode_t(mode))))
    }

    /// `mknodat` with a device number of 0: regular files and FIFOs are all it is used for.
    public static func makeNode(_ directory: CInt, _ name: UnsafePointer<CChar>, mode: UInt32) throws(SystemError) {
        try relative(directory)
        _ = try result(Int(mknodat(directory, name, mode_t(mode), 0)))
    }

    public static func makeSymbolicLink(target: UnsafePointer<CChar>, _ directory: CInt, _ name: UnsafePointer<CChar>) throws(SystemError) {
        try relative(directory)
        _ = try result(Int(symlinkat(target, directory, name)))
    }

    /// The target of the symbolic link `fd` (an O_PATH descriptor of the link itself).
    public static func readSymbolicLink(_ fd: CInt) throws(SystemError) -> [UInt8] {
        try relative(fd)
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX))
        let count = buffer.withUnsafeMutableBytes { bytes in
            readlinkat(fd, "", bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        return Array(buffer.prefix(try result(count)))
    }

    public static func link(_ oldDirectory: CInt, _ oldName: UnsafePointer<CChar>, _ newDirectory: CInt, _ newName: UnsafePointer<CChar>,
                            flags: Int32) throws(SystemError) {
        try relative(oldDirectory)
        try relative(newDirectory)
        _ = try result(Int(linkat(oldDirectory, oldName, newDirectory, newName, flags)))
    }

    public static func unlink(_ directory: CInt, _ name: UnsafePointer<CChar>, flags: Int32) throws(SystemError) {
        try relative(directory)
        _ = try result(Int(unlinkat(directory, name, flags)))
    }

    /// `renameat2`, with RENAME_NOREPLACE (1) and RENAME_EXCHANGE (2) as the kernel defines them.
    public static func rename(_ oldDirectory: CInt, _ oldName: UnsafePointer<CChar>, _ newDirectory: CInt, _ newName: UnsafePointer<CChar>,
                              flags: UInt32) throws(SystemError) {
        try relative(oldDirectory)
        try relative(newDirectory)
        let r = lg_renameat2(oldDirectory, oldName, newDirectory, newName, flags)
        if r < 0 { throw SystemError(code: -r) }
    }

    /// `fchownat(fd, "", uid, gid, LG_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`; -1 leaves an id alone.
    public static func changeOwner(_ fd: CInt, uid: UInt32, gid: UInt32) throws(SystemError) {
        try relative(fd)
        _ = try result(Int(fchownat(fd, "", uid, gid, LG_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)))
    }

    /// `fchmodat(directory, name, mode, 0)`.
    public static func changeMode(_ directory: CInt, _ name: UnsafePointer<CChar>, mode: UInt32) throws(SystemError) {
        try relative(directory)
        _ = try result(Int(fchmodat(directory, name, mode_t(mode), 0)))
    }

    /// `fchmod` on an open (not O_PATH) descriptor.
    public static func changeMode(_ fd: CInt, mode: UInt32) throws(SystemError) {
        _ = try result(Int(fchmod(fd, mode_t(mode))))
    }

    /// `utimensat(directory, name, times, flags)`.
    public static func setTimes(_ directory: CInt, _ name: UnsafePointer<CChar>, _ times: (timespec, timespec), flags: Int32) throws(SystemError) {
        try relative(directory)
        var pair = [times.0, times.1]
        _ = try result(Int(utimensat(directory, name, &pair, flags)))
    }

    /// `faccessat(fd, "", mask, LG_AT_EMPTY_PATH)` (faccessat2 underneath).
    public static func access(_ fd: CInt, mask: Int32) throws(SystemError) {
        try relative(fd)
        _ = try result(Int(faccessat(fd, "", mask, LG_AT_EMPTY_PATH)))
    }

    public static func sync(_ fd: CInt, dataOnly: Bool) throws(SystemError) {
        _ = try retrying { Int(dataOnly ? fdatasync(fd) : fsync(fd)) }
    }

    public static func truncate(_ fd: CInt, size: UInt64) throws(SystemError) {
        guard size <= UInt64(Int64.max) else { throw SystemError(code: EFBIG) }
        _ = try retrying { Int(ftruncate(fd, off_t(size))) }
    }

    public static func allocate(_ fd: CInt, mode: Int32, offset: UInt64, length: UInt64) throws(SystemError) {
        guard offset <= UInt64(Int64.max), length <= UInt64(Int64.max) else { throw SystemError(code: EINVAL) }
        let r = lg_fallocate(fd, mode, Int64(offset), Int64(length))
        if r < 0 { throw SystemError(code: -r) }
    }

    public static func seek(_ fd: CInt, offset: Int64, whence: Int32) throws(SystemError) -> Int64 {
        Int64(try result(Int(lseek(fd, off_t(offset), whence))))
    }

    /// `pread` into `buffer`; returns the bytes read (0 at end of file).
    public static func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(SystemError) -> Int {
        guard offset <= UInt64(Int64.max) else { throw SystemError(code: EINVAL) }
        return try retrying { pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// `pwrite` from `buffer`; returns the bytes written.
    public static func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(SystemError) -> Int {
        guard offset <= UInt64(Int64.max) else { throw SystemError(code: EINVAL) }
        return try retrying { pwrite(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// `getdents64` into `buffer`; returns the bytes filled (0 at the end of the directory).
    public static func readDirectory(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        let r = lg_getdents64(fd, buffer.baseAddress, buffer.count)
        if r < 0 { throw SystemError(code: Int32(-r)) }
        return r
    }

    public static func getExtendedAttribute(_ fd: CInt, _ name: UnsafePointer<CChar>, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        try retrying { fgetxattr(fd, name, buffer.baseAddress, buffer.count) }
    }

    public static func setExtendedAttribute(_ fd: CInt, _ name: UnsafePointer<CChar>, _ value: UnsafeRawBufferPointer, flags: Int32) throws(SystemError) {
        _ = try retrying { Int(fsetxattr(fd, name, value.baseAddress, value.count, flags)) }
    }

    public static func listExtendedAttributes(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        try retrying { flistxattr(fd, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count) }
    }

    public static func removeExtendedAttribute(_ fd: CInt, _ name: UnsafePointer<CChar>) throws(SystemError) {
        _ = try retrying { Int(fremovexattr(fd, name)) }
    }

    /// Closes `fd`, once; EINTR is not retried (the descriptor is gone either way).
    public static func close(_ fd: CInt) { _ = Glibc.close(fd) }
}
