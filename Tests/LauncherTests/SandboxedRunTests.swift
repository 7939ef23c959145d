import Foundation
import TestSupport
import Testing

/// The sandbox as a running lguest has it (docs/Sandbox.md): every thread filtered, no
/// capabilities; and `--no-sandbox` for when that is in the way.
@Suite(.enabled(if: kvmUsable, "no usable /dev/kvm on this host: tiny-guest runs skipped"))
struct SandboxedRunTests {
    /// The `Seccomp:` mode, `NoNewPrivs:` and `CapEff:` of each of a process's threads, by name.
    static func threads(of pid: Int32) -> [String: (seccomp: String, noNewPrivs: String, effective: String)] {
        var result: [String: (String, String, String)] = [:]
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return [:] }
        for task in tasks {
            guard let comm = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8),
                  let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
            func field(_ name: String) -> String {
                status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                    .map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) } ?? "?"
            }
            result[comm.trimmingCharacters(in: .whitespacesAndNewlines)] = (field("Seccomp"), field("NoNewPrivs"), field("CapEff"))
        }
        return result
    }

    /// Starts lguest on a guest that spins forever, waits until `ready` holds for its threads
    /// (or `seconds` pass), stops it, and returns the last look.
    func observe(_ extra: [String], cpus: Int = 2, for seconds: Int = 5,
                 until ready: ([String: (seccomp: String, noNewPrivs: String, effective: String)]) -> Bool)
        throws -> [String: (seccomp: String, noNewPrivs: String, effective: String)] {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.print("spinning\n") + TinyGuest.spin), name: "tiny.elf")
        let process = Process()
        process.executableURL = Tool.binary
        process.arguments = ["run", "--kernel", kernel, "--memory", "64", "--cpus", "\(cpus)"] + extra
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { process.terminate(); process.waitUntilExit() }
        var seen = Self.threads(of: process.processIdentifier)
        for _ in 0..<(seconds * 100) where !ready(seen) {
            usleep(10_000)
            seen = Self.threads(of: process.processIdentifier)
        }
        return seen
    }

    static let names = ["lguest", "lguest-io", "lguest-vcpu0", "lguest-vcpu1", "lguest-console", "lguest-watch"]

    @Test func everyThreadRunsFilteredWithoutCapabilities() throws {
        let seen = try observe([]) { threads in Self.names.allSatisfy { threads[$0]?.seccomp == "2" } }
        for name in Self.names {
            let thread = try #require(seen[name], "no thread \(name): \(seen.keys.sorted())")
            #expect(thread.seccomp == "2", "\(name) runs without a seccomp filter")
            #expect(thread.noNewPrivs == "1", "\(name)")
            #expect(thread.effective == "0000000000000000", "\(name) still holds capabilities \(thread.effective)")
        }
    }

    /// Waits the way `everyThreadRunsFilteredWithoutCapabilities` does, for every thread to be
    /// filtered, so it looks only after the filters would have been installed; with
    /// `--no-sandbox` that never happens, and the wait ends at its time limit.
    @Test func noSandboxLeavesThreadsUnfiltered() throws {
        let seen = try observe(["--no-sandbox"], for: 2) { threads in
            Self.names.allSatisfy { threads[$0]?.seccomp == "2" }
        }
        for name in Self.names {
            let thread = try #require(seen[name], "no thread \(name): \(seen.keys.sorted())")
            #expect(thread.seccomp == "0", "\(name)")
        }
    }

    @Test func noSandboxStillBootsAndPowersOff() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff("unsandboxed\n")), name: "tiny.elf")
        let modern = try Tool.run(["run", "--no-sandbox", "--kernel", kernel, "--memory", "64"])
        #expect(modern.status == 0, "stderr: \(modern.stderr)")
        #expect(modern.stdout.contains("unsandboxed"))
        let classic = try Tool.run(["--no-sandbox", "64", kernel, "console=ttyS0"])
        #expect(classic.status == 0, "stderr: \(classic.stderr)")
        #expect(classic.stdout.contains("unsandboxed"))
    }
}
