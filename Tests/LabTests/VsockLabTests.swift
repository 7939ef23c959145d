import Foundation
import Testing

/// The vsock scenario (Lab/scenarios/vsock.sh): the stock kernel's own vsock modules in the
/// guest, socat on both sides. Host programs reach the guest through lguest's Unix socket with
/// `CONNECT`; the guest reaches host programs on `<socket>_<port>`; checked from the lab host
/// (LAB-VSOCK) and from inside the guest (LGUEST-VSOCK, Lab/guest/vsock-init.sh).
let VsockScenario = LabScenario(name: "vsock", guestInit: "vsock-init.sh", extraArguments: [
    "--host-tool", "socat", "--guest-tool", "socat",
    "--guest-modules", "vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport",
    // 16 MiB each way under nested emulation: minutes, not the two a boot gets.
    "--env", "LAB_RUN_TIMEOUT=600", "--timeout", "1500",
])

@Suite(.enabled(if: LabEnvironment.enabled && LabEnvironment.environment["LGUEST_LAB_VSOCK"] != "skip"
                    && (LabEnvironment.runsInLab || LabEnvironment.onPath("socat")),
                "the vsock lab needs socat on this host (LGUEST_LAB_VSOCK=skip leaves it out)"))
struct VsockLabTests {
    func report() async throws -> (lines: [String], context: String) {
        let lines = try await VsockScenario.lines()
        let context = "--- (whole log: \(LabScenario.serialLog("vsock").path)) ---\n"
            + lines.filter { $0.contains("VSOCK") || $0.contains("LAB-RESULT") || $0.contains("LAB-STDERR") }.suffix(40).joined(separator: "\n")
        return (lines, context)
    }

    /// The fields of every line carrying `marker` (`LAB-VSOCK parallel`, say).
    func markers(_ marker: String, in lines: [String]) -> [[String: String]] {
        lines.compactMap { line in
            guard let r = line.range(of: marker + " ") else { return nil }
            return markerFields(line[r.upperBound...])
        }
    }

    @Test("a host program's CONNECT reaches the guest's listener; 16 MiB go there and back intact")
    func hostToGuest() async throws {
        let (lines, context) = try await report()
        let echo = try #require(markers("LAB-VSOCK h2g", in: lines).first, "\(context)")
        #expect(echo["ok_line"]?.hasPrefix("OK_") == true, "the program never read OK <port>\n\(context)")
        #expect(echo["sent"] != nil && echo["sent"] == echo["got"], "\(echo)\n\(context)")
        #expect(echo["bytes"] == String(16_777_216 + (echo["ok_line"]?.count ?? 0) + 1), "\(echo)\n\(context)")
    }

    @Test("the guest's connect to CID 2 reaches the program on <socket>_<port>; 16 MiB there and back")
    func guestToHost() async throws {
        let (lines, context) = try await report()
        let echo = try #require(markers("LGUEST-VSOCK g2h", in: lines).first, "the guest never reported\n\(context)")
        #expect(echo["bytes"] == "16777216" && echo["sent"] == echo["got"] && echo["rc"] == "0", "\(echo)\n\(context)")
    }

    @Test("8 connections at once, 4 from each side, each gets its own bytes back")
    func parallel() async throws {
        let (lines, context) = try await report()
        let host = markers("LAB-VSOCK parallel", in: lines), guest = markers("LGUEST-VSOCK parallel", in: lines)
        #expect(host.count == 4 && guest.count == 4, "\(context)")
        for line in lines where line.contains("VSOCK parallel ") {
            #expect(line.hasSuffix(" ok") && line.contains("bytes=4194"), "\(line)\n\(context)")
        }
    }

    @Test("a port nobody listens on: the host program's socket closes without OK, the guest's connect fails")
    func refusals() async throws {
        let (lines, context) = try await report()
        #expect(lines.contains { $0.contains("LAB-VSOCK refused reply=[]") }, "\(context)")
        let guest = try #require(markers("LGUEST-VSOCK refused", in: lines).first, "\(context)")
        #expect(guest["rc"] != "0", "\(guest)\n\(context)")
    }

    @Test("the guest powers off cleanly afterwards: lguest exits 0")
    func cleanExit() async throws {
        let (lines, context) = try await report()
        #expect(lines.contains { $0.contains("LAB-RESULT vsock exit=0") }, "\(context)")
        #expect(!lines.contains { $0.contains("LAB-VSOCK-ERROR") }, "\(context)")
    }
}
