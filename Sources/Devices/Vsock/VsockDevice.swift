import GuestMemory
import HostSystem
import Synchronization
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// virtio-vsock (device type 19): stream sockets between the guest and host programs, with
/// Firecracker's host side — a Unix socket stands for the host (`VsockConfiguration`).
///
/// Three queues: the guest posts empty buffers on **rx** (0) for packets from the host, sends
/// its packets on **tx** (1), and the **event** queue (2) is for transport resets. What each
/// side of a connection does lives in its own file:
/// - `VsockTransmit.swift`: a packet from the guest — REQUEST connects to `uds_P`, RW writes to
///   the host socket, SHUTDOWN and RST close, credit updates move the window;
/// - `VsockReceive.swift`: filling rx buffers — control packets owed to the guest, and bytes
///   read from host sockets straight into guest memory, one connection after another;
/// - `VsockHostSide.swift`: the host's descriptors — the listener and its `CONNECT` lines,
///   connection sockets becoming readable or writable, the timer for connects the guest
///   never answers.
///
/// **Threads.** Everything runs on the I/O thread except `activate` and `reset`, which run on
/// the vCPU thread that wrote the status register; `reset` therefore only unwatches the
/// sockets and leaves closing them to the I/O thread (`wakeup`). All state sits behind one lock.
public final class VsockDevice: VirtioDevice {
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    public static let eventQueue = 2
    /// Connections (and host programs still sending their CONNECT line) at once.
    public static let maximumConnections = 1023
    /// The largest payload of one packet, as Linux sends them.
    public static let maximumPayload: UInt32 = 64 * 1024
    /// Resets for unknown connections that may wait for rx buffers.
    static let maximumQueuedResets = 1024
    /// How long a host program's CONNECT may wait for its line and for the guest's answer.
    static let connectTimeoutNanoseconds: UInt64 = 2_000_000_000
    /// The first port picked for a host program's connection; they go round in [2³⁰, 2³¹).
    static let firstHostPort: UInt32 = 1 << 30

    public let deviceType: UInt32 = 19
    public let queueMaxSizes: [UInt16] = [256, 256, 256]
    public let offeredFeatures: UInt64 = 0
    public let guestCID: UInt64
    public let listener: UnixListener
    /// Fires when a host program's connect has waited too long.
    public let timer = ThrottleTimer()
    /// Signalled by `reset` (on a vCPU thread) so that the I/O thread closes what it dropped.
    public let wakeup: EventFD

    struct PendingConnect {
        let socket: OwnedDescriptor
        var line: [UInt8] = []
        let deadline: UInt64
    }

    struct State {
        var active = false
        var queues: [Queue] = []
        var connections: [VsockConnectionKey: VsockConnection] = [:]
        var bySocket: [CInt: VsockConnectionKey] = [:]
        /// Connections with something for the rx queue, in turn; `readySet` mirrors it.
        var ready: [VsockConnectionKey] = []
        var readySet: Set<VsockConnectionKey> = []
        /// RSTs for packets that belong to no connection.
        var resets: [VsockHeader] = []
        /// Host programs that connected and have not finished their CONNECT line.
        var connects: [CInt: PendingConnect] = [:]
        var nextHostPort = VsockDevice.firstHostPort
        /// An rx chain taken from the ring for data that turned out not to be there yet.
        var parkedChain: DescriptorChain?
        /// Descriptors dropped on a vCPU thread, closed on the I/O thread.
        var graveyard: [OwnedDescriptor] = []
        /// `wakeup` was signalled to fill the rx queue once the I/O thread has seen every socket
        /// that became readable at the same time (so they all take turns from the start).
        var fillScheduled = false
        var statistics = VsockStatistics()
        var watcher: (any DescriptorWatcher)?
    }

    let state = Mutex(State())
    let clock: @Sendable () -> UInt64

    public init(configuration: VsockConfiguration,
                clock: @escaping @Sendable () -> UInt64 = RateLimiter.monotonicNow) throws(VsockError) {
        try configuration.validate()
        guestCID = configuration.guestCID
        listener = try configuration.bind()
        do { wakeup = try EventFD() } catch { throw .socket(.call("eventfd", path: configuration.udsPath, SystemError(code: error.errno))) }
        self.clock = clock
    }

