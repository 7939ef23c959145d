import GuestMemory
import Synchronization
import Virtio

/// virtio-console: one port (`hvc0` in the guest) on the host's terminal.
///
/// Output (the transmit queue) goes straight to the sink. Input is kept here until the guest
/// has posted receive buffers: a key pressed before the guest is ready waits, it is not lost.
public final class ConsoleDevice: VirtioDevice {
    public let deviceType: UInt32 = 3
    /// Queue 0 receives (host to guest), queue 1 transmits (guest to host).
    public let queueMaxSizes: [UInt16] = [256, 256]
    public let offeredFeatures: UInt64 = 0
    static let receiveQueue = 0, transmitQueue = 1
    /// Input beyond this, while the guest is not reading, is dropped.
    public static let inputLimit = 64 * 1024

    private struct State {
        var queues: [Queue] = []
        var pendingInput: [UInt8] = []
        var malformed = 0
    }
    private let state = Mutex(State())
    private let output: any ByteSink

    public init(output: any ByteSink) { self.output = output }

    public var malformedRequests: Int { state.withLock { $0.malformed } }

    /// `struct virtio_console_config`: cols, rows, max_nr_ports, emerg_wr — all unused without
    /// features, but the driver may read them.
    public var configSpace: [UInt8] { [UInt8](repeating: 0, count: 12) }

    public func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                         interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        state.withLock { $0.queues = queues }
    }

    public func reset() {
        state.withLock { $0.queues = [] }
    }

    /// Keys typed on the host, for the guest.
    public func enqueueInput(_ bytes: some Sequence<UInt8>) {
        state.withLock { s in
            for byte in bytes where s.pendingInput.count < Self.inputLimit { s.pendingInput.append(byte) }
            deliverInput(&s)
        }
    }

    public func processQueue(_ index: Int) {
        state.withLock { s in
            switch index {
            case Self.receiveQueue: deliverInput(&s)
            case Self.transmitQueue: transmit(&s)
            default: break
            }
        }
    }

    /// Copies pending input into the guest's receive buffers, as many as it has posted.
    private func deliverInput(_ s: inout State) {
        guard s.queues.count > Self.receiveQueue, s.queues[Self.receiveQueue].isEnabled else { return }
        var delivered = false
        while !s.pendingInput.isEmpty {
            let chain: DescriptorChain
            do throws(VirtqueueError) {
                guard let next = try s.queues[Self.receiveQueue].popAvailable() else { break }
                chain = next
            } catch {
                s.malformed += 1
                if error.isStructural { break } else { continue }
            }
            var writer = chain.writer()
            let count = min(writer.remaining, s.pendingInput.count)
            do throws(VirtqueueError) {
                try writer.write(s.pendingInput.prefix(count))
                s.pendingInput.removeFirst(count)
            } catch { s.malformed += 1 }
            do throws(VirtqueueError) { try s.queues[Self.receiveQueue].addUsed(head: chain.head, length: writer.bytesWritten) }
            catch { s.malformed += 1 }
            delivered = true
        }
        if delivered { s.queues[Self.receiveQueue].notifyGuestIfNeeded() }
    }

    /// Sends everything the guest wrote to the host.
    private func transmit(_ s: inout State) {
        guard s.queues.count > Self.transmitQueue, s.queues[Self.transmitQueue].isEnabled else { return }
        while true {
            let chain: DescriptorChain
            do throws(VirtqueueError) {
                guard let next = try s.queues[Self.transmitQueue].popAvailable() else { break }
                chain = next
            } catch {
                s.malformed += 1
                if error.isStructural { break } else { continue }
            }
            var reader = chain.reader()
            // In pieces, so a guest that posts one enormous buffer costs us a page, not a copy of it.
            do throws(VirtqueueError) {
                while reader.remaining > 0 {
                    let bytes = try reader.read(count: min(reader.remaining, 4096))
                    bytes.withUnsafeBytes { output.write($0) }
                }
            } catch { s.malformed += 1 }
            do throws(VirtqueueError) { try s.queues[Self.transmitQueue].addUsed(head: chain.head, length: 0) }
            catch { s.malformed += 1 }
        }
        s.queues[Self.transmitQueue].notifyGuestIfNeeded()
    }
}
