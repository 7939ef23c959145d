#if canImport(Glibc)
import Glibc
#endif

/// Why the sandbox could not be set up. lguest refuses to run the guest without it (unless
/// `--no-sandbox` said so): a VMM that quietly runs unconfined is worse than one that says no.
public enum SandboxError: Error, Equatable, CustomStringConvertible {
    /// `call` failed with `errno`.
    case systemCall(String, errno: Int32)
    /// Capabilities were still there after capset emptied every set.
    case capabilitiesRemain(effective: UInt64, permitted: UInt64)

    public var description: String {
        switch self {
        case let .systemCall(call, code):
            var hint = ""
            if code == EINVAL, call.hasPrefix("seccomp") { hint = " (does the kernel have CONFIG_SECCOMP_FILTER?)" }
            return "sandbox: \(call) failed: \(String(cString: strerror(code)))\(hint)"
        case let .capabilitiesRemain(effective, permitted):
            return "sandbox: capabilities remain after dropping them all (effective 0x\(String(effective, radix: 16)), permitted 0x\(String(permitted, radix: 16)))"
        }
    }
}
