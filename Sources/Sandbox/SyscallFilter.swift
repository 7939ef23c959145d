import CKVM

/// A seccomp policy for one thread: the system calls it may make, each with the argument
/// values it may make them with. Anything else kills the whole process
/// (`SECCOMP_RET_KILL_PROCESS`), not just the thread: a thread that asks for something it never
/// needs has been taken over, and a VMM missing one of its threads would leave the guest hung.
///
/// `program()` compiles the policy to classic BPF; `install()` applies it to the calling thread.
/// Filters belong to a thread and are inherited by the threads it creates afterwards, so each
/// kind of thread installs its own, after it has started every thread it will ever start.
public struct SyscallFilter: Sendable {
    public let rules: [SyscallRule]

    /// One rule per system call; a second rule for the same call would never be reached.
    public init(_ rules: [SyscallRule]) {
        var seen = Set<Int32>()
        for rule in rules { precondition(seen.insert(rule.syscall.number).inserted, "two rules for \(rule.syscall.name)") }
        self.rules = rules
    }

    /// The syscall names this filter allows, in rule order (for documentation and messages).
    public var allowedNames: [String] { rules.map(\.syscall.name) }

    /// Installs the filter on the calling thread, for the rest of its life. Sets the thread's
    /// no_new_privs first: without it only CAP_SYS_ADMIN may install a filter, and a thread
    /// started before the main thread set it (they inherit it only when created after) would
    /// fail to confine itself in an lguest run by an ordinary user (`lguest jail`, say).
    public func install() throws(SandboxError) {
        try Privileges.forbidNewPrivileges()
        var instructions = program()
        let result = instructions.withUnsafeMutableBufferPointer { buffer in
            // Safe: the kernel copies the program during the call; `buffer` outlives it.
            var fprog = sock_fprog(len: UInt16(buffer.count), filter: buffer.baseAddress)
            return lg_seccomp_set_filter(0, &fprog)
        }
        guard result == 0 else { throw .systemCall("seccomp(SECCOMP_SET_MODE_FILTER)", errno: Int32(-result)) }
    }

    /// The classic BPF program, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
    ///
    /// Shape: check the architecture (a 32-bit or foreign syscall table would give the numbers
    /// other meanings), refuse x32 numbers (the same table with bit 30 set), then one block per
    /// rule. Each block compares the number and skips itself with a long jump when it does not
    /// match; inside, every alternative is a run of argument comparisons that falls through to
    /// ALLOW or jumps to the next alternative. Argument loads happen only inside a block whose
    /// number matched, and every such block ends in a return, so a block that is skipped leaves
    /// the syscall number in the accumulator for the next comparison.
    public func program() -> [sock_filter] {
        var p = BPFProgram()
        p.load(offset: SeccompData.arch)
        p.jumpIfEqual(LG_AUDIT_ARCH_X86_64, true: 1, false: 0)
        p.ret(Self.kill)
        p.load(offset: SeccompData.number)
        p.jumpIfGreaterOrEqual(UInt32(__X32_SYSCALL_BIT), true: 0, false: 1)
        p.ret(Self.kill)
        for rule in rules {
            let body = rule.body()
            p.jumpIfEqual(UInt32(bitPattern: rule.syscall.number), true: 1, false: 0)
            p.jump(over: body.count)
            p.append(body)
        }
        p.ret(Self.kill)
        return p.instructions
    }

    static let allow = UInt32(SECCOMP_RET_ALLOW)
    static let kill = UInt32(SECCOMP_RET_KILL_PROCESS)
    static let errno = UInt32(SECCOMP_RET_ERRNO)
}

/// A system call, by its x86-64 number and its name.
public struct Syscall: Sendable, Hashable {
    public let number: Int32
    public let name: String

    public init(_ number: Int32, _ name: String) {
        self.number = number
        self.name = name
    }
}

/// When one system call is allowed: always, or when all the checks of one of the alternatives hold.
public struct SyscallRule: Sendable {
    public let syscall: Syscall
    /// Empty: allowed with any arguments.
    public let alternatives: [[ArgumentCheck]]
    /// What a call matching no alternative gets: 0 kills the process; otherwise the call fails
    /// with this errno and the thread goes on.
    public let refusal: Int32

