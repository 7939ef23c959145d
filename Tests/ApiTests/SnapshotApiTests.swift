import Foundation
import Testing

/// `PUT /snapshot/create` and `PUT /snapshot/load` between two lguest processes, driven over
/// their API sockets as Firecracker's clients drive it, with tiny guests on this host's KVM.
@Suite(.enabled(if: LiveAPI.kvmUsable, "no usable /dev/kvm: the snapshot API tests are skipped"), .serialized)
struct SnapshotApiTests {
    /// Starts the ticking guest with a data drive `data` in a new lguest, and pauses it.
    func pausedSource(_ work: String) throws -> LiveLguest {
        let kernel = work + "/guest.elf", disk = work + "/data.img"
        try LiveAPI.write(LiveAPI.tickingGuest, to: kernel)
        try LiveAPI.write([UInt8](repeating: 0, count: 1 << 20), to: disk)
        let configFile = work + "/vm.json"
        try LiveAPI.write(Array(#"""
            {"boot-source": {"kernel_image_path": "\#(kernel)"},
             "drives": [{"drive_id": "data", "path_on_host": "\#(disk)", "is_root_device": false}],
             "machine-config": {"vcpu_count": 2, "mem_size_mib": 64}, "entropy": {}}
            """#.utf8), to: configFile)
        let source = try LiveLguest(id: "source", configFile: configFile)
        try #require(source.waitForOutput("hi\n..."), "the guest did not start: \(source.output)")
        return source
    }

    @Test("a snapshot taken by one lguest is loaded by another, and the guest goes on ticking there")
    func createThenLoad() throws {
        let work = try LiveAPI.temporaryDirectory("snap")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let source = try pausedSource(work)
        let create = #"{"snapshot_path": "\#(work)/vm.state", "mem_file_path": "\#(work)/vm.mem"}"#
        #expect(source.send("PUT", "/snapshot/create", create) == 400, "a running VM must be paused first")
        #expect(source.send("PATCH", "/vm", #"{"state": "Paused"}"#) == 204)
        #expect(source.send("PUT", "/snapshot/create", create) == 204, "\(source.output)")
        let sourceConfig = source.get("/vm/config")?.body ?? ""
        source.stop()
        let memory = try FileManager.default.attributesOfItem(atPath: work + "/vm.mem")[.size] as? Int
        #expect(memory == 64 << 20)

        let target = try LiveLguest(id: "target")
        let load = #"{"snapshot_path": "\#(work)/vm.state", "mem_backend": {"backend_type": "File", "backend_path": "\#(work)/vm.mem"}, "resume_vm": true}"#
        #expect(target.send("PUT", "/snapshot/load", load) == 204, "\(target.output)")
        #expect(target.get("/")?.body.contains(#""state":"Running""#) == true)
        // The restored guest prints no "hi": only its dots, going on.
        #expect(target.waitForOutput("....."), "the restored guest did not tick: \(target.output)")
        #expect(!target.output.contains("hi"))
        let config = target.get("/vm/config")?.body ?? ""
        #expect(config.contains(#""drive_id":"data""#) && config.contains(#""vcpu_count":2"#), "\(config)")
        #expect(config == sourceConfig, "the restored process describes another VM:\n\(config)\n\(sourceConfig)")
        #expect(target.send("PUT", "/snapshot/load", load) == 400, "a second load must be refused")
        #expect(target.send("PATCH", "/vm", #"{"state": "Paused"}"#) == 204)
        #expect(target.send("PATCH", "/vm", #"{"state": "Resumed"}"#) == 204)
        #expect(target.isRunning)
    }

    @Test("loaded without resume_vm the VM is paused; PATCH /vm resumes it")
    func loadPaused() throws {
        let work = try LiveAPI.temporaryDirectory("snap")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let source = try pausedSource(work)
        #expect(source.send("PATCH", "/vm", #"{"state": "Paused"}"#) == 204)
        #expect(source.send("PUT", "/snapshot/create", #"{"snapshot_path": "\#(work)/s", "mem_file_path": "\#(work)/m"}"#) == 204)
        source.stop()
        let target = try LiveLguest(id: "target")
        #expect(target.send("PUT", "/snapshot/load", #"{"snapshot_path": "\#(work)/s", "mem_file_path": "\#(work)/m"}"#) == 204)
        #expect(target.get("/")?.body.contains(#""state":"Paused""#) == true)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(!target.output.contains("."), "a VM loaded paused ran: \(target.output)")
        #expect(target.send("PATCH", "/vm", #"{"state": "Resumed"}"#) == 204)
        #expect(target.waitForOutput("..."), "\(target.output)")
    }

    @Test("bad loads are refused with Firecracker's messages, and lguest lives on")
    func refusals() throws {
        let work = try LiveAPI.temporaryDirectory("snap")
        defer { try? FileManager.default.removeItem(atPath: work) }
        try LiveAPI.write(Array("not a snapshot".utf8), to: work + "/junk")
        let lguest = try LiveLguest(id: "refusals")
        func answer(_ body: String) -> String {
            let request = "PUT /snapshot/load HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            return lguest.exchange(request)?.text ?? ""
        }
        #expect(answer(#"{"snapshot_path": "\#(work)/junk"}"#).contains("missing field: either `mem_backend` or `mem_file_path` is required"))
        #expect(answer(#"{"snapshot_path": "x", "mem_file_path": "m", "mem_backend": {"backend_type": "File", "backend_path": "m"}}"#)
            .contains("too many fields: either `mem_backend` or `mem_file_path` exclusively is required"))
        #expect(answer(#"{"snapshot_path": "\#(work)/junk", "mem_file_path": "\#(work)/junk"}"#).contains("not an lguest snapshot state file"))
        #expect(answer(#"{"snapshot_path": "\#(work)/junk", "mem_file_path": "m", "bogus": 1}"#).contains("unknown field `bogus`"))
        #expect(lguest.send("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 64}"#) == 204)
        #expect(answer(#"{"snapshot_path": "\#(work)/junk", "mem_file_path": "\#(work)/junk"}"#)
            .contains("Loading a microVM snapshot not allowed after configuring boot-specific resources."))
        #expect(lguest.send("PUT", "/snapshot/create", #"{"snapshot_path": "a", "mem_file_path": "b"}"#) == 400)
        #expect(lguest.isRunning)
    }
}
