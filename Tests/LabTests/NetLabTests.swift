import Foundation
import Testing

/// The stock kernel's virtio-net driver on a TAP device lguest creates (`--tunnet=192.0.2.1`),
/// checked from inside the guest (Lab/guest/net-init.sh).
@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct NetLabTests {
    static func report(vhost: Bool = false) async throws -> (run: GuestRun, values: [String: String]) {
        let run = try await NetScenario.run(vhost ? "net-vhost" : "net")
        var values: [String: String] = [:]
        let markers = vhost ? [("LGUEST-NETVHOST ", ""), ("LAB-NET ", "host-"), ("LAB-NETVHOST ", "host-")]
                            : [("LGUEST-NET ", ""), ("LAB-NET ", "host-")]
        for line in try await NetScenario.lines() {
            for (marker, prefix) in markers {
                guard let start = line.range(of: marker) else { continue }
                values.merge(markerFields(line[start.upperBound...], prefix: prefix)) { _, new in new }
            }
        }
        return (run, values)
    }

    @Test("the guest pings the host end of the TAP")
    func ping() async throws {
        let (run, v) = try await Self.report()
        #expect(run.exitStatus == 0, "\(run.context)")
        #expect(v["ping-received"] == "3", "\(run.context)")
        let mac = v["mac"] ?? ""
        #expect(mac.split(separator: ":").count == 6, "eth0 has a MAC address\n\(run.context)")
    }

    @Test("the guest fetches a 256 KiB file over TCP from a server on the host, intact")
    func tcpFetch() async throws {
        let (run, v) = try await Self.report()
        let payload = try #require(v["host-payload"], "the scenario printed no payload checksum\n\(run.context)")
        #expect(v["fetched"] == payload, "\(run.context)")
    }

    @Test("with vhost=on the host kernel moves the frames: the guest pings the host and fetches the file intact")
    func vhostDataPath() async throws {
        let (run, v) = try await Self.report(vhost: true)
        #expect(v["host-device"] == nil, "the lab host has no /dev/vhost-net")
        #expect(run.exitStatus == 0, "\(run.context)")
        #expect(v["ping-received"] == "3", "\(run.context)")
        let payload = try #require(v["host-payload"], "the scenario printed no payload checksum\n\(run.context)")
        #expect(v["fetched"] == payload, "\(run.context)")
        // The kernel's worker for this process ran while the guest did: frames took its path.
        #expect(v["host-worker"]?.hasPrefix("vhost-") == true, "no vhost worker seen\n\(run.context)")
    }
}
