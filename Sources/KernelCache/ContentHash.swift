/// XXH64 (Yann Collet's xxHash, 64-bit variant): a fast, well-mixed hash of a file's bytes, for
/// naming cache entries by content. Not a cryptographic hash: the cache never trusts an entry
/// for its name alone (`KernelCache` checks what the entry says it was made from).
enum ContentHash {
    private static let p1: UInt64 = 11_400_714_785_074_694_791
    private static let p2: UInt64 = 14_029_467_366_897_019_727
    private static let p3: UInt64 = 1_609_587_929_392_839_161
    private static let p4: UInt64 = 9_650_029_242_287_828_579
    private static let p5: UInt64 = 2_870_177_450_012_600_261

    @inline(__always)
    private static func rotate(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always)
    private static func round(_ accumulator: UInt64, _ input: UInt64) -> UInt64 {
        rotate(accumulator &+ input &* p2, 31) &* p1
    }

    @inline(__always)
    private static func merge(_ accumulator: UInt64, _ value: UInt64) -> UInt64 {
        (accumulator ^ round(0, value)) &* p1 &+ p4
    }

    /// The XXH64 of `bytes` with `seed`.
    static func xxh64(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let count = bytes.count
        guard let base = bytes.baseAddress else { return avalanche(seed &+ p5) }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        func u32(_ at: Int) -> UInt64 { UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }

        var at = 0
        var hash: UInt64
        if count >= 32 {
            var v1 = seed &+ p1 &+ p2, v2 = seed &+ p2, v3 = seed, v4 = seed &- p1
            while count - at >= 32 {
                v1 = round(v1, u64(at))
                v2 = round(v2, u64(at + 8))
                v3 = round(v3, u64(at + 16))
                v4 = round(v4, u64(at + 24))
                at += 32
            }
            hash = rotate(v1, 1) &+ rotate(v2, 7) &+ rotate(v3, 12) &+ rotate(v4, 18)
            hash = merge(merge(merge(merge(hash, v1), v2), v3), v4)
        } else {
            hash = seed &+ p5
        }
        hash &+= UInt64(count)
        while count - at >= 8 {
            hash = rotate(hash ^ round(0, u64(at)), 27) &* p1 &+ p4
            at += 8
        }
        if count - at >= 4 {
            hash = rotate(hash ^ (u32(at) &* p1), 23) &* p2 &+ p3
            at += 4
        }
        while at < count {
            hash = rotate(hash ^ (UInt64(base.load(fromByteOffset: at, as: UInt8.self)) &* p5), 11) &* p1
            at += 1
        }
        return avalanche(hash)
    }

    private static func avalanche(_ value: UInt64) -> UInt64 {
        var h = value
        h ^= h >> 33
        h &*= p2
        h ^= h >> 29
        h &*= p3
        h ^= h >> 32
        return h
    }
}
