import CKVM
import GuestMemory
import Synchronization
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// virtio-net feature bits (`linux/virtio_net.h`; virtio 1.x "Network Device", feature bits).
public enum VirtioNetFeature {
    /// CSUM: the device takes packets with a partial checksum (the driver may send NEEDS_CSUM).
    public static let checksum: UInt64 = 1 << 0
    /// GUEST_CSUM: the driver takes packets with a partial checksum.
    public static let guestChecksum: UInt64 = 1 << 1
    /// MAC: `mac` in the configuration space is valid.
    public static let mac: UInt64 = 1 << 5
    /// GUEST_TSO4 / GUEST_TSO6 / GUEST_ECN: the driver takes large TCP segments.
    public static let guestTSO4: UInt64 = 1 << 7
    public static let guestTSO6: UInt64 = 1 << 8
    public static let guestECN: UInt64 = 1 << 9
    /// HOST_TSO4 / HOST_TSO6 / HOST_ECN: the device takes large TCP segments.
    public static let hostTSO4: UInt64 = 1 << 11
    public static let hostTSO6: UInt64 = 1 << 12
    public static let hostECN: UInt64 = 1 << 13
    /// MRG_RXBUF: a received packet may span several receive chains.
    public static let mergeableRxBuffers: UInt64 = 1 << 15
    /// STATUS: `status` in the configuration space is valid.
    public static let status: UInt64 = 1 << 16
}

/// `struct virtio_net_hdr_v1`: the 12 bytes in front of every frame, in both directions.
///
/// `flags` u8 @0, `gso_type` u8 @1, `hdr_len` le16 @2, `gso_size` le16 @4, `csum_start`
/// le16 @6, `csum_offset` le16 @8, `num_buffers` le16 @10.
public enum VirtioNetHeader {
    public static let size = 12
    /// `flags`: the checksum from `csum_start` on still has to be computed.
    public static let needsChecksum: UInt8 = 1
    /// `flags`: the checksum was already verified.
    public static let dataValid: UInt8 = 2
    /// `gso_type` values; ECN is a flag on top of a TCP type.
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoECN: UInt8 = 0x80
    /// Where `num_buffers` is.
    public static let numBuffersOffset = 10

    /// Whether `gsoType` is one the negotiated segmentation offloads allow.
    static func allows(gsoType: UInt8, tso4: Bool, tso6: Bool, ecn: Bool) -> Bool {
        let base = gsoType & ~gsoECN
        if gsoType & gsoECN != 0, !ecn || base == gsoNone { return false }
        switch base {
        case gsoNone: return true
        case gsoTCPv4: return tso4
        case gsoTCPv6: return tso6
        default: return false // UDP fragmentation and USO are never offered
        }
    }
}

/// What a net device has done, for tests, logs and metrics.
public struct NetStatistics: Sendable, Equatable {
    /// Frames sent to the host, and their bytes (Ethernet frame only, no virtio header).
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    /// TX chains refused: malformed chains, chains with device-writable buffers, frames
    /// shorter than an Ethernet header or longer than 65550 bytes, or headers asking for an
    /// offload that was not negotiated. Each is completed with length 0 and not sent.
    public var txMalformed: UInt64 = 0
    /// Frames dropped because the host had no room (EAGAIN or ENOBUFS). Not retried.
    public var txDroppedBusy: UInt64 = 0
    /// Frames the host refused (EIO while the interface is down, EINVAL for a header the
    /// kernel rejects, …).
    public var txErrors: UInt64 = 0
    /// Packets delivered to the guest, and their bytes (frame only).
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    /// Packets larger than the receive buffers the guest had posted; dropped.
    public var rxDroppedTooLarge: UInt64 = 0
    /// Packets using an offload the guest did not accept; dropped (cannot happen with a TAP
    /// whose offloads were set from the acked features; checked anyway).
    public var rxDroppedUnsupported: UInt64 = 0
    /// RX chains with fewer than 12 writable bytes, returned with length 0.
    public var rxMalformedBuffers: UInt64 = 0
    /// Failed reads other than EAGAIN (the device keeps watching the TAP, unless 64 fail in a
    /// row; then it waits for the next receive-queue kick), and end of file on a socket.
    public var rxErrors: UInt64 = 0
    /// Times reception paused because the guest had posted no receive buffers.
    public var rxStalls: UInt64 = 0
    /// Times reception, or a frame to send, waited for the rate limiter's timer.
    public var rxThrottled: UInt64 = 0
    public var txThrottled: UInt64 = 0

