import CKVM
import GuestMemory
import HostSystem
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// Why the kernel's virtio-net data path could not be had or set up. One line each.
public enum VhostError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `/dev/vhost-net` could not be opened.
    case unavailable(errno: Int32)
    /// An ioctl on it failed.
    case failed(String, errno: Int32)
    /// A ring or a piece of guest memory the kernel would have to reach is not where it may.
    case badLayout(String)

    public var description: String {
        switch self {
        case let .unavailable(code) where code == ENOENT || code == ENODEV || code == ENXIO:
            return "cannot open /dev/vhost-net: \(tapErrnoText(code)) (load the vhost_net module: modprobe vhost_net)"
        case let .unavailable(code) where code == EACCES || code == EPERM:
            return "cannot open /dev/vhost-net: \(tapErrnoText(code)) (it needs read and write access to /dev/vhost-net)"
        case let .unavailable(code):
            return "cannot open /dev/vhost-net: \(tapErrnoText(code))"
        case let .failed(what, code):
            return "vhost-net \(what): \(tapErrnoText(code))"
        case let .badLayout(what):
            return "vhost-net: \(what)"
        }
    }
}

/// The host kernel's virtio-net back end (`/dev/vhost-net`): once set up, the kernel moves
/// frames between the guest's rings and the TAP device itself, and lguest keeps only the
/// control plane (features, activation, reset) and the interrupt.
///
/// Set-up, in the order the kernel wants it: `VHOST_SET_OWNER` at open (the kernel's worker
/// belongs to this process and uses its address space), then at each activation the features,
/// a table of guest memory (guest-physical ranges and where this process maps them), and per
/// ring its size, first index, addresses, kick eventfd (the queue's ioeventfd, so a guest's
/// QueueNotify reaches the kernel without waking any thread of ours) and call eventfd, and
/// last the TAP as the back end. A reset takes the back end away and stops the rings.
///
/// The call eventfds are ours to watch: virtio-mmio's driver reads InterruptStatus before it
/// looks at the rings, so the kernel cannot raise the guest's interrupt directly (an irqfd
/// would leave the status 0); the I/O thread sets the status bit and raises it, as QEMU does
/// for virtio-mmio.
public final class VhostNet: Sendable {
    private let descriptor: OwnedDescriptor
    /// The features the kernel's data path takes part in (`VHOST_GET_FEATURES`).
    public let features: UInt64
    /// One eventfd per queue, signalled by the kernel when it has used buffers.
    public let calls: [EventFD]

    /// Feature bits of vhost itself, never virtio features: never passed on as such.
    static let vhostOnlyFeatures: UInt64 = 1 << UInt64(VHOST_F_LOG_ALL) | 1 << UInt64(VHOST_NET_F_VIRTIO_NET_HDR)

    /// The descriptor, for the sandbox (the vCPU threads activate and reset the device).
    public var fileDescriptor: CInt { descriptor.raw }

    /// Opens `/dev/vhost-net` and makes this process its owner, with a call eventfd for each of
    /// `queues` queues.
    public init(queues: Int) throws(VhostError) {
        let fd = retryingEINTR { Int(open("/dev/vhost-net", O_RDWR | O_CLOEXEC)) }
        switch fd {
        case let .failure(error): throw .unavailable(errno: error.code)
        case let .success(value): descriptor = OwnedDescriptor(adopting: CInt(value))
        }
        try Self.call("VHOST_SET_OWNER", lg_ioctl(descriptor.raw, LG_VHOST_SET_OWNER))
        var offered: UInt64 = 0
        try Self.call("VHOST_GET_FEATURES", lg_ioctl_pointer(descriptor.raw, LG_VHOST_GET_FEATURES, &offered))
        features = offered & ~Self.vhostOnlyFeatures
        var calls: [EventFD] = []
        for _ in 0 ..< queues {
            do { calls.append(try EventFD()) } catch { throw .failed("eventfd", errno: error.errno) }
        }
        self.calls = calls
    }

