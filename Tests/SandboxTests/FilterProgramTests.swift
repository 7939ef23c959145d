import CKVM
import Foundation
import Launcher
import Sandbox
import Testing

/// Runs a classic BPF program the way the kernel runs a seccomp filter, over the instructions
/// `SyscallFilter` emits (and nothing else: anything unknown fails the test).
struct Interpreter {
    struct Call {
        var number: Int32
        var arch = LG_AUDIT_ARCH_X86_64
        var arguments: [UInt64] = [0, 0, 0, 0, 0, 0]
    }

    static func run(_ program: [sock_filter], _ call: Call) throws -> UInt32 {
        var data = seccomp_data()
        data.nr = call.number
        data.arch = call.arch
        withUnsafeMutableBytes(of: &data.args) { raw in
            for (i, value) in call.arguments.enumerated() { raw.storeBytes(of: value, toByteOffset: i * 8, as: UInt64.self) }
        }
        let bytes = withUnsafeBytes(of: &data) { Array($0) }
        var accumulator: UInt32 = 0
        var pc = 0
        while pc < program.count {
            let i = program[pc]
            pc += 1
            switch Int32(i.code) {
            case BPF_LD | BPF_W | BPF_ABS:
                let offset = Int(i.k)
                guard offset % 4 == 0, offset + 4 <= bytes.count else { throw Failure("load outside seccomp_data at \(offset)") }
                accumulator = bytes[offset..<offset + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            case BPF_ALU | BPF_AND | BPF_K:
                accumulator &= i.k
            case BPF_JMP | BPF_JA:
                pc += Int(i.k)
            case BPF_JMP | BPF_JEQ | BPF_K:
                pc += Int(accumulator == i.k ? i.jt : i.jf)
            case BPF_JMP | BPF_JGE | BPF_K:
                pc += Int(accumulator >= i.k ? i.jt : i.jf)
            case BPF_RET | BPF_K:
                return i.k
            default:
                throw Failure("unexpected instruction 0x\(String(i.code, radix: 16)) at \(pc - 1)")
            }
        }
        throw Failure("ran off the end of the program")
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }
}

let allow = UInt32(SECCOMP_RET_ALLOW)
let kill = UInt32(SECCOMP_RET_KILL_PROCESS)

@Suite struct FilterProgramTests {
    let filter = SyscallFilter([
        .allow(.read),
        .allow(.ioctl, whereAnyOf: [
            [.equalInt(0, 7), .equal(1, UInt64(LG_KVM_RUN))],
            [.equalInt(0, 9), .equal(1, UInt64(LG_TUNSETOFFLOAD))],
        ]),
        .allow(.mmap, where: .bitsClear(2, UInt64(PROT_EXEC))),
        .allow(.futex, where: .maskedInt(1, mask: ~UInt32(FUTEX_PRIVATE_FLAG), equals: UInt32(FUTEX_WAKE))),
    ])

    func verdict(_ call: Interpreter.Call) throws -> UInt32 { try Interpreter.run(filter.program(), call) }

    @Test func aCallWithoutChecksIsAllowedAndAnUnlistedOneKills() throws {
        #expect(try verdict(.init(number: SYS_read)) == allow)
        #expect(try verdict(.init(number: SYS_write)) == kill)
        #expect(try verdict(.init(number: SYS_openat)) == kill)
    }

    @Test func anotherArchitectureKillsEvenForAnAllowedNumber() throws {
        // i386's table: number 0 is restart_syscall there, not read.
        #expect(try verdict(.init(number: SYS_read, arch: 0x4000_0003)) == kill)
    }

    @Test func x32NumbersKill() throws {
        #expect(try verdict(.init(number: Int32(__X32_SYSCALL_BIT) | SYS_read)) == kill)
    }

    @Test func eachAlternativeIsTriedInTurn() throws {
        #expect(try verdict(.init(number: SYS_ioctl, arguments: [7, UInt64(LG_KVM_RUN), 0, 0, 0, 0])) == allow)
        #expect(try verdict(.init(number: SYS_ioctl, arguments: [9, UInt64(LG_TUNSETOFFLOAD), 0, 0, 0, 0])) == allow)
        // The right request on the wrong descriptor, and the other way round.
        #expect(try verdict(.init(number: SYS_ioctl, arguments: [9, UInt64(LG_KVM_RUN), 0, 0, 0, 0])) == kill)
        #expect(try verdict(.init(number: SYS_ioctl, arguments: [7, UInt64(LG_KVM_SET_REGS), 0, 0, 0, 0])) == kill)
    }

    @Test func anIntComparesOnlyTheBitsTheKernelReads() throws {
        // The kernel reads fd 7 here, whatever the upper half of the register says.
        #expect(try verdict(.init(number: SYS_ioctl, arguments: [0xDEAD_0000_0000_0007, UInt64(LG_KVM_RUN), 0, 0, 0, 0])) == allow)
        // An unsigned long request is compared whole: a differing upper half is another request.
        #expect(try verdict(.init(number: SYS_ioctl, arguments: [7, UInt64(LG_KVM_RUN) | 1 << 40, 0, 0, 0, 0])) == kill)
    }

