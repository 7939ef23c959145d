// End-to-end tests: the stock Debian kernel booted by lguest, checked from inside the guest.
//
// One run of Lab/scenarios/boot.sh serves every test here: lab.sh boots the lab host once (or,
// on a host with hardware-virtualized /dev/kvm, runs the scenario directly), and the scenario
// runs lguest four times. Each test reads its own run's markers from the serial log; the guest's
// /init (Lab/guest/check-init.sh) reports what the guest itself saw in an LGUEST-CHECK line.
//
// Environment:
//   LGUEST_LAB=skip              skip these tests (they run by default)
//   LGUEST_LAB_MODE=lab|direct   where to run (default: direct with hardware KVM, else the lab)
//   LGUEST_BINARY=PATH           the VMM to test (default: the lguest built beside these tests)
//   LGUEST_LAB_RUN_TIMEOUT=S     seconds one guest run may take (default 120)
import Foundation
import Testing

@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct LabTests {
    static let guestMemoryKiB = 256 * 1024

    @Test("modern form: the guest sees 2 CPUs, about 256 MiB and exactly the command line")
    func modernForm() async throws {
        let run = try await BootScenario.run("modern")
        #expect(run.exitStatus == 0, "lguest run should exit 0 after the guest's poweroff\n\(run.context)")
        let check = try run.requireCheck()
        #expect(check.cpus == 2, "--cpus 2\n\(run.context)")
        expectMemoryNear256MiB(check, run)
        #expect(check.cmdline == "console=ttyS0 quiet panic=0 lguest.action=poweroff lguest.tag=modern",
                "the guest's /proc/cmdline must be exactly --cmdline\n\(run.context)")
        expectCleanLog(run)
        // The first boot of the lab host with --kernel-cache: the bzImage was expanded into it.
        #expect(run.lines.contains { $0.contains("trace: kernel expanded into the cache, /") },
                "the modern run should have booted through the kernel cache\n\(run.context)")
    }

    @Test("a bzImage booted as it is (--kernel-cache off) expands itself and reaches /init the same")
    func bzImageAsItIs() async throws {
        let run = try await BootScenario.run("bzimage")
        #expect(run.exitStatus == 0, "lguest run should exit 0 after the guest's poweroff\n\(run.context)")
        let check = try run.requireCheck()
        #expect(check.cpus == 1)
        expectMemoryNear256MiB(check, run)
        #expect(check.cmdline == "console=ttyS0 quiet panic=0 lguest.action=poweroff lguest.tag=bzimage", "\(run.context)")
        #expect(!run.lines.contains { $0.contains("trace: kernel") && $0.contains("cache") },
                "--kernel-cache off must not touch the cache\n\(run.context)")
        expectCleanLog(run)
    }

    /// The guest kernel's log has no warning lguest causes. One is the lab's own: under nested
    /// KVM on QEMU's emulated SVM the guest's XSETBV never reaches L2's KVM, so CPUID 0xD's
    /// size stays at the x87/SSE one and Linux warns `XSAVE consistency problem` from
    /// fpu/xstate.c; QEMU with `-cpu host` prints the same in the same lab (qemu-microvm.sh).
    private func expectCleanLog(_ run: GuestRun) {
        let log = run.lines.compactMap { line in line.range(of: "LGUEST-DMESG ").map { String(line[$0.upperBound...]) } }
        let warnings = log.filter { $0.contains("WARNING:") }
        let labOnly = warnings.filter { $0.contains("fpu/xstate.c") }
        #expect(run.lines.contains { $0.contains("LGUEST-LOG ") }, "the guest printed no LGUEST-LOG line\n\(run.context)")
        #expect(warnings.count == labOnly.count, "the guest kernel warned: \(warnings)\n\(run.context)")
        if LabEnvironment.runsInLab == false {
            #expect(labOnly.isEmpty, "with hardware KVM there must be no XSAVE warning: \(warnings)\n\(run.context)")
        }
        #expect(!run.lines.contains { $0.contains("LGUEST-LOG ") && !$0.contains("unknown_parameters=0") },
                "the kernel met an unknown parameter\n\(run.context)")
    }

    @Test("classic form: lguest --initrd=FILE 256 KERNEL ARGS... boots with 1 CPU")
    func classicForm() async throws {
        let run = try await BootScenario.run("classic")
        #expect(run.exitStatus == 0, "lguest should exit 0 after the guest's poweroff\n\(run.context)")
        let check = try run.requireCheck()
        #expect(check.cpus == 1, "the classic form has one vCPU\n\(run.context)")
        expectMemoryNear256MiB(check, run)
        #expect(check.cmdline == "console=ttyS0 quiet lguest.action=poweroff lguest.tag=classic",
                "the guest's /proc/cmdline must be the kernel arguments joined by spaces\n\(run.context)")
    }

    @Test("a guest panic (reported through pvpanic) ends lguest with status 1 and says so")
    func panic() async throws {
        let run = try await BootScenario.run("panic")
        _ = try run.requireCheck()
        #expect(run.exitStatus == 1, "lguest should exit 1 when the guest panics\n\(run.context)")
        #expect(run.stderrLastLine.lowercased().contains("panic"),
                "lguest's last line on stderr should mention the panic\n\(run.context)")
    }

    private func expectMemoryNear256MiB(_ check: GuestCheck, _ run: GuestRun) {
        let low = Self.guestMemoryKiB * 8 / 10
        #expect((low...Self.guestMemoryKiB).contains(check.memTotalKiB),
                "MemTotal \(check.memTotalKiB) kB should be 80–100% of 256 MiB\n\(run.context)")
    }
}

