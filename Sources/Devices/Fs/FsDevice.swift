import GuestMemory
import HostSystem
import Synchronization
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// virtio-fs (device type 26): a host directory the guest mounts with
/// `mount -t virtiofs TAG /mnt`, served by a FUSE server inside lguest (`FuseServer`), with no
/// daemon beside it.
///
/// Queue 0 is the high-priority queue (the driver sends FORGETs there), queues 1… are request
/// queues; there is one. Configuration space is `struct virtio_fs_config`: the tag in 36
/// bytes, NUL-padded, then `num_request_queues` (le32). No feature bits.
///
/// A request is one chain: the device-readable part holds the FUSE request (in header and
/// arguments, a WRITE's data included), the device-writable part takes the answer. The
/// request is copied out whole (at most `maxRequest` bytes), served, and the answer copied in.
/// A chain too broken to answer is handed back with a used length of 0 and counted.
public final class FsDevice: VirtioDevice {
    public let deviceType: UInt32 = 26
    public static let queueSize: UInt16 = 256
    public let queueMaxSizes: [UInt16] = [FsDevice.queueSize, FsDevice.queueSize]
    public let offeredFeatures: UInt64 = 0
    public let configuration: FsShareConfiguration
    /// The largest request read: a WRITE of `Fuse.maxTransfer` bytes and its headers.
    public static let maxRequest = Fuse.maxTransfer + 4096

    private struct State {
        var queues: [Queue] = []
        let server: FuseServer
        /// Chains the queue handed over that could not be answered.
        var dropped = 0
        /// The driver reset the device; the server lets go of its nodes and handles on the
        /// file-system thread (a reset arrives on a vCPU thread, whose filter has no `close`).
        var resetPending = false
    }
    private let state: Mutex<State>

    /// Opens the shared directory. Throws an `FsError` naming it.
    public init(_ configuration: FsShareConfiguration, maxNodes: Int, maxHandles: Int) throws(FsError) {
        self.configuration = configuration
        state = Mutex(State(server: try FuseServer(configuration, maxNodes: maxNodes, maxHandles: maxHandles)))
    }

    /// How many nodes and open files each of `shares` shares may hold: the process's
    /// descriptor limit (its soft limit raised to the hard one first), less 256 for lguest's
    /// own, split evenly, a quarter of each share's part for open files; at most 65536 nodes.
    public static func descriptorBudget(shares: Int) -> (nodes: Int, handles: Int) {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        let available = Int(min(limit.rlim_cur, UInt(Int32.max))) - 256
        let each = max(available / max(shares, 1), 64)
        let handles = max(each / 4, 16)
        return (min(each - handles, 65536), min(handles, 16384))
    }

    /// `struct virtio_fs_config`.
    public var configSpace: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 40)
        for (i, byte) in configuration.tag.utf8.prefix(FsShareConfiguration.maxTagBytes).enumerated() { bytes[i] = byte }
        bytes[36] = 1 // num_request_queues
        return bytes
    }

    public var statistics: FuseStatistics {
        state.withLock { s in
            var statistics = s.server.statistics
            if s.resetPending { statistics.nodes = 1; statistics.handles = 0 }
            statistics.dropped += s.dropped
            return statistics
        }
    }

    /// Serves one FUSE request outside any queue, the way a chain's bytes are served: for the
    /// fuzz harness and the sandbox probe. `room` is the answer's space; nil means no answer.
    public func serve(request: [UInt8], room: Int) -> [UInt8]? {
        state.withLock { s in
            if s.resetPending {
                s.server.reset()
                s.resetPending = false
            }
            if case let .reply(bytes) = s.server.handle(request, room: room) { return bytes }
            return nil
        }
    }

    public func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                         interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        state.withLock { $0.queues = queues }
    }

    /// The driver reset the device: the queues go, and so does everything the guest had
    /// looked up or opened (a new mount starts with FUSE_INIT) — closed on the file-system
    /// thread before it serves the next request, or when the device goes away.
    public func reset() {
        state.withLock { s in
            s.queues = []
            s.resetPending = true
        }
    }

    public func processQueue(_ index: Int) {
        state.withLock { s in
            if s.resetPending {
                s.server.reset()
                s.resetPending = false
            }
            guard s.queues.indices.contains(index) else { return }
            while true {
                let chain: DescriptorChain
                do throws(VirtqueueError) {
                    guard let next = try s.queues[index].popAvailable() else { break }
                    chain = next
                } catch {
                    if error.isStructural { break } else { continue }
                }
                let used = serve(chain, server: s.server, dropped: &s.dropped)
                do throws(VirtqueueError) { try s.queues[index].addUsed(head: chain.head, length: used) }
                catch { if error.isStructural { break } }
            }
            _ = s.queues[index].notifyGuestIfNeeded()
        }
    }

    /// Serves one chain; returns the used length.
    private func serve(_ chain: DescriptorChain, server: FuseServer, dropped: inout Int) -> UInt32 {
        guard chain.readableLength > 0, Int(chain.readableLength) <= Self.maxRequest else {
            // Nothing to read, or more than any request we accept: not even a header to trust.
            dropped += 1
            return 0
        }
        var reader = chain.reader()
        let request: [UInt8]
        do throws(VirtqueueError) { request = try reader.read(count: Int(chain.readableLength)) } catch {
            dropped += 1
            return 0
        }
        switch server.handle(request, room: Int(chain.writableLength)) {
        case .noReply, .dropped: return 0
        case let .reply(bytes):
            var writer = chain.writer()
            do throws(VirtqueueError) { try writer.write(bytes) } catch {
                dropped += 1
                return 0
            }
            return writer.bytesWritten
        }
    }
}
