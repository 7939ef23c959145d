// A real distribution as the guest (Lab/debian-system.sh, Lab/scenarios/debian.sh): Debian with
// systemd on a root disk, booted by lguest with the kernel and initrd from its own /boot, its
// root served from a block device of the lab host. A unit inside reports once systemd has
// finished booting, then powers off or reboots through systemd.
//
// They run in every lab test run (LGUEST_LAB_DEBIAN=skip leaves them out); the image is built
// from Debian's archive the first time and cached (`Lab/lab.sh debian-system`). A Debian guest
// under lguest once brought down the lab host itself (Lab/README.md, "The tests"): a scenario
// whose lab host stops or freezes runs once more, and a guest that fails beneath lguest too.
import Foundation
import Testing

extension LabEnvironment {
    static var debianSystemReady: Bool {
        enabled && runsInLab && environment["LGUEST_LAB_DEBIAN"] != "skip"
    }
}

@Suite(.enabled(if: LabEnvironment.debianSystemReady,
                "LGUEST_LAB_DEBIAN=skip: the Debian system was asked to skip"))
struct DebianLabTests {
    /// The text after `marker` on the run's lines.
    static func value(_ run: GuestRun, _ marker: String) -> String? {
        run.lines.lazy.compactMap { line in line.range(of: marker).map { String(line[$0.upperBound...]) } }.first
    }

    @Test("systemd reaches a running system with no failed unit and root on /dev/vda",
          arguments: ["poweroff", "reboot"])
    func boots(action: String) async throws {
        let run = try await DebianScenario.run("debian-\(action)")
        #expect(Self.value(run, "LGUEST-DEBIAN ") == "state=running failed=0", "\(run.context)")
        #expect(Self.value(run, "LGUEST-DEBIAN-ROOT ")?.hasPrefix("/dev/vda ext4") == true, "\(run.context)")
        #expect(run.lines.contains { $0.contains("LGUEST-DEBIAN-ANALYZE multi-user.target reached after") },
                "systemd-analyze should say when multi-user.target was reached\n\(run.context)")
    }

    @Test("systemctl poweroff and systemctl reboot each end lguest with status 0", arguments: ["poweroff", "reboot"])
    func ends(action: String) async throws {
        let run = try await DebianScenario.run("debian-\(action)")
        #expect(run.exitStatus == 0, "\(run.context)")
        #expect(run.stderrLastLine.isEmpty, "\(run.context)")
    }

    @Test("systemd-networkd configures the virtio NIC, and the guest reaches the lab host through it")
    func network() async throws {
        let run = try await DebianScenario.run("debian-poweroff")
        let fields = markerFields(Substring(Self.value(run, "LGUEST-DEBIAN-NET ") ?? ""))
        #expect(fields["networkd"] == "active" && fields["link"]?.hasSuffix("=routable/configured") == true, "\(run.context)")
        #expect(fields["reply"] == "lab-host-reached", "\(run.context)")
    }

    @Test("a login prompt on ttyS0, and a root login typed at it from the lab host gets a shell there")
    func serialLogin() async throws {
        // The prompt is checked here, where the lab host waited for it: the poweroff and reboot
        // runs may go down before agetty has written it.
        let run = try await DebianScenario.run("debian-login")
        #expect(run.lines.contains { $0.contains("lguest-debian login:") }, "no login prompt on ttyS0\n\(run.context)")
        // The command's output, not its echo (where "uid=" is followed by "$(id -u)"); bash may
        // put a terminal escape in front of it.
        let output = run.lines.lazy.compactMap { line -> Substring? in
            guard let r = line.range(of: "LGUEST-LOGIN uid="), line[r.upperBound...].first?.isNumber == true else { return nil }
            return line[line.index(r.upperBound, offsetBy: -"uid=".count)...]
        }.first ?? ""
        let fields = markerFields(output)
        #expect(fields["uid"] == "0" && fields["tty"] == "/dev/ttyS0" && fields["host"] == "lguest-debian", "\(run.context)")
    }

    @Test("systemctl halt leaves lguest waiting, and lguest says so once on standard error")
    func halt() async throws {
        let run = try await DebianScenario.run("debian-login")
        let fields = markerFields(Substring(Self.value(run, "LAB-DEBIAN-HALT ") ?? ""))
        #expect(fields["waiting"] == "yes" && fields["said"] == "1", "\(run.context)")
        #expect(run.lines.contains { $0.contains("reboot: System halted") }, "\(run.context)")
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
