import GuestMemory
import Synchronization
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A virtio block device (type 2) backed by a raw disk image: sector *n* of the guest's disk is
/// bytes `512·n ..< 512·(n+1)` of the file, nothing more clever than that.
///
/// One request queue. Each request is a 16-byte header (type, reserved, sector), then data,
/// then one status byte that the device writes last. Reads and writes go straight between the
/// file and guest memory with `preadv`/`pwritev` — the guest's own pages are the I/O buffers.
///
/// The guest is not trusted: every length, direction and sector range is checked before a
/// byte moves, with overflow-checked arithmetic, and a request that breaks a rule fails alone
/// (IOERR, or UNSUPP for things we do not implement) while the queue carries on. A chain
/// without a header or without room for a status byte cannot even be answered; it goes back
/// with a used length of 0.
///
/// Durability: writes land in the host's page cache (a writeback cache, in virtio terms) and
/// FLUSH turns into `fdatasync`. A driver that does not negotiate FLUSH believes writes are
/// stable when they complete, so for it every write is followed by `fdatasync`.
///
/// The image's size is read at open: capacity = size / 512, rounded down. The bytes of a
/// final partial sector are never read or written (`ignoredTrailingBytes` says how many).
/// `replaceImage` swaps in another image on a running VM (Firecracker's `PATCH /drives`) and
/// tells the guest its capacity may have changed.
/// An empty image is allowed and makes a disk of 0 sectors, which Linux shows as a
/// zero-sized vdX: legal, useless, and not worth refusing.
///
/// Rate limiting: with a `RateLimit`, each request takes one operation and its data bytes
/// from the limiter before it is served. A request the limiter refuses is held, the device
/// stops taking requests, and its `throttleTimer` is set for when the tokens will be there;
/// kicks meanwhile cost nothing. `setRateLimit` changes the limits while the device runs.
public final class BlockDevice: VirtioDevice, RateLimitedDevice {
    /// Bytes per sector. The protocol's unit, whatever `blk_size` says.
    public static let sectorSize = 512
    /// The one queue's maximum size.
    public static let queueSize: UInt16 = 256
    /// GET_ID answers this many bytes, NUL-padded.
    public static let idBytes = 20
    /// Data segments per request: a whole queue minus the header and the status descriptors,
    /// so that even a driver without indirect descriptors can build the largest request.
    public static let maxSegments = UInt32(queueSize) - 2
    /// Limits for DISCARD and WRITE_ZEROES (in sectors and segments per request). 1 GiB per
    /// segment keeps the write-zeroes fallback (writing real zeros) to a bounded time.
    public static let maxDiscardSectors: UInt32 = 1 << 21
    public static let maxDiscardSegments: UInt32 = 16
    public static let maxWriteZeroesSectors: UInt32 = 1 << 21
    /// Linux never merges write-zeroes requests, so it never sends more than one segment.
    public static let maxWriteZeroesSegments: UInt32 = 1
    /// Discards are worth aligning to 4 KiB: filesystems free whole blocks, and punching a
    /// smaller hole only zeroes bytes.
    public static let discardSectorAlignment: UInt32 = 8

    public let configuration: BlockConfiguration
    // The image, its size in sectors and its ignored tail change only in `replaceImage`, with
    // both locks held; requests are served with `serving`'s held, so none sees a swap half-way.
    // Other threads' reads may race with a swap and see either image's numbers.
    /// The disk's size in 512-byte sectors.
    public nonisolated(unsafe) private(set) var capacity: UInt64
    /// Bytes at the end of the image that do not fill a whole sector and are ignored.
    public nonisolated(unsafe) private(set) var ignoredTrailingBytes: Int
    public var isReadOnly: Bool { configuration.readOnly }

