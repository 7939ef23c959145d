import Foundation
import Testing

/// The stock kernel's own virtio drivers against lguest's devices, checked from inside the guest
/// (Lab/guest/virtio-init.sh) and, for the disks, in the image files on the host afterwards.
@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct VirtioLabTests {
    /// The values after `LGUEST-VIRTIO` and `LAB-*` markers, as key=value pairs.
    static func report() async throws -> (run: GuestRun, values: [String: String], lines: [String]) {
        let run = try await VirtioScenario.run("virtio")
        let lines = try await VirtioScenario.lines()
        var values: [String: String] = [:]
        for line in lines {
            guard let marker = ["LGUEST-VIRTIO ", "LAB-DISK ", "LAB-PATTERN "].first(where: line.contains),
                  let start = line.range(of: marker) else { continue }
            let prefix = marker == "LAB-DISK " ? "host-" : marker == "LAB-PATTERN " ? "host-pattern-" : ""
            values.merge(markerFields(line[start.upperBound...], prefix: prefix)) { _, new in new }
        }
        return (run, values, lines)
    }

    @Test("a pattern written to vda and synced reads back intact, and the host's image holds exactly it")
    func blockRoundTrip() async throws {
        let (run, v, _) = try await Self.report()
        #expect(run.exitStatus == 0, "\(run.context)")
        let pattern = try #require(v["host-pattern-sha"], "the scenario printed no pattern checksum\n\(run.context)")
        #expect(v["blk-pattern"] == pattern, "the guest made a different pattern\n\(run.context)")
        #expect(v["blk-readback"] == pattern, "reading vda back inside the guest gave other bytes\n\(run.context)")
        #expect(v["host-image"] == pattern, "the image file on the host does not hold the pattern\n\(run.context)")
        #expect(v["host-size"] == "8388608", "the image file changed size\n\(run.context)")
    }

    @Test("a read-only disk is read-only to the guest and its file is unchanged")
    func readOnlyDisk() async throws {
        let (run, v, _) = try await Self.report()
        #expect(v["vda-ro"] == "0" && v["vdb-ro"] == "1", "\(run.context)")
        #expect(v["ro-write"] == "refused", "a write to the read-only disk went through\n\(run.context)")
        #expect(v["host-readonly-unchanged"] == "yes", "the read-only image file changed\n\(run.context)")
    }

    @Test("the guest's command line is the user's, and its kernel met no unknown parameter")
    func commandLineIsTheUsers() async throws {
        let (run, v, lines) = try await Self.report()
        let seen = lines.lazy.compactMap { line in line.range(of: "LGUEST-VIRTIO-CMDLINE ").map { String(line[$0.upperBound...]) } }.first
        #expect(seen == "console=ttyS0 quiet panic=0", "\(run.context)")
        #expect(v["unknown_parameters"] == "0", "\(run.context)")
    }

    @Test("/dev/hwrng is virtio-rng and yields bytes")
    func rng() async throws {
        let (run, v, _) = try await Self.report()
        #expect(v["rng"] == "virtio_rng.0", "\(run.context)")
        let hex = v["hwrng"] ?? ""
        #expect(hex.count == 64 && hex.allSatisfy(\.isHexDigit), "32 bytes from /dev/hwrng, got '\(hex)'\n\(run.context)")
        #expect(hex != String(repeating: "0", count: 64), "\(run.context)")
    }

    @Test("a line written to hvc0 arrives on the console")
    func virtioConsole() async throws {
        let (run, _, lines) = try await Self.report()
        #expect(lines.contains { $0.contains("hvc0 says HELLO") }, "\(run.context)")
    }
}