    public var statistics: VsockStatistics { state.withLock { $0.statistics } }
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    /// `struct virtio_vsock_config`: the guest's CID, le64.
    public var configSpace: [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: guestCID >> (8 * $0)) } }

    /// Starts serving the host side: the I/O thread calls back through `watcher` for the
    /// listener and every connection from now on.
    public func start(watcher: any DescriptorWatcher) {
        state.withLock { $0.watcher = watcher }
        watcher.watch(listener.descriptor.raw, events: DescriptorEvents.readable) { [weak self] _ in self?.listenerReady() }
        watcher.watch(wakeup.raw, events: DescriptorEvents.readable) { [weak self] _ in self?.wokenUp() }
        if timer.isUsable {
            watcher.watch(timer.descriptor, events: DescriptorEvents.readable) { [weak self] _ in self?.timerFired() }
        }
    }

    public func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                         interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        state.withLock { s in
            s.queues = queues
            s.active = true
        }
    }

    /// The driver let go: every connection ends (the guest forgot its sockets), host programs
    /// see their sockets close.
    public func reset() {
        let signal = state.withLock { s -> Bool in
            s.active = false
            s.queues = []
            s.parkedChain = nil
            s.resets = []
            s.ready = []
            s.readySet = []
            for connection in s.connections.values {
                s.watcher?.unwatch(connection.socket.raw)
                s.graveyard.append(connection.socket)
            }
            s.statistics.connectionsRemoved += UInt64(s.connections.count)
            s.connections = [:]
            s.bySocket = [:]
            return !s.graveyard.isEmpty
        }
        if signal { wakeup.signal() }
    }

    public func processQueue(_ index: Int) {
        state.withLock { s in
            guard s.active else { return }
            switch index {
            case Self.transmitQueue: processTransmit(&s)
            case Self.receiveQueue: fillReceiveQueue(&s)
            default: break // the event queue: buffers for transport resets, which we keep
            }
        }
    }

    /// The I/O thread was woken to close what `reset` dropped, or to fill the rx queue.
    func wokenUp() {
        wakeup.drain()
        let dropped = state.withLock { s -> [OwnedDescriptor] in
            if s.fillScheduled {
                s.fillScheduled = false
                fillReceiveQueue(&s)
            }
            defer { s.graveyard = [] }
            return s.graveyard
        }
        _ = dropped // closed here, as the last references go
    }

    /// Fills the rx queue after the I/O thread's current batch of events.
    func scheduleFill(_ s: inout State) {
        guard !s.fillScheduled else { return }
        s.fillScheduled = true
        wakeup.signal()
    }
}

extension VsockDevice.State {
    /// Puts `key` in line for the rx queue, if it has something for the guest and is not there yet.
    mutating func markReady(_ key: VsockConnectionKey) {
        guard let connection = connections[key], connection.hasWorkForGuest, !readySet.contains(key) else { return }
        ready.append(key)
        readySet.insert(key)
    }

    /// Owes the guest a reset for a packet that belongs to no connection.
    mutating func queueReset(answering header: VsockHeader, guestCID: UInt64) {
        guard header.op != VsockOp.reset else { return }
        guard resets.count < VsockDevice.maximumQueuedResets else {
            statistics.resetsDropped += 1
            return
        }
        resets.append(VsockHeader(sourceCID: VsockCID.host, destinationCID: guestCID,
                                  sourcePort: header.destinationPort, destinationPort: header.sourcePort,
                                  type: header.type, op: VsockOp.reset))
    }

    /// Changes what the I/O thread watches `connection`'s socket for.
    mutating func setInterest(_ key: VsockConnectionKey, _ events: UInt32, device: VsockDevice) {
        guard var connection = connections[key], connection.interest != events else { return }
        connection.interest = events
        connections[key] = connection
        let fd = connection.socket.raw
        if events == 0 {
            watcher?.unwatch(fd)
        } else {
            watcher?.watch(fd, events: events) { [weak device] happened in device?.socketReady(fd, events: happened) }
        }
    }

    /// Forgets `key` and closes its socket (on the I/O thread).
    mutating func remove(_ key: VsockConnectionKey) {
        guard let connection = connections.removeValue(forKey: key) else { return }
        if connection.interest != 0 { watcher?.unwatch(connection.socket.raw) }
        bySocket[connection.socket.raw] = nil
        readySet.remove(key)
        statistics.connectionsRemoved += 1
    }

    /// Ends `key`: its socket closes now, and the guest is told with a reset.
    mutating func reset(_ key: VsockConnectionKey, guestCID: UInt64) {
        guard let connection = connections[key] else { return }
        statistics.connectionsReset += 1
        let header = VsockHeader(sourceCID: VsockCID.host, destinationCID: guestCID,
                                 sourcePort: key.hostPort, destinationPort: key.guestPort, op: VsockOp.reset)
        remove(connection.key)
        // Bounded like the others: a guest that keeps making and breaking connections without
        // posting rx buffers would otherwise grow the list for ever.
        if resets.count < VsockDevice.maximumQueuedResets { resets.append(header) } else { statistics.resetsDropped += 1 }
    }
}
