import GuestMemory
import Synchronization
import Virtio

/// virtio-balloon (device type 5): the host asks the guest for memory back, and the guest
/// hands over pages it promises not to touch, which the host then frees.
///
/// The host sets a target, `num_pages` in the configuration space (4 KiB pages whatever the
/// guest's page size), and raises a configuration-change interrupt; the guest's driver
/// allocates pages until its balloon holds that many, tells the device their frame numbers on
/// the **inflate** queue, and writes how many it holds to `actual`. Each inflated page is given
/// back to the host (`GuestMemory.discard`: `MADV_DONTNEED` on our anonymous memory), so the
/// process's resident memory shrinks; when the target drops, the guest names pages on the
/// **deflate** queue and uses them again, and they fault back in as zeroes. Nothing is needed
/// for that, since we do not offer `VIRTIO_BALLOON_F_MUST_TELL_HOST`.
///
/// Optional parts, each a feature bit the user turns on:
/// - `DEFLATE_ON_OOM`: the guest deflates by itself when it runs out of memory;
/// - `STATS_VQ`: the guest posts a buffer of (tag, value) statistics on the **stats** queue;
///   the device keeps it, and every `stats_polling_interval_s` hands it back, which is the
///   guest's cue to refill it with fresh numbers and post it again (BalloonRequests.swift);
/// - `REPORTING`: the guest reports ranges of free memory on the **reporting** queue, which
///   the host discards like inflated pages, and the guest may use again without asking.
///
/// Queue numbers follow the features the driver accepted: inflate 0, deflate 1, then stats if
/// negotiated, then reporting if negotiated — a queue that does not exist takes no number (as
/// Linux's `virtio_find_vqs` counts them), so a driver without statistics finds reporting at 2.
///
/// **Threads.** Queue work and the statistics timer run on the I/O thread; `configSpace`,
/// `writeConfig`, `activate` and `reset` on vCPU threads; `setTarget` and
/// `setStatisticsInterval` on whichever thread the control plane uses. All behind one lock.
public final class BalloonDevice: VirtioDevice {
    public static let queueSize: UInt16 = 256
    /// The balloon's page, whatever the guest's: frame numbers are addresses shifted by 12.
    public static let pageSize: UInt64 = 4096

    /// Feature bits (virtio spec, "Memory Balloon Device").
    public enum Feature {
        public static let statisticsQueue: UInt64 = 1 << 1
        public static let deflateOnOOM: UInt64 = 1 << 2
        public static let freePageReporting: UInt64 = 1 << 5
    }

    /// What each queue of an activation is for.
    enum Role { case inflate, deflate, statistics, reporting }

    public let deviceType: UInt32 = VirtioDeviceID.balloon
    public let queueMaxSizes: [UInt16]
    public let offeredFeatures: UInt64
    /// Fires when the guest's statistics are due: the launcher watches it on the I/O thread and
    /// calls `statisticsTimerFired()`.
    public let statisticsTimer = ThrottleTimer()

    struct State {
        var targetPages: UInt32
        var actualPages: UInt32 = 0
        var statisticsInterval: UInt16
        var memory: GuestMemory?
        var queues: [Queue] = []
        var roles: [Role] = []
        var interrupt: VirtioInterrupt?
        /// The statistics buffer the device holds until the next poll (its head).
        var heldStatistics: UInt16?
        var timerArmed = false
        var guestStatistics: [BalloonStat: UInt64] = [:]
        var counters = BalloonStatistics()
    }

    let state: Mutex<State>
    let deflateOnOOM: Bool
    let freePageReporting: Bool

    public init(configuration: BalloonConfiguration) {
        var features: UInt64 = 0
        var queues = [Self.queueSize, Self.queueSize]
        if configuration.statisticsEnabled {
            features |= Feature.statisticsQueue
            queues.append(Self.queueSize)
        }
        if configuration.deflateOnOOM { features |= Feature.deflateOnOOM }
        if configuration.freePageReporting {
            features |= Feature.freePageReporting
            queues.append(Self.queueSize)
        }
        offeredFeatures = features
        queueMaxSizes = queues
        deflateOnOOM = configuration.deflateOnOOM
        freePageReporting = configuration.freePageReporting
        state = Mutex(State(targetPages: configuration.targetPages,
                            statisticsInterval: configuration.statisticsIntervalSeconds))
    }

    public var statistics: BalloonStatistics { state.withLock { $0.counters } }

    public var status: BalloonStatus {
        state.withLock { s in
            BalloonStatus(targetPages: s.targetPages, actualPages: s.actualPages, deflateOnOOM: deflateOnOOM,
                          statisticsIntervalSeconds: s.statisticsInterval, freePageReporting: freePageReporting,
                          guestStatistics: s.guestStatistics)
        }
    }

