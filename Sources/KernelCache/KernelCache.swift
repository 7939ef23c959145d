import Boot
#if canImport(Glibc)
import Glibc
#endif

/// Uncompressed kernels, kept on disk so a bzImage is expanded once, not at every boot.
///
/// A bzImage is mostly a compressed kernel and the code to expand it, which the guest runs at
/// every boot, at guest speed, before its own clock starts. For a bzImage whose payload is LZ4
/// (Debian's cloud kernels) lguest expands the payload itself the first time, keeps the ELF
/// vmlinux that comes out in a cache entry named by the bzImage's content hash, and boots every
/// later time from the entry: its segments are mapped into guest memory privately
/// (`GuestMemory.mapPrivately`), so neither a copy nor the guest's decompression is paid again,
/// and every VM booted from one kernel shares its pages through the page cache.
///
/// An entry is never trusted for its name: it is used only if its header says it was made from
/// a bzImage of exactly this size and hash, by this format version, and its length is what the
/// header says. Anything else is rebuilt. Entries are written to a temporary file,
/// synced and renamed into place, so a crash never leaves half an entry under a real name.
public struct KernelCache: Sendable {
    /// The directory holding the entries.
    public let directory: String

    /// An entry's header occupies the first page; the vmlinux follows, page-aligned, so that
    /// its segments map straight from the file.
    static let dataOffset = 4096
    static let magic: [UInt8] = Array("LGKERNEL".utf8)
    static let version: UInt32 = 1
    /// The largest kernel we expand: far beyond any real one, and a bound on what a hostile
    /// image's trailer can make us allocate on disk.
    static let maximumExpandedSize = 1 << 30

    public init(directory: String) { self.directory = directory }

    /// `$XDG_CACHE_HOME/lguest/kernels`, else `$HOME/.cache/lguest/kernels`; nil with neither.
    public static func userDirectory(environment: [String: String]) -> String? {
        if let cache = environment["XDG_CACHE_HOME"], cache.hasPrefix("/") { return cache + "/lguest/kernels" }
        if let home = environment["HOME"], home.hasPrefix("/") { return home + "/.cache/lguest/kernels" }
        return nil
    }

    /// What happened when a kernel was asked for.
    public enum Outcome: Sendable, Equatable {
        /// An entry for this kernel was there and sound.
        case found(path: String)
        /// No sound entry was there; one was made.
        case built(path: String)
        /// The kernel's payload is not one we expand (not LZ4, or an ELF already).
        case notExpandable
        /// The cache could not be used (why); the bzImage boots as it is.
        case unavailable(String)
    }

    /// The uncompressed kernel for the bzImage `image`, from the cache or expanded now and kept.
    /// With the `identity` of the file it was read from, the entry is also linked under that
    /// identity, so that the next boot of the same file finds it without reading it (`lookup`).
    public func kernel(for image: UnsafeRawBufferPointer, identity: FileIdentity? = nil) -> (CachedKernel?, Outcome) {
        guard let header = try? SetupHeader(image: image), let payload = header.payload(in: image),
              LZ4Legacy.isLZ4(payload), let expanded = LZ4Legacy.expandedSize(payload),
              expanded > 64, expanded <= Self.maximumExpandedSize else { return (nil, .notExpandable) }
        let key = EntryKey(image: image)
        let path = directory + "/" + key.fileName
        if let kernel = CachedKernel.open(path: path, key: key) {
            if let identity { link(identity, to: key) }
            return (kernel, .found(path: path))
        }
        if let why = build(path: path, key: key, payload: payload, expandedSize: expanded) {
            return (nil, .unavailable(why))
        }
        guard let kernel = CachedKernel.open(path: path, key: key) else {
            return (nil, .unavailable("the entry just written to \(path) did not read back"))
        }
        if let identity { link(identity, to: key) }
        return (kernel, .built(path: path))
    }