    public let deviceType: UInt32 = VirtioDeviceID.block
    public let queueMaxSizes: [UInt16] = [BlockDevice.queueSize]
    public let offeredFeatures: UInt64
    /// `struct virtio_blk_config` up to `write_zeroes_may_unmap` (and its padding). Only the
    /// capacity changes, when the image is replaced.
    public var configSpace: [UInt8] {
        state.withLock { _ in Self.makeConfigSpace(capacity: capacity, readOnly: configuration.readOnly) }
    }

    nonisolated(unsafe) private(set) var file: ImageFile
    /// The GET_ID answer: the serial, NUL-padded to 20 bytes.
    let id: [UInt8]

    /// The queue and what vCPU threads touch (activation, reset, configuration reads). Held only
    /// for ring work and bookkeeping, never across a system call on the image: no vCPU waits on
    /// the disk.
    struct State {
        var queues: [Queue] = []
        var features: UInt64 = 0
        var interrupt: VirtioInterrupt?
        /// Counts activations and resets: a drain that began under another generation stops
        /// touching the queue (its ring may already belong to the next activation).
        var generation: UInt64 = 0
        var limiter: RateLimiter
        /// A request the limiter refused, served first when the timer fires.
        var held: DescriptorChain?
    }

    /// What serving a request needs besides its chain, held for a whole drain: one drain at a time.
    struct Serving {
        /// The features of the activation being served, copied when the drain starts.
        var features: UInt64 = 0
        /// The filesystem refused PUNCH_HOLE / ZERO_RANGE once; do not ask again.
        var punchHoleUnsupported = false
        var zeroRangeUnsupported = false
        /// How long to watch the queue after a drain.
        var poll: BlockQueuePoll
    }

    let state: Mutex<State>
    let serving: Mutex<Serving>
    /// An `fdatasync` failed. Linux reports a writeback error to one `fdatasync` and then
    /// forgets it, so a later one can succeed although the data never reached the disk. From
    /// the first failure on, every flush fails: the guest must not hear "stable" about writes
    /// that may be gone. Atomic because writes of one batch sync on several threads.
    let syncFailed = Atomic(false)
    /// The threads that serve a batch's reads side by side (and its writes, one after another, beside them).
    public let workers: BlockWorkers
    public let throttleTimer: ThrottleTimer
    let counters = Mutex(BlockStatistics())

    /// Opens the image described by `configuration`. Throws a `BlockError` that names the file.
    public init(_ configuration: BlockConfiguration,
                clock: @escaping @Sendable () -> UInt64 = RateLimiter.monotonicNow) throws(BlockError) {
        let timer = ThrottleTimer()
        guard timer.isUsable else { throw .system(path: configuration.path, errno: errno) }
        throttleTimer = timer
        state = Mutex(State(limiter: RateLimiter(configuration.rateLimit, clock: clock)))
        serving = Mutex(Serving(poll: BlockQueuePoll(limitMicroseconds: configuration.pollMicroseconds)))
        workers = BlockWorkers(count: configuration.workers)
        var id = [UInt8](repeating: 0, count: Self.idBytes)
        if let serial = configuration.serial {
            let bytes = Array(serial.utf8)
            guard bytes.count <= Self.idBytes else { throw .serialTooLong(serial) }
            id.replaceSubrange(0 ..< bytes.count, with: bytes)
        }
        self.id = id
        self.configuration = configuration
        file = try ImageFile.open(path: configuration.path, readOnly: configuration.readOnly)
        capacity = file.size / UInt64(Self.sectorSize)
        ignoredTrailingBytes = Int(file.size % UInt64(Self.sectorSize))

        var features = BlockFeature.segMax | BlockFeature.blockSize | BlockFeature.flush
        if configuration.readOnly {
            features |= BlockFeature.readOnly
        } else {
            features |= BlockFeature.discard | BlockFeature.writeZeroes
        }
        offeredFeatures = features
    }