// MARK: - Where the lab runs and what it tests

enum LabEnvironment {
    static let environment = ProcessInfo.processInfo.environment

    static var enabled: Bool { environment["LGUEST_LAB"] != "skip" }

    /// The package root: this file is <root>/Tests/LabTests/LabTests.swift.
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var labScript: URL { packageRoot.appendingPathComponent("Lab/lab.sh") }

    /// The VMM under test: $LGUEST_BINARY, else the lguest that `swift test` built beside the
    /// test binary (so `-c release` tests the release build), else .build/debug/lguest.
    static func vmmBinary() -> String {
        if let path = environment["LGUEST_BINARY"], !path.isEmpty { return path }
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let sibling = testBinary.deletingLastPathComponent().appendingPathComponent("lguest").path
        if FileManager.default.isExecutableFile(atPath: sibling) { return sibling }
        return packageRoot.appendingPathComponent(".build/debug/lguest").path
    }

    /// Hardware-virtualized /dev/kvm: present, not PVM, and the CPU has VMX or SVM.
    static var hasHardwareKVM: Bool {
        guard FileManager.default.fileExists(atPath: "/dev/kvm"),
              !FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm"),
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        else { return false }
        return cpuinfo.split(separator: "\n").contains { line in
            line.hasPrefix("flags") && line.split(separator: " ").contains { $0 == "vmx" || $0 == "svm" }
        }
    }

    /// Whether the scenarios run in the lab (emulated SVM) rather than on this host's KVM.
    static var runsInLab: Bool {
        switch environment["LGUEST_LAB_MODE"] ?? "auto" {
        case "lab": return true
        case "direct": return false
        default: return !hasHardwareKVM
        }
    }

    /// Whether `command` is on PATH.
    static func onPath(_ command: String) -> Bool {
        (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(command)")
        }
    }
}

// MARK: - One boot scenario run, shared by every test

/// The `key=value` words of a marker line's text, each key with `prefix` in front; other words
/// are skipped. Markers are how the guests and the scenarios report (`LGUEST-VIRTIO ro=1 ...`).
func markerFields(_ text: Substring, prefix: String = "") -> [String: String] {
    var fields: [String: String] = [:]
    for word in text.split(separator: " ") {
        let pair = word.split(separator: "=", maxSplits: 1)
        if pair.count == 2 { fields[prefix + String(pair[0])] = String(pair[1]) }
    }
    return fields
}

