// Every way Linux restarts an x86 machine ends lguest with status 0: Lab/scenarios/reboot.sh
// boots the check guest once per method with lguest.action=reboot.
import Testing

@Suite(.enabled(if: LabEnvironment.enabled, "LGUEST_LAB=skip: the lab tests were asked to skip"))
struct RebootLabTests {
    @Test("a guest reboot ends lguest with status 0, whatever reboot= says",
          arguments: ["default", "k", "a", "t", "e", "b"])
    func reboot(method: String) async throws {
        let run = try await RebootScenario.run("reboot-\(method)")
        let check = try run.requireCheck()
        #expect(check.cmdline.contains("lguest.tag=reboot-\(method)"), "\(run.context)")
        if method != "default" { #expect(check.cmdline.hasSuffix("reboot=\(method)"), "\(run.context)") }
        #expect(run.lines.contains { $0.contains("reboot: Restarting system") },
                "the guest kernel should say it is restarting\n\(run.context)")
        #expect(run.exitStatus == 0, "lguest should exit 0 when the guest reboots\n\(run.context)")
        #expect(run.stderrLastLine.isEmpty, "a reboot is not a failure: nothing on stderr\n\(run.context)")
    }
}