    public init() {}
}

/// virtio-net (device type 1) on a TAP device: queue 0 receives, queue 1 transmits.
///
/// **Transmit.** Each chain on queue 1 is a 12-byte `virtio_net_hdr_v1` and an Ethernet
/// frame, split across descriptors however the driver liked. Since the TAP device was set up
/// for 12-byte vnet headers, the packet goes to the host in one `writev`: the header from a
/// copy that was checked (the guest cannot change it after the check), the frame straight out
/// of guest memory. Chains with writable buffers, frames shorter than
/// 14 or longer than 65550 bytes, and headers asking for an offload that was not negotiated
/// are not sent. Every chain is completed with length 0. If the host has no room (EAGAIN) the
/// frame is dropped and counted rather than retried: the TAP queue is deep, the guest's
/// protocols recover from a lost frame, and keeping the chain would need a writability watch
/// for a case that practically never happens.
///
/// **Receive.** Packets are read from the TAP straight into the guest's oldest receive chain
/// with `readv`, header and all, then `num_buffers` is filled in (the TAP leaves it alone): 1,
/// or with MRG_RXBUF the number of chains the packet spans. Without GUEST_CSUM, `flags` is
/// cleared as the spec requires. A chain is taken from the ring before the read, so one that
/// finds the TAP empty is kept for the next packet ("parked") rather than handed back. What
/// does not fit the first chain lands in a spill buffer after it; with MRG_RXBUF it is copied
/// on into the next parked chains (so only packets larger than one guest buffer, such as
/// TSO segments, cost a copy, and a small packet's read spans one chain rather than every
/// parked one). A packet larger than the chains at hand is dropped (nothing is written past a
/// chain) and the chains are reused.
///
/// **Flow control.** With no receive chains posted the device must leave packets in the
/// kernel's queue, and with a level-triggered epoll it must also stop being told the TAP is
/// readable, or the I/O thread would spin. So the device says when it wants
/// `tapReadable()` calls: `wantsTapReadable`, and the handler given to
/// `setTapReadableHandler`, called on every change — false when the ring ran dry, true again
/// when the guest kicks the receive queue (which it does after refilling, because the queue
/// asked for a kick when it found the ring empty).
///
/// **Threads.** `processQueue` and `tapReadable` normally both run on the I/O thread, but
/// without ioeventfds a kick arrives on a vCPU thread, so all state sits behind one lock.
public final class NetDevice: VirtioDevice {
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    /// The default (and largest) size of each queue.
    public static let defaultQueueSize: UInt16 = 256
    /// An Ethernet header: the shortest frame the TAP accepts.
    public static let minFrameLength = 14
    /// The largest frame a driver may send with TSO (64 KiB of IP plus the Ethernet header);
    /// with the 12-byte header this is the 65562-byte buffer the spec talks about.
    public static let maxFrameLength = 65550
    static let maxPacketLength = VirtioNetHeader.size + maxFrameLength
    /// Packets handled per `tapReadable()` call before yielding to the other descriptors
    /// (the TAP stays readable, so a level-triggered epoll comes straight back).
    static let receiveBurst = 64
    /// Reads failing in a row, with no packet or EAGAIN between, before the device stops
    /// watching the TAP until the guest next kicks the receive queue.
    static let maxFailedReadsInARow = 64
    /// Receive chains held at once (with MRG_RXBUF, enough for a 64 KiB packet).
    static let maxParkedChains = 64
    /// The host buffer for the slow path and the spill-over: more than the largest packet.
    static let bufferSize = 0x11000
    /// `status` bit 0.
    static let linkUp: UInt16 = 1

