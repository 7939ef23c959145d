import Virtio

/// A net device's rate limiters, one per direction as in Firecracker (`rx_rate_limiter`,
/// `tx_rate_limiter`), and what each holds back.
///
/// Transmit: a frame takes one operation and its bytes before it is sent; a frame the limiter
/// refuses is held and the transmit queue waits for the timer. Receive: the size of a packet
/// is known only once it is read, so reading starts while each bucket has a token and the
/// packet is charged afterwards (the buckets may go into debt); out of tokens, the device stops
/// watching the TAP until the timer.
struct NetLimits {
    var receive: RateLimiter
    var transmit: RateLimiter
    /// A transmit chain the limiter refused, sent first when the timer fires.
    var heldFrame: DescriptorChain?
    /// Reception waits for the timer.
    var receiveThrottled = false

    init(receive: RateLimit, transmit: RateLimit, clock: @escaping @Sendable () -> UInt64) {
        self.receive = RateLimiter(receive, clock: clock)
        self.transmit = RateLimiter(transmit, clock: clock)
    }
}

extension NetDevice: RateLimitedDevice {
    /// Replaces both directions' limits (full buckets, as Firecracker's PATCH does). Whatever
    /// is held back is retried at once, on the I/O thread, through the timer (so the calling
    /// thread makes a `timerfd_settime`, which its seccomp filter must allow).
    public func setRateLimit(receive: RateLimit, transmit: RateLimit) {
        guard throttleTimer.isUsable else { return }
        state.withLock { s in
            s.limits.receive = RateLimiter(receive, clock: s.limits.receive.clock)
            s.limits.transmit = RateLimiter(transmit, clock: s.limits.transmit.clock)
            if s.limits.heldFrame != nil || s.limits.receiveThrottled { throttleTimer.arm(afterNanoseconds: 1) }
        }
    }

    public func throttleTimerFired() {
        throttleTimer.acknowledge()
        state.withLock { s in
            guard s.active else { return }
            s.limits.receiveThrottled = false
            receive(&s)
            transmit(&s, woken: true)
        }
    }

    /// Whether a transmit chain may be sent now; if not, holds it and sets the timer.
    func mayTransmit(_ chain: DescriptorChain, _ s: inout State) -> Bool {
        let bytes = UInt64(chain.readableLength) - UInt64(min(chain.readableLength, UInt32(VirtioNetHeader.size)))
        guard !s.limits.transmit.consume(bytes: bytes) else { return true }
        s.limits.heldFrame = chain
        s.statistics.txThrottled += 1
        throttleTimer.arm(afterNanoseconds: s.limits.transmit.nanosecondsUntil(bytes: bytes))
        return false
    }

    /// Whether reception may go on; if not, marks it throttled and sets the timer (the caller
    /// stops watching the TAP).
    func mayReceive(_ s: inout State) -> Bool {
        guard !s.limits.receive.isUnlimited else { return true }
        s.limits.receive.refill()
        guard !s.limits.receive.mayStart else { return true }
        if !s.limits.receiveThrottled { s.statistics.rxThrottled += 1 }
        s.limits.receiveThrottled = true
        throttleTimer.arm(afterNanoseconds: s.limits.receive.nanosecondsUntil(bytes: 0))
        return false
    }
}