    /// Hands `queues` to the kernel, with `backend` (the TAP) as where frames go. `acked` are
    /// the features the driver accepted; those the kernel does not take part in (checksum and
    /// segmentation offloads, which the TAP's virtio-net header carries) are not passed on.
    /// `kicks` are the queues' ioeventfds.
    func start(acked: UInt64, memory: GuestMemory, queues: [Queue], kicks: [CInt], backend: CInt) throws(VhostError) {
        guard kicks.count == queues.count, calls.count == queues.count else {
            throw .badLayout("\(queues.count) queues, \(kicks.count) doorbells, \(calls.count) call eventfds")
        }
        var wanted = acked & features
        try Self.call("VHOST_SET_FEATURES", lg_ioctl_pointer(descriptor.raw, LG_VHOST_SET_FEATURES, &wanted))
        try setMemoryTable(memory)
        for (index, queue) in queues.enumerated() {
            guard queue.isEnabled else { throw .badLayout("queue \(index) is not enabled") }
            let ring = UInt32(index)
            var size = vhost_vring_state(index: ring, num: UInt32(queue.size))
            try Self.call("VHOST_SET_VRING_NUM", lg_ioctl_pointer(descriptor.raw, LG_VHOST_SET_VRING_NUM, &size))
            var base = vhost_vring_state(index: ring, num: UInt32(queue.nextAvail))
            try Self.call("VHOST_SET_VRING_BASE", lg_ioctl_pointer(descriptor.raw, LG_VHOST_SET_VRING_BASE, &base))
            let layout = queue.layout
            var addresses = vhost_vring_addr(
                index: ring, flags: 0,
                desc_user_addr: try Self.host(memory, layout.descriptorTable, QueueLayout.descriptorTableSize(queueSize: queue.size), "descriptor table \(index)"),
                used_user_addr: try Self.host(memory, layout.deviceArea, QueueLayout.deviceAreaSize(queueSize: queue.size), "used ring \(index)"),
                avail_user_addr: try Self.host(memory, layout.driverArea, QueueLayout.driverAreaSize(queueSize: queue.size), "available ring \(index)"),
                log_guest_addr: 0)
            try Self.call("VHOST_SET_VRING_ADDR", lg_ioctl_pointer(descriptor.raw, LG_VHOST_SET_VRING_ADDR, &addresses))
            var kick = vhost_vring_file(index: ring, fd: kicks[index])
            try Self.call("VHOST_SET_VRING_KICK", lg_ioctl_pointer(descriptor.raw, LG_VHOST_SET_VRING_KICK, &kick))
            var call = vhost_vring_file(index: ring, fd: calls[index].raw)
            try Self.call("VHOST_SET_VRING_CALL", lg_ioctl_pointer(descriptor.raw, LG_VHOST_SET_VRING_CALL, &call))
        }
        for index in queues.indices {
            var file = vhost_vring_file(index: UInt32(index), fd: backend)
            try Self.call("VHOST_NET_SET_BACKEND", lg_ioctl_pointer(descriptor.raw, LG_VHOST_NET_SET_BACKEND, &file))
        }
    }

    /// Takes the TAP away from the kernel's rings and stops them: no frame moves after this
    /// returns. Failures are ignored (a ring that never started has nothing to stop).
    func stop(queues: Int) {
        for index in 0 ..< queues {
            var file = vhost_vring_file(index: UInt32(index), fd: -1)
            _ = lg_ioctl_pointer(descriptor.raw, LG_VHOST_NET_SET_BACKEND, &file)
            var state = vhost_vring_state(index: UInt32(index), num: 0)
            _ = lg_ioctl_pointer(descriptor.raw, LG_VHOST_GET_VRING_BASE, &state)
        }
    }

    /// `VHOST_SET_MEM_TABLE`: every region of guest RAM, guest-physical and host-virtual.
    private func setMemoryTable(_ memory: GuestMemory) throws(VhostError) {
        let header = MemoryLayout<vhost_memory>.size
        let entry = MemoryLayout<vhost_memory_region>.stride
        let bytes = header + entry * memory.regions.count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        defer { raw.deallocate() }
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        raw.storeBytes(of: UInt32(memory.regions.count), as: UInt32.self)
        for (index, region) in memory.regions.enumerated() {
            let table = vhost_memory_region(guest_phys_addr: region.start.rawValue, memory_size: region.size,
                                            userspace_addr: region.hostAddressForKVM, flags_padding: 0)
            raw.storeBytes(of: table, toByteOffset: header + index * entry, as: vhost_memory_region.self)
        }
        try Self.call("VHOST_SET_MEM_TABLE", lg_ioctl_pointer(descriptor.raw, LG_VHOST_SET_MEM_TABLE, raw))
    }

    /// Where this process maps `length` bytes of guest memory from `address`, all inside one
    /// region (the kernel reads a ring through one host address).
    private static func host(_ memory: GuestMemory, _ address: GuestAddress, _ length: UInt64,
                             _ what: String) throws(VhostError) -> UInt64 {
        guard let region = memory.region(containing: address), let offset = address.offset(from: region.start),
              length <= region.size - offset else {
            throw .badLayout("the \(what) at \(address.rawValue) is not inside guest RAM")
        }
        return region.hostAddressForKVM + offset
    }

    private static func call(_ what: String, _ result: CInt) throws(VhostError) {
        if result < 0 { throw .failed(what, errno: -result) }
    }
}
