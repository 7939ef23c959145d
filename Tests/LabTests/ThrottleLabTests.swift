import Foundation
import Testing

/// Rate limiters in the lab (Lab/scenarios/throttle.sh): a disk held to 10 MiB/s and a network
/// interface to 20 Mbit/s through Firecracker's API, measured by the guest itself
/// (Lab/guest/throttle-init.sh), then both limits doubled with PATCH on the running VM.
let ThrottleScenario = LabScenario(name: "throttle", guestInit: "throttle-init.sh", extraArguments: ["--host-tool", "curl"])

@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct ThrottleLabTests {
    /// What one phase asked for and what the guest measured, in bytes a second.
    struct Phase {
        var blockLimit: Double, netLimit: Double
        var block: Double, net: Double
        var fields: [String: String]
    }

    func outcome() async throws -> (phases: [Int: Phase], run: GuestRun) {
        let run = try await ThrottleScenario.run("throttle")
        var limits: [Int: [String: String]] = [:], measured: [Int: [String: String]] = [:]
        for line in run.lines {
            for (marker, table) in [("LAB-THROTTLE-LIMITS ", 0), ("LGUEST-THROTTLE ", 1)] {
                guard let r = line.range(of: marker) else { continue }
                let fields = markerFields(line[r.upperBound...])
                guard let phase = fields["phase"].flatMap(Int.init) else { continue }
                if table == 0 { limits[phase] = fields } else { measured[phase] = fields }
            }
        }
        var phases: [Int: Phase] = [:]
        for (phase, asked) in limits {
            guard let seen = measured[phase] else { continue }
            func rate(_ bytes: String, _ seconds: String) -> Double {
                let b = Double(seen[bytes] ?? "") ?? 0, s = Double(seen[seconds] ?? "") ?? 0
                return s > 0 ? b / s : 0
            }
            phases[phase] = Phase(blockLimit: Double(asked["block_bytes_per_s"] ?? "") ?? 0,
                                  netLimit: Double(asked["net_bytes_per_s"] ?? "") ?? 0,
                                  block: rate("block_bytes", "block_seconds"), net: rate("net_bytes", "net_seconds"),
                                  fields: seen)
        }
        return (phases, run)
    }

    /// Phase `phase` asked for `block` and `net` bytes a second, the guest moved every byte it
    /// asked for, and saw each rate within 15% of its limit.
    func expectPhase(_ phase: Int, block: Double, net: Double, _ when: String) async throws {
        let (phases, run) = try await outcome()
        let seen = try #require(phases[phase], "the guest never measured \(when)\n\(run.context)")
        #expect(seen.blockLimit == block && seen.netLimit == net, "\(run.context)")
        #expect(seen.fields["block_bytes"] == "33554432" && seen.fields["net_bytes"] == "8000000",
                "the guest did not read all it asked for: \(seen.fields)\n\(run.context)")
        for (what, measured, limit) in [("block", seen.block, seen.blockLimit), ("net", seen.net, seen.netLimit)] {
            let ratio = limit > 0 ? measured / limit : 0
            #expect((0.85...1.15).contains(ratio),
                    "\(what) \(when): the guest saw \(Int(measured)) B/s against a limit of \(Int(limit)) B/s (\(String(format: "%.2f", ratio))×)\n\(run.context)")
        }
    }

    @Test("a disk limited to 10 MiB/s and a NIC to 20 Mbit/s give the guest that, within 15%")
    func limitsHold() async throws {
        try await expectPhase(1, block: 10 * 1_048_576, net: 2_500_000, "with the first limits")
    }

    @Test("PATCH on the running VM doubles both limits, and the guest sees twice as much")
    func raisedThroughTheApi() async throws {
        let (_, run) = try await outcome()
        let patches = run.lines.filter { $0.contains("LAB-API-CALL PATCH ") }
        #expect(patches.count == 2 && patches.allSatisfy { $0.contains(" status=204 ") }, "\(patches)\n\(run.context)")
        try await expectPhase(2, block: 20 * 1_048_576, net: 5_000_000, "after the PATCH")
    }

    @Test("every API call succeeded and the guest powered off: lguest exits 0")
    func cleanExit() async throws {
        let (_, run) = try await outcome()
        let calls = run.lines.filter { $0.contains("LAB-API-CALL ") }
        #expect(calls.count == 8 && calls.allSatisfy { $0.contains($0.contains(" GET ") ? " status=200 " : " status=204 ") },
                "\(calls)\n\(run.context)")
        #expect(!run.lines.contains { $0.contains("LAB-API-ERROR") || $0.contains("LGUEST-THROTTLE-ERROR") }, "\(run.context)")
        #expect(run.exitStatus == 0, "lguest: \(run.stderrLastLine)\n\(run.context)")
    }
}
