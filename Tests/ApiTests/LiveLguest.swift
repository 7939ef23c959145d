import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What the tests that drive a live lguest from outside (schemathesis, firecracker-python) share:
/// the repository's paths, the Python tools, a running lguest, and commands with a time limit.
enum LiveAPI {
    static let packageRoot = Tool.packageRoot

    static func path(_ relative: String) -> String { packageRoot.appendingPathComponent(relative).path }

    static var binary: String { Tool.binary.path }

    /// Firecracker's own API document, in the shared design folder beside the repository.
    static let firecrackerDocument = packageRoot.deletingLastPathComponent()
        .appendingPathComponent("shared/design/reference/firecracker-api-1.17.0-dev.yaml").path

    static var kvmUsable: Bool { TestSupport.kvmUsable }

    /// A tiny guest that says "hi" and halts for good (interrupts are off), using no CPU.
    static let haltingGuest = TinyGuest.elf(TinyGuest.print("hi\n") + TinyGuest.hlt + TinyGuest.spin)

    /// A tiny guest that says "hi", then writes a "." every 50 million TSC ticks (some 20 ms)
    /// for ever, so that its console shows whether it runs. Its loop:
    ///     again: mov dx, 0x3F8; mov al, '.'; out dx, al
    ///            rdtsc; mov ecx, eax
    ///     wait:  rdtsc; sub eax, ecx; cmp eax, 50_000_000; jb wait
    ///            jmp again
    static let tickingGuest: [UInt8] = {
        let tick = TinyGuest.movDX(0x3F8) + TinyGuest.movAL(UInt8(ascii: ".")) + TinyGuest.outDXAL
            + [0x0F, 0x31, 0x89, 0xC1]                               // rdtsc; mov ecx, eax
            + [0x0F, 0x31, 0x29, 0xC8, 0x3D]                         // rdtsc; sub eax, ecx; cmp eax, imm32
            + withUnsafeBytes(of: UInt32(50_000_000).littleEndian, Array.init)
            + [0x72, 0xF5]                                           // jb wait (11 bytes back)
            + [0xEB, 0xE8]                                           // jmp again (24 bytes back)
        precondition(tick.count == 24)
        return TinyGuest.elf(TinyGuest.print("hi\n") + tick)
    }()

