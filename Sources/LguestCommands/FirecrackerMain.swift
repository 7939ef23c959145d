import Api
import Logging
import LguestKit
#if canImport(Glibc)
import Glibc
#endif

/// lguest run as Firecracker: the API on a Unix socket and/or a configuration file, the serial
/// console on standard input and output, and the process's end when the guest's: exit 0 when it
/// powered off or rebooted, 1 when the VM failed.
enum FirecrackerMain {
    static func run(_ options: FirecrackerOptions) -> Never {
        if options.help {
            print("""
                usage: lguest [--api-sock PATH] [--config-file FILE [--no-api]] [--id ID] [--level LEVEL]
                              [--log-path FILE] [--show-level] [--show-log-origin] [--metrics-path FILE]
                              [--http-api-max-payload-size BYTES] [--boot-timer] [--no-seccomp] [--version]
                Firecracker's command line and API (docs/api/lguest.yaml); run under the name
                `firecracker`, the API socket defaults to \(FirecrackerOptions.defaultSocket).
                """)
            exit(0)
        }
        if options.version {
            print("Firecracker v\(Controller.firecrackerVersion)\n(lguest, serving Firecracker's API)")
            exit(0)
        }
        var logDescriptor: CInt = 1
        if let path = options.logPath {
            logDescriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o644)
            guard logDescriptor >= 0 else { fail("cannot open the log file \(path): \(String(cString: strerror(errno)))") }
        }
        let settings = LogSettings(descriptor: logDescriptor, level: FirecrackerLogHandler.level(named: options.level),
                                   showLevel: options.showLevel, showOrigin: options.showLogOrigin)
        func logger(_ thread: String) -> Logger {
            Logger(label: "lguest") { _ in FirecrackerLogHandler(id: options.id, thread: thread, settings: settings) }
        }
        let log = logger("fc_vmm")
        log.info("Running Firecracker v\(Controller.firecrackerVersion)")

        let sandbox = !options.noSeccomp
        let output: ConsoleOutput
        do { output = try ConsoleOutput(descriptor: 1, sandboxed: sandbox) } catch { fail(error.description) }
        let queue = VMMQueue()
        let isTerminal = isatty(0) == 1
        let server = ServerBox()
        let controllerBox = ControllerBox()
        let controller = Controller(
            id: options.id, sandbox: sandbox,
            console: ConsoleConnection(output: output, input: 0, escapeQuits: isTerminal), logSettings: settings,
            onStart: { vm in
                // Metrics every 60 s from the start, on the VMM thread like every other request.
                _ = try? MachineThread(name: "lguest-metrics") {
                    while true {
                        var interval = timespec(tv_sec: 60, tv_nsec: 0), left = timespec()
                        while nanosleep(&interval, &left) != 0 { interval = left }
                        queue.submit { controllerBox.value?.flushMetrics() }
                    }
                }
                vm.observeState { state in
                    guard case let .stopped(reason) = state else { return }
                    queue.submit {
                        server.value?.waitForPendingResponses()
                        server.value?.removeSocketFile()
                        output.close()
                        controllerBox.value?.closeSerialOutput()
                        Terminal.restore()
                        if let message = reason.message { printError("lguest: \(message)") }
                        if reason.exitCode == 0 { log.info("Firecracker exiting successfully. exit_code=0") }
                        else { log.error("Firecracker exiting with error. exit_code=\(reason.exitCode)") }
                        exit(reason.exitCode)
                    }
                }
            })
        controllerBox.value = controller
        if let path = options.metricsPath {
            let response = controller.handle(ApiRequest(method: "PUT", path: "/metrics", body: Array("{\"metrics_path\": \(jsonString(path))}".utf8)))
            if response.status != 204 { fail("--metrics-path \(path): \(String(decoding: response.body, as: UTF8.self))") }
        }
        TerminatingSignals.unblock()
        Terminal.ignoreBrokenPipes()
        Terminal.enterRawMode()

        if let path = options.configFile {
            do throws(ApiFailure) {
                guard let body = readSmallFile(path) else { throw .fault("cannot read \(path): \(String(cString: strerror(errno)))") }
                try controller.apply(configFile: body)
                let started = controller.handle(ApiRequest(method: "PUT", path: "/actions", body: Array(#"{"action_type":"InstanceStart"}"#.utf8)))
                if started.status != 204 {
                    throw .fault(String(decoding: started.body, as: UTF8.self))
                }
                log.info("Successfully started microvm that was configured from one single json")
            } catch {
                log.error("Configuration for VMM from one single json failed: \(error.message)")
                Terminal.restore()
                printError("lguest: \(path): \(error.message)")
                exit(152)
            }
        }
        if !options.noApi {
            let path = options.apiSocket ?? FirecrackerOptions.defaultSocket
            do throws(ApiStartError) {
                server.value = try ApiServer(socketPath: path, maxPayload: options.maxPayload, queue: queue, controller: controller,
                                             log: logger("fc_api"), sandboxed: sandbox)
            } catch {
                log.error("\(error.description)")
                Terminal.restore()
                printError("lguest: \(error.description)")
                exit(1)
            }
            log.info("API server started.")
        }
        queue.run()
        exit(0)
    }

    /// A configuration file, read whole (at most 1 MiB).
    static func readSmallFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            count += n
        }
        return Array(bytes.prefix(count))
    }
}

/// The API server, once there is one (set on the main thread before any request can arrive).
final class ServerBox: @unchecked Sendable {
    // @unchecked: written once on the main thread before the first job that reads it is queued.
    var value: ApiServer?
}

/// The controller, for the metrics thread (set once, before the VM can start).
final class ControllerBox: @unchecked Sendable {
    // @unchecked: written once on the main thread before any thread that reads it starts.
    var value: Controller?
}

