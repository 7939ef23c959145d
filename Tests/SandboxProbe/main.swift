// SandboxProbe KIND CALL
//
// Locks the process down as lguest does (ThreadSandbox.lockDown), installs lguest's real filter
// for KIND (io, vcpu, main, fs) on a thread of that kind, and makes one system call, CALL. If the
// filter allows it, the probe prints "survived CALL" and exits 0; if not, the kernel kills the
// process with SIGSYS. `SandboxProbe privileges` prints what a thread started after lockDown
// holds, as /proc reports it.
import CKVM
import Launcher
import Sandbox
#if canImport(Glibc)
import Glibc
#endif

func die(_ message: String) -> Never {
    printError("SandboxProbe: \(message)")
    exit(2)
}

/// Runs `body` on a new thread and waits for it (the probe's stand-in for spawnThread).
func onThread(_ body: @escaping @Sendable () -> Void) {
    final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    guard pthread_create(&thread, nil, { raw in
        Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, context) == 0 else { die("pthread_create failed") }
    pthread_join(thread, nil)
}

let arguments = CommandLine.arguments.dropFirst()
if arguments.first == "privileges" {
    do throws(SandboxError) { try ThreadSandbox.lockDown() } catch { die(error.description) }
    onThread {
        let fd = open("/proc/thread-self/status", O_RDONLY)
        guard fd >= 0 else { die("cannot open /proc/thread-self/status") }
        var bytes = [UInt8](repeating: 0, count: 8192)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { die("cannot read /proc/thread-self/status") }
        let wanted = ["NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        for line in String(decoding: bytes.prefix(n), as: UTF8.self).split(separator: "\n")
        where wanted.contains(where: { line.hasPrefix($0 + ":") }) {
            print(line)
        }
    }
    exit(0)
}

guard arguments.count == 2, let kind = arguments.first, let call = arguments.last else {
    die("usage: SandboxProbe io|vcpu|main|fs CALL, or SandboxProbe privileges")
}

// Descriptors the filters name, opened before any filter (as lguest opens its own during setup).
// /dev/null stands in for a vCPU and a TAP: an ioctl the filter lets through reaches the
// kernel and fails there with ENOTTY, which is all the probe needs to tell the two apart.
let vcpuStandIn = open("/dev/null", O_RDWR)
let tapStandIn = open("/dev/null", O_RDWR)
let unrelated = open("/dev/null", O_RDWR)
guard vcpuStandIn >= 0, tapStandIn >= 0, unrelated >= 0 else { die("cannot open /dev/null") }

let process = getpid()
let filter: SyscallFilter
switch kind {
case "io": filter = ThreadSandbox.io(process: process)
case "vcpu": filter = ThreadSandbox.vcpu(descriptor: vcpuStandIn, taps: [tapStandIn], process: process)
case "main": filter = ThreadSandbox.main(process: process)
case "fs": filter = ThreadSandbox.fileSystem(process: process)
default: die("unknown thread kind \(kind)")
}

/// The calls the tests ask for. Each returns what the system call returned (or -errno).
let calls: [String: @Sendable () -> Int] = [
    // Allowed somewhere:
    "getrandom": { var b = [UInt8](repeating: 0, count: 16); return b.withUnsafeMutableBytes { getrandom($0.baseAddress, 16, 0) } },
    "kvm-run": { Int(lg_ioctl(vcpuStandIn, LG_KVM_RUN)) },
    "tunsetoffload": { Int(lg_ioctl_value(tapStandIn, LG_TUNSETOFFLOAD, 0)) },
    "restore-terminal": { var t = termios(); return Int(tcsetattr(0, TCSANOW, &t)) },
    "malloc": { Array(repeating: UInt8(1), count: 1 << 20).count },
    "mmap": {
        let p = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        return p == MAP_FAILED ? -1 : Int(munmap(p, 4096))
    },
    "write": { Int(write(1, "", 0)) },
    "fs-server": { FsProbe.shared.run() },
    "fs-relative-fifo": { Int(mknodat(FsProbe.shared.directory, "fifo", S_IFIFO | 0o600, 0)) },
    // Never allowed, or not with these arguments:
    "socket": { Int(socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)) },
    "openat": { Int(open("/dev/null", O_RDONLY)) },
    "execve": { Int(execv("/bin/true", [strdup("/bin/true"), nil])) },
    "x32-getpid": { lg_raw_syscall0(Int(__X32_SYSCALL_BIT) | Int(SYS_getpid)) },
    "kvm-set-regs": { var regs = kvm_regs(); return Int(lg_ioctl_pointer(vcpuStandIn, LG_KVM_SET_REGS, &regs)) },
    "kvm-run-other-fd": { Int(lg_ioctl(unrelated, LG_KVM_RUN)) },
    "stat-by-path": { var s = stat(); return Int(stat("/etc/passwd", &s)) },
    "fs-device-node": { Int(mknodat(FsProbe.shared.directory, "null", S_IFCHR | 0o600, 0x103)) },
    "fs-chmod-setuid": { Int(fchmodat(FsProbe.shared.directory, "fifo", 0o4755, 0)) },
    "mmap-exec": {
        let p = mmap(nil, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        return p == MAP_FAILED ? -1 : 0
    },
]
guard let body = calls[call] else { die("unknown call \(call)") }
// The share and its device are set up before any filter, as lguest sets them up.
if kind == "fs" { _ = FsProbe.shared }

do throws(SandboxError) { try ThreadSandbox.lockDown() } catch { die(error.description) }
if kind == "main" {
    do throws(SandboxError) { try filter.install() } catch { die(error.description) }
    let result = body()
    printError("survived \(call) result=\(result)")
    exit(0)
}
onThread {
    do throws(SandboxError) { try filter.install() } catch { die(error.description) }
    let result = body()
    printError("survived \(call) result=\(result)")
}
if kind == "fs" { FsProbe.shared.removeScratch() }
exit(0)