    // MARK: - Configuration space: le32 num_pages (ours), le32 actual (the guest's)

    public var configSpace: [UInt8] {
        let (target, actual) = state.withLock { ($0.targetPages, $0.actualPages) }
        return (0 ..< 4).map { UInt8(truncatingIfNeeded: target >> (8 * $0)) }
            + (0 ..< 4).map { UInt8(truncatingIfNeeded: actual >> (8 * $0)) }
    }

    /// The driver writes `actual` (any width the transport allows); `num_pages` is ours, and a
    /// write to it is ignored and counted.
    public func writeConfig(offset: Int, bytes: [UInt8]) {
        state.withLock { s in
            for (i, byte) in bytes.enumerated() {
                let at = offset + i
                guard (4 ..< 8).contains(at) else { s.counters.malformed += 1; continue }
                let shift = UInt32(8 * (at - 4))
                s.actualPages = (s.actualPages & ~(0xFF << shift)) | UInt32(byte) << shift
            }
        }
    }

    /// Asks the guest to make the balloon `pages` 4 KiB pages large: a configuration-change
    /// interrupt if the driver is there, otherwise it reads the target when it comes.
    public func setTarget(pages: UInt32) {
        let interrupt = state.withLock { s -> VirtioInterrupt? in
            s.targetPages = pages
            return s.interrupt
        }
        interrupt?.signalConfigChange()
    }

    /// Changes how often statistics are asked for; the next request goes out at once. They
    /// can be neither turned on nor off: the statistics queue exists or it does not.
    public func setStatisticsInterval(seconds: UInt16) throws(BalloonError) {
        try state.withLock { s throws(BalloonError) in
            guard (s.statisticsInterval == 0) == (seconds == 0) else { throw .statisticsStateChange }
            s.statisticsInterval = seconds
            guard seconds > 0, s.heldStatistics != nil else { return }
            statisticsTimer.arm(afterNanoseconds: 1)
            s.timerArmed = true
        }
    }

    // MARK: - Life cycle

    public func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                         interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        var roles: [Role] = [.inflate, .deflate]
        if features & Feature.statisticsQueue != 0 { roles.append(.statistics) }
        if features & Feature.freePageReporting != 0 { roles.append(.reporting) }
        state.withLock { s in
            s.memory = memory
            s.queues = queues
            s.roles = roles
            s.interrupt = interrupt
            s.heldStatistics = nil
        }
    }

    /// The driver let go: the queues (and a held statistics buffer) go; the target stays. The
    /// timer is left to fire into an empty device: setting it is the I/O thread's business.
    public func reset() {
        state.withLock { s in
            s.memory = nil
            s.queues = []
            s.roles = []
            s.interrupt = nil
            s.heldStatistics = nil
            s.actualPages = 0
        }
    }

    public func processQueue(_ index: Int) {
        state.withLock { s in
            guard let memory = s.memory, s.roles.indices.contains(index), s.queues.indices.contains(index) else { return }
            let role = s.roles[index]
            drain(&s, queue: index) { s, chain in
                switch role {
                case .inflate: return inflate(chain, memory: memory, &s)
                case .deflate: return deflate(chain, memory: memory, &s)
                case .reporting: return report(chain, memory: memory, &s)
                case .statistics: return receiveStatistics(chain, queue: index, &s)
                }
            }
        }
    }

    /// The statistics are due: hand the guest its buffer back, so it refills it. The timer is
    /// set again when the refilled buffer arrives.
    public func statisticsTimerFired() {
        statisticsTimer.acknowledge()
        state.withLock { s in
            s.timerArmed = false
            guard let head = s.heldStatistics, let index = s.roles.firstIndex(of: .statistics),
                  s.queues.indices.contains(index) else { return }
            s.heldStatistics = nil
            do throws(VirtqueueError) { try s.queues[index].addUsed(head: head, length: 0) }
            catch { s.counters.statisticsFailures += 1 }
            s.queues[index].notifyGuestIfNeeded()
        }
    }

    /// Takes every chain the driver published on queue `index` and hands each to `serve`, which
    /// says whether to return it now (with a used length of 0: the balloon writes nothing back).
    private func drain(_ s: inout State, queue index: Int, _ serve: (inout State, DescriptorChain) -> Bool) {
        while true {
            let chain: DescriptorChain
            do throws(VirtqueueError) {
                guard let next = try s.queues[index].popAvailable() else { break }
                chain = next
            } catch {
                s.counters.malformed += 1
                if error.isStructural { break } else { continue }
            }
            guard serve(&s, chain) else { continue }
            do throws(VirtqueueError) { try s.queues[index].addUsed(head: chain.head, length: 0) }
            catch { s.counters.malformed += 1 }
        }
        s.queues[index].notifyGuestIfNeeded()
    }
}
