import GuestMemory
import Virtio

/// virtio-net with the host kernel's data path (`--net tap=NAME,vhost=on`): the device still
/// negotiates, activates and resets, but every frame moves between the guest's rings and the
/// TAP inside the host kernel (`VhostNet`). What stays here is small:
///
/// - the queues' ioeventfds go to the kernel as its kick eventfds, so the I/O thread no longer
///   watches them (the launcher asks `takesDoorbells`);
/// - the kernel signals a call eventfd per queue when it has used buffers; the I/O thread
///   watches those and calls `kernelUsedBuffers`, which sets InterruptStatus and raises the
///   guest's interrupt;
/// - the TAP's offloads are still set from the features the driver accepted, since the TAP
///   reads and writes the virtio-net headers the guest's frames carry.
///
/// Rate limits do not apply (frames never reach lguest), and a snapshot of such a machine is
/// refused: the rings' state lives in the kernel.
extension NetDevice {
    /// Whether the device hands its queues' ioeventfds to the kernel (the launcher then does not
    /// watch them itself).
    public var takesDoorbells: Bool { vhost != nil }

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

    func activateVhost(_ vhost: VhostNet, features: UInt64, memory: GuestMemory, queues: [Queue],
                       offloads: TapOffloads, interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        try state.withLock { s throws(DeviceActivationError) in
            if s.vhostRunning { vhost.stop(queues: queueMaxSizes.count) }
            s.vhostRunning = false
            do throws(VhostError) {
                try vhost.start(acked: features, memory: memory, queues: queues, kicks: s.doorbells,
                                backend: endpoint.fileDescriptor)
            } catch {
                vhost.stop(queues: queueMaxSizes.count)
                throw DeviceActivationError(error.description)
            }
            s.active = true
            s.vhostRunning = true
            s.features = features
            s.receiveOffloads = offloads
            s.queues = queues
            s.interrupt = interrupt
            s.parked = []
            s.parkedCapacity = 0
            // The kernel reads the TAP; lguest must not.
            setWantsInput(false, &s)
        }
    }
}
