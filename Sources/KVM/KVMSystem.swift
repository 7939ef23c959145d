import CKVM
import GuestMemory
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// Why KVM could not be used, in words a user can act on.
public enum KVMError: Error, Sendable, CustomStringConvertible {
    case unavailable(path: String, errno: Int32)
    case wrongAPIVersion(Int32)
    case missingCapability(String)
    case call(SystemCallError)

    public var description: String {
        switch self {
        case let .unavailable(path, errno) where errno == ENOENT:
            return "\(path) does not exist: this host has no KVM (load kvm_intel or kvm_amd, or enable nested virtualization)"
        case let .unavailable(path, errno) where errno == EACCES:
            return "cannot open \(path): permission denied (add your user to the kvm group)"
        case let .unavailable(path, errno):
            return "cannot open \(path): \(String(cString: strerror(errno)))"
        case let .wrongAPIVersion(version):
            return "/dev/kvm speaks API version \(version), lguest needs 12"
        case let .missingCapability(name):
            return "this host's KVM lacks \(name), which lguest needs"
        case let .call(error):
            return error.description
        }
    }
}

/// `/dev/kvm` itself: the system-wide ioctls.
public final class KVMSystem: Sendable {
    public let descriptor: OwnedDescriptor

    /// Opens `/dev/kvm` and checks it speaks the one stable API version (12).
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let fd = lg_open(path, O_RDWR | O_CLOEXEC, 0)
        guard fd >= 0 else { throw .unavailable(path: path, errno: -fd) }
        descriptor = OwnedDescriptor(adopting: fd)
        // KVM_GET_API_VERSION: has been 12 since Linux 2.6.22 and will stay 12.
        let version = lg_ioctl(fd, LG_KVM_GET_API_VERSION)
        guard version == 12 else { throw .wrongAPIVersion(version) }
        for (capability, name) in [(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"), (KVM_CAP_IRQFD, "KVM_CAP_IRQFD"),
                                   (KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"), (KVM_CAP_PIT2, "KVM_CAP_PIT2"),
                                   (KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"), (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID")] {
            guard checkExtension(capability) > 0 else { throw .missingCapability(name) }
        }
    }

    /// KVM_CHECK_EXTENSION: 0 if absent, otherwise a capability-specific positive number.
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, lg_ioctl_value(descriptor.raw, LG_KVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// Whether this KVM is PVM, the paravirtual back end that runs only PVM-enabled kernels.
    public static var isPVM: Bool { access("/sys/module/kvm_pvm", F_OK) == 0 }

    /// KVM_GET_VCPU_MMAP_SIZE: how much to map of each vCPU's descriptor (the `kvm_run` page and more).
    public func vcpuMapSize() throws(KVMError) -> Int {
        do { return Int(try check("KVM_GET_VCPU_MMAP_SIZE", lg_ioctl(descriptor.raw, LG_KVM_GET_VCPU_MMAP_SIZE))) }
        catch { throw .call(error) }
    }

    /// KVM_GET_SUPPORTED_CPUID: every CPUID leaf this host's KVM can present to a guest.
    public func supportedCPUID() throws(KVMError) -> CPUIDTable {
        var capacity = 128
        while true {
            var table = CPUIDTable(capacity: capacity)
            let result = table.withRawBuffer { lg_ioctl_pointer(descriptor.raw, LG_KVM_GET_SUPPORTED_CPUID, $0) }
            if result == -E2BIG, capacity < 4096 { capacity *= 2; continue }
            if result < 0 { throw .call(SystemCallError("KVM_GET_SUPPORTED_CPUID", errno: -result)) }
            table.trimToReportedCount()
            return table
        }
    }

    /// KVM_GET_MSR_INDEX_LIST: the MSRs whose state a VMM should save (the CPU's own, which
    /// KVM virtualizes, and KVM's paravirtual ones such as kvmclock's).
    public func msrIndexList() throws(KVMError) -> [UInt32] {
        var capacity = 256
        while true {
            var buffer = [UInt32](repeating: 0, count: 1 + capacity)
            buffer[0] = UInt32(capacity)
            let result = buffer.withUnsafeMutableBytes { lg_ioctl_pointer(descriptor.raw, LG_KVM_GET_MSR_INDEX_LIST, $0.baseAddress!) }
            if result == -E2BIG, capacity < 16384 { capacity = max(capacity * 2, Int(buffer[0])); continue }
            if result < 0 { throw .call(SystemCallError("KVM_GET_MSR_INDEX_LIST", errno: -result)) }
            return Array(buffer[1...].prefix(min(Int(buffer[0]), capacity)))
        }
    }

    /// KVM_CREATE_VM.
    public func createVM() throws(KVMError) -> VirtualMachine {
        let fd: CInt
        do { fd = try check("KVM_CREATE_VM", lg_ioctl_value(descriptor.raw, LG_KVM_CREATE_VM, 0)) }
        catch { throw .call(error) }
        return VirtualMachine(system: self, descriptor: OwnedDescriptor(adopting: fd))
    }
}