    @Test func bitsClearAndMaskedChecks() throws {
        #expect(try verdict(.init(number: SYS_mmap, arguments: [0, 4096, UInt64(PROT_READ | PROT_WRITE), 0, 0, 0])) == allow)
        #expect(try verdict(.init(number: SYS_mmap, arguments: [0, 4096, UInt64(PROT_READ | PROT_EXEC), 0, 0, 0])) == kill)
        #expect(try verdict(.init(number: SYS_futex, arguments: [0, UInt64(FUTEX_WAKE | FUTEX_PRIVATE_FLAG), 0, 0, 0, 0])) == allow)
        #expect(try verdict(.init(number: SYS_futex, arguments: [0, UInt64(FUTEX_WAKE), 0, 0, 0, 0])) == allow)
        #expect(try verdict(.init(number: SYS_futex, arguments: [0, UInt64(FUTEX_CMP_REQUEUE), 0, 0, 0, 0])) == kill)
    }

    /// The I/O thread may discard on the disks that are block devices, and on nothing else.
    @Test func theIOThreadDiscardsOnlyOnBlockDevices() throws {
        let program = ThreadSandbox.io(process: 1, blockDevices: [8, 12]).program()
        func ioctl(_ fd: UInt64, _ request: UInt) throws -> UInt32 {
            try Interpreter.run(program, .init(number: SYS_ioctl, arguments: [fd, UInt64(request), 0, 0, 0, 0]))
        }
        #expect(try ioctl(8, LG_BLKDISCARD) == allow)
        #expect(try ioctl(12, LG_BLKDISCARD) == allow)
        #expect(try ioctl(9, LG_BLKDISCARD) == kill)
        #expect(try ioctl(8, LG_BLKGETSIZE64) == kill)
        #expect(try ioctl(0, UInt(TCSETS)) == allow)
        let withoutDisks = ThreadSandbox.io(process: 1).program()
        #expect(try Interpreter.run(withoutDisks, .init(number: SYS_ioctl, arguments: [8, UInt64(LG_BLKDISCARD), 0, 0, 0, 0])) == kill)
    }

    /// The file-system thread names paths only relative to descriptors, makes no device nodes
    /// and sets no set-user-ID bits.
    @Test func theFileSystemThreadNeverUsesTheWorkingDirectory() throws {
        let program = ThreadSandbox.fileSystem(process: 1).program()
        let cwd = UInt64(bitPattern: Int64(-100)) // AT_FDCWD, as the kernel sees it in a register
        func verdict(_ number: Int32, _ arguments: UInt64...) throws -> UInt32 {
            try Interpreter.run(program, .init(number: number, arguments: arguments + Array(repeating: 0, count: 6 - arguments.count)))
        }
        #expect(try verdict(SYS_openat2, 5, 0, 0, 24) == allow)
        #expect(try verdict(SYS_openat2, cwd, 0, 0, 24) == kill)
        #expect(try verdict(SYS_openat, 5, 0, UInt64(O_RDONLY)) == allow)
        // Any other openat fails (EACCES) rather than kills: glibc's malloc makes one by itself.
        let refused = UInt32(SECCOMP_RET_ERRNO) | UInt32(EACCES)
        #expect(try verdict(SYS_openat, 5, 0, UInt64(O_RDWR | O_CREAT)) == refused)
        #expect(try verdict(SYS_openat, cwd, 0, UInt64(O_RDONLY | O_CLOEXEC)) == refused)
        #expect(try verdict(SYS_newfstatat, 5, 0, 0, 0x1000) == allow)
        #expect(try verdict(SYS_newfstatat, cwd, 0, 0, 0) == kill)
        #expect(try verdict(SYS_mknodat, 5, 0, 0o100644) == allow)
        #expect(try verdict(SYS_mknodat, 5, 0, 0o010644) == allow)
        #expect(try verdict(SYS_mknodat, 5, 0, 0o020666) == kill, "character device")
        #expect(try verdict(SYS_mknodat, 5, 0, 0o060666) == kill, "block device")
        #expect(try verdict(SYS_mknodat, cwd, 0, 0o100644) == kill)
        #expect(try verdict(SYS_fchmodat, 5, 0, 0o755) == allow)
        #expect(try verdict(SYS_fchmodat, 5, 0, 0o4755) == kill)
        #expect(try verdict(SYS_fchmod, 5, 0o2755) == kill)
        #expect(try verdict(SYS_symlinkat, 0, 5, 0) == allow)
        #expect(try verdict(SYS_symlinkat, 0, cwd, 0) == kill)
        #expect(try verdict(SYS_renameat2, 5, 0, 6, 0, 0) == allow)
        #expect(try verdict(SYS_renameat2, 5, 0, cwd, 0, 0) == kill)
        #expect(try verdict(SYS_linkat, cwd, 0, 6, 0, 0) == kill)
        for number in [SYS_open, SYS_stat, SYS_lstat, SYS_mkdir, SYS_unlink, SYS_rename, SYS_chmod, SYS_socket, SYS_execve] {
            #expect(try verdict(number) == kill, "\(number)")
        }
    }

