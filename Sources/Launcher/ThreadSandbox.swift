import CKVM
import KVM
import Sandbox
#if canImport(Glibc)
import Glibc
#endif

/// What each of lguest's threads may still do once the VM is set up. docs/Sandbox.md lists
/// every system call below with the reason it is there; keep the two in step.
///
/// The order matters, because seccomp filters, capabilities and no_new_privs all belong to a
/// thread and are inherited by the threads it creates:
/// 1. Setup (files, TAP devices, KVM) runs on the main thread with whatever the user gave us.
/// 2. The main thread sets no_new_privs and drops every capability; the threads it starts next
///    inherit neither.
/// 3. Each vCPU thread and the I/O thread installs its own filter before its loop.
/// 4. The main thread installs its filter last, after it has started every thread.
public enum ThreadSandbox {
    /// Step 2: no set-user-ID surprises, no capabilities, for this thread and its future children.
    public static func lockDown() throws(SandboxError) {
        try Privileges.forbidNewPrivileges()
        try Privileges.dropCapabilities()
        keepHeapsWhole()
    }

    /// glibc gives a thread's malloc heap back to the kernel when much of it is freed, and the
    /// first time it does, it opens /proc/sys/vm/overcommit_memory to choose how — an `openat`
    /// no filter allows, on whichever thread freed the memory (a vsock connection's buffer going
    /// away on the I/O thread, say). A trim threshold this high means heaps are not shrunk;
    /// freed memory stays with malloc for the next allocation, and blocks of 128 KiB and more
    /// (glibc's mmap threshold, which this fixes at its default) still go back with `munmap`.
    static func keepHeapsWhole() {
        _ = lg_set_malloc_trim_threshold(1 << 30)
    }

    /// A vCPU thread: KVM_RUN on its own vCPU (and KVM_GET_MP_STATE, for the halt watch), and
    /// what the devices it drives ask for when the guest touches their registers — the serial port's output and interrupt, a virtio
    /// device's activation and reset (TAP offloads, watching the TAP for input, and with
    /// vhost=on setting up and stopping the kernel's rings: any ioctl on those descriptors).
    public static func vcpu(descriptor: CInt, taps: [CInt], vhosts: [CInt] = [], process: pid_t) -> SyscallFilter {
        var ioctl: [[ArgumentCheck]] = [[.equalInt(0, descriptor), .equal(1, UInt64(LG_KVM_RUN))],
                                        [.equalInt(0, descriptor), .equal(1, UInt64(LG_KVM_GET_MP_STATE))]]
        for tap in taps { ioctl.append([.equalInt(0, tap), .equal(1, UInt64(LG_TUNSETOFFLOAD))]) }
        for vhost in vhosts { ioctl.append([.equalInt(0, vhost)]) }
        ioctl += restoreTerminal
        return SyscallFilter([
            .allow(.ioctl, whereAnyOf: ioctl),
            .allow(.write),
            .allow(.poll),
            .allow(.epoll_ctl),
        ] + runtime(process: process))
    }

    /// The I/O thread: the event loop and every device's queue work, including a discard on
    /// each disk that is a block device, and with a vsock device its host side's sockets.
    public static func io(process: pid_t, blockDevices: [CInt] = [], vsock: Bool = false) -> SyscallFilter {
        let discard: [[ArgumentCheck]] = blockDevices.map { [.equalInt(0, $0), .equal(1, UInt64(LG_BLKDISCARD))] }
        return SyscallFilter((vsock ? vsockSockets : []) + [
            .allow(.epoll_wait),
            .allow(.read),
            .allow(.write),
            .allow(.readv),
            .allow(.writev),
            .allow(.preadv),
            .allow(.pwritev),
            .allow(.fdatasync),
            .allow(.fallocate),
            .allow(.getrandom),
            .allow(.epoll_ctl),
            .allow(.poll),
            .allow(.timerfd_settime),
            .allow(.timerfd_gettime),
            .allow(.ioctl, whereAnyOf: restoreTerminal + discard),
        ] + runtime(process: process))
    }

    /// A disk's worker: reads and writes of the image, and the `fdatasync` after a write when
    /// the driver has no FLUSH; discards, flushes and everything else stay on the I/O thread.
    public static func diskWorker(process: pid_t) -> SyscallFilter {
        SyscallFilter([
            .allow(.preadv),
            .allow(.pwritev),
            .allow(.fdatasync),
        ] + runtime(process: process))
    }