    /// The entry of the kernel file whose identity this is, if a boot of that very file made or
    /// found one: no byte of the kernel is read. The file's identity changes with every write to
    /// it (its ctime), so a kernel rewritten in place is looked up by content again.
    public func lookup(_ identity: FileIdentity) -> (CachedKernel, path: String)? {
        let link = directory + "/by-file/" + identity.name
        var buffer = [CChar](repeating: 0, count: 256)
        let count = readlink(link, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        let target = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // Only an entry's own name, in the directory above the links.
        guard target.hasPrefix("../") else { return nil }
        let name = String(target.dropFirst(3))
        guard !name.contains("/"), name.hasSuffix("-\(identity.size).vmlinux"),
              let hash = UInt64(name.prefix(16), radix: 16) else { return nil }
        let key = EntryKey(size: identity.size, hash: hash)
        guard key.fileName == name, let kernel = CachedKernel.open(path: directory + "/" + name, key: key) else { return nil }
        return (kernel, directory + "/" + name)
    }

    /// Records that the file with `identity` is the kernel `key` names: a symbolic link, made
    /// under a temporary name and renamed into place. Best effort: without it the next boot
    /// reads and hashes the kernel again.
    private func link(_ identity: FileIdentity, to key: EntryKey) {
        let links = directory + "/by-file"
        guard Self.makeDirectories(links) == nil else { return }
        let temporary = "\(links)/.\(identity.name).\(getpid()).tmp"
        unlink(temporary)
        guard symlink("../" + key.fileName, temporary) == 0 else { return }
        if rename(temporary, links + "/" + identity.name) != 0 { unlink(temporary) }
    }

    /// Expands `payload` into a new entry at `path`; nil, or why not.
    private func build(path: String, key: EntryKey, payload: UnsafeRawBufferPointer, expandedSize: Int) -> String? {
        if let why = Self.makeDirectories(directory) { return why }
        let temporary = "\(directory)/.\(key.fileName).\(getpid()).tmp"
        let fd = open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return "cannot create \(temporary): \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        func fail(_ what: String, _ error: Int32 = errno) -> String {
            unlink(temporary)
            return "\(what) \(temporary): \(String(cString: strerror(error)))"
        }
        let total = Self.dataOffset + expandedSize
        guard ftruncate(fd, off_t(total)) == 0 else { return fail("cannot size") }
        guard let mapping = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), mapping != MAP_FAILED else {
            return fail("cannot map")
        }
        defer { munmap(mapping, total) }
        // Safe: the mapping is `total` bytes, the header fits in its first page and the kernel
        // is expanded into exactly the rest.
        let header = EntryHeader(key: key, length: UInt64(expandedSize)).bytes
        header.withUnsafeBytes { mapping.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let target = UnsafeMutableRawBufferPointer(start: mapping + Self.dataOffset, count: expandedSize)
        do throws(LZ4Legacy.Failure) {
            _ = try LZ4Legacy.decompress(payload, into: target)
        } catch {
            unlink(temporary)
            return "the kernel's LZ4 payload does not expand: \(error)"
        }
        guard UnsafeRawBufferPointer(target).starts(with: [0x7F, 0x45, 0x4C, 0x46]) else {
            unlink(temporary)
            return "the kernel's payload is not an ELF vmlinux"
        }
        guard fdatasync(fd) == 0 else { return fail("cannot sync") }
        guard rename(temporary, path) == 0 else { return fail("cannot rename") }
        return nil
    }

    /// `mkdir -p` with 0700 for what it makes; nil, or why not.
    static func makeDirectories(_ path: String) -> String? {
        var prefix = ""
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + component
            if mkdir(prefix, 0o700) != 0, errno != EEXIST {
                return "cannot create \(prefix): \(String(cString: strerror(errno)))"
            }
        }
        return nil
    }
}

/// Which file a kernel is, as the file system tells: device, inode, size, and the times of its
/// last change of content and of metadata, to the nanosecond. Any write changes the last.
public struct FileIdentity: Sendable, Equatable {
    public let device: UInt64
    public let inode: UInt64
    public let size: UInt64
    public let modified: Int64
    public let changed: Int64