    public let deviceType = VirtioDeviceID.net
    public let queueMaxSizes: [UInt16]
    public let offeredFeatures: UInt64
    /// The guest's MAC address, as the driver finds it in the configuration space.
    public let mac: MACAddress
    /// Where frames go: the TAP device (or a test's socket pair).
    public let endpoint: any PacketEndpoint
    /// The host kernel's data path, when the user asked for it (`NetVhost.swift`).
    public let vhost: VhostNet?

    struct State {
        var active = false
        var features: UInt64 = 0
        /// The offloads set on the endpoint: what the host may send the guest.
        var receiveOffloads: TapOffloads = []
        var queues: [Queue] = []
        /// Receive chains taken from the ring and not yet used, oldest first, and the room
        /// they offer together.
        var parked: [DescriptorChain] = []
        var parkedCapacity = 0
        var wantsInput = false
        /// What the handler was last told (`nil`: nothing yet).
        var reported: Bool?
        var handler: (@Sendable (Bool) -> Void)?
        var statistics = NetStatistics()
        /// Consecutive `tapReadable()` calls whose read failed.
        var failedReadsInARow = 0
        var limits: NetLimits
        /// The queues' ioeventfds, which the kernel's data path watches (`useDoorbells`).
        var doorbells: [CInt] = []
        /// The kernel moves the frames of this activation; the device only raises interrupts.
        var vhostRunning = false
        var interrupt: VirtioInterrupt?
        let buffer = PacketBuffer(count: NetDevice.bufferSize)
    }

    let state: Mutex<State>
    /// Wakes a direction the rate limiter held back (`NetThrottle.swift`).
    public let throttleTimer = ThrottleTimer()

    /// A net device on `endpoint`, with `mac` or a random locally administered address. It
    /// offers MAC, STATUS, MRG_RXBUF, and the checksum/TSO features the endpoint supports, in
    /// both directions. `receiveLimit` and `transmitLimit` are the rate limits of each direction.
    public init(endpoint: any PacketEndpoint, mac: MACAddress? = nil,
                queueSize: UInt16 = NetDevice.defaultQueueSize,
                receiveLimit: RateLimit = .unlimited, transmitLimit: RateLimit = .unlimited,
                vhost: VhostNet? = nil,
                clock: @escaping @Sendable () -> UInt64 = RateLimiter.monotonicNow) {
        let usable = throttleTimer.isUsable
        state = Mutex(State(limits: NetLimits(receive: usable ? receiveLimit : .unlimited,
                                              transmit: usable ? transmitLimit : .unlimited, clock: clock)))
        self.endpoint = endpoint
        self.vhost = vhost
        self.mac = mac ?? MACAddress.random()
        queueMaxSizes = [queueSize, queueSize]
        var features = VirtioNetFeature.mac | VirtioNetFeature.status
        // The kernel's data path fills in num_buffers itself, if it knows how.
        if vhost.map({ $0.features & VirtioNetFeature.mergeableRxBuffers != 0 }) ?? true {
            features |= VirtioNetFeature.mergeableRxBuffers
        }
        let offloads = endpoint.supportedOffloads.consistent
        if offloads.contains(.checksum) { features |= VirtioNetFeature.checksum | VirtioNetFeature.guestChecksum }
        if offloads.contains(.tso4) { features |= VirtioNetFeature.hostTSO4 | VirtioNetFeature.guestTSO4 }
        if offloads.contains(.tso6) { features |= VirtioNetFeature.hostTSO6 | VirtioNetFeature.guestTSO6 }
        if offloads.contains(.tsoECN) { features |= VirtioNetFeature.hostECN | VirtioNetFeature.guestECN }
        offeredFeatures = features
    }

    /// Opens the TAP device `configuration` names and builds the device on it, with `vhost`
    /// (opened by the caller when the configuration asks for it) as its data path.
    public convenience init(configuration: NetConfiguration, vhost: VhostNet? = nil) throws(TapError) {
        self.init(endpoint: try Tap.open(configuration.tap), mac: configuration.mac,
                  receiveLimit: configuration.receiveLimit, transmitLimit: configuration.transmitLimit, vhost: vhost)
    }

