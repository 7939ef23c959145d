import Foundation
import Testing

/// virtio-fs in a stock Debian guest: `mount -t virtiofs` of two shares lguest serves itself,
/// the guest's own checks (Lab/guest/fs-init.sh) and the host's afterwards (Lab/scenarios/fs.sh).
// Its guest has been seen to stop making progress (RCU reporting CPU 0 stalled), and the lab
// host to freeze under it, once its own CPU 0 stopped answering IPIs while lguest tore its VM
// down: the emulator's failures, which the lab now detects (LAB-STALL, LAB-HOST-FROZEN) and
// answers by running the scenario once more. LGUEST_LAB_FS=skip leaves it out.
@Suite(.enabled(if: LabEnvironment.enabled && LabEnvironment.environment["LGUEST_LAB_FS"] != "skip",
                "LGUEST_LAB_FS=skip: the virtio-fs lab was asked to skip"))
struct FsLabTests {
    /// The values after `LGUEST-FS` (the guest's) and `LAB-FS` (the host's, prefixed `host-`).
    static func report() async throws -> (run: GuestRun, values: [String: String], lines: [String]) {
        let run = try await FsScenario.run("fs")
        let lines = try await FsScenario.lines()
        var values: [String: String] = [:]
        for line in lines {
            guard let marker = ["LGUEST-FS ", "LAB-FS "].first(where: line.contains),
                  let start = line.range(of: marker) else { continue }
            values.merge(markerFields(line[start.upperBound...], prefix: marker == "LAB-FS " ? "host-" : "")) { _, new in new }
        }
        return (run, values, lines)
    }

    @Test("the guest mounts both shares with the stock virtiofs driver, and unmounts them and powers off")
    func mountsAndUnmounts() async throws {
        let (run, v, _) = try await Self.report()
        #expect(run.exitStatus == 0, "\(run.context)")
        #expect(v["mount-work"] == "ok" && v["mount-ro"] == "ok", "\(run.context)")
        #expect(v["fstype"] == "virtiofs", "\(run.context)")
        #expect(v["umount"] == "ok", "\(run.context)")
        #expect(v["done"] != nil || run.lines.contains { $0.contains("LGUEST-FS done") }, "\(run.context)")
    }

    @Test("create, write, read back, rename, link, symlink, chmod, truncate, mkdir and delete, seen from both sides")
    func everydayOperations() async throws {
        let (run, v, _) = try await Self.report()
        #expect(v["readback"] == "hello_from_the_guest", "\(run.context)")
        #expect(v["rename"] == "ok" && v["link"] == "ok" && v["links"] == "2", "\(run.context)")
        #expect(v["symlink"] == "renamed.txt" && v["through"] == "hello_from_the_guest", "\(run.context)")
        #expect(v["chmod"] == "640" && v["truncate"] == "5" && v["content"] == "hello", "\(run.context)")
        #expect(v["delete"] == "yes" && v["mkdir"] == "yes" && v["statfs"] == "ok", "\(run.context)")
        #expect(v["readdir"] == ".,..,sub,", "\(run.context)")
        #expect(v["host-renamed"] == "hello" && v["host-gone"] == "yes", "\(run.context)")
        #expect(v["host-chmod"] == "640" && v["host-links"] == "2" && v["host-symlink"] == "renamed.txt", "\(run.context)")
        #expect(v["host-deleted"] == "yes" && v["host-dir"] == "yes", "\(run.context)")
    }

    @Test("no set-user-ID file and no device node reach the host; a FIFO does")
    func noSetIDOrDevices() async throws {
        let (run, v, _) = try await Self.report()
        #expect(v["setuid"] == "755" && v["host-setuid"] == "755", "\(run.context)")
        #expect(v["device"] == "refused" && v["host-device"] == "none", "\(run.context)")
        #expect(v["fifo"] == "yes" && v["host-fifo"] == "yes", "\(run.context)")
    }

    @Test("links made on the host to /etc/passwd and out of the share are not followed out of it")
    func escapesStayInside() async throws {
        let (run, v, _) = try await Self.report()
        #expect(v["escape-passwd"] == "|etc|passwd", "\(run.context)")
        for link in ["passwd", "secret-abs", "secret-rel"] {
            #expect(v["escape-\(link)"] != nil, "\(link)\n\(run.context)")
        }
        let leaked = run.lines.filter { $0.contains("LGUEST-FS escape-") && !$0.contains("leaked=0") }
        #expect(leaked.isEmpty, "the host's secret showed through a link: \(leaked)\n\(run.context)")
        #expect(v["parent-has-secret"] == "0", "\(run.context)")
        #expect(v["host-outside"] == "[secret]" && v["host-secret-intact"] == "1", "\(run.context)")
    }

    @Test("the read-only share reads, and refuses every write with EROFS; its directory is unchanged")
    func readOnlyShare() async throws {
        let (run, v, _) = try await Self.report()
        #expect(v["ro-read"] == "read-only_share,_never_written", "\(run.context)")
        #expect(v["ro-refused"] == "5/5" && v["erofs"] == "1", "\(run.context)")
        #expect(v["host-readonly-unchanged"] == "yes", "\(run.context)")
    }

    @Test("an archive of thousands of files unpacked by the guest matches every checksum on the host")
    func untarChecksums() async throws {
        let (run, v, _) = try await Self.report()
        let files = try #require(v["host-archive-files"], "\(run.context)")
        #expect(Int(files) ?? 0 >= 2000, "\(run.context)")
        #expect(v["untar"] == "ok" && v["files"] == files, "\(run.context)")
        #expect(v["host-untar-files"] == files && v["host-untar-mismatches"] == "0", "\(run.context)")
    }

    /// Not a timed test: the benchmark's numbers are printed (README, Performance), and here only
    /// checked to be there.
    @Test("the share-against-ext4 benchmark ran both halves")
    func benchmarkRan() async throws {
        let (run, v, _) = try await Self.report()
        for key in ["virtiofs_untar_ms", "virtiofs_read_ms", "ext4_untar_ms", "ext4_read_ms"] {
            #expect(Int(v[key] ?? "") != nil, "\(key)\n\(run.context)")
        }
        #expect(v["host-ext4"] == "yes", "\(run.context)")
    }
}
