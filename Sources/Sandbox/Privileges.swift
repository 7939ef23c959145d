import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// What a thread may gain or hold besides its system calls: set-user-ID programs and
/// capabilities.
///
/// Both are properties of a thread, inherited by the threads it creates. Call these on the
/// main thread once setup is done (a TAP device and the disk images are open) and before the
/// vCPU and I/O threads start, so that every thread begins without them.
public enum Privileges {
    /// PR_SET_NO_NEW_PRIVS: nothing this thread runs can gain privileges (an `execve` of a
    /// set-user-ID binary, file capabilities). It is also what lets an unprivileged process
    /// install a seccomp filter.
    public static func forbidNewPrivileges() throws(SandboxError) {
        let result = lg_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        guard result == 0 else { throw .systemCall("prctl(PR_SET_NO_NEW_PRIVS)", errno: -result) }
    }

    /// Drops every capability: the ambient set, the bounding set when the thread may change it
    /// (that needs CAP_SETPCAP; without it the bounding set stays, which is harmless once
    /// no_new_privs stops any execve from granting what it allows), and finally the effective,
    /// permitted and inheritable sets.
    public static func dropCapabilities() throws(SandboxError) {
        // Ambient capabilities arrived in Linux 4.3; an older kernel has none to clear.
        let ambient = lg_prctl(PR_CAP_AMBIENT, UInt(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
        guard ambient == 0 || ambient == -EINVAL else {
            throw .systemCall("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", errno: -ambient)
        }
        // The bounding set limits what an execve could ever grant. Walk capability numbers
        // until the kernel says there are no more (it knows its own CAP_LAST_CAP, which may be
        // newer than our headers').
        if holdsEffective(CAP_SETPCAP) {
            var capability: Int32 = 0
            while true {
                let result = lg_prctl(PR_CAPBSET_DROP, UInt(capability), 0, 0, 0)
                if result == -EINVAL { break }
                guard result == 0 else { throw .systemCall("prctl(PR_CAPBSET_DROP, \(capability))", errno: -result) }
                capability += 1
            }
        }
        var header = capabilityHeader()
        // Version 3 takes two 32-bit words per set; all zero is the empty set.
        let empty = [__user_cap_data_struct](repeating: __user_cap_data_struct(), count: 2)
        // Safe: capset reads two `__user_cap_data_struct`s, which `empty` holds.
        let result = empty.withUnsafeBufferPointer { lg_capset(&header, $0.baseAddress) }
        guard result == 0 else { throw .systemCall("capset", errno: Int32(-result)) }
        let left = try current()
        guard left.effective == 0, left.permitted == 0, left.inheritable == 0 else {
            throw .capabilitiesRemain(effective: left.effective, permitted: left.permitted)
        }
    }

    /// The calling thread's capability sets, 64 bits each.
    public static func current() throws(SandboxError) -> (effective: UInt64, permitted: UInt64, inheritable: UInt64) {
        var header = capabilityHeader()
        var data = [__user_cap_data_struct](repeating: __user_cap_data_struct(), count: 2)
        // Safe: capget writes two `__user_cap_data_struct`s, which `data` holds.
        let result = data.withUnsafeMutableBufferPointer { lg_capget(&header, $0.baseAddress) }
        guard result == 0 else { throw .systemCall("capget", errno: Int32(-result)) }
        func join(_ low: UInt32, _ high: UInt32) -> UInt64 { UInt64(high) << 32 | UInt64(low) }
        return (join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted),
                join(data[0].inheritable, data[1].inheritable))
    }

    /// Whether the calling thread has `capability` in its effective set.
    static func holdsEffective(_ capability: Int32) -> Bool {
        guard let sets = try? current() else { return false }
        return sets.effective & (1 << UInt64(capability)) != 0
    }

    private static func capabilityHeader() -> __user_cap_header_struct {
        __user_cap_header_struct(version: UInt32(_LINUX_CAPABILITY_VERSION_3), pid: 0)
    }
}
