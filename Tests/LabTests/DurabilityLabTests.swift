import Foundation
import Testing

/// No lost writes: the guest flushes blocks one by one and says so; lguest is killed with
/// SIGKILL half-way; every block the guest saw flushed must be in the image file.
@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct DurabilityLabTests {
    @Test("every block the guest saw flushed is in the image after lguest is killed with SIGKILL")
    func flushedWritesSurviveSIGKILL() async throws {
        let run = try await DurabilityScenario.run("durability")
        let lines = try await DurabilityScenario.lines()
        let report = try #require(lines.first { $0.contains("LAB-DURABILITY ") }, "no LAB-DURABILITY line\n\(run.context)")
        var values: [String: String] = [:]
        for pair in report.split(separator: " ").dropFirst() {
            let kv = pair.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { values[String(kv[0])] = String(kv[1]) }
        }
        #expect(values["killed"] == "yes", "lguest was not killed by SIGKILL (exit \(run.exitStatus.map(String.init) ?? "none"))\n\(run.context)")
        let flushed = Int(values["flushed"] ?? "") ?? 0
        #expect(flushed >= 24, "the guest flushed only \(flushed) blocks before the kill\n\(run.context)")
        #expect(values["verified"] == values["flushed"], "flushed blocks missing from the image: \(values["missing"] ?? "?")\n\(run.context)")
        #expect(values["missing"] == "none", "\(run.context)")
    }
}