/// What the guest's /init reported: `LGUEST-CHECK cpus=N memtotal_kb=N cmdline=...`.
struct GuestCheck: Sendable, Equatable {
    var cpus: Int
    var memTotalKiB: Int
    var cmdline: String

    init?(line: String) {
        guard let start = line.range(of: "LGUEST-CHECK ") else { return nil }
        let rest = line[start.upperBound...]
        guard let cmdlineStart = rest.range(of: " cmdline=") else { return nil }
        let fields = markerFields(rest[..<cmdlineStart.lowerBound])
        guard let cpus = fields["cpus"].flatMap({ Int($0) }),
              let memory = fields["memtotal_kb"].flatMap({ Int($0) }) else { return nil }
        self.cpus = cpus
        self.memTotalKiB = memory
        self.cmdline = String(rest[cmdlineStart.upperBound...])
    }
}

/// One lguest run of the scenario, from its markers in the log.
struct GuestRun: Sendable {
    var name: String
    var exitStatus: Int?
    var check: GuestCheck?
    var stderrLastLine: String
    /// The run's part of the log, from LAB-BEGIN to LAB-END.
    var lines: [String]
    /// The run's part of the log and where the whole log is, for failure messages.
    var context: String

    func requireCheck() throws -> GuestCheck {
        try #require(check, "the guest printed no LGUEST-CHECK line: it did not reach /init\n\(context)")
    }
}

struct LabFailure: Error, CustomStringConvertible {
    var description: String
}

/// The boot checks: modern, bzimage, classic and panic runs.
let BootScenario = LabScenario(name: "boot", guestInit: "check-init.sh")
/// The reboot checks: one run per method (default, k, a, t, e, b), named reboot-METHOD.
let RebootScenario = LabScenario(name: "reboot", guestInit: "check-init.sh")
/// The virtio checks: block, read-only block, rng and console, in one run named "virtio".
let VirtioScenario = LabScenario(name: "virtio", guestInit: "virtio-init.sh")
/// The network checks: a TAP made by lguest's --tunnet, pinged and fetched from by the guest.
let NetScenario = LabScenario(name: "net", guestInit: "net-init.sh")
/// Firecracker's API: the VM configured and driven through the socket by curl in the lab host.
let ApiScenario = LabScenario(name: "api", guestInit: "api-init.sh", extraArguments: ["--host-tool", "curl"])
/// The lab host's Debian tools (curl, socat, python3, fio, iperf3) from its own disk.
let L2ToolsScenario = LabScenario(name: "l2-tools", guestInit: "check-init.sh", extraArguments: ["--with-l2-disk"])
/// The Debian system booted with its own kernel and initrd, powered off and rebooted by systemd.
/// Systemd under nested emulation is slow: each run may take ten minutes.
let DebianScenario = LabScenario(name: "debian", guestInit: "check-init.sh",
                                 extraArguments: ["--with-debian-system", "--with-qemu", "--env", "LAB_RUN_TIMEOUT=600", "--timeout", "2400"])
/// Shared directories: two virtio-fs shares mounted by the stock virtiofs driver, checked from
/// inside and on the host, and the share-against-ext4 benchmark. mke2fs comes from this host.
/// Thousands of FUSE requests through nested emulation are slow (four minutes alone), and five
/// times slower beside another lab: this scenario runs alone. $LGUEST_LAB_FS_FILES sets the
/// archive's size (2000 files).
let FsScenario = LabScenario(name: "fs", guestInit: "fs-init.sh",
                             extraArguments: ["--guest-modules", "fuse virtiofs", "--host-tool", "mke2fs",
                                              "--env", "LAB_FS_FILES=\(LabEnvironment.environment["LGUEST_LAB_FS_FILES"] ?? "2000")",
                                              "--env", "LAB_RUN_TIMEOUT=1200", "--timeout", "1600"],
                             alone: true)