    /// lguest's own filters compile, fit the kernel's limit, and behave on a sample of calls.
    @Test func lguestsFiltersCompileAndFit() throws {
        let process: pid_t = 4242
        let filters = [
            ("vcpu", ThreadSandbox.vcpu(descriptor: 7, taps: [9, 10, 11, 12], process: process)),
            ("io", ThreadSandbox.io(process: process)),
            ("main", ThreadSandbox.main(process: process)),
            ("fs", ThreadSandbox.fileSystem(process: process)),
        ]
        for (name, filter) in filters {
            let program = filter.program()
            #expect(program.count < Int(BPF_MAXINSNS), "\(name): \(program.count) instructions")
            #expect(try Interpreter.run(program, .init(number: SYS_exit_group)) == allow, "\(name)")
            #expect(try Interpreter.run(program, .init(number: SYS_tgkill, arguments: [UInt64(process), 1, 6, 0, 0, 0])) == allow, "\(name)")
            #expect(try Interpreter.run(program, .init(number: SYS_tgkill, arguments: [1, 1, 9, 0, 0, 0])) == kill, "\(name): tgkill to another process")
            #expect(try Interpreter.run(program, .init(number: SYS_clone3)) == kill, "\(name)")
            #expect(try Interpreter.run(program, .init(number: SYS_execve)) == kill, "\(name)")
        }
    }
}

/// docs/Sandbox.md lists every system call each thread may make (its own table plus the one
/// every thread shares); a call added to a filter but not to the page, or the other way round,
/// fails here.
@Suite struct SandboxDocumentationTests {
    static let page = Probe.packageRoot.appendingPathComponent("docs/Sandbox.md")

    /// The backquoted names in the first column of the table under `heading`.
    static func documentedCalls(under heading: String) throws -> Set<String> {
        let text = try String(contentsOf: page, encoding: .utf8)
        let sections = text.components(separatedBy: "\n## ")
        let section = try #require(sections.first { $0.hasPrefix(heading) }, "no '## \(heading)' in docs/Sandbox.md")
        var names = Set<String>()
        for line in section.split(separator: "\n") where line.hasPrefix("| `") {
            let cell = line.dropFirst(3)
            if let end = cell.firstIndex(of: "`") { names.insert(String(cell[..<end])) }
        }
        return names
    }

    static let filters = [
        "vCPU threads": ThreadSandbox.vcpu(descriptor: 7, taps: [9], vhosts: [10], process: 1),
        "Disk workers": ThreadSandbox.diskWorker(process: 1),
        "The I/O thread": ThreadSandbox.io(process: 1, blockDevices: [8]),
        "The main thread": ThreadSandbox.main(process: 1),
        "The console writer": ThreadSandbox.consoleWriter(process: 1),
        "The watcher thread": ThreadSandbox.watcher(process: 1),
        "The API thread": ThreadSandbox.api(process: 1),
        "The file-system thread": ThreadSandbox.fileSystem(process: 1),
        "The signal thread": ThreadSandbox.signalControl(process: 1, vm: 5, vcpus: [6]),
    ]

    @Test(arguments: ["vCPU threads", "Disk workers", "The I/O thread", "The main thread", "The console writer", "The watcher thread", "The API thread", "The file-system thread"])
    func everyAllowedCallIsDocumented(heading: String) throws {
        let filter = try #require(Self.filters[heading])
        let documented = try Self.documentedCalls(under: heading).union(Self.documentedCalls(under: "Every thread"))
        #expect(documented == Set(filter.allowedNames),
                "missing from the page: \(Set(filter.allowedNames).subtracting(documented).sorted()); not in the filter: \(documented.subtracting(filter.allowedNames).sorted())")
    }

    /// The I/O thread's filter with a vsock device: its own table plus the vsock section's.
    @Test func vsockCallsAreDocumented() throws {
        let filter = ThreadSandbox.io(process: 1, blockDevices: [8], vsock: true)
        let documented = try Self.documentedCalls(under: "The I/O thread, with a vsock device")
            .union(Self.documentedCalls(under: "The I/O thread\n"))
            .union(Self.documentedCalls(under: "Every thread"))
        #expect(documented == Set(filter.allowedNames),
                "missing from the page: \(Set(filter.allowedNames).subtracting(documented).sorted()); not in the filter: \(documented.subtracting(filter.allowedNames).sorted())")
    }
}