    /// The file-system thread: the shared directories' queues and their FUSE servers. Every
    /// call that takes a path takes it relative to a descriptor (`dirfd` ≥ 0, so never
    /// AT_FDCWD); `mknodat` makes only regular files and FIFOs, `fchmod(at)` never sets the
    /// set-user-ID or set-group-ID bits, and `openat` (used to reopen descriptors) never creates;
    /// any other `openat` fails with EACCES.
    public static func fileSystem(process: pid_t) -> SyscallFilter {
        let relative = { (index: Int) in ArgumentCheck.maskedInt(index, mask: 0x8000_0000, equals: 0) }
        let noSetID = { (index: Int) in ArgumentCheck.maskedInt(index, mask: 0o6000, equals: 0) }
        let fileType: UInt32 = 0o170000
        return SyscallFilter([
            .allow(.epoll_wait),
            .allow(.read),
            .allow(.write),
            // glibc's malloc opens /proc/sys/vm/overcommit_memory the first time it shrinks a
            // thread's heap; refused, it takes the other way (madvise) and goes on.
            .allow(.openat, whereAnyOf: [[relative(0), .maskedInt(2, mask: UInt32(O_CREAT) | 0o20000000, equals: 0)]],
                   otherwiseFailWith: EACCES),
            .allow(.openat2, where: relative(0)),
            .allow(.newfstatat, where: relative(0)),
            .allow(.fstatfs),
            .allow(.mkdirat, where: relative(0)),
            .allow(.mknodat, whereAnyOf: [
                [relative(0), .maskedInt(2, mask: fileType, equals: 0o100000)],
                [relative(0), .maskedInt(2, mask: fileType, equals: 0o010000)],
            ]),
            .allow(.symlinkat, where: relative(1)),
            .allow(.readlinkat, where: relative(0)),
            .allow(.linkat, where: relative(0), relative(2)),
            .allow(.unlinkat, where: relative(0)),
            .allow(.renameat2, where: relative(0), relative(2)),
            .allow(.fchownat, where: relative(0)),
            .allow(.fchmodat, where: relative(0), noSetID(2)),
            .allow(.fchmod, where: noSetID(1)),
            .allow(.utimensat, where: relative(0)),
            .allow(.faccessat2, where: relative(0)),
            .allow(.fsync),
            .allow(.fdatasync),
            .allow(.ftruncate),
            .allow(.fallocate),
            .allow(.lseek),
            .allow(.pread64),
            .allow(.pwrite64),
            .allow(.getdents64),
            .allow(.close),
            .allow(.fgetxattr),
            .allow(.fsetxattr),
            .allow(.flistxattr),
            .allow(.fremovexattr),
            .allow(.ioctl, whereAnyOf: restoreTerminal),
        ] + runtime(process: process))
    }
    /// vsock's host side: host programs connecting to the listener, connections to their
    /// `uds_P` listeners (stream sockets in the file system, nothing else), sending without
    /// SIGPIPE, and closing.
    static let vsockSockets: [SyscallRule] = [
        .allow(.accept4),
        .allow(.socket, where: .equalInt(0, AF_UNIX),
               .maskedInt(1, mask: ~UInt32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), equals: UInt32(SOCK_STREAM.rawValue))),
        .allow(.connect),
        .allow(.sendmsg),
        .allow(.shutdown),
        .allow(.close),
    ]

    /// The console writer: it writes what the guest printed to the host's descriptor.
    public static func consoleWriter(process: pid_t) -> SyscallFilter {
        SyscallFilter([
            .allow(.write),
            .allow(.poll),
        ] + runtime(process: process))
    }

    /// The thread that waits for a VM to stop, then ends its threads and lets go of its
    /// descriptors and memory.
    public static func watcher(process: pid_t) -> SyscallFilter {
        SyscallFilter([
            .allow(.epoll_ctl),
            .allow(.close),
            .allow(.write),
        ] + runtime(process: process))
    }

    /// The API's event loop (swift-nio's thread): it accepts connections on the API socket,
    /// reads requests and writes answers. The socket is already bound and listening; requests
    /// are carried out on another thread.
    public static func api(process: pid_t) -> SyscallFilter {
        SyscallFilter([
            .allow(.epoll_wait),
            .allow(.epoll_ctl),
            .allow(.accept4),
            .allow(.getsockname),
            .allow(.getpeername),
            .allow(.read),
            .allow(.readv),
            .allow(.write),
            .allow(.writev),
            .allow(.shutdown),
            .allow(.close),
            .allow(.timerfd_settime),
        ] + runtime(process: process))
    }

    /// The command-line tool's signal thread: it waits for SIGTSTP and SIGCONT and pauses or
    /// resumes the VM, which reads and sets the guest's clock (on the VM) and tells each vCPU's
    /// kvmclock that the host stopped it.
    public static func signalControl(process: pid_t, vm: CInt, vcpus: [CInt]) -> SyscallFilter {
        var ioctl: [[ArgumentCheck]] = [
            [.equalInt(0, vm), .equal(1, UInt64(LG_KVM_GET_CLOCK))],
            [.equalInt(0, vm), .equal(1, UInt64(LG_KVM_SET_CLOCK))],
        ]
        for vcpu in vcpus { ioctl.append([.equalInt(0, vcpu), .equal(1, UInt64(LG_KVM_KVMCLOCK_CTRL))]) }
        return SyscallFilter([
            .allow(.rt_sigtimedwait),
            .allow(.ioctl, whereAnyOf: ioctl),
            .allow(.write),
        ] + runtime(process: process))
    }

    /// The main thread: it waits for a reason to stop, puts the terminal back, prints at most
    /// one line and exits.
    public static func main(process: pid_t) -> SyscallFilter {
        SyscallFilter([
            .allow(.ioctl, whereAnyOf: restoreTerminal),
            .allow(.write),
        ] + runtime(process: process))
    }

    /// `tcsetattr(0, TCSANOW, ...)`, that is TCSETS with a TCGETS on either side (glibc reads the
    /// settings back to see whether they took): `Terminal.restore`, which a fatal signal's
    /// handler may run on any thread.
    static let restoreTerminal: [[ArgumentCheck]] = [
        [.equalInt(0, 0), .equal(1, UInt64(TCSETS))],
        [.equalInt(0, 0), .equal(1, UInt64(TCGETS))],
    ]

    /// What any thread does because glibc and the Swift runtime do it on its behalf: locks,
    /// memory, signals, and leaving.
    static func runtime(process: pid_t) -> [SyscallRule] {
        let privateOrRealtime = UInt32(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
        let futexOperations = [FUTEX_WAIT, FUTEX_WAKE, FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET,
                               FUTEX_LOCK_PI, FUTEX_LOCK_PI2, FUTEX_UNLOCK_PI, FUTEX_TRYLOCK_PI]
        return [
            .allow(.futex, whereAnyOf: futexOperations.map {
                [.maskedInt(1, mask: ~privateOrRealtime, equals: UInt32($0))]
            }),
            .allow(.mmap, where: .bitsClear(2, UInt64(PROT_EXEC))),
            .allow(.mprotect, where: .bitsClear(2, UInt64(PROT_EXEC))),
            .allow(.munmap),
            .allow(.mremap),
            .allow(.madvise),
            .allow(.brk),
            .allow(.rt_sigprocmask),
            .allow(.rt_sigreturn),
            .allow(.rt_sigaction),
            .allow(.restart_syscall),
            .allow(.getpid),
            .allow(.gettid),
            .allow(.tgkill, where: .equalInt(0, process)),
            .allow(.clock_gettime),
            .allow(.exit),
            .allow(.exit_group),
        ]
    }
}

