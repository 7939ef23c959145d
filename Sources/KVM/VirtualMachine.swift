import CKVM
import GuestMemory
import Synchronization
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// One virtual machine: its memory slots, its interrupt controller and its vCPUs.
///
/// This is lguest's `LHREQ_INITIALIZE` grown up: where the Launcher once told the Host "here is
/// guest memory, here is where to start", a KVM VM is told the same in several ioctls.
public final class VirtualMachine: Sendable {
    public let system: KVMSystem
    public let descriptor: OwnedDescriptor
    /// Memory registered with KVM stays mapped for as long as the VM exists: KVM holds its host
    /// address, and a vCPU touching unmapped memory would see a triple fault, not an error.
    private let mapped = Mutex<[GuestMemory]>([])

    init(system: KVMSystem, descriptor: OwnedDescriptor) {
        self.system = system
        self.descriptor = descriptor
    }

    var fd: CInt { descriptor.raw }

    /// KVM_SET_USER_MEMORY_REGION, one slot per region of guest memory.
    public func map(_ memory: GuestMemory) throws(SystemCallError) {
        mapped.withLock { $0.append(memory) }
        for (slot, region) in memory.regions.enumerated() {
            var spec = kvm_userspace_memory_region(
                slot: UInt32(slot), flags: 0, guest_phys_addr: region.start.rawValue,
                memory_size: region.size, userspace_addr: region.hostAddressForKVM)
            _ = try check("KVM_SET_USER_MEMORY_REGION", lg_ioctl_pointer(fd, LG_KVM_SET_USER_MEMORY_REGION, &spec))
        }
    }

    /// The x86 platform KVM emulates in the kernel: three pages for the TSS and one for the
    /// identity map (Intel's real-mode quirks need them somewhere outside RAM), the PIC pair,
    /// IOAPIC and local APICs, and the PIT. Order matters: the irqchip before any vCPU, the PIT after it.
    public func createPlatform(tssAddress: GuestAddress = 0xFFFB_D000) throws(SystemCallError) {
        _ = try check("KVM_SET_TSS_ADDR", lg_ioctl_value(fd, LG_KVM_SET_TSS_ADDR, UInt(tssAddress.rawValue)))
        var identityMap = tssAddress.rawValue - 0x1000
        _ = try check("KVM_SET_IDENTITY_MAP_ADDR", lg_ioctl_pointer(fd, LG_KVM_SET_IDENTITY_MAP_ADDR, &identityMap))
        _ = try check("KVM_CREATE_IRQCHIP", lg_ioctl(fd, LG_KVM_CREATE_IRQCHIP))
        var pit = kvm_pit_config()
        pit.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        _ = try check("KVM_CREATE_PIT2", lg_ioctl_pointer(fd, LG_KVM_CREATE_PIT2, &pit))
    }

    /// KVM_GET_CLOCK: the guest's kvmclock, in nanoseconds.
    public func clock() throws(SystemCallError) -> UInt64 {
        var data = kvm_clock_data()
        _ = try check("KVM_GET_CLOCK", lg_ioctl_pointer(fd, LG_KVM_GET_CLOCK, &data))
        return data.clock
    }

    /// KVM_SET_CLOCK: sets the guest's kvmclock to `nanoseconds` (on every vCPU at once).
    public func setClock(_ nanoseconds: UInt64) throws(SystemCallError) {
        var data = kvm_clock_data()
        data.clock = nanoseconds
        _ = try check("KVM_SET_CLOCK", lg_ioctl_pointer(fd, LG_KVM_SET_CLOCK, &data))
    }

    /// KVM_IRQFD: a write to `event` raises interrupt line `gsi` (an edge, for an irqchip route).
    /// This is lguest's `LHREQ_IRQ`, turned into a descriptor a device thread can write to.
    public func attachInterrupt(_ event: EventFD, gsi: UInt32) throws(SystemCallError) {
        var spec = kvm_irqfd()
        spec.fd = UInt32(bitPattern: event.raw)
        spec.gsi = gsi
        _ = try check("KVM_IRQFD", lg_ioctl_pointer(fd, LG_KVM_IRQFD, &spec))
    }

    /// KVM_IOEVENTFD: a guest write of `length` bytes of `value` to `address` signals `event`
    /// instead of exiting to us. This is lguest's `LHREQ_EVENTFD`: notification without a world switch.
    public func attachDoorbell(_ event: EventFD, mmio address: GuestAddress, length: UInt32, value: UInt64?) throws(SystemCallError) {
        var spec = kvm_ioeventfd()
        spec.addr = address.rawValue
        spec.len = length
        spec.fd = event.raw
        if let value {
            spec.datamatch = value
            spec.flags = LG_KVM_IOEVENTFD_FLAG_DATAMATCH
        }
        _ = try check("KVM_IOEVENTFD", lg_ioctl_pointer(fd, LG_KVM_IOEVENTFD, &spec))
    }

    /// KVM_IRQ_LINE: sets interrupt line `gsi` to `level`.
    public func setInterruptLine(_ gsi: UInt32, level: Bool) throws(SystemCallError) {
        var spec = kvm_irq_level()
        spec.irq = gsi
        spec.level = level ? 1 : 0
        _ = try check("KVM_IRQ_LINE", lg_ioctl_pointer(fd, LG_KVM_IRQ_LINE, &spec))
    }

    /// KVM_CREATE_VCPU. Call it on the thread that will run the vCPU: KVM wants a vCPU's ioctls
    /// to come from one thread.
    public func createVCPU(id: Int) throws(KVMError) -> VCPU {
        let mapSize = try system.vcpuMapSize()
        let vcpuFD: CInt
        do { vcpuFD = try check("KVM_CREATE_VCPU", lg_ioctl_value(fd, LG_KVM_CREATE_VCPU, UInt(id))) }
        catch { throw .call(error) }
        let descriptor = OwnedDescriptor(adopting: vcpuFD)
        let page = mmap(nil, mapSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpuFD, 0)
        guard let page, page != MAP_FAILED else { throw .call(SystemCallError("mmap(kvm_run)", errno: errno)) }
        return VCPU(id: id, vm: self, descriptor: descriptor, run: page, runSize: mapSize)
    }
}
