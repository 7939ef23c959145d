import Synchronization

/// One interrupt wire from a device to the guest.
///
/// The launcher implements it with a KVM irqfd (an eventfd write pulses a GSI); tests use a
/// counter. `trigger()` is called from whichever thread completed the work, so it must be
/// thread-safe and must not block for long.
public protocol InterruptLine: Sendable {
    func trigger()
}

/// The interrupt-side state a transport shares with its device: the `InterruptStatus` bits,
/// the device's DEVICE_NEEDS_RESET flag and `ConfigGeneration`.
///
/// Kept apart from the transport's register lock so a device thread can raise an interrupt
/// while a vCPU thread holds that lock (lock order: transport → device → this, never back).
final class InterruptState: Sendable {
    struct Bits {
        var interruptStatus: UInt32 = 0
        var needsReset = false
        var configGeneration: UInt32 = 0
        /// Bumped on every reset; a `VirtioInterrupt` from an older activation goes quiet.
        var epoch: UInt64 = 0
    }

    let bits = Mutex(Bits())

    /// Sets `mask` in InterruptStatus if `epoch` is current. Returns whether it did.
    func raise(_ mask: UInt32, epoch: UInt64, needsReset: Bool = false, bumpGeneration: Bool = false) -> Bool {
        bits.withLock { bits in
            guard bits.epoch == epoch else { return false }
            bits.interruptStatus |= mask
            if needsReset { bits.needsReset = true }
            if bumpGeneration { bits.configGeneration &+= 1 }
            return true
        }
    }
}

/// How a device talks back to the guest: used-buffer interrupts, configuration-change
/// interrupts, and "I am broken, please reset me".
///
/// The transport hands one to `VirtioDevice.activate`. It is bound to that activation: after
/// the driver resets the device, calls on the old value do nothing, so a late completion on a
/// device thread cannot raise an interrupt on a device the driver has just reset.
///
/// Each signal sets its `InterruptStatus` bit *before* triggering the line, so the guest's
/// interrupt handler always finds the reason when it reads the register.
public final class VirtioInterrupt: Sendable {
    let line: any InterruptLine
    let state: InterruptState
    let epoch: UInt64

    init(line: any InterruptLine, state: InterruptState, epoch: UInt64) {
        self.line = line
        self.state = state
        self.epoch = epoch
    }

    /// A free-standing interrupt, for driving a device or a queue without a transport (tests).
    public convenience init(line: any InterruptLine) {
        self.init(line: line, state: InterruptState(), epoch: 0)
    }

    /// InterruptStatus bit 0: "the device has used a buffer".
    public static let usedBufferBit: UInt32 = 1
    /// InterruptStatus bit 1: "the configuration of the device has changed".
    public static let configChangeBit: UInt32 = 2

    /// Tell the guest there are new entries in a used ring.
    public func signalUsedBuffers() {
        if state.raise(Self.usedBufferBit, epoch: epoch) { line.trigger() }
    }

    /// Tell the guest the device's configuration space changed (bumps ConfigGeneration).
    public func signalConfigChange() {
        if state.raise(Self.configChangeBit, epoch: epoch, bumpGeneration: true) { line.trigger() }
    }

    /// The device cannot go on: set DEVICE_NEEDS_RESET and send a configuration-change
    /// interrupt, as the spec asks ("Device Status Field", device requirements).
    public func markNeedsReset() {
        if state.raise(Self.configChangeBit, epoch: epoch, needsReset: true) { line.trigger() }
    }

    /// The current InterruptStatus bits (what the guest would read).
    public var interruptStatus: UInt32 { state.bits.withLock { $0.interruptStatus } }

    /// Whether DEVICE_NEEDS_RESET is set.
    public var needsReset: Bool { state.bits.withLock { $0.needsReset } }
}