/// Snapshots: a counting guest booted through the API, ballooned, snapshotted, killed, loaded
/// by a new lguest and cloned three times (Lab/scenarios/snapshot.sh). curl and coreutils' date
/// (nanoseconds, for the clock check) go to the lab host, date to the guest too.
let SnapshotScenario = LabScenario(name: "snapshot", guestInit: "snapshot-init.sh",
                                   extraArguments: ["--host-tool", "curl", "--host-tool", "date", "--guest-tool", "date", "--guest-modules", "virtio_balloon",
                                                    "--env", "LAB_RUN_TIMEOUT=400", "--timeout", "1200"])
/// No lost writes: flushed blocks checked in the image after lguest is killed with SIGKILL.
let DurabilityScenario = LabScenario(name: "durability", guestInit: "durability-init.sh")

/// How many lab scenarios run at once: $LGUEST_LAB_JOBS, default 1. Each is a QEMU emulating
/// a CPU in software; two at once beside the unit tests on two cores slowed every guest (the fs
/// scenario's untar five times over). A scenario may ask for
/// every slot (it runs alone); waiters are served in order, so it is not starved.
actor LabSlots {
    static let shared = LabSlots(Int(LabEnvironment.environment["LGUEST_LAB_JOBS"] ?? "") ?? 1)
    let total: Int
    private var free: Int
    private var waiting: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []

    init(_ count: Int) { total = max(count, 1); free = total }

    func acquire(_ count: Int) async {
        if waiting.isEmpty, free >= count { free -= count; return }
        await withCheckedContinuation { waiting.append((count, $0)) }
    }

    func release(_ count: Int) {
        free += count
        while let first = waiting.first, free >= first.count {
            free -= first.count
            waiting.removeFirst().continuation.resume()
        }
    }
}

/// One scenario script (Lab/scenarios/NAME.sh) run once in the lab for all the tests that ask.
final class LabScenario: Sendable {
    let name: String
    let guestInit: String
    /// The scenario's outcome: the log's lines, or why there is no log. Started by the first
    /// test that asks; the others wait for the same run.
    private let outcome: Task<Result<[String], LabFailure>, Never>

    /// `extraArguments` go to lab.sh as they are (`--host-tool curl`, say). An `alone` scenario
    /// runs with no other beside it.
    init(name: String, guestInit: String, extraArguments: [String] = [], alone: Bool = false) {
        self.name = name
        self.guestInit = guestInit
        outcome = Task {
            // Each scenario is a QEMU with a software CPU: on two cores, more than two at once
            // make every guest crawl past its timeouts.
            let slots = alone ? LabSlots.shared.total : 1
            await LabSlots.shared.acquire(slots)
            var result = await Self.runScenario(name: name, guestInit: guestInit, extraArguments: extraArguments)
            // A guest that wedged beneath lguest (every vCPU thread inside KVM_RUN: the nested
            // virtualization lost it), or whose CPU faulted to death, is run once more, and the
            // first log is kept: the lab's emulated SVM does that now and then to guests lguest
            // has nothing to do with at that moment. A wedge inside lguest (beneath=no) fails as it is.
            if case let .success(lines) = result, let why = Self.emulationFailure(lines) {
                let kept = Self.logDirectory.appendingPathComponent("\(name)-serial.wedged.log")
                try? FileManager.default.removeItem(at: kept)
                try? FileManager.default.copyItem(at: Self.serialLog(name), to: kept)
                Self.note("\(name): \(why) (log kept in \(kept.path)): running the scenario once more")
                result = await Self.runScenario(name: name, guestInit: guestInit, extraArguments: extraArguments)
            }
            await LabSlots.shared.release(slots)
            return result
        }
    }

