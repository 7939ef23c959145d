import CKVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Why a guest-memory access was refused. Each case names the range that was asked for.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Some byte of `[address, address + length)` is not backed by guest RAM.
    case outOfBounds(address: GuestAddress, length: UInt64)
    /// `address + length` wraps past the end of the 64-bit address space.
    case overflow(address: GuestAddress, length: UInt64)
    /// The host would not give us the memory.
    case mapFailed(size: UInt64, errno: Int32)
    /// Two regions overlap, or a region is empty or not page-aligned.
    case badLayout(String)
    /// The host refused to take back `[address, address + length)` (`discard`), or the range
    /// is not made of whole 4 KiB pages.
    case discardFailed(address: GuestAddress, length: UInt64, errno: Int32)

    public var description: String {
        switch self {
        case let .outOfBounds(address, length):
            return "guest range \(address)+\(length) is outside guest memory"
        case let .overflow(address, length):
            return "guest range \(address)+\(length) overflows the address space"
        case let .mapFailed(size, errno):
            return "cannot reserve \(size >> 20) MiB of guest memory: \(String(cString: strerror(errno)))"
        case let .badLayout(why):
            return "bad guest memory layout: \(why)"
        case let .discardFailed(address, length, errno):
            return "cannot discard guest range \(address)+\(length): \(errno == 0 ? "not whole pages" : String(cString: strerror(errno)))"
        }
    }
}

/// One contiguous stretch of guest-physical memory, backed by one host mapping.
public struct GuestRegion: @unchecked Sendable {
    // @unchecked: `host` is a pointer into a mapping owned by `GuestMemory` for its lifetime.
    public let start: GuestAddress
    public let size: UInt64
    /// Host address of `start`. Kept private to this module: only `GuestMemory` turns guest
    /// addresses into pointers. KVM reads it through `hostAddressForKVM` to register the slot.
    @usableFromInline let host: UnsafeMutableRawPointer

    public var end: GuestAddress { start + size }

    /// The host virtual address KVM needs for `KVM_SET_USER_MEMORY_REGION`. Not for access.
    public var hostAddressForKVM: UInt64 { UInt64(UInt(bitPattern: host)) }

    public func contains(_ address: GuestAddress) -> Bool {
        address >= start && address.rawValue - start.rawValue < size
    }
}

/// The guest's physical memory: a few regions of anonymous host memory.
///
/// Every access names a guest address and a length, and both are checked — the address, the
/// length, their sum for overflow, and that the whole range lies inside one region — before a
/// single byte moves. A range that straddles two regions (or a hole between them) is refused:
/// no legitimate buffer does that on our memory map, and refusing it keeps the check simple.
///
/// The memory is shared with running vCPUs and with the guest's drivers, so its contents can
/// change under us at any time. Callers read each guest-controlled field once.
public final class GuestMemory: @unchecked Sendable {
    // @unchecked: the regions never change after init; the bytes they point at are guest
    // memory, which is concurrently written by design (that is what virtqueues are).
    public let regions: [GuestRegion]

    /// Maps anonymous memory for each `(start, size)` pair. Sizes and starts must be 4 KiB
    /// aligned and the regions must not overlap.
    public init(layout: [(start: GuestAddress, size: UInt64)]) throws(GuestMemoryError) {
        let sorted = try Self.checked(layout)
        var mapped: [GuestRegion] = []
        for (start, size) in sorted {
            guard let pointer = Self.mapAligned(size: size) else {
                let error = errno
                for region in mapped { munmap(region.host, Int(region.size)) }
                throw .mapFailed(size: size, errno: error)
            }
            mapped.append(GuestRegion(start: start, size: size, host: pointer))
        }
        regions = mapped
    }

    /// Takes ownership of regions already mapped (GuestMemoryFile.swift): they are unmapped
    /// with the memory.
    init(mapped regions: [GuestRegion]) {
        self.regions = regions
    }

    /// Ranges where a file is mapped privately over the anonymous RAM (`mapPrivately`): a
    /// discard there must not bring the file's bytes back.
    let fileMappedRanges = Mutex<[(start: GuestAddress, end: GuestAddress)]>([])

    /// `layout` sorted by address, once each region is page-aligned, non-empty, inside the
    /// address space and clear of the others.
    static func checked(_ layout: [(start: GuestAddress, size: UInt64)]) throws(GuestMemoryError) -> [(start: GuestAddress, size: UInt64)] {
        let sorted = layout.sorted { $0.start < $1.start }
        var previousEnd = GuestAddress(0)
        for (index, (start, size)) in sorted.enumerated() {
            guard size > 0, size % 4096 == 0, start.isAligned(to: 4096) else {
                throw .badLayout("region at \(start) of \(size) bytes is empty or not page-aligned")
            }
            guard start.adding(size) != nil else { throw .overflow(address: start, length: size) }
            if index > 0, start < previousEnd {
                throw .badLayout("region at \(start) overlaps the one before it")
            }
            previousEnd = start + size
        }
        return sorted
    }

    /// The alignment of each region's host mapping: a transparent huge page.
    static let hugePageSize = 2 << 20