    /// Serves the guest from the image at `path` from now on (opened as the first was, locked
    /// the same way), after the request being served, if any; the guest gets a
    /// configuration-change interrupt and reads the new capacity. The old image is closed.
    public func replaceImage(path: String) throws(BlockError) {
        let replacement = try ImageFile.open(path: path, readOnly: configuration.readOnly)
        let interrupt = serving.withLock { serving -> VirtioInterrupt? in
            syncFailed.store(false, ordering: .relaxed)
            serving.punchHoleUnsupported = false
            serving.zeroRangeUnsupported = false
            return state.withLock { state -> VirtioInterrupt? in
                file = replacement
                capacity = replacement.size / UInt64(Self.sectorSize)
                ignoredTrailingBytes = Int(replacement.size % UInt64(Self.sectorSize))
                return state.interrupt
            }
        }
        interrupt?.signalConfigChange()
    }

    static func makeConfigSpace(capacity: UInt64, readOnly: Bool) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: BlockConfigOffset.size)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            for i in 0 ..< MemoryLayout<T>.size { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        put(capacity, at: BlockConfigOffset.capacity)
        put(maxSegments, at: BlockConfigOffset.segMax)
        put(UInt32(sectorSize), at: BlockConfigOffset.blockSize)
        // Geometry and topology stay zero (not offered); writeback is 0 and only meaningful
        // with CONFIG_WCE, which we do not offer either.
        put(UInt16(1), at: BlockConfigOffset.numQueues)
        if !readOnly {
            put(maxDiscardSectors, at: BlockConfigOffset.maxDiscardSectors)
            put(maxDiscardSegments, at: BlockConfigOffset.maxDiscardSegments)
            put(discardSectorAlignment, at: BlockConfigOffset.discardSectorAlignment)
            put(maxWriteZeroesSectors, at: BlockConfigOffset.maxWriteZeroesSectors)
            put(maxWriteZeroesSegments, at: BlockConfigOffset.maxWriteZeroesSegments)
            // A write-zeroes request with the unmap flag may punch a hole.
            put(UInt8(1), at: BlockConfigOffset.writeZeroesMayUnmap)
        }
        return bytes
    }

    // MARK: - What tests and the launcher can see

    /// The descriptor of the block device served, for the I/O thread's filter (which lets
    /// `BLKDISCARD` through on it alone); nil for an image file.
    public var blockDeviceDescriptor: CInt? { file.isBlockDevice ? file.fd : nil }

    /// The disk's size in bytes, as read at open (a file's length, a device's size).
    public var imageSize: UInt64 { file.size }

    /// Everything counted so far.
    public var statistics: BlockStatistics { counters.withLock { $0 } }

    /// The request queue's own counters (malformed chains the queue rejected before the
    /// device saw them are counted there), or `nil` before activation.
    public var queueStatistics: QueueStatistics? { state.withLock { $0.queues.first?.statistics } }

    /// The features the driver accepted (0 before activation and after a reset).
    public var negotiatedFeatures: UInt64 { state.withLock { $0.features } }

    // MARK: - VirtioDevice

    public func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                         interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        state.withLock { state in
            state.queues = queues
            state.features = features
            state.interrupt = interrupt
            state.generation &+= 1
        }
    }

    /// Returns at once, even while a request is being served: that drain finds the generation
    /// changed and leaves the queue alone (the request's data may still land in the guest's
    /// buffer, inside guest RAM; Linux resets a disk only once its requests have completed).
    public func reset() {
        state.withLock { state in
            state.queues = []
            state.features = 0
            state.interrupt = nil
            state.held = nil
            state.generation &+= 1
        }
        // The timer may still fire; with nothing held and no queues it finds nothing to do.
    }

    /// Replaces the limits (full buckets, as Firecracker's PATCH does). A held request is
    /// retried at once, on the I/O thread, through the timer (so the calling thread makes a
    /// `timerfd_settime`, which its seccomp filter must allow).
    public func setRateLimit(_ limit: RateLimit) {
        state.withLock { state in
            state.limiter = RateLimiter(limit, clock: state.limiter.clock)
            if state.held != nil { throttleTimer.arm(afterNanoseconds: 1) }
        }
    }

    public func throttleTimerFired() {
        throttleTimer.acknowledge()
        serve(queue: 0, woken: true)
    }

    /// The bytes a request moves, for the bandwidth bucket: everything but the 16-byte header
    /// and the status byte.
    static func dataBytes(_ chain: DescriptorChain) -> UInt64 {
        let total = UInt64(chain.readableLength) + UInt64(chain.writableLength)
        return total > 17 ? total - 17 : 0
    }

    /// Drains the queue: every available request is served in order and completed, then the
    /// guest gets (at most) one interrupt for the batch; then the queue is watched for a while
    /// with the guest's kicks off (`BlockQueuePoll`), and what arrives is drained the same way.
    /// Requests are served synchronously on the calling thread (the I/O thread), one drain at a
    /// time; the queue's lock is taken only to take a request and to publish its answer, so vCPU
    /// threads touching the device (configuration reads, a reset) never wait behind a system call
    /// on the image.
    public func processQueue(_ index: Int) { serve(queue: index, woken: false) }

    /// What the drain does next.
    private enum Next {
        case serve(DescriptorChain)
        case skip
        /// The queue is empty.
        case empty
        /// Held back by the limiter, overtaken by a reset, or broken.
        case stop
    }

    /// `processQueue`, or (`woken`) the throttle timer's call.
    private func serve(queue index: Int, woken: Bool) {
        serving.withLock { serving in
            let started = state.withLock { state -> UInt64? in
                guard state.queues.indices.contains(index) else { return nil }
                // Held back by the limiter: the timer will call; a kick meanwhile changes nothing.
                if state.held != nil, !woken, throttleTimer.isArmed { return nil }
                serving.features = state.features
                if serving.poll.isEnabled { state.queues[index].disableNotifications() }
                return state.generation
            }
            guard let generation = started else { return }
            while true {
                let (served, last) = drain(queue: index, generation: generation, serving: &serving)
                let current = state.withLock { state -> Bool in
                    guard state.generation == generation else { return false }
                    state.queues[index].notifyGuestIfNeeded()
                    return true
                }
                guard current, case .empty = last else { break }
                if served > 0, serving.poll.isEnabled {
                    let found = poll(queue: index, generation: generation, nanoseconds: serving.poll.nextWindow)
                    serving.poll.record(found: found)
                    if found { continue }
                }
                // Kicks on again; a request that slipped in before that is drained now.
                let more = state.withLock { state -> Bool in
                    guard state.generation == generation, serving.poll.isEnabled else { return false }
                    return state.queues[index].enableNotifications()
                }
                if !more { break }
                state.withLock { state in state.queues[index].disableNotifications() }
            }
        }
    }

    /// Serves requests until the queue is empty (or the drain must stop); returns how many.
    ///
    /// Batch by batch: the reads and writes available (up to the first other request, which
    /// is served alone after them) are served together, and their answers are published in the
    /// order the guest made them once the whole batch is done. A FLUSH therefore waits for
    /// every write taken before it, and covers them all.
    ///
    /// The reads go to the workers one each; the writes are one job, served one after another.
    /// The host kernel takes a file's inode lock for every buffered write, so writes to one
    /// image cannot overlap anyway, and measured in the lab (`Scripts/bench.sh guest-io`),
    /// 1 MiB writes four at a time ran 9% slower than one after another, while 1 MiB reads
    /// four at a time ran 18% faster.
    private func drain(queue index: Int, generation: UInt64, serving: inout Serving) -> (Int, Next) {
        var served = 0
        while true {
            // The type is read once, here; each request is served as that type or fails.
            var batch: [DescriptorChain] = []
            var types: [UInt32] = []
            var alone: DescriptorChain?
            var last = Next.empty
            while batch.count < Int(Self.queueSize) {
                let next = next(queue: index, generation: generation)
                guard case let .serve(chain) = next else {
                    last = next
                    break
                }
                if let type = Self.batchedType(chain) {
                    batch.append(chain)
                    types.append(type)
                } else {
                    alone = chain
                    break
                }
            }
            if batch.isEmpty, alone == nil { return (served, last) }

            var used = [UInt32](repeating: 0, count: batch.count)
            let writes = batch.indices.filter { types[$0] == BlockRequestType.write }
            let reads = batch.indices.filter { types[$0] == BlockRequestType.read }
            // Job 0 is every write (first, so the calling thread starts on it), then one job per read.
            let writeJobs = writes.isEmpty ? 0 : 1
            let shared = serving
            used.withUnsafeMutableBufferPointer { used in
                // Each call writes its own elements of `used`; reads and writes change nothing
                // in `Serving` but the atomic `syncFailed`, so each job takes a copy.
                workers.run(writeJobs + reads.count) { job in
                    var copy = shared
                    if job < writeJobs {
                        for request in writes {
                            used[request] = serve(batch[request], state: &copy, expecting: BlockRequestType.write)
                        }
                    } else {
                        let request = reads[job - writeJobs]
                        used[request] = serve(batch[request], state: &copy, expecting: BlockRequestType.read)
                    }
                }
            }
            var answers = Array(zip(batch, used))
            if let alone { answers.append((alone, serve(alone, state: &serving))) }
            served += answers.count
            let go = state.withLock { state -> Bool in
                guard state.generation == generation else { return false }
                for (chain, length) in answers {
                    do throws(VirtqueueError) {
                        try state.queues[index].addUsed(head: chain.head, length: length)
                    } catch {
                        if error.isStructural { return false }
                    }
                }
                return true
            }
            if !go { return (served, .stop) }
            if alone == nil, batch.count < Int(Self.queueSize) { return (served, last) }
        }
    }

    /// IN or OUT, if the chain's header says one of them: the requests a batch serves together.
    /// Anything else (and a chain too short to say) is served alone, in order: `nil`.
    static func batchedType(_ chain: DescriptorChain) -> UInt32? {
        guard chain.readableLength >= UInt32(headerSize) else { return nil }
        var reader = chain.reader()
        guard let type = try? reader.readLE(UInt32.self),
              type == BlockRequestType.read || type == BlockRequestType.write else { return nil }
        return type
    }

    /// Watches `avail.idx` for up to `nanoseconds`: whether a request arrived.
    private func poll(queue index: Int, generation: UInt64, nanoseconds: UInt64) -> Bool {
        let deadline = RateLimiter.monotonicNow() + nanoseconds
        repeat {
            let found = state.withLock { state in
                state.generation == generation && state.queues[index].hasAvailable()
            }
            if found { return true }
        } while RateLimiter.monotonicNow() < deadline
        return false
    }

    /// The next request to serve (the one the limiter held, or the next available), if the
    /// activation `generation` is still current and the limiter lets it through.
    private func next(queue index: Int, generation: UInt64) -> Next {
        while true {
            let next = state.withLock { state -> Next in
                guard state.generation == generation else { return .stop }
                let chain: DescriptorChain
                do throws(VirtqueueError) {
                    if let held = state.held {
                        chain = held
                        state.held = nil
                    } else {
                        guard let popped = try state.queues[index].popAvailable() else { return .empty }
                        chain = popped
                    }
                } catch {
                    // A malformed chain was already handed back (used length 0) and counted by
                    // the queue; go on. A structural error broke the queue: it has asked for a
                    // reset and refuses work until then.
                    return error.isStructural ? .stop : .skip
                }
                guard state.limiter.consume(bytes: Self.dataBytes(chain)) else {
                    state.held = chain
                    counters.withLock { $0.throttled += 1 }
                    throttleTimer.arm(afterNanoseconds: state.limiter.nanosecondsUntil(bytes: Self.dataBytes(chain)))
                    return .stop
                }
                return .serve(chain)
            }
            if case .skip = next { continue }
            return next
        }
    }
}