    /// Why a scenario's log looks like the nested virtualization failed a guest, if it does: a
    /// wedge beneath lguest (LAB-STALL beneath=yes), a guest that triple-faulted, a kernel that
    /// reported a double fault, an emulator that froze, a lab host that stopped (panicked, reset)
    /// before the scenario was done.
    static func emulationFailure(_ lines: [String]) -> String? {
        // A failed attempt that lab_run ran again does not count: its run's last attempt does.
        func inLastAttempt(_ index: Int, marker: String) -> Bool {
            guard let r = lines[index].range(of: marker) else { return false }
            let name = lines[index][r.upperBound...].prefix { $0 != " " }
            return !lines[(index + 1)...].contains { $0.contains("LAB-BEGIN \(name) ") }
        }
        for (i, line) in lines.enumerated() {
            if line.contains("LAB-STALL "), line.contains("beneath=yes"), inLastAttempt(i, marker: "LAB-STALL ") {
                return "a guest wedged beneath lguest: \(line)"
            }
            if line.contains("LAB-STDERR "), line.contains("triple-faulted"), inLastAttempt(i, marker: "LAB-STDERR ") {
                return "a guest triple-faulted: \(line)"
            }
        }
        if lines.contains(where: { $0.contains("traps: double fault") || $0.contains("PANIC: double fault") }) { return "a guest kernel reported a double fault" }
        // QEMU itself froze (lab.sh run heard no heartbeat from the lab host and killed it).
        if let frozen = lines.first(where: { $0.hasPrefix("LAB-HOST-FROZEN ") }) {
            return "the emulator froze: \(frozen)"
        }
        // The lab host's own kernel died (its KVM on the emulated SVM has overflowed its stack):
        // the scenario never finished.
        if lines.contains(where: { $0.hasPrefix("LAB-HOST-STOPPED ") }) {
            return "the lab host stopped before the scenario was done"
        }
        return nil
    }

    /// The run `name` of this scenario.
    func run(_ run: String) async throws -> GuestRun {
        let lines = try await outcome.value.get()
        return try Self.parse(run, from: lines, serialLog: Self.serialLog(name))
    }

    /// The scenario's whole log, for checks outside any one run.
    func lines() async throws -> [String] { try await outcome.value.get() }

    static let logDirectory = LabEnvironment.packageRoot.appendingPathComponent(".build/lab")
    static func serialLog(_ name: String) -> URL { logDirectory.appendingPathComponent("\(name)-serial.log") }
    static func labOutput(_ name: String) -> URL { logDirectory.appendingPathComponent("\(name)-lab.log") }

    static func parse(_ name: String, from lines: [String], serialLog: URL) throws -> GuestRun {
        // The last attempt: lab_run runs a guest once more when the emulation failed it.
        guard let begin = lines.lastIndex(where: { $0.contains("LAB-BEGIN \(name) ") }) else {
            throw LabFailure(description: "the scenario never started run \(name): see \(serialLog.path)")
        }
        let end = lines[begin...].firstIndex(where: { $0.contains("LAB-END \(name) ") }) ?? lines.count - 1
        let segment = Array(lines[begin...end])
        func value(after marker: String) -> String? {
            segment.lazy.compactMap { line -> String? in
                guard let r = line.range(of: marker) else { return nil }
                return String(line[r.upperBound...])
            }.first
        }
        let shown = segment.suffix(60).joined(separator: "\n")
        return GuestRun(
            name: name,
            exitStatus: value(after: "LAB-RESULT \(name) exit=").flatMap { Int($0.trimmingCharacters(in: .whitespaces)) },
            check: segment.lazy.compactMap(GuestCheck.init(line:)).first,
            stderrLastLine: value(after: "LAB-STDERR \(name) ") ?? "",
            lines: segment,
            context: "--- run \(name) (whole log: \(serialLog.path)) ---\n\(shown)\n---")
    }

