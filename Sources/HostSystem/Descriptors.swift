import CKVM
#if canImport(Glibc)
import Glibc
#endif

// lguest's system-call wrappers, one set for every layer that talks to the host kernel: KVM,
// the devices, the Launcher and the control plane. Each wraps one call, captures its errno,
// retries EINTR where the call can be retried, and names the call in its error.

/// A file descriptor this process owns: it is closed exactly once, when the last reference goes.
///
/// `FileDescriptor` from swift-system is a plain value with no ownership (and not `Sendable`);
/// KVM's descriptors have lifetimes that matter — a VM lives until its last descriptor closes —
/// so here ownership is a class.
public final class OwnedDescriptor: Sendable {
    public let raw: CInt

    public init(adopting raw: CInt) { self.raw = raw }

    deinit { close(raw) }
}

/// An error from one system call, with the call's name and errno: "KVM_CREATE_VM: Permission denied".
public struct SystemCallError: Error, Equatable, Sendable, CustomStringConvertible {
    public let call: String
    public let errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// Runs a CKVM wrapper (which returns the result or -errno) and turns a failure into a
/// `SystemCallError` named after the call.
@inline(__always)
public func check(_ call: @autoclosure () -> String, _ result: CInt) throws(SystemCallError) -> CInt {
    if result < 0 { throw SystemCallError(call(), errno: -result) }
    return result
}

/// An eventfd: a counter in the kernel that KVM can signal (ioeventfd) or listen to (irqfd).
public final class EventFD: Sendable {
    public let descriptor: OwnedDescriptor
    public var raw: CInt { descriptor.raw }

    public init(nonBlocking: Bool = true) throws(SystemCallError) {
        let fd = eventfd(0, Int32(EFD_CLOEXEC) | (nonBlocking ? Int32(EFD_NONBLOCK) : 0))
        if fd < 0 { throw SystemCallError("eventfd", errno: errno) }
        descriptor = OwnedDescriptor(adopting: fd)
    }

    /// Adds one to the counter, waking whoever waits on it (KVM injects an interrupt for an irqfd).
    /// A signal interrupting the write (EINTR) does not lose the wake-up: it is made again.
    public func signal() {
        var one: UInt64 = 1
        // Safe: writes the 8 bytes of a local.
        _ = withUnsafeBytes(of: &one) { bytes in
            while write(raw, bytes.baseAddress, 8) < 0, errno == EINTR {}
        }
    }

    /// Reads and resets the counter; returns 0 if it was already zero. A read a signal
    /// interrupts (EINTR) is made again.
    @discardableResult
    public func drain() -> UInt64 {
        var value: UInt64 = 0
        // Safe: reads at most 8 bytes into a local.
        let n = withUnsafeMutableBytes(of: &value) { bytes in
            var n: Int
            repeat { n = read(raw, bytes.baseAddress, 8) } while n < 0 && errno == EINTR
            return n
        }
        return n == 8 ? value : 0
    }
}