    /// A new directory under /tmp (Unix socket paths must stay short).
    static func temporaryDirectory(_ name: String) throws -> String {
        var template = Array("/tmp/lguest-\(name)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw LiveAPIError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        return String(cString: made)
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}

struct LiveAPIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The pinned Python tools (Scripts/python-tools.sh): schemathesis and firecracker-python, in a
/// virtual environment of the project's own. Installed once per test run, if they are not yet.
enum PythonTools {
    /// The environment's `python`, or why there is none.
    static let python: Result<String, LiveAPIError> = {
        let result = Command.run("/usr/bin/env", ["bash", LiveAPI.path("Scripts/python-tools.sh")], timeout: 600)
        let lines = result.output.split(separator: "\n")
        guard result.status == 0, let directory = lines.last.map(String.init),
              access(directory + "/bin/python", X_OK) == 0 else {
            let why = lines.suffix(3).joined(separator: " / ")
            return .failure(LiveAPIError("the Python tools could not be installed (Scripts/python-tools.sh: \(why)): tests that need schemathesis or firecracker-python are skipped"))
        }
        return .success(directory + "/bin/python")
    }()

    /// Whether they are there; when not, prints why (test conditions run only for the tests
    /// selected, so a run that does not need them never installs them).
    static var available: Bool {
        if case let .failure(error) = python {
            print("lguest tests: \(error.description)")
            return false
        }
        return true
    }
    static let unavailable: Comment = "schemathesis and firecracker-python could not be installed by Scripts/python-tools.sh (why is printed above)"
}

/// A command run to its end, or stopped (with its process group, by `timeout`) at a time limit.
struct Command {
    var status: Int32
    var output: String
    var seconds: Double

    var timedOut: Bool { status == 124 || status == 137 }

    /// The last `count` lines of the output, for a failure message.
    func tail(_ count: Int = 80) -> String {
        output.split(separator: "\n", omittingEmptySubsequences: false).suffix(count).joined(separator: "\n")
    }

    /// Runs `executable` with standard output and error to one file (so nothing can block on a
    /// full pipe) and standard input from /dev/null, in `directory`, for at most `timeout` s.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    directory: String? = nil, timeout: Int) -> Command {
        let started = Date()
        let outputPath = NSTemporaryDirectory() + "lguest-command-\(UUID().uuidString).txt"
        defer { unlink(outputPath) }
        guard FileManager.default.createFile(atPath: outputPath, contents: nil),
              let sink = FileHandle(forWritingAtPath: outputPath) else {
            return Command(status: -1, output: "cannot create \(outputPath)", seconds: 0)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["--kill-after=5", String(timeout), executable] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = sink
        process.standardError = sink
        do { try process.run() } catch {
            try? sink.close()
            return Command(status: -1, output: "cannot run \(executable): \(error)", seconds: 0)
        }
        // The child has its own copy; holding none here keeps this process's descriptor count
        // steady while the command runs (LguestKitTests counts descriptors around its cycles).
        try? sink.close()
        process.waitUntilExit()
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        return Command(status: process.terminationStatus, output: output, seconds: Date().timeIntervalSince(started))
    }
}

/// lguest run as Firecracker (`--api-sock`), in a directory of its own, its output in a file.
final class LiveLguest {
    let directory: String
    let socket: String
    let outputPath: String
    private let process = Process()

    init(id: String, configFile: String? = nil) throws {
        directory = try LiveAPI.temporaryDirectory("api")
        socket = directory + "/api.sock"
        outputPath = directory + "/output.txt"
        guard FileManager.default.createFile(atPath: outputPath, contents: nil),
              let sink = FileHandle(forWritingAtPath: outputPath) else { throw LiveAPIError("cannot create \(outputPath)") }
        process.executableURL = URL(fileURLWithPath: LiveAPI.binary)
        // The log goes to a file of its own: on standard output its lines would interleave with
        // the guest's console, which the tests read.
        process.arguments = ["--api-sock", socket, "--id", id, "--log-path", directory + "/log"]
            + (configFile.map { ["--config-file", $0] } ?? [])
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = sink
        process.standardError = sink
        try process.run()
        try? sink.close()
        let deadline = Date().addingTimeInterval(15)
        while access(socket, F_OK) != 0 {
            guard process.isRunning, Date() < deadline else {
                throw LiveAPIError("lguest did not open its API socket: \(output)")
            }
            usleep(20_000)
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    var isRunning: Bool { process.isRunning }
    var pid: pid_t { process.processIdentifier }

    /// CPU time lguest has used so far (all its threads, user and system), in seconds.
    var cpuSeconds: Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")") else { return nil }
        // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// A request with a JSON body on a connection of its own: the status line's code.
    func send(_ method: String, _ path: String, _ body: String) -> Int? {
        let request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        guard let text = exchange(request)?.text, let code = text.split(separator: " ", maxSplits: 2).dropFirst().first else { return nil }
        return Int(code)
    }
    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Ends lguest (SIGTERM, as Firecracker's clients do) and waits for it.
    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    /// `GET path` on the API socket, on a connection of its own: the status and the body.
    func get(_ path: String) -> (status: Int, body: String)? {
        guard let answer = exchange("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n") else { return nil }
        let text = answer.text
        guard let statusText = text.split(separator: " ", maxSplits: 2).dropFirst().first, let status = Int(statusText),
              let bodyStart = text.range(of: "\r\n\r\n") else { return nil }
        return (status, String(text[bodyStart.upperBound...]))
    }

    /// Sends `request` on a connection of its own and reads until lguest closes it or
    /// `seconds` pass: what came back, and whether lguest closed the connection.
    func exchange(_ request: String, seconds: Int = 10) -> (text: String, closed: Bool)? {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socket.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return nil }
        let data = Array(request.utf8)
        guard data.withUnsafeBytes({ Glibc.send(fd, $0.baseAddress, $0.count, 0) }) == data.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var closed = false
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { closed = true }
            if n <= 0 { break }
            response += buffer[0 ..< n]
        }
        return (String(decoding: response, as: UTF8.self), closed)
    }

    /// Waits until lguest's output (the guest's console, and its log) contains `text`.
    func waitForOutput(_ text: String, seconds: Double = 15) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !output.contains(text) {
            guard Date() < deadline, process.isRunning else { return false }
            usleep(20_000)
        }
        return true
    }
}
