import Foundation
import Testing

/// A hostile guest (Lab/scenarios/hostile.sh): a program in the guest attacks the registers and
/// rings of two of lguest's virtio devices through /dev/mem for a minute; lguest must live, the
/// device left alone must still work, and the guest must power off cleanly.
let HostileScenario = LabScenario(name: "hostile", guestInit: "hostile-init.sh",
                                  extraArguments: ["--env", "LAB_RUN_TIMEOUT=400"])

@Suite(.enabled(if: LabEnvironment.enabled, "the lab is off (LGUEST_LAB=skip)"))
struct HostileLabTests {
    func line(_ run: GuestRun, _ marker: String) -> [String: String] {
        run.lines.lazy.compactMap { line -> [String: String]? in
            guard let r = line.range(of: marker) else { return nil }
            return markerFields(line[r.upperBound...])
        }.first ?? [:]
    }

    @Test("a minute of random register writes and random rings on two devices: lguest lives and the guest powers off cleanly")
    func livesThroughIt() async throws {
        let run = try await HostileScenario.run("hostile")
        let windows = line(run, "LGUEST-HOSTILE windows ")
        #expect(windows["attacked"]?.split(separator: ",").count == 2, "\(run.context)")
        let done = line(run, "LGUEST-HOSTILE mmio-attack done ")
        #expect((Int(done["actions"] ?? "") ?? 0) > 1000, "the attack should have done thousands of things\n\(run.context)")
        #expect(run.lines.contains { $0.contains("LGUEST-HOSTILE mmio-attack seed=") }, "\(run.context)")
        #expect(run.lines.contains { $0.contains("LGUEST-HOSTILE done") }, "\(run.context)")
        #expect(run.exitStatus == 0 && run.stderrLastLine.isEmpty, "\(run.context)")
    }

    @Test("the disk the attack left alone still reads and writes, inside the guest and in its image")
    func controlDiskWorks() async throws {
        let run = try await HostileScenario.run("hostile")
        let result = line(run, "LGUEST-HOSTILE attack-rc=")
        #expect(run.lines.contains { $0.contains("LGUEST-HOSTILE attack-rc=0 control-disk=ok") }, "\(result)\n\(run.context)")
        let lines = try await HostileScenario.lines()
        let image = lines.lazy.compactMap { line -> [String: String]? in
            guard let r = line.range(of: "LAB-HOSTILE control-image=") else { return nil }
            return markerFields(line[line.index(r.lowerBound, offsetBy: "LAB-HOSTILE ".count)...])
        }.first ?? [:]
        #expect(image["control-image"] != nil && image["control-image"] == image["expected"], "\(image)")
    }
}
