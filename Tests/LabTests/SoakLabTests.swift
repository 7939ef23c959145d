import Foundation
import Testing

/// Many VMs at once (Lab/scenarios/soak.sh): eight lguest processes in one lab host, each guest
/// (Lab/guest/soak-init.sh) doing block, net and rng I/O for three minutes, and the lab host
/// sampling each lguest's resident memory every 10 s. $LGUEST_LAB_SOAK_VMS and
/// $LGUEST_LAB_SOAK_SECONDS change the 8 and the 180.
let SoakScenario = LabScenario(name: "soak", guestInit: "soak-init.sh",
                               extraArguments: ["--env", "LAB_SOAK_VMS=\(SoakLabTests.vms)",
                                                "--env", "LAB_SOAK_SECONDS=\(SoakLabTests.seconds)",
                                                "--env", "LAB_RUN_TIMEOUT=\(SoakLabTests.seconds + 600)",
                                                "--timeout", String(SoakLabTests.seconds + 1500)],
                               alone: true)

@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct SoakLabTests {
    static let vms = Int(LabEnvironment.environment["LGUEST_LAB_SOAK_VMS"] ?? "") ?? 8
    static let seconds = Int(LabEnvironment.environment["LGUEST_LAB_SOAK_SECONDS"] ?? "") ?? 180
    /// How much lguest's own memory (all it has resident but guest memory) may move after the
    /// first minute: allocator noise, not a leak, which would grow with every round.
    static let ownSlackKiB = 512

    /// Each VM's run, 1 through `vms`.
    func runs() async throws -> [GuestRun] {
        var runs: [GuestRun] = []
        for n in 1...Self.vms { runs.append(try await SoakScenario.run("soak-\(n)")) }
        return runs
    }

    func marker(_ name: String, in run: GuestRun) -> [[String: String]] {
        run.lines.compactMap { line in
            guard let r = line.range(of: name + " ") else { return nil }
            return markerFields(line[r.upperBound...])
        }
    }

    @Test("eight VMs at once, three minutes of block, net and rng I/O each: every byte checks out in the guest")
    func everyGuestsDataChecksOut() async throws {
        for run in try await runs() {
            let report = try #require(marker("LGUEST-SOAK", in: run).first, "the guest never reported\n\(run.context)")
            let rounds = Int(report["rounds"] ?? "") ?? 0
            #expect(rounds >= 8, "only \(rounds) rounds: not every slot of the disk was written\n\(run.context)")
            #expect(report["block_errors"] == "0" && report["net_errors"] == "0", "\(report)\n\(run.context)")
            #expect(report["rng_bytes"] == String(rounds * 512) && report["rng"] == "virtio_rng.0", "\(report)\n\(run.context)")
        }
    }

    @Test("what each guest last wrote to each slot of its disk is in its image after lguest exits")
    func imagesHoldTheGuestsWrites() async throws {
        for run in try await runs() {
            let guest = marker("LGUEST-SOAK-SLOT", in: run), image = marker("LAB-SOAK-IMAGE", in: run)
            #expect(guest.count == 8 && image.count == 8, "\(run.context)")
            for (wrote, holds) in zip(guest, image) {
                #expect(wrote["slot"] == holds["slot"] && wrote["md5"] == holds["md5"] && wrote["md5"] != "none",
                        "the guest wrote \(wrote), the image holds \(holds)\n\(run.context)")
            }
        }
    }

    @Test("every lguest exits 0 after its guest powers off")
    func everyLguestExitsZero() async throws {
        for run in try await runs() {
            #expect(run.exitStatus == 0, "\(run.name): lguest \(run.stderrLastLine)\n\(run.context)")
        }
    }

    @Test("no lguest's own resident memory grows after the guest's first minute of I/O")
    func noGrowthAfterTheFirstMinute() async throws {
        for run in try await runs() {
            let samples = try #require(marker("LAB-SOAK-RSS", in: run).first?["samples"], "\(run.context)")
            // T:OWN:TOTAL, T in seconds since the guest's I/O began (-1 before).
            let points = samples.split(separator: ",").compactMap { sample -> (t: Int, own: Int, total: Int)? in
                let parts = sample.split(separator: ":").compactMap { Int($0) }
                return parts.count == 3 ? (parts[0], parts[1], parts[2]) : nil
            }
            let late = points.filter { $0.t >= 60 }
            try #require(late.count >= 6, "too few samples after the first minute: \(samples)\n\(run.context)")
            let baseline = late[0].own, highest = late.map(\.own).max() ?? 0
            #expect(highest - baseline <= Self.ownSlackKiB,
                    "\(run.name): lguest's own memory went from \(baseline) KiB at \(late[0].t) s to \(highest) KiB (samples T:own:total \(samples))")
        }
    }
}
