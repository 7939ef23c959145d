import GuestMemory
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// Host `iovec`s over guest buffers, so one `readv`/`writev` moves a packet straight between
/// the TAP device and guest RAM without a copy.
///
/// `GuestMemory` hands out a host view of a range only inside a closure (`withSlice`), so the
/// views are collected by nesting one closure per buffer and the system call is made in the
/// innermost one, while every view is still valid. The nesting depth is the buffer count;
/// callers keep it at `maxVectors` and copy through a host buffer for the rare chain with
/// more pieces.
enum GuestIOVectors {
    /// Most buffers a single zero-copy transfer may span (a Linux TX chain has at most
    /// MAX_SKB_FRAGS + 2 pieces; an RX chain in "big packets" mode about as many).
    static let maxVectors = 64

    /// Calls `body` with one `iovec` per buffer of `buffers` (in order), then `extra` if
    /// given. Returns `nil` if a buffer is not in guest memory (the chain walk already checked
    /// them, so this is defensive). The vectors live in a temporary allocation, not an array.
    static func with<B: GuestRange, R>(_ buffers: ArraySlice<B>, in memory: GuestMemory,
                        extra: UnsafeMutableRawBufferPointer? = nil,
                        _ body: (UnsafeBufferPointer<iovec>) -> R) -> R? {
        // Safe: the iovecs are only read by `body`, which runs before the allocation ends.
        withUnsafeTemporaryAllocation(of: iovec.self, capacity: buffers.count + 1) { storage in
            collect(buffers, memory: memory, storage: storage, filled: 0) { filled in
                var count = filled
                if let extra {
                    storage[count] = iovec(iov_base: extra.baseAddress, iov_len: extra.count)
                    count += 1
                }
                return body(UnsafeBufferPointer(rebasing: storage[..<count]))
            }
        }
    }

    /// Calls `body` with `head`'s iovec followed by iovecs over `buffers` minus their first
    /// `head.count` bytes: a packet whose header was copied out of guest memory (and checked)
    /// goes out from the copy, and the rest straight from the guest.
    static func with<B: GuestRange, R>(_ buffers: ArraySlice<B>, in memory: GuestMemory,
                                       replacingHead head: UnsafeMutableRawBufferPointer,
                                       _ body: (UnsafeBufferPointer<iovec>) -> R) -> R? {
        with(buffers, in: memory) { vectors in
            // Safe: the new iovecs point into `head` and into the guest views `vectors` holds,
            // all valid until `body` returns; there is room for every vector plus the head.
            withUnsafeTemporaryAllocation(of: iovec.self, capacity: vectors.count + 1) { storage in
                storage[0] = iovec(iov_base: head.baseAddress, iov_len: head.count)
                var count = 1
                var skip = head.count
                for vector in vectors {
                    guard skip < vector.iov_len else { skip -= vector.iov_len; continue }
                    storage[count] = iovec(iov_base: vector.iov_base.map { $0 + skip }, iov_len: vector.iov_len - skip)
                    count += 1
                    skip = 0
                }
                return body(UnsafeBufferPointer(rebasing: storage[..<count]))
            }
        }
    }

    static func with<R>(_ buffers: [GuestBuffer], in memory: GuestMemory,
                        extra: UnsafeMutableRawBufferPointer? = nil,
                        _ body: (UnsafeBufferPointer<iovec>) -> R) -> R? {
        with(buffers[...], in: memory, extra: extra, body)
    }

    private static func collect<B: GuestRange, R>(_ buffers: ArraySlice<B>, memory: GuestMemory,
                                   storage: UnsafeMutableBufferPointer<iovec>, filled: Int,
                                   _ body: (Int) -> R) -> R? {
        guard let buffer = buffers.first else { return body(filled) }
        do {
            // Safe: the slice's pointer is only stored in `storage` and used by the calls nested
            // inside this closure, all of which return before `withSlice` does; `storage` has
            // room for every buffer plus one.
            return try memory.withSlice(at: buffer.address, length: UInt64(buffer.length)) {
                (slice: UnsafeMutableRawBufferPointer) -> R? in
                storage[filled] = iovec(iov_base: slice.baseAddress, iov_len: slice.count)
                return collect(buffers.dropFirst(), memory: memory, storage: storage, filled: filled + 1, body)
            }
        } catch {
            return nil
        }
    }
}

/// Runs a read or write system call again while a signal interrupts it (EINTR); returns its
/// result and, when that is negative, errno.
@inline(__always)
func retryingInterrupts(_ call: () -> Int) -> (Int, Int32) {
    while true {
        let n = call()
        if n >= 0 { return (n, 0) }
        let error = errno
        if error != EINTR { return (n, error) }
    }
}

/// A stretch of guest memory: a piece of a buffer, or a whole descriptor's buffer (which the
/// chain walk checked, so a chain's own descriptors serve as I/O vectors without a copy).
protocol GuestRange {
    var address: GuestAddress { get }
    var length: UInt32 { get }
}

extension GuestBuffer: GuestRange {}
extension Descriptor: GuestRange {}

/// A host buffer for the slow path (a chain in too many pieces) and for the spill-over that
/// detects a packet larger than the guest's buffers. Only touched with the device lock held.
final class PacketBuffer: @unchecked Sendable {
    // @unchecked: the memory is owned by this object and used only under `NetDevice`'s lock.
    let bytes: UnsafeMutableRawBufferPointer

    init(count: Int) {
        // Safe: freshly allocated, initialized at once, freed only in deinit.
        bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { bytes.deallocate() }
}
