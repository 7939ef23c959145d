import Foundation
import Testing

/// Firecracker's API in the lab (Lab/scenarios/api.sh): lguest started with only --api-sock,
/// the stock kernel's VM configured, started, paused, resumed and sent Ctrl-Alt-Delete by curl,
/// and the guest (Lab/guest/api-init.sh) reporting from inside what it was given.
@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct ApiLabTests {
    /// The scenario's log, and the calls it made in order (method, path, status, body).
    func outcome() async throws -> (lines: [String], calls: [(String, Int, String)], context: String) {
        let lines = try await ApiScenario.lines()
        let calls = lines.compactMap { line -> (String, Int, String)? in
            guard let start = line.range(of: "LAB-API-CALL ") else { return nil }
            let rest = line[start.upperBound...]
            guard let status = rest.range(of: " status="), let body = rest.range(of: " body=") else { return nil }
            return (String(rest[..<status.lowerBound]), Int(rest[status.upperBound..<body.lowerBound]) ?? -1, String(rest[body.upperBound...]))
        }
        let context = "--- (whole log: \(LabScenario.serialLog("api").path)) ---\n" + lines.filter { $0.contains("LAB-") || $0.contains("LGUEST-API ") }.suffix(40).joined(separator: "\n")
        return (lines, calls, context)
    }

    func marker(_ name: String, in lines: [String]) -> [String: String]? {
        lines.lazy.compactMap { line -> [String: String]? in
            guard let r = line.range(of: name + " ") else { return nil }
            return markerFields(line[r.upperBound...])
        }.first
    }

    @Test("configured through the socket, the guest has 2 vCPUs, 256 MiB, its root drive, its NIC and entropy")
    func configuredThroughTheApi() async throws {
        let (lines, calls, context) = try await outcome()
        let expected = ["GET /", "PUT /boot-source", "PUT /machine-config", "PUT /drives/rootfs",
                        "PUT /network-interfaces/eth0", "PUT /drives/data", "PUT /entropy", "PUT /actions", "GET /"]
        #expect(Array(calls.prefix(9).map(\.0)) == expected, "\(context)")
        for (call, status, body) in calls.prefix(9) {
            #expect(status == (call.hasPrefix("GET") ? 200 : 204), "\(call) answered \(status) \(body)\n\(context)")
        }
        #expect(calls.count > 8 && calls[8].2.contains(#""state":"Running""#), "\(context)")
        let guest = try #require(marker("LGUEST-API", in: lines), "the guest never reported\n\(context)")
        #expect(guest["cpus"] == "2" && guest["vda_sectors"] == "32768" && guest["vda_ro"] == "0", "\(guest)\n\(context)")
        #expect(guest["mac"] == "06:00:c0:00:02:02" && guest["rng"] == "virtio_rng.0", "\(guest)\n\(context)")
        #expect(guest["net"] == "ok", "the guest could not reach the lab host through its NIC\n\(context)")
        let memory = Int(guest["memtotal_kb"] ?? "") ?? 0
        #expect((256 * 1024 * 8 / 10...256 * 1024).contains(memory), "MemTotal \(memory) kB\n\(context)")
        let cmdline = lines.first { $0.contains("LGUEST-API ") }.flatMap { $0.components(separatedBy: " cmdline=").last } ?? ""
        #expect(cmdline.hasPrefix("console=ttyS0 reboot=k panic=1 quiet root=/dev/vda rw"),
                "boot_args, then root= and rw for the root drive, as Firecracker appends them: \(cmdline)")
    }

    @Test("PATCH /vm pauses the guest (its console and its clock stop) and resumes it")
    func pauseAndResume() async throws {
        let (lines, calls, context) = try await outcome()
        let patches = calls.filter { $0.0 == "PATCH /vm" }
        #expect(patches.count == 2 && patches.allSatisfy { $0.1 == 204 }, "\(context)")
        #expect(calls.contains { $0.0 == "GET /" && $0.2.contains(#""state":"Paused""#) }, "\(context)")
        let pause = try #require(marker("LAB-API-PAUSE", in: lines), "\(context)")
        #expect(pause["ticks_at_pause"] != nil && pause["ticks_at_pause"] == pause["ticks_after_5s"],
                "the guest's console went on while paused: \(pause)\n\(context)")
        let resume = try #require(marker("LAB-API-RESUME", in: lines), "\(context)")
        let before = Double(resume["last_before"] ?? "") ?? -1, after = Double(resume["first_after"] ?? "") ?? -1
        #expect(before > 0 && after > before, "\(resume)\n\(context)")
        #expect(after - before < 2, "the guest's clock counted the 5 s it spent paused: \(resume)\n\(context)")
        #expect(!lines.contains { $0.contains("LAB-API-ERROR") }, "\(context)")
    }

    @Test("PATCH /drives swaps the data disk's image while the guest runs, and the guest reads the new one")
    func driveSwap() async throws {
        let (lines, calls, context) = try await outcome()
        #expect(calls.first { $0.0 == "PATCH /drives/data" }?.1 == 204, "\(context)")
        let before = lines.first { $0.contains("LAB-API-DATA before") } ?? ""
        let after = lines.first { $0.contains("LAB-API-DATA after") } ?? ""
        #expect(before.contains("vdb=FIRST-IMAGE. vdb_sectors=2048"), "\(before)\n\(context)")
        #expect(after.contains("vdb=SECOND-IMAGE vdb_sectors=4096"), "the guest did not see the new image and its size: \(after)\n\(context)")
    }

    @Test("SendCtrlAltDel reaches the guest's init, which powers off, and lguest exits 0")
    func ctrlAltDelete() async throws {
        let (lines, calls, context) = try await outcome()
        #expect(calls.last.map { $0.0 == "PUT /actions" && $0.1 == 204 } == true, "\(context)")
        #expect(lines.contains { $0.contains("LGUEST-API-CAD ") }, "init never got SIGINT from Ctrl-Alt-Delete\n\(context)")
        #expect(lines.contains { $0.contains("LAB-RESULT api exit=0") }, "\(context)")
    }
}
