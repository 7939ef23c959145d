import Foundation
import Testing

/// lguest's real thread filters, installed in a separate process (Tests/SandboxProbe): a call a
/// thread may not make must kill the process with SIGSYS, and one it may make must go through.
enum Probe {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Next to the test bundle when SwiftPM runs the tests, else in the package's debug build.
    static var binary: URL {
        let sibling = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("SandboxProbe")
        if FileManager.default.isExecutableFile(atPath: sibling.path) { return sibling }
        return packageRoot.appendingPathComponent(".build/debug/SandboxProbe")
    }

    struct Outcome {
        var exitStatus: Int32?
        var signal: Int32?
        var output: String
    }

    static func run(_ arguments: [String]) throws -> Outcome {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        switch process.terminationReason {
        case .uncaughtSignal: return Outcome(exitStatus: nil, signal: process.terminationStatus, output: text)
        default: return Outcome(exitStatus: process.terminationStatus, signal: nil, output: text)
        }
    }

    static func expectKilled(_ kind: String, _ call: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let outcome = try run([kind, call])
        #expect(outcome.signal == SIGSYS, "\(kind) \(call): \(outcome)", sourceLocation: sourceLocation)
        #expect(!outcome.output.contains("survived"), sourceLocation: sourceLocation)
    }

    static func expectAllowed(_ kind: String, _ call: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let outcome = try run([kind, call])
        #expect(outcome.exitStatus == 0, "\(kind) \(call): \(outcome)", sourceLocation: sourceLocation)
        #expect(outcome.output.contains("survived \(call)"), "\(outcome.output)", sourceLocation: sourceLocation)
    }
}

@Suite struct IOThreadFilterTests {
    @Test(arguments: ["getrandom", "write", "malloc", "mmap", "restore-terminal"])
    func allowedCallsGoThrough(call: String) throws { try Probe.expectAllowed("io", call) }

    @Test(arguments: ["socket", "openat", "execve", "x32-getpid", "mmap-exec", "kvm-run"])
    func forbiddenCallsKillTheProcess(call: String) throws { try Probe.expectKilled("io", call) }
}

@Suite struct VCPUThreadFilterTests {
    @Test(arguments: ["kvm-run", "tunsetoffload", "write", "malloc", "restore-terminal"])
    func allowedCallsGoThrough(call: String) throws { try Probe.expectAllowed("vcpu", call) }

    /// KVM_SET_REGS on its own vCPU, or KVM_RUN on another descriptor, is an ioctl the vCPU
    /// thread makes only if it has been taken over.
    @Test(arguments: ["kvm-set-regs", "kvm-run-other-fd", "socket", "openat", "getrandom", "x32-getpid"])
    func forbiddenCallsKillTheProcess(call: String) throws { try Probe.expectKilled("vcpu", call) }
}

@Suite struct MainThreadFilterTests {
    @Test(arguments: ["write", "restore-terminal", "malloc"])
    func allowedCallsGoThrough(call: String) throws { try Probe.expectAllowed("main", call) }

    @Test(arguments: ["openat", "getrandom", "kvm-run", "socket"])
    func forbiddenCallsKillTheProcess(call: String) throws { try Probe.expectKilled("main", call) }
}

@Suite struct FileSystemThreadFilterTests {
    /// A whole FUSE session, every operation once, served under the filter: the server makes
    /// no call the filter lacks.
    @Test(arguments: ["fs-server", "fs-relative-fifo", "write", "malloc", "restore-terminal"])
    func allowedCallsGoThrough(call: String) throws { try Probe.expectAllowed("fs", call) }

    /// An open by name fails instead of killing (glibc's malloc makes one on its own).
    @Test func anOpenByNameFails() throws {
        let outcome = try Probe.run(["fs", "openat"])
        #expect(outcome.exitStatus == 0, "\(outcome)")
        #expect(outcome.output.contains("survived openat result=-1"), "\(outcome.output)")
    }

    @Test(arguments: ["stat-by-path", "fs-device-node", "fs-chmod-setuid", "socket", "execve", "getrandom", "kvm-run"])
    func forbiddenCallsKillTheProcess(call: String) throws { try Probe.expectKilled("fs", call) }
}

@Suite struct PrivilegeTests {
    /// A thread started after lockDown, as every vCPU and the I/O thread is, holds nothing.
    @Test func threadsStartedAfterLockDownHaveNoCapabilitiesAndNoNewPrivileges() throws {
        let outcome = try Probe.run(["privileges"])
        #expect(outcome.exitStatus == 0, "\(outcome.output)")
        var fields: [String: String] = [:]
        for line in outcome.output.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        #expect(fields["NoNewPrivs"] == "1", "\(outcome.output)")
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            #expect(fields[set] == "0000000000000000", "\(set): \(outcome.output)")
        }
        // The bounding set can only be emptied by a process that held CAP_SETPCAP to begin with
        // (the probe inherits ours).
        if Self.holdsSetPCap { #expect(fields["CapBnd"] == "0000000000000000", "\(outcome.output)") }
    }

    static var holdsSetPCap: Bool {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return false }
        return mask & (1 << 8) != 0 // CAP_SETPCAP
    }
}
