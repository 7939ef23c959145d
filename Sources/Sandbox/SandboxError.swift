#if canImport(Glibc)
import Glibc
#endif

/// Why the sandbox could not be set up. lguest refuses to run the guest without it (unless
/// `--no-sandbox` said so): a VMM that quietly runs unconfined is worse than one that says no.
public enum SandboxError: Error, Equatable, CustomStringConvertible {
    /// `call` failed with `errno`.
    case systemCall(String, errno: Int32)
    /// A capability was still there after it was dropped.
    case capabilityRemains(String)

    public var description: String {
        switch self {
        case let .systemCall(call, code):
            var hint = ""
            if code == EINVAL, call.hasPrefix("seccomp") { hint = " (does the kernel have CONFIG_SECCOMP_FILTER?)" }
            return "sandbox: \(call) failed: \(String(cString: strerror(code)))\(hint)"
        case let .capabilityRemains(which):
            return "sandbox: \(which) is still held after dropping every capability"
        }
    }
}