    // MARK: - What the launcher watches

    /// The descriptor to watch for readability (EPOLLIN) while `wantsTapReadable` is true.
    public var tapDescriptor: CInt { endpoint.fileDescriptor }

    /// Whether the device wants `tapReadable()` calls now: false before activation, after a
    /// reset, and while the guest has no receive buffers posted.
    public var wantsTapReadable: Bool { state.withLock { $0.wantsInput } }

    /// `handler(true)` when the launcher should start watching `tapDescriptor`,
    /// `handler(false)` when it should stop. Called at once with the current answer, then on
    /// every change, from whichever thread caused it (the I/O thread, or a vCPU thread that
    /// kicked the queue without an ioeventfd). It runs with the device's lock held: it may
    /// add or remove the descriptor from an epoll set, but must not call back into the device.
    public func setTapReadableHandler(_ handler: (@Sendable (Bool) -> Void)?) {
        state.withLock { s in
            s.handler = handler
            s.reported = nil
            report(&s)
        }
    }

    /// The TAP descriptor is readable: move packets into the guest's receive chains. Call on
    /// the I/O thread.
    public func tapReadable() {
        state.withLock { s in
            guard s.active else {
                setWantsInput(false, &s)
                return
            }
            receive(&s)
        }
    }

    public var statistics: NetStatistics { state.withLock { $0.statistics } }

    // MARK: - VirtioDevice

    /// `mac[6]` at 0, `le16 status` at 6 (link up).
    public var configSpace: [UInt8] {
        mac.bytes + [UInt8(truncatingIfNeeded: NetDevice.linkUp), UInt8(truncatingIfNeeded: NetDevice.linkUp >> 8)]
    }

