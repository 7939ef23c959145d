/// How long the I/O thread keeps watching a block queue after draining it, and how that adapts.
///
/// A guest with many requests in flight submits them one after another, and each submission that
/// finds the device waiting for a kick costs an exit (hundreds of microseconds under nested
/// virtualization, a few on hardware). So after a drain that served something, the device leaves
/// the guest's kicks off (it does not move `avail_event`) and looks at `avail.idx` for a while:
/// what arrives meanwhile is served without a kick. The while adapts, as QEMU's adaptive polling
/// does: a poll that found work doubles the next window (from 4 µs, up to the disk's limit); one
/// that found nothing halves it, so a guest that submits one request at a time and waits for it
/// (the window always misses) soon costs no polling at all.
struct BlockQueuePoll {
    /// The first window after polling has shrunk to nothing.
    static let startNanoseconds: UInt64 = 4000

    /// The limit, from the disk's configuration.
    let limitNanoseconds: UInt64
    /// The next window.
    private(set) var windowNanoseconds: UInt64 = 0

    init(limitMicroseconds: UInt32) {
        limitNanoseconds = UInt64(min(limitMicroseconds, BlockConfiguration.maxPollMicroseconds)) * 1000
    }

    var isEnabled: Bool { limitNanoseconds > 0 }

    /// The window to poll for now: the current one, or the first one if it shrank to nothing.
    var nextWindow: UInt64 {
        guard isEnabled else { return 0 }
        return min(max(windowNanoseconds, Self.startNanoseconds), limitNanoseconds)
    }

    /// A poll of `nextWindow` found work (`true`) or ran out (`false`).
    mutating func record(found: Bool) {
        let window = nextWindow
        if found {
            windowNanoseconds = min(window * 2, limitNanoseconds)
        } else {
            windowNanoseconds = window / 2 < Self.startNanoseconds ? 0 : window / 2
        }
    }
}