    init(syscall: Syscall, alternatives: [[ArgumentCheck]], refusal: Int32 = 0) {
        self.syscall = syscall
        self.alternatives = alternatives
        self.refusal = refusal
    }

    /// Allowed with any arguments.
    public static func allow(_ syscall: Syscall) -> SyscallRule {
        SyscallRule(syscall: syscall, alternatives: [])
    }

    /// Allowed when every check holds.
    public static func allow(_ syscall: Syscall, where checks: ArgumentCheck...) -> SyscallRule {
        precondition(!checks.isEmpty, "use allow(_:) for a call without argument checks")
        return SyscallRule(syscall: syscall, alternatives: [checks])
    }

    /// Allowed when every check of at least one alternative holds. No alternatives at all means
    /// the call is never allowed, which is a mistake in the policy.
    public static func allow(_ syscall: Syscall, whereAnyOf alternatives: [[ArgumentCheck]]) -> SyscallRule {
        precondition(!alternatives.isEmpty && alternatives.allSatisfy { !$0.isEmpty },
                     "\(syscall.name): an alternative without checks would allow everything")
        return SyscallRule(syscall: syscall, alternatives: alternatives)
    }

    /// Allowed when every check of at least one alternative holds; otherwise the call fails
    /// with `errno` instead of killing the process. For a call the C library makes on its own
    /// and copes with failing (glibc's malloc reads /proc/sys/vm/overcommit_memory, by
    /// absolute name, the first time it shrinks a thread's heap).
    public static func allow(_ syscall: Syscall, whereAnyOf alternatives: [[ArgumentCheck]],
                             otherwiseFailWith errno: Int32) -> SyscallRule {
        precondition(errno > 0 && errno < 4096, "\(syscall.name): an errno is 1...4095")
        let rule = allow(syscall, whereAnyOf: alternatives)
        return SyscallRule(syscall: syscall, alternatives: rule.alternatives, refusal: errno)
    }

    /// The instructions after the number matched: ALLOW, or the alternatives then KILL.
    func body() -> [sock_filter] {
        guard !alternatives.isEmpty else { return [BPFProgram.returning(SyscallFilter.allow)] }
        var p = BPFProgram()
        for checks in alternatives {
            // A mismatch jumps past the rest of this alternative and its ALLOW, to the next one
            // (or to the final KILL).
            var block = checks.flatMap { $0.comparisons() }
            for i in block.indices where block[i].code == BPFProgram.jumpIfEqualCode {
                let distance = block.count - i
                precondition(distance <= 255, "\(syscall.name): too many argument checks for an 8-bit jump")
                block[i].jf = UInt8(distance)
            }
            p.append(block)
            p.ret(SyscallFilter.allow)
        }
        p.ret(refusal == 0 ? SyscallFilter.kill : SyscallFilter.errno | UInt32(refusal))
        return p.instructions
    }
}

/// One comparison on one argument: `(argument & mask) == value`.
///
/// The kernel truncates an `int` argument (a descriptor, a `futex` operation) to its low 32
/// bits, whatever the caller left in the upper half of the register, so checks on an `int`
/// mask the upper half away: they compare what the kernel will act on. Pointers, sizes and
/// `unsigned long` requests are compared on all 64 bits.
public struct ArgumentCheck: Sendable, Equatable {
    public let index: Int
    public let mask: UInt64
    public let value: UInt64

    init(index: Int, mask: UInt64, value: UInt64) {
        precondition((0..<6).contains(index), "system calls have six arguments")
        precondition(value & ~mask == 0, "a value with bits outside its mask can never match")
        self.index = index
        self.mask = mask
        self.value = value
    }

    /// Argument `index`, all 64 bits, equals `value` (an `unsigned long` such as an ioctl request).
    public static func equal(_ index: Int, _ value: UInt64) -> ArgumentCheck {
        ArgumentCheck(index: index, mask: ~0, value: value)
    }