    public func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                         interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        guard queues.count == 2 else { throw DeviceActivationError("virtio-net needs 2 queues, got \(queues.count)") }
        let offloads = NetDevice.receiveOffloads(for: features).intersection(endpoint.supportedOffloads).consistent
        do { try endpoint.setOffloads(offloads) } catch { throw DeviceActivationError("\(error)") }
        try state.withLock { s throws(DeviceActivationError) in
            if let vhost { try startVhost(vhost, memory: memory, queues: queues, features: features, &s) }
            s.active = true
            s.features = features
            s.receiveOffloads = offloads
            s.queues = queues
            s.interrupt = interrupt
            s.parked = []
            s.parkedCapacity = 0
            s.failedReadsInARow = 0
            // Under vhost the kernel reads the TAP; lguest must not.
            setWantsInput(vhost == nil && queues[NetDevice.receiveQueue].isEnabled, &s)
        }
    }

    public func processQueue(_ index: Int) {
        state.withLock { s in
            // Under vhost the kernel takes the kicks: none should reach us, and none is served here.
            guard s.active, !s.vhostRunning else { return }
            switch index {
            case NetDevice.receiveQueue: receive(&s)
            case NetDevice.transmitQueue: transmit(&s, woken: false)
            default: break
            }
        }
    }

    public func reset() {
        state.withLock { s in
            if s.vhostRunning { vhost?.stop(queues: queueMaxSizes.count) }
            s.vhostRunning = false
            s.interrupt = nil
            s.active = false
            s.features = 0
            s.receiveOffloads = []
            s.queues = []
            s.parked = []
            s.parkedCapacity = 0
            s.limits.heldFrame = nil
            s.limits.receiveThrottled = false
            setWantsInput(false, &s)
        }
        // Back to "the host finishes every packet" until a driver says otherwise.
        try? endpoint.setOffloads([])
    }

    /// The TUN offloads the acked GUEST_* features ask for (before making them consistent).
    static func receiveOffloads(for features: UInt64) -> TapOffloads {
        var offloads: TapOffloads = []
        if features & VirtioNetFeature.guestChecksum != 0 { offloads.insert(.checksum) }
        if features & VirtioNetFeature.guestTSO4 != 0 { offloads.insert(.tso4) }
        if features & VirtioNetFeature.guestTSO6 != 0 { offloads.insert(.tso6) }
        if features & VirtioNetFeature.guestECN != 0 { offloads.insert(.tsoECN) }
        return offloads
    }

    // MARK: - Interest in the TAP descriptor

    func setWantsInput(_ wants: Bool, _ s: inout State) {
        s.wantsInput = wants
        report(&s)
    }

    private func report(_ s: inout State) {
        guard let handler = s.handler, s.reported != s.wantsInput else { return }
        s.reported = s.wantsInput
        handler(s.wantsInput)
    }

    // MARK: - Transmit (guest → host)

    /// Sends what the guest queued; `woken` by the throttle timer rather than a kick.
    ///
    /// While it drains, the guest's kicks are off (the frames it adds meanwhile are found
    /// anyway); once the ring is empty they are on again, and a frame that slipped in before
    /// that is sent too.
    func transmit(_ s: inout State, woken: Bool) {
        let queue = NetDevice.transmitQueue
        // A frame held back by the limiter: the timer will call; a kick meanwhile does nothing.
        if s.limits.heldFrame != nil, !woken, throttleTimer.isArmed { return }
        s.queues[queue].disableNotifications()
        while true {
            guard case .empty = sendAvailable(&s) else {
                s.queues[queue].enableNotifications()
                break
            }
            // Kicks on again; a frame that slipped in before that is sent now.
            guard s.queues[queue].enableNotifications() else { break }
            s.queues[queue].disableNotifications()
        }
        s.queues[queue].notifyGuestIfNeeded()
    }

    /// Why `sendAvailable` stopped.
    private enum TransmitStop { case empty, held, broken }

    /// Sends frames until the ring is empty, the limiter holds one back, or the queue broke.
    private func sendAvailable(_ s: inout State) -> TransmitStop {
        let queue = NetDevice.transmitQueue
        while true {
            let chain: DescriptorChain
            do throws(VirtqueueError) {
                if let held = s.limits.heldFrame {
                    chain = held
                    s.limits.heldFrame = nil
                } else {
                    guard let next = try s.queues[queue].popAvailable() else { return .empty }
                    chain = next
                }
                guard mayTransmit(chain, &s) else { return .held }
            } catch {
                if error.isStructural { return .broken }
                s.statistics.txMalformed += 1 // already returned to the driver by the queue
                continue
            }
            send(chain, &s)
            do { try s.queues[queue].addUsed(head: chain.head, length: 0) } catch { return .broken }
        }
    }

    /// Sends one chain's packet to the endpoint, or counts why not.
    private func send(_ chain: DescriptorChain, _ s: inout State) {
        let length = Int(chain.readableLength)
        guard chain.readableCount == chain.descriptors.count,
              length >= VirtioNetHeader.size + NetDevice.minFrameLength,
              length <= NetDevice.maxPacketLength
        else {
            s.statistics.txMalformed += 1
            return
        }
        let fd = endpoint.fileDescriptor
        let features = s.features
        let outcome: (written: Int, error: Int32)
        // The header is copied out of guest memory, checked, and sent from the copy, so the
        // guest cannot change it between the check and the send. (Only `flags` and `gso_type`
        // are checked; what else the kernel reads from it, it checks itself.)
        if chain.readable.count <= GuestIOVectors.maxVectors {
            // Safe: the header is the first 12 bytes of the host buffer.
            let header = UnsafeMutableRawBufferPointer(rebasing: s.buffer.bytes[0 ..< VirtioNetHeader.size])
            var reader = chain.reader()
            guard (try? reader.read(into: header)) != nil,
                  NetDevice.transmitHeaderAllowed(flags: header[0], gsoType: header[1], features: features)
            else {
                s.statistics.txMalformed += 1
                return
            }
            // The frame goes out straight from guest memory: the chain's own descriptors are the
            // iovecs, behind the header's copy.
            let result = GuestIOVectors.with(chain.readable, in: chain.memory, replacingHead: header) { vectors -> (Int, Int32) in
                // Safe: each iovec covers the header copy or a readable guest buffer the chain
                // walk checked, valid until `with` returns.
                retryingInterrupts { writev(fd, vectors.baseAddress, Int32(vectors.count)) }
            }
            guard let result else {
                s.statistics.txMalformed += 1
                return
            }
            outcome = result
        } else {
            // A chain in more pieces than one writev should span: copy it out first.
            var copier = chain.reader()
            // Safe: `length` ≤ maxPacketLength < bufferSize, so the range lies inside the buffer.
            let staging = UnsafeMutableRawBufferPointer(rebasing: s.buffer.bytes[0 ..< length])
            guard (try? copier.read(into: staging)) != nil,
                  NetDevice.transmitHeaderAllowed(flags: staging[0], gsoType: staging[1], features: features)
            else {
                s.statistics.txMalformed += 1
                return
            }
            // Safe: `staging` holds exactly `length` bytes of the host buffer.
            outcome = retryingInterrupts { write(fd, staging.baseAddress, length) }
        }

        if outcome.written == length {
            s.statistics.txPackets += 1
            s.statistics.txBytes += UInt64(length - VirtioNetHeader.size)
        } else if outcome.written < 0, [EAGAIN, EWOULDBLOCK, ENOBUFS].contains(outcome.error) {
            s.statistics.txDroppedBusy += 1
        } else {
            s.statistics.txErrors += 1
        }
    }

    /// The driver may only ask for the offloads it negotiated: NEEDS_CSUM needs CSUM, and
    /// each GSO type its HOST_TSO feature.
    static func transmitHeaderAllowed(_ header: [UInt8], features: UInt64) -> Bool {
        transmitHeaderAllowed(flags: header[0], gsoType: header[1], features: features)
    }

    static func transmitHeaderAllowed(flags: UInt8, gsoType: UInt8, features: UInt64) -> Bool {
        if flags & VirtioNetHeader.needsChecksum != 0, features & VirtioNetFeature.checksum == 0 { return false }
        return VirtioNetHeader.allows(gsoType: gsoType,
                                      tso4: features & VirtioNetFeature.hostTSO4 != 0,
                                      tso6: features & VirtioNetFeature.hostTSO6 != 0,
                                      ecn: features & VirtioNetFeature.hostECN != 0)
    }

    // MARK: - Receive (host → guest)

    private enum ReceiveOutcome {
        /// A packet reached the guest.
        case delivered
        /// A packet was read and dropped; try the next one.
        case dropped
        /// The endpoint has nothing to read now.
        case wouldBlock
        /// The guest has no receive chain posted.
        case noBuffers
        /// A read failed: counted, and the next readiness tries again.
        case readFailed
        /// Reading cannot go on (end of file, a broken ring, too many failed reads in a row).
        case failed
    }

    /// Delivers up to `receiveBurst` packets, then interrupts the guest if it wants that, and
    /// updates whether the device wants to hear about the TAP.
    func receive(_ s: inout State) {
        // Out of tokens: the TAP is not watched until the throttle timer.
        guard !s.limits.receiveThrottled, mayReceive(&s) else {
            setWantsInput(false, &s)
            return
        }
        var outcome = ReceiveOutcome.delivered
        burst: for _ in 0 ..< NetDevice.receiveBurst {
            guard mayReceive(&s) else { break }
            outcome = receiveOne(&s)
            if case .readFailed = outcome { s.failedReadsInARow += 1 } else { s.failedReadsInARow = 0 }
            switch outcome {
            case .delivered, .dropped: continue
            case .wouldBlock, .noBuffers, .failed, .readFailed: break burst
            }
        }
        // A read that fails now and then leaves the TAP watched, or the posted buffers would
        // wait for a kick the guest has no reason to send; one that always fails (a deleted
        // TAP stays readable with an error) must not spin the I/O thread.
        if case .readFailed = outcome, s.failedReadsInARow >= NetDevice.maxFailedReadsInARow { outcome = .failed }
        s.queues[NetDevice.receiveQueue].notifyGuestIfNeeded()
        switch outcome {
        case .noBuffers:
            if s.wantsInput { s.statistics.rxStalls += 1 }
            setWantsInput(false, &s)
        case .failed:
            setWantsInput(false, &s)
        case .delivered, .dropped, .wouldBlock, .readFailed:
            setWantsInput(!s.limits.receiveThrottled, &s)
        }
    }

    private func receiveOne(_ s: inout State) -> ReceiveOutcome {
        let mergeable = s.features & VirtioNetFeature.mergeableRxBuffers != 0
        guard fillReceiveChains(&s, mergeable: mergeable) else { return .failed }
        guard let first = s.parked.first else { return .noBuffers }
        let firstCapacity = Int(first.writableLength)
        // Without mergeable buffers a packet must fit the oldest chain; with them it may go on
        // into every parked chain.
        let capacity = mergeable ? s.parkedCapacity : firstCapacity

        let fd = endpoint.fileDescriptor
        let buffer = s.buffer.bytes
        // Every writable buffer of the chain is packet room: its descriptors are the iovecs.
        let zeroCopy = first.writable.count < GuestIOVectors.maxVectors
        var count: Int
        var error: Int32 = 0
        if zeroCopy {
            // The spill buffer after the first chain's buffers takes whatever does not fit, so an
            // oversized packet shows up as a count above `capacity` and never overruns a chain.
            guard let result = GuestIOVectors.with(first.writable, in: first.memory, extra: buffer, { vectors -> (Int, Int32) in
                // Safe: the iovecs cover the chain's writable buffers (checked by the chain walk)
                // and the host buffer, all valid until `with` returns; the kernel writes no more.
                retryingInterrupts { readv(fd, vectors.baseAddress, Int32(vectors.count)) }
            }) else { return .failed }
            (count, error) = result
            // Filled to the last byte: the packet may have been cut short, so it is too large.
            if count >= firstCapacity + buffer.count { count = Int.max }
        } else {
            // Safe: reads at most `buffer.count` bytes into the host buffer.
            (count, error) = retryingInterrupts { read(fd, buffer.baseAddress, buffer.count) }
            if count >= buffer.count { count = Int.max } // may have been cut short: too large
        }

        if count < 0 {
            if error == EAGAIN || error == EWOULDBLOCK { return .wouldBlock }
            s.statistics.rxErrors += 1
            return .readFailed
        }
        if count == 0 {
            // End of file: the other end of a socket went away. A TAP never does this.
            s.statistics.rxErrors += 1
            return .failed
        }
        guard count >= VirtioNetHeader.size else {
            s.statistics.rxErrors += 1
            return .dropped
        }
        guard count <= capacity else {
            s.statistics.rxDroppedTooLarge += 1
            return .dropped
        }

        // How many chains the packet fills, and what the host buffer still holds: the part
        // after the first chain (zero-copy), or the whole packet.
        var chains = 0
        var left = count
        var offset = 0
        while left > 0 {
            let take = min(Int(s.parked[chains].writableLength), left)
            if chains > 0 || !zeroCopy {
                var writer = s.parked[chains].writer()
                // Safe: the host buffer holds the packet from byte `zeroCopy ? firstCapacity : 0`
                // on, and `count` is below that plus `buffer.count` (checked above).
                let piece = UnsafeRawBufferPointer(rebasing: buffer[offset ..< offset + take])
                guard (try? writer.write(bytes: piece)) != nil else { return .failed }
                offset += take
            }
            left -= take
            chains += 1
        }

        guard finishHeader(in: first, chains: chains, offloads: s.receiveOffloads) else {
            s.statistics.rxDroppedUnsupported += 1
            return .dropped
        }
        // Every chain's used element first, then one used.idx store: a driver polling the ring
        // must never see the first chain, whose `num_buffers` promises the others, without them.
        left = count
        do throws(VirtqueueError) {
            for index in 0 ..< chains {
                let take = min(Int(s.parked[index].writableLength), left)
                left -= take
                try s.queues[NetDevice.receiveQueue].stageUsed(head: s.parked[index].head, length: UInt32(take))
            }
            try s.queues[NetDevice.receiveQueue].publishUsed()
        } catch {
            unpark(chains, &s) // the queue is broken: the driver must reset the device
            return .failed
        }
        unpark(chains, &s)
        s.limits.receive.charge(bytes: UInt64(count - VirtioNetHeader.size))
        s.statistics.rxPackets += 1
        s.statistics.rxBytes += UInt64(count - VirtioNetHeader.size)
        return .delivered
    }

    /// Takes receive chains from the ring until there is one (or, with mergeable buffers,
    /// room for the largest packet). Chains too small for a header go straight back with
    /// length 0. Returns false if the ring is broken.
    private func fillReceiveChains(_ s: inout State, mergeable: Bool) -> Bool {
        let queue = NetDevice.receiveQueue
        while s.parked.count < NetDevice.maxParkedChains,
              s.parked.isEmpty || (mergeable && s.parkedCapacity < NetDevice.maxPacketLength) {
            let chain: DescriptorChain
            do throws(VirtqueueError) {
                guard let next = try s.queues[queue].popAvailable() else { return true }
                chain = next
            } catch {
                if error.isStructural { return false }
                continue // the queue returned the malformed chain and counted it
            }
            guard chain.writableLength >= UInt32(VirtioNetHeader.size) else {
                s.statistics.rxMalformedBuffers += 1
                do { try s.queues[queue].addUsed(head: chain.head, length: 0) } catch { return false }
                continue
            }
            s.parked.append(chain)
            s.parkedCapacity += Int(chain.writableLength)
        }
        return true
    }

    /// Forgets the oldest `count` parked chains (they were completed).
    private func unpark(_ count: Int, _ s: inout State) {
        for parked in s.parked.prefix(count) { s.parkedCapacity -= Int(parked.writableLength) }
        s.parked.removeFirst(count)
    }

    /// `flags` and `gso_type`: the first two bytes the host wrote into `chain`, wherever the
    /// driver split its buffers.
    private static func headerStart(of chain: DescriptorChain) -> (UInt8, UInt8)? {
        var bytes: (UInt8, UInt8) = (0, 0)
        var found = 0
        for buffer in chain.writable {
            var offset: UInt64 = 0
            while offset < UInt64(buffer.length), found < 2 {
                guard let byte = try? chain.memory.read(UInt8.self, at: buffer.address + offset) else { return nil }
                if found == 0 { bytes.0 = byte } else { bytes.1 = byte }
                found += 1
                offset += 1
            }
            if found == 2 { return bytes }
        }
        return nil
    }

    /// Checks the header the host wrote into `chain` against what the guest accepted, and
    /// fills in what is ours to fill: `num_buffers`, and `flags` cleared without GUEST_CSUM.
    private func finishHeader(in chain: DescriptorChain, chains: Int, offloads: TapOffloads) -> Bool {
        guard let (headerFlags, gsoType) = NetDevice.headerStart(of: chain) else { return false }
        var flags = headerFlags
        if !offloads.contains(.checksum) {
            // Without GUEST_CSUM the device "MUST set flags to zero"; a partial checksum the
            // guest cannot finish makes the packet useless.
            guard flags & VirtioNetHeader.needsChecksum == 0 else { return false }
            flags = 0
        }
        guard VirtioNetHeader.allows(gsoType: gsoType, tso4: offloads.contains(.tso4),
                                     tso6: offloads.contains(.tso6), ecn: offloads.contains(.tsoECN))
        else { return false }
        // Usually the whole header is in the first buffer: write the two fields in place.
        if let buffer = chain.writable.first, buffer.length >= UInt32(VirtioNetHeader.size) {
            let numBuffers = buffer.address + UInt64(VirtioNetHeader.numBuffersOffset)
            return (try? chain.memory.write(flags, at: buffer.address)) != nil
                && (try? chain.memory.write(UInt16(chains), at: numBuffers)) != nil
        }
        var writer = chain.writer()
        do throws(VirtqueueError) {
            try writer.writeLE(flags)
            try writer.advance(by: VirtioNetHeader.numBuffersOffset - 1)
            try writer.writeLE(UInt16(chains))
        } catch {
            return false
        }
        return true
    }
}
