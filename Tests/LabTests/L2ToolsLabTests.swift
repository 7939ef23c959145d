// The lab host's own disk (Lab/l2-disk.sh): a Debian userland with the tools busybox lacks,
// for scenarios that need a real HTTP client, socat, Python, fio or iperf3.
//
// Building the image takes minutes and Debian's archive, so these tests run only once it is
// cached (`Lab/lab.sh l2-disk`), or when LGUEST_LAB_L2_DISK=build asks for it to be built.
import Foundation
import Testing

extension LabEnvironment {
    /// Whether the lab host's disk is there (or may be built), or, directly, the host has the tools.
    static var l2DiskReady: Bool {
        guard enabled else { return false }
        if !runsInLab { return ["curl", "socat", "python3", "fio", "iperf3"].allSatisfy(onPath) }
        if environment["LGUEST_LAB_L2_DISK"] == "build" { return true }
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/bin/bash")
        check.arguments = [labScript.path, "l2-disk", "--check"]
        check.standardOutput = FileHandle.nullDevice
        check.standardError = FileHandle.nullDevice
        guard (try? check.run()) != nil else { return false }
        check.waitUntilExit()
        return check.terminationStatus == 0
    }
}

@Suite(.enabled(if: LabEnvironment.l2DiskReady,
                "the lab host's disk is not cached: run Lab/lab.sh l2-disk (or set LGUEST_LAB_L2_DISK=build)"))
struct L2ToolsLabTests {
    static func tools() async throws -> [String: String] {
        var found: [String: String] = [:]
        for line in try await L2ToolsScenario.lines() {
            guard let start = line.range(of: "LAB-TOOL ") else { continue }
            let words = line[start.upperBound...].split(separator: " ", maxSplits: 1)
            if words.count == 2 { found[String(words[0])] = String(words[1]) }
        }
        return found
    }

    @Test("each Debian tool runs on the lab host", arguments: ["curl", "socat", "python3", "fio", "iperf3"])
    func runs(tool: String) async throws {
        let report = try await Self.tools()
        let line = try #require(report[tool], "no LAB-TOOL line for \(tool): see \(LabScenario.serialLog("l2-tools").path)")
        #expect(line.hasPrefix("ok "), "\(tool): \(line)")
    }

    @Test("a file served by Python's http.server comes back intact through curl")
    func http() async throws {
        let report = try await Self.tools()
        #expect(report["http"]?.hasPrefix("ok ") == true, "\(report["http"] ?? "no LAB-TOOL http line")")
    }
}
