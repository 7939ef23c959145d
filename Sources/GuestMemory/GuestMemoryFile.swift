#if canImport(Glibc)
import Glibc
#endif

// Guest memory and files: a snapshot's memory file is the regions' bytes one after another,
// in address order, and a restored guest's memory is that file mapped privately, so that
// pages come in as the guest touches them and clones of one snapshot share the page cache.

extension GuestMemory {
    /// Maps the file open at `descriptor` as guest memory laid out as `layout`: the first
    /// region from offset 0, each next one where the previous ended. Copy-on-write
    /// (`MAP_PRIVATE`): the guest's writes never reach the file. The file must hold exactly
    /// the regions' total size.
    public convenience init(layout: [(start: GuestAddress, size: UInt64)], file descriptor: CInt) throws(GuestMemoryError) {
        let sorted = try Self.checked(layout)
        var mapped: [GuestRegion] = []
        var offset: UInt64 = 0
        for (start, size) in sorted {
            let pointer = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, descriptor, off_t(offset))
            guard let pointer, pointer != MAP_FAILED else {
                let error = errno
                for region in mapped { munmap(region.host, Int(region.size)) }
                throw .mapFailed(size: size, errno: error)
            }
            madvise(pointer, Int(size), MADV_DONTFORK)
            mapped.append(GuestRegion(start: start, size: size, host: pointer))
            offset += size
        }
        self.init(mapped: mapped)
    }

    /// Writes every region to `descriptor` from offset 0, in address order, leaving holes
    /// where a 64 KiB block is all zeros (the file is sized first, so holes read as zeros).
    /// Returns 0, or the errno of the call that failed.
    public func write(toFile descriptor: CInt) -> Int32 {
        guard ftruncate(descriptor, off_t(totalSize)) == 0 else { return errno }
        let block = 64 * 1024
        var offset: UInt64 = 0
        for region in regions {
            var done = 0
            while done < Int(region.size) {
                let count = min(block, Int(region.size) - done)
                let chunk = UnsafeRawBufferPointer(start: region.host + done, count: count)
                if !Self.isZero(chunk) {
                    var written = 0
                    while written < count {
                        let n = pwrite(descriptor, chunk.baseAddress! + written, count - written, off_t(offset) + off_t(done + written))
                        if n < 0, errno == EINTR { continue }
                        guard n > 0 else { return n == 0 ? EIO : errno }
                        written += n
                    }
                }
                done += count
            }
            offset += region.size
        }
        return 0
    }

    private static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let words = bytes.count / 8
        while index < words {
            if bytes.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
            index += 1
        }
        for i in (words * 8)..<bytes.count where bytes[i] != 0 { return false }
        return true
    }
}