    /// The identity of the regular file at `path`; nil for anything else.
    public init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size > 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = UInt64(info.st_size)
        modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        changed = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
    }

    /// The name of its link in the cache.
    var name: String { "\(device)-\(inode)-\(size)-\(modified)-\(changed)" }
}

/// What names an entry: the bzImage's size and its XXH64. One pass over the kernel at every
/// boot, a few milliseconds at most; 64 bits and the size keep two kernels apart.
struct EntryKey: Equatable {
    let size: UInt64
    let hash: UInt64

    init(image: UnsafeRawBufferPointer) {
        size = UInt64(image.count)
        hash = ContentHash.xxh64(image)
    }

    init(size: UInt64, hash: UInt64) {
        self.size = size
        self.hash = hash
    }

    var fileName: String {
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits + "-\(size).vmlinux"
    }
}

/// An entry's first page: magic, version, the key it was made from (size, hash, a reserved
/// word), the vmlinux's length.
struct EntryHeader {
    let key: EntryKey
    let length: UInt64

    var bytes: [UInt8] {
        var out = KernelCache.magic
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { out += $0 }
        }
        put(KernelCache.version)
        put(UInt32(0))
        put(key.size)
        put(key.hash)
        put(UInt64(0))
        put(length)
        return out
    }

    /// Reads a header; nil unless the magic and version are ours.
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= 48, bytes.starts(with: KernelCache.magic) else { return nil }
        func get<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T { T(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: T.self)) }
        guard get(8, UInt32.self) == KernelCache.version else { return nil }
        key = EntryKey(size: get(16, UInt64.self), hash: get(24, UInt64.self))
        length = get(40, UInt64.self)
    }

    init(key: EntryKey, length: UInt64) {
        self.key = key
        self.length = length
    }
}

/// A sound cache entry, open: its descriptor (to map segments from) and a read-only view of the
/// vmlinux in it (to parse). Both go when the last reference does.
public final class CachedKernel: @unchecked Sendable {
    // @unchecked: immutable after init; the view is a read-only mapping nobody writes.
    public let descriptor: CInt
    /// The ELF vmlinux.
    public let elf: UnsafeRawBufferPointer
    /// Where the vmlinux starts in the file: add it to an ELF offset to map from the file.
    public let dataOffset = UInt64(KernelCache.dataOffset)
    private let mapping: UnsafeMutableRawPointer
    private let mappedSize: Int

    private init(descriptor: CInt, mapping: UnsafeMutableRawPointer, size: Int) {
        self.descriptor = descriptor
        self.mapping = mapping
        mappedSize = size
        elf = UnsafeRawBufferPointer(start: mapping + KernelCache.dataOffset, count: size - KernelCache.dataOffset)
    }

    deinit {
        munmap(mapping, mappedSize)
        close(descriptor)
    }

    /// The entry at `path` if it is a regular file made from the kernel `key` names, as long as
    /// its header says; nil otherwise.
    static func open(path: String, key: EntryKey) -> CachedKernel? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size > KernelCache.dataOffset,
              info.st_size <= KernelCache.dataOffset + KernelCache.maximumExpandedSize else {
            close(fd)
            return nil
        }
        let size = Int(info.st_size)
        guard let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapping != MAP_FAILED else {
            close(fd)
            return nil
        }
        let header = EntryHeader(UnsafeRawBufferPointer(start: mapping, count: KernelCache.dataOffset))
        guard let header, header.key == key, header.length == UInt64(size - KernelCache.dataOffset),
              UnsafeRawBufferPointer(start: mapping + KernelCache.dataOffset, count: 4).elementsEqual([0x7F, 0x45, 0x4C, 0x46]) else {
            munmap(mapping, size)
            close(fd)
            return nil
        }
        return CachedKernel(descriptor: fd, mapping: mapping, size: size)
    }
}
