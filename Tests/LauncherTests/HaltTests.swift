import Foundation
import TestSupport
import Testing

/// `systemctl halt`: the guest announces its shutdown (`\_TTS(5)`), then parks every CPU in HLT
/// with interrupts off and never powers off or resets. lguest keeps waiting, as a halted PC
/// stays on, and says so once on standard error.
@Suite(.enabled(if: kvmUsable, "no usable /dev/kvm on this host: tiny-guest runs skipped"))
struct HaltTests {
    static let line = "the guest halted its CPUs"

    /// Runs lguest on `code` for `seconds` (or until its standard error mentions `until`),
    /// then, if it still runs, sends SIGTERM. Returns whether it was still running then, and
    /// its standard error.
    func watch(_ code: [UInt8], cpus: Int, seconds: Double, until: String? = nil) throws -> (running: Bool, stderr: String) {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(code), name: "tiny.elf")
        let lguest = try RunningTool(["run", "--kernel", kernel, "--memory", "64", "--cpus", String(cpus)])
        lguest.waitForStderr(containing: until, seconds: seconds)
        // A moment more: a second line, had lguest wanted to say it twice, would be here by now.
        if until != nil { usleep(2_500_000) }
        let running = lguest.process.isRunning
        lguest.terminateAndWait()
        return (running, lguest.stderr)
    }

    @Test("after \\_TTS(5), every vCPU halted with interrupts off: lguest waits, and says so once",
          arguments: [1, 2])
    func announcedHalt(cpus: Int) throws {
        // With two vCPUs the second is never started: it waits for a startup IPI nobody will send.
        let code = TinyGuest.out(0x603, 5) + TinyGuest.print("reboot: System halted\n") + TinyGuest.hlt + TinyGuest.spin
        let (running, stderr) = try watch(code, cpus: cpus, seconds: 20, until: Self.line)
        #expect(running, "lguest should wait for the user, not end: \(stderr)")
        let lines = stderr.split(separator: "\n").filter { $0.contains(Self.line) }
        #expect(lines.count == 1, "\(stderr)")
        #expect(lines.first?.hasPrefix("lguest: ") == true && lines.first?.contains("ends it") == true, "\(stderr)")
    }

    @Test("a halt with no announcement, or an announcement with a CPU still running, is not a halt")
    func notAHalt() throws {
        let silentHalt = TinyGuest.print("no announcement\n") + TinyGuest.hlt + TinyGuest.spin
        let spinning = TinyGuest.out(0x603, 5) + TinyGuest.print("announced, still busy\n") + TinyGuest.spin
        for code in [silentHalt, spinning] {
            let (running, stderr) = try watch(code, cpus: 1, seconds: 5)
            #expect(running)
            #expect(!stderr.contains(Self.line), "\(stderr)")
        }
    }
}