    /// Maps `size` bytes of anonymous memory starting on a 2 MiB boundary, or returns nil with
    /// errno set. The Launcher reads the kernel and initrd into such memory too. Unmap it with
    /// `munmap(pointer, size)`.
    ///
    /// Guest RAM backed by 2 MiB pages costs the guest fewer TLB misses (KVM maps it with large
    /// pages too), and the kernel image we copy in at start-up faults in 7 pages rather than
    /// 3,500. A huge page can only back a 2 MiB-aligned range, so we reserve 2 MiB more than
    /// needed and give back the unaligned head and tail.
    public static func mapAligned(size: UInt64) -> UnsafeMutableRawPointer? {
        let (reserved, overflow) = Int(size).addingReportingOverflow(hugePageSize)
        guard !overflow else { errno = ENOMEM; return nil }
        guard let raw = mmap(nil, reserved, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              raw != MAP_FAILED else { return nil }
        let address = UInt(bitPattern: raw)
        let aligned = (address + UInt(hugePageSize - 1)) & ~UInt(hugePageSize - 1)
        let head = Int(aligned - address), tail = reserved - head - Int(size)
        if head > 0 { munmap(raw, head) }
        // Safe: `aligned + size` and the tail lie inside the reservation just made.
        let pointer = UnsafeMutableRawPointer(bitPattern: aligned)!
        if tail > 0 { munmap(pointer + Int(size), tail) }
        // Huge pages are a preference: a host with them off just gets 4 KiB pages.
        madvise(pointer, Int(size), MADV_HUGEPAGE)
        // A child process (a helper we spawn) must never inherit the guest's memory.
        madvise(pointer, Int(size), MADV_DONTFORK)
        return pointer
    }

    /// A single region of `size` bytes starting at guest-physical 0.
    public convenience init(size: UInt64) throws(GuestMemoryError) {
        try self.init(layout: [(GuestAddress(0), size)])
    }

    deinit {
        for region in regions { munmap(region.host, Int(region.size)) }
    }

    /// Total bytes of guest RAM.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// The region holding `address`, if any.
    public func region(containing address: GuestAddress) -> GuestRegion? {
        regions.first { $0.contains(address) }
    }

    /// Whether `[address, address + length)` lies entirely inside one region.
    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        (try? pointer(at: address, length: length)) != nil
    }

    // MARK: - The one place a guest address becomes a pointer

    /// The host pointer for `[address, address + length)`, after checking every byte of it is
    /// guest RAM inside a single region. A zero length is allowed if `address` itself is in RAM
    /// or at a region's end.
    @inlinable
    func pointer(at address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        guard let end = address.adding(length) else { throw .overflow(address: address, length: length) }
        for region in regions where address >= region.start {
            let offset = address.rawValue - region.start.rawValue
            // `end <= region.end`, written so that neither side can overflow.
            if offset <= region.size, end.rawValue - region.start.rawValue <= region.size {
                return region.host + Int(offset)
            }
        }
        throw .outOfBounds(address: address, length: length)
    }

    // MARK: - Typed, little-endian access

    // Inlinable so that callers in other modules get a copy specialized for their `T`: the
    // unspecialized one instantiates `T`'s metadata on every ring and descriptor access.

