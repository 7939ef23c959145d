import CKVM
import GuestMemory
import Synchronization
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// virtio-rng: the guest posts empty buffers, we fill them with randomness from the host's
/// `getrandom`, and the guest's hwrng core feeds them to its entropy pool (`/dev/hwrng`).
///
/// The smallest device there is (kvmtool's is two hundred lines, and most of those are
/// boilerplate): one queue, no features, no configuration.
public final class RngDevice: VirtioDevice {
    public let deviceType: UInt32 = 4
    public let queueMaxSizes: [UInt16] = [256]
    public let offeredFeatures: UInt64 = 0

    /// The most we hand out per request: a guest posting a 1 GiB buffer gets 64 KiB, and asks again.
    public static let maximumRequest = 64 * 1024

    public struct Statistics: Sendable, Equatable {
        public var requests = 0
        public var bytes = 0
        public var malformed = 0
    }

    private struct State {
        var queue: Queue?
        var statistics = Statistics()
    }
    private let state = Mutex(State())

    public init() {}

    public var statistics: Statistics { state.withLock { $0.statistics } }

    public func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                         interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        state.withLock { $0.queue = queues.first }
    }

    public func reset() {
        state.withLock { $0.queue = nil }
    }

    public func processQueue(_ index: Int) {
        state.withLock { s in
            guard index == 0, s.queue != nil else { return }
            while true {
                let chain: DescriptorChain
                do throws(VirtqueueError) {
                    guard let next = try s.queue!.popAvailable() else { break }
                    chain = next
                } catch {
                    s.statistics.malformed += 1
                    if error.isStructural { break } else { continue }
                }
                var writer = chain.writer()
                // A request is nothing but writable buffers; anything readable is a confused driver.
                if chain.readableCount == 0 {
                    let count = min(writer.remaining, Self.maximumRequest)
                    var bytes = [UInt8](repeating: 0, count: count)
                    let filled = bytes.withUnsafeMutableBytes { fillRandom($0) }
                    do throws(VirtqueueError) { try writer.write(bytes.prefix(filled)) } catch { s.statistics.malformed += 1 }
                    s.statistics.requests += 1
                    s.statistics.bytes += Int(writer.bytesWritten)
                } else {
                    s.statistics.malformed += 1
                }
                do throws(VirtqueueError) { try s.queue!.addUsed(head: chain.head, length: writer.bytesWritten) }
                catch { s.statistics.malformed += 1 }
            }
            s.queue!.notifyGuestIfNeeded()
        }
    }
}

/// Fills `buffer` from the kernel's random pool; returns how many bytes it filled (all of them,
/// unless getrandom fails, which for a request this small it does not).
func fillRandom(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
    var filled = 0
    while filled < buffer.count {
        let n = getrandom(buffer.baseAddress! + filled, buffer.count - filled, 0)
        if n < 0 { if errno == EINTR { continue } else { break } }
        filled += n
    }
    return filled
}
