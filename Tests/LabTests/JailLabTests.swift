import Foundation
import Testing

/// `lguest jail` in the lab (Lab/scenarios/jail.sh): a guest boots under a jailed lguest, which
/// the lab host looks at from outside while it runs.
let JailScenario = LabScenario(name: "jail", guestInit: "jail-init.sh")

@Suite(.enabled(if: LabEnvironment.enabled && LabEnvironment.runsInLab, "the jail runs in the lab (it needs root and cgroup v2 of its own)"))
struct JailLabTests {
    func fields(_ run: GuestRun) -> [String: String] {
        run.lines.filter { $0.hasPrefix("LAB-JAIL ") }.reduce(into: [:]) { all, line in
            all.merge(markerFields(line.dropFirst("LAB-JAIL ".count))) { first, _ in first }
        }
    }

    @Test("the guest boots under a jailed lguest, and powers off with exit 0")
    func boots() async throws {
        let run = try await JailScenario.run("jail")
        #expect(run.lines.contains { $0.contains("LGUEST-JAIL ready cpus=1") }, "\(run.context)")
        #expect(run.lines.contains { $0.contains("LGUEST-JAIL done") }, "\(run.context)")
        #expect(run.exitStatus == 0, "\(run.context)")
    }

    @Test("the jailed lguest runs as 1000:1000 with no_new_privs, and its / is the jail and nothing else")
    func confined() async throws {
        let run = try await JailScenario.run("jail")
        let f = fields(run)
        #expect(f["uid"] == "1000,1000,1000,1000" && f["gid"] == "1000,1000,1000,1000", "\(f)\n\(run.context)")
        #expect(f["nonewprivs"] == "1", "\(f)")
        let sees = f["root-sees"] ?? "", holds = f["jail-holds"] ?? ""
        #expect(!sees.isEmpty && sees == holds, "\(f)")
        for name in ["lguest,", "dev,", "proc,"] { #expect(sees.contains(name), "\(sees)") }
        // The lab host's own directories are not there.
        for name in ["lab,", "etc,", "tmp,", "sys,"] { #expect(!sees.split(separator: ",").contains(Substring(name.dropLast())), "\(sees)") }
    }

    @Test("the cgroup limits are in force on lguest's own cgroup, and so is the descriptor limit")
    func limits() async throws {
        let run = try await JailScenario.run("jail")
        let f = fields(run)
        #expect(f["cgroup"] == "/lguest/lab-vm-1" && f["in-procs"] == "1", "\(f)\n\(run.context)")
        #expect(f["cpu.max"] == "50000_100000", "\(f)")
        #expect(f["memory.max"] == String(400 << 20), "\(f)")
        #expect(f["pids.max"] == "64", "\(f)")
        #expect(f["nofile"] == "1024", "\(f)")
    }
}
