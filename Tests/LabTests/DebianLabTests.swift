// A real distribution as the guest (Lab/debian-system.sh, Lab/scenarios/debian.sh): Debian with
// systemd on a root disk, booted by lguest with the kernel and initrd from its own /boot, its
// root served from a block device of the lab host. A unit inside reports once systemd has
// finished booting, then powers off or reboots through systemd.
//
// The image takes minutes to build and Debian's archive, so these tests run only once it is
// cached (`Lab/lab.sh debian-system`), or when LGUEST_LAB_DEBIAN=build asks for it.
import Foundation
import Testing

extension LabEnvironment {
    static var debianSystemReady: Bool {
        guard enabled, runsInLab else { return false }
        if environment["LGUEST_LAB_DEBIAN"] == "build" { return true }
        // Systemd under nested emulation takes minutes a boot: asked for, not run by default.
        guard environment["LGUEST_LAB_DEBIAN"] == "run" else { return false }
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/bin/bash")
        check.arguments = [labScript.path, "debian-system", "--check"]
        check.standardOutput = FileHandle.nullDevice
        check.standardError = FileHandle.nullDevice
        guard (try? check.run()) != nil else { return false }
        check.waitUntilExit()
        return check.terminationStatus == 0
    }
}

@Suite(.enabled(if: LabEnvironment.debianSystemReady,
                "the Debian system runs when asked: LGUEST_LAB_DEBIAN=run (cached by Lab/lab.sh debian-system) or LGUEST_LAB_DEBIAN=build"))
struct DebianLabTests {
    /// The text after `marker` on the run's lines.
    static func value(_ run: GuestRun, _ marker: String) -> String? {
        run.lines.lazy.compactMap { line in line.range(of: marker).map { String(line[$0.upperBound...]) } }.first
    }

    @Test("systemd reaches a running system with no failed unit, root on /dev/vda, and a login prompt",
          arguments: ["poweroff", "reboot"])
    func boots(action: String) async throws {
        let run = try await DebianScenario.run("debian-\(action)")
        #expect(Self.value(run, "LGUEST-DEBIAN ") == "state=running failed=0", "\(run.context)")
        #expect(Self.value(run, "LGUEST-DEBIAN-ROOT ")?.hasPrefix("/dev/vda ext4") == true, "\(run.context)")
        #expect(run.lines.contains { $0.contains("LGUEST-DEBIAN-ANALYZE multi-user.target reached after") },
                "systemd-analyze should say when multi-user.target was reached\n\(run.context)")
        #expect(run.lines.contains { $0.contains("lguest-debian login:") }, "no login prompt on ttyS0\n\(run.context)")
    }

    @Test("systemctl poweroff and systemctl reboot each end lguest with status 0", arguments: ["poweroff", "reboot"])
    func ends(action: String) async throws {
        let run = try await DebianScenario.run("debian-\(action)")
        #expect(run.exitStatus == 0, "\(run.context)")
        #expect(run.stderrLastLine.isEmpty, "\(run.context)")
    }

    /// QEMU microvm boots the same system in the same lab run: the reference for the boot time
    /// the README gives (systemd-analyze's own numbers, from inside each guest).
    @Test("QEMU microvm boots the same system to multi-user.target, for comparison")
    func qemuReference() async throws {
        let run = try await DebianScenario.run("debian-qemu")
        #expect(Self.value(run, "LGUEST-DEBIAN ") == "state=running failed=0", "\(run.context)")
        #expect(run.lines.contains { $0.contains("LGUEST-DEBIAN-ANALYZE multi-user.target reached after") }, "\(run.context)")
        #expect(run.exitStatus == 0, "\(run.context)")
    }
}
