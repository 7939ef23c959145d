import Foundation
import TestSupport
import Testing

/// An lguest serving Firecracker's API, driven by a real HTTP client (curl over the Unix socket).
final class ApiProcess {
    let socket: String
    let process = Process()
    let console: String
    let log: String

    init(_ extra: [String] = [], name: String = "lguest") throws {
        let directory = NSTemporaryDirectory() + "lguest-api-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        socket = directory + "/api.sock"
        console = directory + "/console"
        log = directory + "/log"
        FileManager.default.createFile(atPath: console, contents: nil)
        process.executableURL = Tool.binary
        process.arguments = ["--api-sock", socket, "--id", "live-test", "--log-path", log] + extra
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: console)
        process.standardError = FileHandle(forWritingAtPath: console)
        try process.run()
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: socket) { usleep(10_000) }
    }

    deinit {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
    }

    /// Sends one request with curl; returns the status, the body, and the response's headers.
    func request(_ method: String, _ path: String, _ body: String? = nil) throws -> (status: Int, body: String, headers: String) {
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        var arguments = ["-s", "-D", "-", "--unix-socket", socket, "-X", method, "http://localhost" + path]
        if let body { arguments += ["-H", "Content-Type: application/json", "--data-binary", body] }
        curl.arguments = arguments
        let out = Pipe()
        curl.standardOutput = out
        try curl.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        curl.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        let headers = parts.first ?? ""
        let status = Int(headers.split(separator: " ").dropFirst().first ?? "") ?? -1
        return (status, parts.dropFirst().joined(separator: "\r\n\r\n"), headers)
    }

    /// The process's user and system CPU time, in clock ticks (/proc/PID/stat).
    var cpuTicks: Int {
        guard let stat = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }

    var consoleText: String { (try? String(contentsOfFile: console, encoding: .utf8)) ?? "" }

    /// Waits up to `seconds` for the process to exit; returns its status, or nil.
    func waitForExit(seconds: Double = 30) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }
}

func temporaryPath(_ name: String) -> String {
    NSTemporaryDirectory() + "lguest-\(name)-\(UUID().uuidString.prefix(8))"
}

func wait(seconds: Double = 5, for condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() && Date() < deadline { usleep(10_000) }
    return condition()
}

/// A guest that prints `x` on COM1 forever.
let printsForever = TinyGuest.elf(TinyGuest.print("go\n") + TinyGuest.movDX(0x3F8) + TinyGuest.movAL(0x78) + TinyGuest.outDXAL + [0xEB, 0xFB])