    @inlinable
    public func read<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let p = try pointer(at: address, length: UInt64(MemoryLayout<T>.size))
        // Safe: the range was checked above; loadUnaligned tolerates any alignment.
        return T(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: T.self))
    }

    @inlinable
    public func write<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let p = try pointer(at: address, length: UInt64(MemoryLayout<T>.size))
        // Safe: the range was checked above; storeBytes tolerates any alignment.
        p.storeBytes(of: value.littleEndian, as: T.self)
    }

    /// Copies `bytes` into guest memory at `address`.
    public func write(bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws(GuestMemoryError) {
        let p = try pointer(at: address, length: UInt64(bytes.count))
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        // Safe: destination range checked above; source is the caller's buffer.
        p.copyMemory(from: base, byteCount: bytes.count)
    }

    public func write(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws(GuestMemoryError) {
        // Arrays and their slices (a whole kernel image, say) are copied straight in.
        let direct: Result<Void, GuestMemoryError>? = bytes.withContiguousStorageIfAvailable { buffer in
            do throws(GuestMemoryError) { try write(bytes: UnsafeRawBufferPointer(buffer), at: address); return .success(()) }
            catch { return .failure(error) }
        }
        if let direct { return try direct.get() }
        let array = Array(bytes)
        let result: Result<Void, GuestMemoryError> = array.withUnsafeBytes { buffer in
            do throws(GuestMemoryError) { try write(bytes: buffer, at: address); return .success(()) }
            catch { return .failure(error) }
        }
        try result.get()
    }

    /// Copies guest memory at `address` into `buffer` (all of it).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws(GuestMemoryError) {
        let p = try pointer(at: address, length: UInt64(buffer.count))
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        // Safe: source range checked above; destination is the caller's buffer.
        base.copyMemory(from: p, byteCount: buffer.count)
    }

    public func readBytes(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .outOfBounds(address: address, length: 0) }
        _ = try pointer(at: address, length: UInt64(count))
        var bytes = [UInt8](repeating: 0, count: count)
        let result: Result<Void, GuestMemoryError> = bytes.withUnsafeMutableBytes { buffer in
            do throws(GuestMemoryError) { try read(into: buffer, at: address); return .success(()) }
            catch { return .failure(error) }
        }
        try result.get()
        return bytes
    }

    /// Fills `[address, address + length)` with zeroes.
    public func zero(at address: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        let p = try pointer(at: address, length: length)
        // Safe: range checked above.
        memset(p, 0, Int(length))
    }

    /// How the host backs guest RAM, which decides how `discard` gives pages back.
    public enum Backing: Sendable, Equatable {
        /// Private anonymous memory (what `init` maps): `MADV_DONTNEED` frees the pages, and the
        /// next touch faults in a zeroed one.
        case anonymous
        /// A shared mapping of a file (memfd, hugetlbfs): `MADV_DONTNEED` would only drop this
        /// process's view, so `MADV_REMOVE` punches the pages out of the file itself.
        case sharedFile
    }

    /// Every region is private anonymous memory today.
    public var backing: Backing { .anonymous }

    /// Gives the host pages behind `[address, address + length)` back: the guest said it no
    /// longer uses them (a balloon inflating, a free page report). Reading them again finds
    /// zeroes, and the process's resident memory shrinks by what was resident there.
    /// `address` and `length` must be 4 KiB-aligned and the range inside one region.
    public func discard(at address: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        guard address.isAligned(to: 4096), length % 4096 == 0 else {
            throw .discardFailed(address: address, length: length, errno: 0)
        }
        let p = try pointer(at: address, length: length)
        guard length > 0 else { return }
        // Safe: the range was checked above and lies inside one of our mappings; its host
        // address is page-aligned because regions start on page boundaries of 2 MiB-aligned maps.
        if overlapsFileMapping(address, length: length) {
            // Dropping a private file page would bring the file's bytes back; fresh anonymous
            // pages over the range read as zeroes, as promised.
            guard mmap(p, Int(length), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == p else {
                throw .discardFailed(address: address, length: length, errno: errno)
            }
            return
        }
        let advice = backing == .sharedFile ? MADV_REMOVE : MADV_DONTNEED
        guard madvise(p, Int(length), advice) == 0 else {
            throw .discardFailed(address: address, length: length, errno: errno)
        }
    }

    /// Runs `body` on a host view of `[address, address + length)`, for I/O straight into or
    /// out of guest memory (pread/pwrite/readv/writev). The view must not escape `body`.
    @inlinable
    public func withSlice<R, E: Error>(
        at address: GuestAddress, length: UInt64,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(GuestSliceError<E>) -> R {
        let p: UnsafeMutableRawPointer
        do { p = try pointer(at: address, length: length) } catch { throw .memory(error) }
        do { return try body(UnsafeMutableRawBufferPointer(start: p, count: Int(length))) }
        catch { throw .body(error) }
    }

    // MARK: - Ordered access, for rings shared with a running guest

    /// Loads a `u16` with acquire ordering: later reads cannot be satisfied before it.
    public func loadAcquire16(at address: GuestAddress) throws(GuestMemoryError) -> UInt16 {
        let p = try pointer(at: address, length: 2)
        guard address.isAligned(to: 2) else { throw .outOfBounds(address: address, length: 2) }
        return UInt16(littleEndian: lg_load_acquire_u16(p))
    }

    /// Loads a `u16` the guest may be writing at the same time, exactly once (a relaxed atomic
    /// load): the compiler may not repeat it and find a different value the second time.
    public func loadRelaxed16(at address: GuestAddress) throws(GuestMemoryError) -> UInt16 {
        let p = try pointer(at: address, length: 2)
        // Safe: the two bytes were checked above.
        return UInt16(littleEndian: lg_load_relaxed_u16(p))
    }

    /// Loads a `u64` the guest may be writing at the same time, exactly once (relaxed atomic).
    public func loadRelaxed64(at address: GuestAddress) throws(GuestMemoryError) -> UInt64 {
        let p = try pointer(at: address, length: 8)
        // Safe: the eight bytes were checked above.
        return UInt64(littleEndian: lg_load_relaxed_u64(p))
    }

    /// Stores a `u16` with release ordering: earlier writes are visible before it.
    public func storeRelease16(_ value: UInt16, at address: GuestAddress) throws(GuestMemoryError) {
        let p = try pointer(at: address, length: 2)
        guard address.isAligned(to: 2) else { throw .outOfBounds(address: address, length: 2) }
        lg_store_release_u16(p, value.littleEndian)
    }

    /// A full memory barrier (stores before it are visible before loads after it).
    @inlinable public static func fullBarrier() { lg_fence_seq_cst() }
}

/// An error from `GuestMemory.withSlice`: either the range was refused or the body threw.
public enum GuestSliceError<E: Error>: Error {
    case memory(GuestMemoryError)
    case body(E)
}
