import Foundation
import Testing

/// `PATCH /vm` on a started VM, seen from outside: a paused VM's threads sleep.
@Suite(.enabled(if: LiveAPI.kvmUsable, "no usable /dev/kvm: the pause test is skipped"))
struct PauseTests {
    @Test func aPausedVMUsesNoCPU() throws {
        let work = try LiveAPI.temporaryDirectory("pause")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/guest.elf"
        try LiveAPI.write(LiveAPI.haltingGuest, to: kernel)
        let configFile = work + "/vm.json"
        try LiveAPI.write(Array(#"{"boot-source": {"kernel_image_path": "\#(kernel)"}, "drives": []}"#.utf8), to: configFile)
        let lguest = try LiveLguest(id: "pause", configFile: configFile)
        defer { lguest.stop() }
        try #require(lguest.waitForOutput("hi\n"), "the guest did not start: \(lguest.output)")

        for _ in 0 ..< 3 {
            #expect(lguest.send("PATCH", "/vm", #"{"state": "Paused"}"#) == 204)
            #expect(lguest.get("/")?.body.contains(#""state":"Paused""#) == true)
            let before = try #require(lguest.cpuSeconds)
            Thread.sleep(forTimeInterval: 1)
            let used = try #require(lguest.cpuSeconds) - before
            // Parked threads that woke each other in turn kept about one core busy.
            #expect(used < 0.25, "lguest used \(used) s of CPU in 1 s while paused")
            #expect(lguest.send("PATCH", "/vm", #"{"state": "Resumed"}"#) == 204)
            #expect(lguest.get("/")?.body.contains(#""state":"Running""#) == true)
        }
        #expect(lguest.isRunning)
    }
}