@Suite(.enabled(if: kvmUsable && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs /dev/kvm and curl"))
struct LiveApiTests {
    @Test func configureStartPauseResumeThroughTheSocket() throws {
        let kernel = try Tool.temporaryFile(printsForever, name: "forever.elf")
        let lguest = try ApiProcess()
        let root = try lguest.request("GET", "/")
        #expect(root.status == 200)
        #expect(root.body == #"{"app_name":"Firecracker","id":"live-test","state":"Not started","vmm_version":"1.17.0-dev"}"#)
        // The transport as Firecracker writes it: no reason phrase, its Server header, keep-alive.
        let put = try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#)
        #expect(put.status == 204 && put.body.isEmpty)
        #expect(put.headers.hasPrefix("HTTP/1.1 204 \r\n"), "\(put.headers)")
        #expect(put.headers.contains("Server: Firecracker API") && put.headers.contains("Connection: keep-alive"))
        #expect(try lguest.request("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 64}"#).status == 204)
        #expect(try lguest.request("PUT", "/entropy", "{}").status == 204)
        #expect(try lguest.request("PATCH", "/vm", #"{"state": "Paused"}"#).body == #"{"fault_message":"The requested operation is not supported before starting the microVM."}"#)

        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        #expect(wait { lguest.consoleText.count > 1000 }, "the guest's console stayed quiet: \(lguest.consoleText.prefix(200))")
        #expect(try lguest.request("GET", "/").body.contains(#""state":"Running""#))
        let again = try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(again.status == 400 && again.body == #"{"fault_message":"The requested operation is not supported after starting the microVM."}"#)
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)"}"#).status == 400)
        #expect(try lguest.request("GET", "/machine-config").body.contains(#""vcpu_count":2"#))

        #expect(try lguest.request("PATCH", "/vm", #"{"state": "Paused"}"#).status == 204)
        #expect(try lguest.request("GET", "/").body.contains(#""state":"Paused""#))
        let paused = lguest.consoleText.count
        let cpuBefore = lguest.cpuTicks
        usleep(500_000)
        #expect(lguest.consoleText.count == paused, "the console advanced while paused")
        // A paused VM sleeps: its threads wait, none spins (clock ticks are 10 ms).
        #expect(lguest.cpuTicks - cpuBefore < 10, "lguest used \(lguest.cpuTicks - cpuBefore) ticks of CPU in 0.5 s while paused")
        #expect(try lguest.request("PATCH", "/vm", #"{"state": "Paused"}"#).status == 204, "pausing twice is a no-op")
        #expect(try lguest.request("PATCH", "/vm", #"{"state": "Resumed"}"#).status == 204)
        #expect(wait { lguest.consoleText.count > paused + 1000 }, "the guest did not go on after Resumed")
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#).status == 204)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#).status == 204)
        let log = (try? String(contentsOfFile: lguest.log, encoding: .utf8)) ?? ""
        #expect(log.contains("[live-test:fc_vmm] Running Firecracker v1.17.0-dev"))
        #expect(log.contains("[live-test:fc_vmm] API server started."))
        #expect(log.contains(#"[live-test:fc_api] The API server received a Patch request on "/vm" with body "{"state": "Paused"}"."#))
    }

    @Test func metricsLinesOnFlushWithChangesSinceTheLastLine() throws {
        let kernel = try Tool.temporaryFile(printsForever, name: "forever.elf")
        let metrics = NSTemporaryDirectory() + "lguest-metrics-\(UUID().uuidString)"
        defer { unlink(metrics) }
        let lguest = try ApiProcess(["--metrics-path", metrics])
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#).status == 204)
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "/none"}"#).status == 400)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        #expect(wait { lguest.consoleText.count > 100 })
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#).status == 204)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#).status == 204)
        let lines = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        let objects = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.count == 2, "a line is not a JSON object")
        guard objects.count == 2 else { return }
        for group in ["api_server", "balloon", "block", "deprecated_api", "get_api_requests", "i8042", "latencies_us", "logger",
                      "mmds", "net", "patch_api_requests", "put_api_requests", "seccomp", "vcpu", "vmm", "uart", "signals",
                      "vsock", "entropy", "interrupts"] {
            #expect(objects[0][group] is [String: Any], "no group \(group)")
        }
        let timestamp = try #require(objects[0]["utc_timestamp_ms"] as? Int)
        #expect(abs(Double(timestamp) / 1000 - Date().timeIntervalSince1970) < 60)
        let put = { (i: Int) in objects[i]["put_api_requests"] as? [String: Int] ?? [:] }
        #expect(put(0)["boot_source_count"] == 2 && put(0)["boot_source_fails"] == 1 && put(0)["actions_count"] == 1)
        #expect(put(1)["boot_source_count"] == 0, "counters are reported as changes since the previous line")
        let vcpu = objects[0]["vcpu"] as? [String: Any] ?? [:]
        #expect((vcpu["exit_io_out"] as? Int ?? 0) > 100, "the guest's port writes were not counted: \(vcpu)")
        #expect(((objects[0]["uart"] as? [String: Int])?["write_count"] ?? 0) > 100)
    }

    @Test func patchDrivesSwapsTheImageOfARunningVM() throws {
        let kernel = try Tool.temporaryFile(printsForever, name: "forever.elf")
        let first = try Tool.temporaryFile([UInt8](repeating: 1, count: 8192), name: "first.img")
        let second = try Tool.temporaryFile([UInt8](repeating: 2, count: 16384), name: "second.img")
        let lguest = try ApiProcess()
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)"}"#).status == 204)
        #expect(try lguest.request("PUT", "/drives/scratch", #"{"drive_id": "scratch", "is_root_device": false, "path_on_host": "\#(first)"}"#).status == 204)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        let patched = try lguest.request("PATCH", "/drives/scratch", #"{"drive_id": "scratch", "path_on_host": "\#(second)"}"#)
        #expect(patched.status == 204, "\(patched)")
        #expect(try lguest.request("GET", "/vm/config").body.contains(second))
        let missing = try lguest.request("PATCH", "/drives/scratch", #"{"drive_id": "scratch", "path_on_host": "/no/such/image"}"#)
        #expect(missing.status == 400 && missing.body.contains("Unable to patch the block device"), "\(missing)")
        let unknown = try lguest.request("PATCH", "/drives/other", #"{"drive_id": "other", "path_on_host": "\#(second)"}"#)
        #expect(unknown.body == #"{"fault_message":"Invalid block device ID: other not found."}"#)
        #expect(try lguest.request("PATCH", "/drives/scratch", #"{"drive_id": "scratch"}"#).body.contains("Running method expected different backend."))
        let limited = try lguest.request("PATCH", "/drives/scratch", #"{"drive_id": "scratch", "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100}}}"#)
        #expect(limited.status == 204, "\(limited)")
        #expect(try lguest.request("GET", "/vm/config").body.contains(#""rate_limiter":{"bandwidth":{"#))
    }

    @Test func theGuestPoweringOffEndsLguestWithZeroAndRemovesTheSocket() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff()), name: "hello.elf")
        let lguest = try ApiProcess()
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#).status == 204)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        #expect(lguest.waitForExit() == 0)
        #expect(lguest.consoleText.contains("hello from a tiny guest"))
        #expect(!FileManager.default.fileExists(atPath: lguest.socket))
    }

    @Test func refusalsKeepTheServerServing() throws {
        let lguest = try ApiProcess(["--http-api-max-payload-size", "100"])
        let big = try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": ""# + String(repeating: "a", count: 200) + #""}"#)
        #expect(big.status == 400)
        #expect(big.body.contains("is larger than the limit of 100 allowed by server."))
        #expect(try lguest.request("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/none"}"#).status == 400)
        #expect(try lguest.request("PUT", "/machine-config", "{not json").status == 400)
        #expect(try lguest.request("POST", "/actions", #"{"action_type": "InstanceStart"}"#).body
                == #"{"fault_message":"Invalid request method and/or path: POST /actions."}"#)
        let unknown = try lguest.request("FOO", "/actions", "{}")
        #expect(unknown.status == 400 && unknown.body.hasPrefix(#"{"fault_message":"Invalid HTTP request: "#), "\(unknown)")
        #expect(try lguest.request("GET", "/").status == 200, "the server went away after refusals")
    }

    /// `Seccomp:` and `CapEff:` of the process's swift-nio event loop threads.
    func eventLoopThreads(of pid: Int32) -> [(seccomp: String, effective: String)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { task in
            guard let comm = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8), comm.hasPrefix("NIO-ELT"),
                  let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { return nil }
            func field(_ name: String) -> String {
                status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) } ?? "?"
            }
            return (field("Seccomp"), field("CapEff"))
        }
    }

    @Test func theApiThreadRunsUnderItsFilterUnlessToldNot() throws {
        let confined = try ApiProcess()
        #expect(try confined.request("GET", "/").status == 200)
        let threads = eventLoopThreads(of: confined.process.processIdentifier)
        #expect(threads.count == 1)
        #expect(threads.allSatisfy { $0.seccomp == "2" && $0.effective == "0000000000000000" }, "\(threads)")
        let open = try ApiProcess(["--no-seccomp"])
        #expect(try open.request("GET", "/").status == 200)
        #expect(eventLoopThreads(of: open.process.processIdentifier).allSatisfy { $0.seccomp == "0" })
    }

    @Test func putLoggerMovesTheLogAndChangesItsLevelAndFields() throws {
        let lguest = try ApiProcess()
        let moved = lguest.log + ".moved"
        #expect(try lguest.request("PUT", "/logger", #"{"log_path": "\#(moved)", "level": "Info", "show_level": true}"#).status == 204)
        #expect(try lguest.request("GET", "/").status == 200)
        let text = { (try? String(contentsOfFile: moved, encoding: .utf8)) ?? "" }
        #expect(text().contains(#"[live-test:fc_api:INFO] The API server received a Get request on "/" with body ""."#), "\(text())")
        #expect(try lguest.request("PUT", "/logger", #"{"level": "Warning"}"#).status == 204)
        #expect(try lguest.request("GET", "/version").status == 200)
        #expect(!text().contains("/version"), "an Info line was written at level Warning")
        #expect(try lguest.request("PUT", "/logger", #"{"log_path": "/no/such/dir/log"}"#).status == 400)
    }

    @Test func putSerialSendsTheConsoleToAFileAndEachCallIsTimedInTheLog() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff()), name: "hello.elf")
        let serial = temporaryPath("serial")
        let lguest = try ApiProcess(["--level", "Debug"])
        #expect(try lguest.request("PUT", "/serial", #"{"serial_out_path": "\#(serial)"}"#).status == 204)
        let deprecated = try lguest.request("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "None"}"#)
        #expect(deprecated.status == 204 && deprecated.headers.contains("Deprecation: true"), "\(deprecated)")
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#).status == 204)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        #expect(lguest.waitForExit() == 0)
        let file = (try? String(contentsOfFile: serial, encoding: .utf8)) ?? ""
        #expect(file == "hello from a tiny guest\n", "the serial output file has \(file.debugDescription)")
        #expect(!lguest.consoleText.contains("hello from a tiny guest"), "the console went to standard output too")
        let log = (try? String(contentsOfFile: lguest.log, encoding: .utf8)) ?? ""
        #expect(log.components(separatedBy: "Total previous API call duration: ").count - 1 == 4, "\(log)")
        #expect(log.contains("PUT /machine-config: cpu_template field is deprecated."))
    }

    @Test func aSocketPathInUseIsRefused() throws {
        let first = try ApiProcess()
        let second = try Tool.run(["--api-sock", first.socket])
        #expect(second.status == 1)
        #expect(second.stderrLines == ["lguest: Failed to open the API socket at: \(first.socket). Check that it is not already used."])
        #expect(try first.request("GET", "/").status == 200)
    }

    @Test func aConfigurationFileWithoutTheApiBootsAndExits() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff()), name: "hello.elf")
        let config = try Tool.temporaryFile(Array("""
            {"boot-source": {"kernel_image_path": "\(kernel)", "boot_args": "console=ttyS0"},
             "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}, "drives": [], "unknown-top-level": 1}
            """.utf8), name: "vm.json")
        // Logs go elsewhere: on standard output they would interleave with the console.
        let log = try Tool.temporaryFile([], name: "log")
        let result = try Tool.run(["--no-api", "--config-file", config, "--log-path", log])
        #expect(result.status == 0)
        #expect(result.stdout.contains("hello from a tiny guest"))
        let bad = try Tool.temporaryFile(Array(#"{"boot-source": {"kernel_image_path": "\#(kernel)"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "x": 1}}"#.utf8), name: "bad.json")
        let refused = try Tool.run(["--no-api", "--config-file", bad, "--log-path", log])
        #expect(refused.status == 152)
        #expect(refused.stderrLines.count == 1 && refused.stderr.contains("unknown field `x`"))
    }

    @Test func firecrackersFlagsAndRefusals() throws {
        let version = try Tool.run(["--version", "--api-sock", "/nonexistent/x"])
        #expect(version.status == 0 && version.stdout.hasPrefix("Firecracker v1.17.0-dev\n"))
        let pci = try Tool.run(["--api-sock", "/tmp/x.sock", "--enable-pci"])
        #expect(pci.status == 153)
        #expect(pci.stderrLines == ["lguest: --enable-pci is not supported: lguest has no PCI (its devices are virtio-mmio) (lguest --help lists the options)"])
        let noApi = try Tool.run(["--no-api"])
        #expect(noApi.status == 153 && noApi.stderrLines.count == 1)
        let badID = try Tool.run(["--id", "no spaces", "--no-api", "--config-file", "/x"])
        #expect(badID.status == 153 && badID.stderr.contains("invalid instance ID"))
    }

    @Test func underTheNameFirecrackerItIsFirecracker() throws {
        let directory = NSTemporaryDirectory() + "lguest-fc-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let link = directory + "/firecracker"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: Tool.binary.path)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: link)
        process.arguments = ["--version"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0 && text.hasPrefix("Firecracker v"))
    }
}
