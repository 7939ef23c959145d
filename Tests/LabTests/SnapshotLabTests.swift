import Foundation
import Testing

/// Snapshots with the stock kernel (Lab/scenarios/snapshot.sh, Lab/guest/snapshot-init.sh): a
/// counting guest that writes each number to its disk is ballooned, snapshotted through the
/// API, killed, loaded by a new lguest and cloned three times; what each VM says of itself
/// comes from inside it.
@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct SnapshotLabTests {
    struct Outcome {
        let lines: [String]
        let context: String

        /// The fields of the first line holding `marker` (in the scenario's own lines).
        func host(_ marker: String) -> [String: String]? {
            lines.lazy.compactMap { line -> [String: String]? in
                guard let r = line.range(of: marker + " ") else { return nil }
                return markerFields(line[r.upperBound...])
            }.first
        }

        /// What VM `vm` (vm1, vm2, clone1...) printed, line by line.
        func console(_ vm: String) -> [String] {
            lines.compactMap { line in line.range(of: "LAB-CONSOLE \(vm) ").map { String(line[$0.upperBound...]) } }
        }

        /// The fields of each line VM `vm` printed with `marker`.
        func guest(_ vm: String, _ marker: String) -> [[String: String]] {
            console(vm).compactMap { line in line.range(of: marker + " ").map { markerFields(line[$0.upperBound...]) } }
        }

        /// The counts of VM `vm`'s complete tick lines, in order.
        func ticks(_ vm: String) -> [Int] {
            console(vm).filter { $0.hasPrefix("LGUEST-SNAP-TICK ") }.compactMap { line in
                markerFields(line.dropFirst("LGUEST-SNAP-TICK ".count))["n"].flatMap { Int($0) }
            }
        }

        /// The count the restored guest must go on from: the next after the last tick line the
        /// first VM finished, or one more when it was half-way through a line.
        var expectedFirst: Int? {
            guard let created = host("LAB-SNAP-CREATED"), let last = Int(created["last"] ?? "") else { return nil }
            return last + (created["partial"] == "yes" ? 2 : 1)
        }
    }

    func outcome() async throws -> Outcome {
        let lines = try await SnapshotScenario.lines()
        let context = "--- (whole log: \(LabScenario.labOutput("snapshot").path)) ---\n"
            + lines.filter { $0.contains("LAB-SNAP") || $0.contains("LAB-API-CALL") }.suffix(40).joined(separator: "\n")
        return Outcome(lines: lines, context: context)
    }

    @Test("a balloon inflated by 64 MiB lowers lguest's resident memory by about that much and the guest's MemTotal; deflating gives it back")
    func balloon() async throws {
        let o = try await outcome()
        let b = try #require(o.host("LAB-SNAP-BALLOON"), "\(o.context)")
        let full = Int(b["rss_full_kb"] ?? "") ?? 0, inflated = Int(b["rss_inflated_kb"] ?? "") ?? 0
        #expect(full - inflated >= 48 * 1024, "resident memory went from \(full) kB to \(inflated) kB\n\(o.context)")
        let totals = o.guest("vm1", "LGUEST-SNAP-MEM").compactMap { Int($0["total_kb"] ?? "") }
        try #require(totals.count == 3, "the guest reported MemTotal \(totals.count) times\n\(o.context)")
        #expect(abs(totals[0] - totals[1] - 64 * 1024) <= 4 * 1024, "MemTotal before and inflated: \(totals)\n\(o.context)")
        #expect(abs(totals[2] - totals[0]) <= 1024, "MemTotal after deflating: \(totals)\n\(o.context)")
        #expect(!o.lines.contains { $0.contains("LAB-SNAP-ERROR") && $0.contains("balloon") }, "\(o.context)")
    }

    @Test("the paused VM is snapshotted and stops counting; a new lguest loads it and the count goes on from where it was")
    func countGoesOn() async throws {
        let o = try await outcome()
        let created = try #require(o.host("LAB-SNAP-CREATED"), "\(o.context)")
        #expect(created["last"] == created["after_snapshot"], "the guest counted on while paused: \(created)\n\(o.context)")
        #expect(o.lines.contains { $0.contains("LAB-API-CALL PUT /snapshot/create status=204") }, "\(o.context)")
        #expect(o.lines.contains { $0.contains("LAB-API-CALL PUT /snapshot/load status=204") }, "\(o.context)")
        let expected = try #require(o.expectedFirst, "\(o.context)")
        let ticks = o.ticks("vm2")
        #expect(ticks.first == expected, "the restored guest's first count \(ticks.prefix(3)), expected \(expected)\n\(o.context)")
        #expect(zip(ticks, ticks.dropFirst()).allSatisfy { $1 == $0 + 1 }, "the restored guest skipped or repeated: \(ticks)")
    }

    @Test("after the load the guest's clock agrees with the host's within a second, its disk holds every record, new writes land, and the network answers")
    func restoredGuestIsWhole() async throws {
        let o = try await outcome()
        let clock = try #require(o.guest("vm2", "LGUEST-SNAP-CLOCK").first, "no clock answer\n\(o.context)")
        let diff = try #require(Int(clock["diff_ms"] ?? ""), "\(clock)")
        #expect(abs(diff) < 1000, "the restored guest's clock is \(diff) ms off the host's\n\(o.context)")
        let check = try #require(o.guest("vm2", "LGUEST-SNAP-CHECK").first, "no check answer\n\(o.context)")
        let n = try #require(Int(check["n"] ?? ""))
        #expect(check["records"] == String(n) && check["distinct"] == String(n) && check["last"] == String(n),
                "the guest read back \(check) from its disk\n\(o.context)")
        #expect(check["net"] == "ok", "the restored guest could not ping the host\n\(o.context)")
        let second = try #require(o.host("LAB-SNAP-SECOND"), "\(o.context)")
        #expect(second["exit"] == "0", "the restored lguest did not exit 0 on the guest's poweroff\n\(o.context)")
        let records = Int(second["disk_records"] ?? "") ?? -1, last = Int(second["disk_last"] ?? "") ?? -2
        #expect(records == last && last >= n, "the image holds \(records) records up to \(last); the guest had counted to \(n)\n\(o.context)")
    }

    @Test("three clones of one snapshot run at once, each counts on from the snapshot and powers off cleanly")
    func clones() async throws {
        let o = try await outcome()
        let expected = try #require(o.expectedFirst, "\(o.context)")
        for clone in 1...3 {
            let ticks = o.ticks("clone\(clone)")
            #expect(ticks.first == expected, "clone \(clone) began at \(ticks.prefix(3)), expected \(expected)\n\(o.context)")
            #expect(o.guest("clone\(clone)", "LGUEST-SNAP-BYE").count == 1, "clone \(clone) did not power off\n\(o.context)")
            let ended = o.host("LAB-SNAP-CLONE clone=\(clone)")
            #expect(ended?["exit"] == "0", "clone \(clone): \(ended ?? [:])\n\(o.context)")
            let memory = o.host("LAB-SNAP-CLONE-MEMORY clone=\(clone)")
            let rss = Int(memory?["rss_kb"] ?? "") ?? 0, pss = Int(memory?["pss_kb"] ?? "") ?? 0
            #expect(rss > 0 && pss < rss, "clone \(clone) shares nothing: RSS \(rss) kB, PSS \(pss) kB\n\(o.context)")
        }
    }
}
