import GuestMemory
import Snapshot

/// Why a device could not start when the driver set DRIVER_OK.
public struct DeviceActivationError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// A virtio device: the part that knows what the requests mean.
///
/// In the spirit of lguest's five-call recipe and Firecracker's one-folder devices, a device
/// only declares what it is and handles its queues; the transport (`MMIOTransport`) owns the
/// registers, the status state machine, feature negotiation and queue setup, and calls in:
///
/// 1. `deviceType`, `queueMaxSizes`, `offeredFeatures`, `configSpace`: read at any time.
/// 2. `activate(...)`: once the driver sets DRIVER_OK, with the negotiated features, the
///    guest's memory, one `Queue` per entry of `queueMaxSizes` (a queue the driver did not
///    enable has `isEnabled == false`) and the interrupt to signal.
/// 3. `processQueue(_:)`: the driver kicked queue `index`. Called on the device's I/O thread
///    (from an ioeventfd) or, without ioeventfds, on the vCPU thread that wrote QueueNotify —
///    possibly concurrently with other calls, so keep the queues behind a lock.
/// 4. `reset()`: the driver wrote 0 to Status. Drop the queues; the next activation brings
///    new ones.
///
/// Calls 2 and 4 are made with the transport's register lock held: a device must not call
/// back into its transport from them (signalling through the `VirtioInterrupt` is fine — it
/// has its own lock). `configSpace` and `writeConfig` are called from vCPU threads.
public protocol VirtioDevice: AnyObject, Sendable {
    /// `VirtioDeviceID`: 1 net, 2 block, 3 console, 4 rng, …
    var deviceType: UInt32 { get }
    /// The maximum size of each queue; the count is the number of queues.
    var queueMaxSizes: [UInt16] { get }
    /// Device-specific feature bits (0–23, 50–63). The transport adds VERSION_1,
    /// RING_INDIRECT_DESC and RING_EVENT_IDX itself and drops any other reserved bit.
    var offeredFeatures: UInt64 { get }
    /// The device configuration space as the driver would see it now (little-endian fields).
    var configSpace: [UInt8] { get }
    /// The driver wrote `bytes` at `offset` in the configuration space (already bounds-checked).
    func writeConfig(offset: Int, bytes: [UInt8])
    /// Start serving the queues. Throwing sets DEVICE_NEEDS_RESET.
    func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                  interrupt: VirtioInterrupt) throws(DeviceActivationError)
    /// The driver kicked queue `index`: drain it.
    func processQueue(_ index: Int)
    /// Back to the state before activation.
    func reset()
    /// For a snapshot: what the device keeps beyond its queues and the transport's registers
    /// (a balloon's target, say). Called on a paused machine. Most devices keep nothing.
    func saveState(to writer: inout StateWriter)
    /// Puts back what `saveState` wrote, into a new device, before it is activated again.
    func restoreState(from reader: inout StateReader) throws(SnapshotError)
}

extension VirtioDevice {
    public func saveState(to writer: inout StateWriter) {}
    public func restoreState(from reader: inout StateReader) throws(SnapshotError) {}
    public var configSpace: [UInt8] { [] }
    public func writeConfig(offset: Int, bytes: [UInt8]) {}
}
