import Boot
import Devices
import Firmware
import GuestMemory
import KVM
import Sandbox
import Snapshot
#if canImport(Glibc)
import Glibc
#endif

/// Why a VM could not be started. Every case prints as one line naming what the user can fix.
public enum LaunchError: Error, CustomStringConvertible {
    case badOption(String)
    case cannotRead(path: String, what: String, errno: Int32)
    case kernel(path: String, BootError)
    case memory(GuestMemoryError)
    case kvm(KVMError)
    case setup(String)
    case disk(BlockError)
    case network(TapError)
    case vhost(VhostError)
    case share(FsError)
    case vsock(VsockError)
    case balloon(BalloonError)
    case sandbox(SandboxError)
    /// A snapshot could not be taken, or a state or memory file cannot be restored.
    case snapshot(SnapshotError)

    public var description: String {
        switch self {
        case let .badOption(why):
            return why
        case let .cannotRead(path, what, errno):
            return "cannot read \(what) \(path): \(String(cString: strerror(errno)))"
        case let .kernel(path, error):
            return "\(path): \(error)"
        case let .memory(error):
            return error.description
        case let .kvm(error):
            return error.description
        case let .setup(why):
            return why
        case let .disk(error):
            return error.description
        case let .network(error):
            return error.description
        case let .vhost(error):
            return error.description
        case let .share(error):
            return error.description
        case let .vsock(error):
            return error.description
        case let .balloon(error):
            return error.description
        case let .sandbox(error):
            return error.description
        case let .snapshot(error):
            return error.description
        }
    }
}
