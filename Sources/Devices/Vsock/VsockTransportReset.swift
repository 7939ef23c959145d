import Virtio

// The event queue's one event: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET. A restored VM's guest still
// believes in connections whose host sockets belonged to another process; the event tells its
// driver to reset every connection and read the CID again (what Firecracker sends after a
// snapshot is loaded). The driver keeps a few buffers posted on the event queue for it.
extension VsockDevice {
    static let transportResetEvent: UInt32 = 0

    /// Sends the transport reset on the event queue. Returns false if the device is not active
    /// or the guest posted no event buffer (nothing to announce it with).
    @discardableResult
    public func announceTransportReset() -> Bool {
        state.withLock { s -> Bool in
            guard s.active, s.queues.indices.contains(Self.eventQueue) else { return false }
            let chain: DescriptorChain
            do throws(VirtqueueError) {
                guard let next = try s.queues[Self.eventQueue].popAvailable() else { return false }
                chain = next
            } catch { s.statistics.malformed += 1; return false }
            var writer = chain.writer()
            let event = (0..<4).map { UInt8(truncatingIfNeeded: Self.transportResetEvent >> (8 * $0)) }
            var sent = true
            do throws(VirtqueueError) { try writer.write(event) } catch {
                // A buffer too small for the event goes back to the driver empty.
                s.statistics.malformed += 1
                sent = false
            }
            do throws(VirtqueueError) {
                try s.queues[Self.eventQueue].addUsed(head: chain.head, length: sent ? writer.bytesWritten : 0)
            } catch { s.statistics.malformed += 1; return false }
            s.queues[Self.eventQueue].notifyGuestIfNeeded()
            return sent
        }
    }
}
