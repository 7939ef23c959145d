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
        let start = try #require(report.range(of: "LAB-DURABILITY "))
        let values = markerFields(report[start.upperBound...])
        #expect(values["killed"] == "yes", "lguest was not killed by SIGKILL (exit \(run.exitStatus.map(String.init) ?? "none"))\n\(run.context)")
        let flushed = Int(values["flushed"] ?? "") ?? 0
        #expect(flushed >= 24, "the guest flushed only \(flushed) blocks before the kill\n\(run.context)")
        #expect(values["verified"] == values["flushed"], "flushed blocks missing from the image: \(values["missing"] ?? "?")\n\(run.context)")
        #expect(values["missing"] == "none", "\(run.context)")
    }
}
