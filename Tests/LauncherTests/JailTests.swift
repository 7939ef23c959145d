import Foundation
import TestSupport
import Testing

/// `lguest jail`: refusals as one line and exit 2, and a jailed lguest running a tiny guest on
/// this host's /dev/kvm, looked at from outside while it runs.
@Suite(.serialized, .enabled(if: geteuid() == 0, "the jailer needs root"))
struct JailTests {
    static func base() throws -> String {
        let path = try Tool.temporaryDirectory() + "/jails"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func expectRefusal(_ jailArguments: [String], mentioning words: [String]) throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff()), name: "tiny.elf")
        let result = try Tool.run(["jail"] + jailArguments + ["--", "run", "--kernel", kernel])
        #expect(result.status == 2, "\(jailArguments): \(result.stderr)")
        #expect(result.stderrLines.count == 1, "\(result.stderr)")
        for word in words { #expect(result.stderr.contains(word), "\(result.stderr)") }
    }

    @Test("bad ids, base directories, cgroup keys and resource limits: exit 2, one line each")
    func refusals() throws {
        let base = try Self.base()
        let common = ["--uid", "65534", "--gid", "65534", "--chroot-base-dir", base]
        try expectRefusal(["--id", "a/b"] + common, mentioning: ["--id", "letters, digits and hyphens"])
        try expectRefusal(["--id", String(repeating: "x", count: 65)] + common, mentioning: ["--id"])
        try expectRefusal(["--id", "vm1", "--cgroup", "bogus.max=1"] + common, mentioning: ["bogus.max", "controller"])
        try expectRefusal(["--id", "vm1", "--cgroup", "memory.max"] + common, mentioning: ["FILE=VALUE"])
        try expectRefusal(["--id", "vm1", "--resource-limit", "nofile=100"] + common, mentioning: ["unknown resource"])
        try expectRefusal(["--id", "vm1", "--parent-cgroup", "../x"] + common, mentioning: ["--parent-cgroup"])

        let link = base + "-link"
        try? FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: base)
        try expectRefusal(["--id", "vm1", "--uid", "65534", "--gid", "65534", "--chroot-base-dir", link], mentioning: ["symbolic link"])

        let notRoot = base + "-nobody"
        try FileManager.default.createDirectory(atPath: notRoot, withIntermediateDirectories: true)
        chown(notRoot, 65534, 65534)
        try expectRefusal(["--id", "vm1", "--uid", "65534", "--gid", "65534", "--chroot-base-dir", notRoot], mentioning: ["not owned by root"])

        let nothing = try Tool.run(["jail", "--id", "vm1"] + common)
        #expect(nothing.status == 2 && nothing.stderr.contains("after --"), "\(nothing.stderr)")
    }

    @Test("a jailed lguest runs its guest as the given user, sees only its jail, and the files it was given")
    func jailedGuest() throws {
        let base = try Self.base()
        // The guest halts for good, so lguest stays to be looked at.
        let code = TinyGuest.out(0x603, 5) + TinyGuest.print("jailed guest\n") + TinyGuest.hlt + TinyGuest.spin
        let kernel = try Tool.temporaryFile(TinyGuest.elf(code), name: "tiny.elf")
        let disk = try Tool.temporaryFile([UInt8](repeating: 7, count: 1 << 20), name: "disk.img")
        chown(disk, 65534, 65534)
        let share = try Tool.temporaryDirectory()
        let output = Pipe()
        let jailer = try RunningTool(["jail", "--id", "jailed-1", "--uid", "65534", "--gid", "65534", "--chroot-base-dir", base,
                                      "--resource-limit", "no-file=512",
                                      "--", "run", "--kernel", kernel, "--memory", "64", "--disk", disk, "--share", "\(share),tag=work,readonly"],
                                     output: output)
        jailer.waitForStderr(containing: "halted", seconds: 20)
        let root = "\(base)/lguest/jailed-1/root"
        let pidText = try String(contentsOfFile: "\(root)/lguest.pid", encoding: .utf8)
        let pid = try #require(Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)), "\(jailer.stderr)")

        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let ids = status.split(separator: "\n").filter { $0.hasPrefix("Uid:") || $0.hasPrefix("Gid:") }
            .map { $0.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().map(String.init) }
        #expect(ids.count == 2 && ids.allSatisfy { $0 == ["65534", "65534", "65534", "65534"] }, "\(ids)")
        #expect(status.contains("NoNewPrivs:\t1"), "\(status)")
        // Its / is the jail: what it sees there is what the jail holds, and nothing of the host's.
        let seen = Set(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/root"))
        #expect(seen == Set(try FileManager.default.contentsOfDirectory(atPath: root)), "\(seen)")
        #expect(seen.isDisjoint(with: ["etc", "home", "root", "tmp", "var", "sys"]), "\(seen)")
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
        #expect(exe.hasSuffix("/lguest"), "\(exe)")
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max open files") && $0.contains(" 512 ") }, "\(limits)")
        // The jail holds what the VM was given, and lguest opened it there.
        let names = try FileManager.default.contentsOfDirectory(atPath: root)
        for name in ["lguest", "lguest.pid", "dev", "tiny.elf", (disk as NSString).lastPathComponent] {
            #expect(names.contains { $0.hasSuffix(name) }, "\(names)")
        }
        let kernelCopy = try FileManager.default.attributesOfItem(atPath: "\(root)/\((kernel as NSString).lastPathComponent)")
        #expect((kernelCopy[.ownerAccountID] as? Int) == 65534 && (kernelCopy[.posixPermissions] as? Int) == 0o400)
        let open = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap {
            try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")
        }
        #expect(open.contains { $0.hasSuffix((disk as NSString).lastPathComponent) }, "\(open)")

        jailer.terminateAndWait()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(printed.contains("jailed guest"))
        #expect(kill(pid, 0) != 0, "the jailed lguest outlived the jailer")
    }

    @Test("installed as jailer, Firecracker's jailer's command line jails lguest as firecracker, its API socket inside the jail")
    func firecrackerJailerCommandLine() throws {
        let base = try Self.base()
        let bin = try Tool.temporaryDirectory()
        try FileManager.default.createSymbolicLink(atPath: "\(bin)/jailer", withDestinationPath: Tool.binary.path)
        try FileManager.default.copyItem(atPath: Tool.binary.path, toPath: "\(bin)/firecracker")
        let bad = Process()
        bad.executableURL = URL(fileURLWithPath: "\(bin)/jailer")
        bad.arguments = ["--id", "fc-1", "--exec-file", "\(bin)/firecracker", "--uid", "65534", "--gid", "65534",
                         "--chroot-base-dir", base, "--cgroup", "pids.max=10", "--", "--api-sock", "/api.sock"]
        let badErrors = Pipe()
        bad.standardError = badErrors
        try bad.run()
        let refusal = String(decoding: badErrors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        bad.waitUntilExit()
        #expect(bad.terminationStatus == 2 && refusal.contains("--cgroup-version 2"), "\(refusal)")

        let jailer = Process()
        jailer.executableURL = URL(fileURLWithPath: "\(bin)/jailer")
        jailer.arguments = ["--id", "fc-1", "--exec-file", "\(bin)/firecracker", "--uid", "65534", "--gid", "65534",
                            "--chroot-base-dir", base, "--cgroup-version", "2", "--", "--api-sock", "/api.sock"]
        jailer.standardOutput = FileHandle.nullDevice
        jailer.standardError = FileHandle.nullDevice
        try jailer.run()
        defer { if jailer.isRunning { jailer.terminate() } }
        let root = "\(base)/firecracker/fc-1/root"
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !FileManager.default.fileExists(atPath: "\(root)/api.sock") { usleep(50_000) }
        // The request by hand: Foundation reaps children one at a time here, and a curl Process
        // started while the jailer runs would wait behind it.
        let body = try Self.get("/", socket: "\(root)/api.sock")
        #expect(body.contains("\"id\":\"fc-1\"") && body.contains("Not started"), "\(body)")
        let pid = try #require(Int32(try String(contentsOfFile: "\(root)/firecracker.pid", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
        #expect(exe.hasSuffix("/firecracker"), "\(exe)")
        kill(jailer.processIdentifier, SIGTERM)
        jailer.waitUntilExit()
        #expect(kill(pid, 0) != 0, "the jailed firecracker outlived the jailer")
    }

    /// `GET path` over the Unix socket at `socket`, HTTP/1.0; the whole answer.
    static func get(_ path: String, socket: String) throws -> String {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { bytes in
            for (i, byte) in socket.utf8.prefix(bytes.count - 1).enumerated() { bytes[i] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(connected == 0, "cannot connect to \(socket)")
        let request = Array("GET \(path) HTTP/1.0\r\nHost: localhost\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            answer += buffer.prefix(n)
        }
        return String(decoding: answer, as: UTF8.self)
    }
}