/// One machine's filters, built on the main thread (building allocates; installing does not)
/// before any of its threads starts. All nil when the sandbox is off.
struct MachineSandbox: Sendable {
    let io: SyscallFilter?
    /// Every disk worker's.
    let diskWorker: SyscallFilter?
    /// The file-system thread's, when there are shared directories.
    let fs: SyscallFilter?
    let vcpus: [SyscallFilter?]
    let main: SyscallFilter?

    /// Locks the process down (step 2) and builds every thread's filter.
    init(enabled: Bool, vcpus: [VCPU], taps: [CInt], vhosts: [CInt] = [], blockDevices: [CInt], vsock: Bool, shares: Bool = false) throws(LaunchError) {
        guard enabled else {
            (io, diskWorker, fs, main) = (nil, nil, nil, nil)
            self.vcpus = vcpus.map { _ in nil }
            return
        }
        do throws(SandboxError) { try ThreadSandbox.lockDown() } catch { throw .sandbox(error) }
        let process = getpid()
        io = ThreadSandbox.io(process: process, blockDevices: blockDevices, vsock: vsock)
        diskWorker = ThreadSandbox.diskWorker(process: process)
        fs = shares ? ThreadSandbox.fileSystem(process: process) : nil
        self.vcpus = vcpus.map { ThreadSandbox.vcpu(descriptor: $0.descriptor.raw, taps: taps, vhosts: vhosts, process: process) }
        main = ThreadSandbox.main(process: process)
    }

    /// Step 4: the main thread's own filter, once every other thread has started.
    func confineMainThread() throws(LaunchError) {
        do throws(SandboxError) { try main?.install() } catch { throw .sandbox(error) }
    }
}
