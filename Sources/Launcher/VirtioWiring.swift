import Devices
import Firmware
import GuestMemory
import KVM
import Virtio
import HostSystem

/// A virtio device in place: its transport on the MMIO bus, its window and interrupt line as
/// the ACPI tables describe them.
struct VirtioSlot {
    let transport: MMIOTransport
    let window: VirtioMMIOWindow
    /// One ioeventfd per queue: rung by the guest's QueueNotify writes, and once by a restored
    /// machine for each queue the driver had set up.
    let doorbells: [EventFD]
}

/// An interrupt line that is an irqfd: a write to the eventfd and KVM raises the GSI.
/// This is lguest's LHREQ_IRQ, without the system call into the Host each time.
struct IrqfdLine: InterruptLine {
    let event: EventFD
    func trigger() {
        // Journey 11: the guest hears back. The device has published its used buffers and set
        // InterruptStatus; one eight-byte write to an eventfd, and KVM raises the device's GSI
        // in the in-kernel IOAPIC. The guest's virtio-mmio handler reads InterruptStatus, finds
        // the used ring has moved, and wakes whoever was waiting — for a block write, the
        // filesystem that asked for it. The round trip is complete, and we never stopped a vCPU.
        event.signal()
    }
}

/// The MMIO bus reaches a transport's registers through this. (`read(offset:into:)` already
/// has the bus's shape; only the write needs translating.)
extension MMIOTransport: BusDevice {
    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        write(offset: offset, data: data)
    }
}

enum VirtioWiring {
    /// Where device `index` lives: one 4 KiB window from 0xD000_0000 up, one GSI from 5 up.
    static func window(for index: Int) -> VirtioMMIOWindow {
        VirtioMMIOWindow(base: MemoryMap.virtioMMIOBase + UInt64(index) * MemoryMap.virtioMMIOWindowSize,
                         size: MemoryMap.virtioMMIOWindowSize,
                         gsi: PlatformInterrupts.virtio.lowerBound + UInt32(index))
    }

    /// `virtio_mmio.device=4K@0xd0000000:5 ...`, for kernels built to find devices on the
    /// command line instead of in ACPI.
    static func commandLineDevices(_ windows: [VirtioMMIOWindow]) -> String {
        windows.map { "virtio_mmio.device=\($0.size >> 10)K@\($0.base):\($0.gsi)" }.joined(separator: " ")
    }

    /// Connects `device` to the VM: an irqfd for its interrupts, and an ioeventfd per queue so
    /// that a guest's QueueNotify write wakes the I/O thread without stopping the vCPU.
    static func attach(_ device: any VirtioDevice, index: Int, vm: VirtualMachine, memory: GuestMemory,
                       events: EventLoop) throws(LaunchError) -> VirtioSlot {
        let window = window(for: index)
        let interrupt: EventFD
        do {
            interrupt = try EventFD()
            try vm.attachInterrupt(interrupt, gsi: window.gsi)
        } catch { throw .kvm(.call(error)) }
        let transport = MMIOTransport(device: device, memory: memory, interrupt: IrqfdLine(event: interrupt))
        // A network device served by the host kernel (vhost) has the kernel watch its doorbells.
        let kernelServed = (device as? NetDevice).flatMap { $0.vhost != nil ? $0 : nil }
        var doorbells: [EventFD] = []
        for queue in device.queueMaxSizes.indices {
            let doorbell: EventFD
            do {
                doorbell = try EventFD()
                try vm.attachDoorbell(doorbell, mmio: window.base + MMIORegister.queueNotify.rawValue,
                                      length: 4, value: UInt64(queue))
            } catch { throw .kvm(.call(error)) }
            doorbells.append(doorbell)
            if kernelServed != nil { continue }
            // Journey 5: a doorbell rings. The guest wrote the queue's index to QueueNotify, KVM
            // matched it against this ioeventfd and signalled it, and the vCPU went straight back
            // to the guest. The I/O thread wakes, and the transport hands the kick to the device.
            try events.watch(doorbell.raw) {
                doorbell.drain()
                transport.handleNotification(queue: UInt32(queue))
            }
        }
        if let net = kernelServed, let vhost = net.vhost {
            net.useDoorbells(doorbells.map(\.raw))
            for call in vhost.calls {
                try events.watch(call.raw) {
                    call.drain()
                    net.kernelUsedBuffers()
                }
            }
        }
        // A QueueNotify write the ioeventfds did not catch rings the same doorbell: device work
        // stays on the I/O thread. An index with no queue is the transport's to count.
        let rings = doorbells
        transport.forwardKicks { [weak transport] queue in
            if Int(queue) < rings.count {
                rings[Int(queue)].signal()
            } else {
                transport?.handleNotification(queue: queue)
            }
        }
        return VirtioSlot(transport: transport, window: window, doorbells: doorbells)
    }
}
