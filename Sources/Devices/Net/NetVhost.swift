import GuestMemory
import Virtio

/// virtio-net with the host kernel's data path (`--net tap=NAME,vhost=on`): the device still
/// negotiates, activates and resets, but every frame moves between the guest's rings and the
/// TAP inside the host kernel (`VhostNet`). What stays here is small:
///
/// - the queues' ioeventfds go to the kernel as its kick eventfds, so the I/O thread no longer
///   watches them (the launcher sees `vhost` set);
/// - the kernel signals a call eventfd per queue when it has used buffers; the I/O thread
///   watches those and calls `kernelUsedBuffers`, which sets InterruptStatus and raises the
///   guest's interrupt;
/// - the TAP's offloads are still set from the features the driver accepted, since the TAP
///   reads and writes the virtio-net headers the guest's frames carry.
///
/// Rate limits do not apply (frames never reach lguest), and a snapshot of such a machine is
/// refused: the rings' state lives in the kernel.
extension NetDevice {
    /// The queues' ioeventfds, in queue order, before the guest can activate the device.
    public func useDoorbells(_ doorbells: [CInt]) {
        state.withLock { $0.doorbells = doorbells }
    }

    /// The kernel's call eventfd for some queue was signalled: it has published used buffers
    /// (and, with EVENT_IDX, decided the guest wants to hear). Call on the I/O thread.
    public func kernelUsedBuffers() {
        let interrupt = state.withLock { s in s.vhostRunning ? s.interrupt : nil }
        interrupt?.signalUsedBuffers()
    }

    /// Hands this activation's rings to the kernel (part of `activate`, with the lock held);
    /// on failure the rings are stopped and nothing of the activation is kept.
    func startVhost(_ vhost: VhostNet, memory: GuestMemory, queues: [Queue], features: UInt64,
                    _ s: inout State) throws(DeviceActivationError) {
        if s.vhostRunning { vhost.stop(queues: queueMaxSizes.count) }
        s.vhostRunning = false
        do throws(VhostError) {
            try vhost.start(acked: features, memory: memory, queues: queues, kicks: s.doorbells,
                            backend: endpoint.fileDescriptor)
        } catch {
            vhost.stop(queues: queueMaxSizes.count)
            throw DeviceActivationError(error.description)
        }
        s.vhostRunning = true
    }
}