    /// Argument `index`, an `int`, equals `value` (a descriptor, a process id).
    public static func equalInt(_ index: Int, _ value: Int32) -> ArgumentCheck {
        ArgumentCheck(index: index, mask: 0xFFFF_FFFF, value: UInt64(UInt32(bitPattern: value)))
    }

    /// Argument `index`, an `int`, has the bits of `mask` equal to `value` (flags).
    public static func maskedInt(_ index: Int, mask: UInt32, equals value: UInt32) -> ArgumentCheck {
        ArgumentCheck(index: index, mask: UInt64(mask), value: UInt64(value))
    }

    /// Argument `index` has none of the bits of `mask` set (all 64 bits considered).
    public static func bitsClear(_ index: Int, _ mask: UInt64) -> ArgumentCheck {
        ArgumentCheck(index: index, mask: mask, value: 0)
    }

    /// Load, mask, compare for each 32-bit half that matters. Each comparison falls through on a
    /// match; where a mismatch goes is the rule's to fill in, since only it knows the distances.
    func comparisons() -> [sock_filter] {
        var p = BPFProgram()
        let halves: [(offset: Int, mask: UInt32, value: UInt32)] = [
            (SeccompData.argument(index, high: true), UInt32(truncatingIfNeeded: mask >> 32), UInt32(truncatingIfNeeded: value >> 32)),
            (SeccompData.argument(index, high: false), UInt32(truncatingIfNeeded: mask), UInt32(truncatingIfNeeded: value)),
        ]
        for half in halves {
            // A half the mask ignores always matches (the high half of an `int`, among others).
            if half.mask == 0 { continue }
            p.load(offset: half.offset)
            if half.mask != 0xFFFF_FFFF { p.and(half.mask) }
            p.jumpIfEqual(half.value, true: 0, false: 0)
        }
        return p.instructions
    }
}

/// Where the fields of `struct seccomp_data` sit, as the filter reads them.
enum SeccompData {
    static let number = MemoryLayout<seccomp_data>.offset(of: \.nr)!
    static let arch = MemoryLayout<seccomp_data>.offset(of: \.arch)!
    /// The 32-bit half of argument `index` (x86-64 is little-endian: the low half comes first).
    static func argument(_ index: Int, high: Bool) -> Int {
        MemoryLayout<seccomp_data>.offset(of: \.args)! + index * 8 + (high ? 4 : 0)
    }
}

/// A classic BPF program under construction: only the handful of instructions seccomp needs.
struct BPFProgram {
    private(set) var instructions: [sock_filter] = []

    static let jumpIfEqualCode = UInt16(BPF_JMP | BPF_JEQ | BPF_K)

    static func returning(_ value: UInt32) -> sock_filter {
        sock_filter(code: UInt16(BPF_RET | BPF_K), jt: 0, jf: 0, k: value)
    }

    mutating func load(offset: Int) {
        instructions.append(sock_filter(code: UInt16(BPF_LD | BPF_W | BPF_ABS), jt: 0, jf: 0, k: UInt32(offset)))
    }

    mutating func and(_ mask: UInt32) {
        instructions.append(sock_filter(code: UInt16(BPF_ALU | BPF_AND | BPF_K), jt: 0, jf: 0, k: mask))
    }

    mutating func jumpIfEqual(_ value: UInt32, true t: UInt8, false f: UInt8) {
        instructions.append(sock_filter(code: Self.jumpIfEqualCode, jt: t, jf: f, k: value))
    }

    mutating func jumpIfGreaterOrEqual(_ value: UInt32, true t: UInt8, false f: UInt8) {
        instructions.append(sock_filter(code: UInt16(BPF_JMP | BPF_JGE | BPF_K), jt: t, jf: f, k: value))
    }

    /// An unconditional jump: 32 bits of distance, where conditional jumps have 8.
    mutating func jump(over count: Int) {
        instructions.append(sock_filter(code: UInt16(BPF_JMP | BPF_JA), jt: 0, jf: 0, k: UInt32(count)))
    }

    mutating func ret(_ value: UInt32) { instructions.append(Self.returning(value)) }

    mutating func append(_ more: [sock_filter]) { instructions += more }
}
