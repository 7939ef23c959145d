#if canImport(Glibc)
import Glibc
#endif

// A file's pages in place of part of guest RAM: how a cached, already decompressed kernel gets
// into the guest without a copy. The mapping is private (copy-on-write): the guest's writes stay
// in its own memory, and every guest booted from one kernel shares the file's unmodified pages
// through the page cache.

extension GuestMemory {
    /// Maps `length` bytes of the file open at `descriptor`, from byte `offset`, over guest RAM
    /// at `address`, privately. `address` and `offset` must be 4 KiB-aligned, the range inside
    /// one region, and the file at least `offset + length` long (mapping past its end would
    /// fault the guest); the rest of the last page reads as zeros, as RAM there did.
    public func mapPrivately(file descriptor: CInt, offset: UInt64, length: UInt64,
                             at address: GuestAddress) throws(GuestMemoryError) {
        guard address.isAligned(to: 4096), offset % 4096 == 0, length > 0 else {
            throw .badLayout("a file mapping at \(address) from offset \(offset) is not page-aligned")
        }
        let (pages, overflow) = length.addingReportingOverflow(4095)
        guard !overflow else { throw .overflow(address: address, length: length) }
        let mapped = pages & ~4095
        let p = try pointer(at: address, length: mapped)
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw .mapFailed(size: mapped, errno: errno) }
        guard info.st_size >= 0, UInt64(info.st_size) >= offset, UInt64(info.st_size) - offset >= length else {
            throw .badLayout("the file is shorter than offset \(offset) + \(length) bytes")
        }
        // Recorded first: if the mapping half-succeeds, a discard still does the safe thing.
        fileMappedRanges.withLock { $0.append((address, address + mapped)) }
        // Safe: the range lies inside one of our regions (checked above) and is replaced whole.
        guard mmap(p, Int(mapped), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, descriptor, off_t(offset)) == p else {
            let error = errno
            // A failed MAP_FIXED may have unmapped the range: put fresh RAM back over it.
            _ = mmap(p, Int(mapped), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
            throw .mapFailed(size: mapped, errno: error)
        }
        if mapped > length {
            // The file's next bytes share the last page: RAM past the segment reads as zeros.
            memset(p + Int(length), 0, Int(mapped - length))
        }
    }

    /// Whether `[address, address + length)` meets a range `mapPrivately` mapped.
    func overlapsFileMapping(_ address: GuestAddress, length: UInt64) -> Bool {
        guard let end = address.adding(length) else { return true }
        return fileMappedRanges.withLock { ranges in
            ranges.contains { address < $0.end && $0.start < end }
        }
    }
}