    private static func runScenario(name: String, guestInit: String, extraArguments: [String]) async -> Result<[String], LabFailure> {
        let serialLog = serialLog(name), labOutput = labOutput(name)
        let env = LabEnvironment.self
        let vmm = env.vmmBinary()
        guard FileManager.default.isExecutableFile(atPath: vmm) else {
            return .failure(LabFailure(description: "no lguest binary at \(vmm): run `swift build` (or set LGUEST_BINARY)"))
        }
        let mode: String
        switch env.environment["LGUEST_LAB_MODE"] ?? "auto" {
        case "lab": mode = "run"
        case "direct": mode = "direct"
        default: mode = env.hasHardwareKVM ? "direct" : "run"
        }
        if mode == "run" && !env.onPath("qemu-system-x86_64") {
            return .failure(LabFailure(description: "qemu-system-x86_64 not found, so the lab cannot run: run Lab/lab.sh setup (or set LGUEST_LAB=skip)"))
        }
        let runTimeout = env.environment["LGUEST_LAB_RUN_TIMEOUT"] ?? "120"
        var arguments = [env.labScript.path, mode,
                         "--vmm", vmm,
                         "--scenario", env.packageRoot.appendingPathComponent("Lab/scenarios/\(name).sh").path,
                         "--guest-init", env.packageRoot.appendingPathComponent("Lab/guest/\(guestInit)").path,
                         "--env", "LAB_RUN_TIMEOUT=\(runTimeout)",
                         "--log", serialLog.path]
        if mode == "run" { arguments += ["--timeout", String(4 * (Int(runTimeout) ?? 120) + 300)] }
        // Last, so that a scenario's own --timeout and --env settings win over the defaults.
        arguments += extraArguments

        do {
            try FileManager.default.createDirectory(at: logDirectory, withIntermediateDirectories: true)
            try? FileManager.default.removeItem(at: serialLog)
            FileManager.default.createFile(atPath: labOutput.path, contents: nil)
            let output = try FileHandle(forWritingTo: labOutput)
            defer { try? output.close() }
            note("running Lab/lab.sh \(mode) with \(vmm) (output: \(labOutput.path))")
            let started = Date()
            let status = try await run("/bin/bash", arguments, output: output)
            note("Lab/lab.sh \(mode) exited \(status) after \(Int(Date().timeIntervalSince(started))) s")
            let log = (try? String(contentsOf: serialLog, encoding: .utf8)) ?? ""
            var lines = log.replacingOccurrences(of: "\r", with: "").components(separatedBy: "\n")
            // The lab host stopped on its own before the scenario was done (not lab.sh's timeout,
            // 124): say so in the log's own terms, for `emulationFailure`.
            if status != 124, !lines.contains(where: { $0.contains("LAB-DONE") }) {
                lines.append("LAB-HOST-STOPPED lab.sh exit \(status)")
            }
            // A scenario that ran prints LAB-BEGIN (lab_run) or at least LAB-DONE (lab.sh, after it).
            if !lines.contains(where: { $0.contains("LAB-BEGIN ") || $0.contains("LAB-DONE") }) {
                let labLines = ((try? String(contentsOf: labOutput, encoding: .utf8)) ?? "")
                    .split(separator: "\n").filter { $0.hasPrefix("lab.sh:") }.suffix(5)
                return .failure(LabFailure(description: "the lab did not run the scenario (lab.sh exit \(status)):\n"
                                           + labLines.joined(separator: "\n") + "\nsee \(labOutput.path)"))
            }
            return .success(lines)
        } catch {
            return .failure(LabFailure(description: "cannot run Lab/lab.sh: \(error)"))
        }
    }

    /// Runs a process with stdin from /dev/null and stdout and stderr to `output`; its status.
    private static func run(_ executable: String, _ arguments: [String], output: FileHandle) async throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        return try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
    }

    private static func note(_ message: String) {
        FileHandle.standardError.write(Data("LabTests: \(message)\n".utf8))
    }
}
