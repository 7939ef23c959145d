import FoundationEssentials
import LguestKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One API request, as the HTTP layer hands it over.
public struct ApiRequest: Sendable, Equatable {
    public var method: String
    public var path: String
    public var body: [UInt8]

    public init(method: String, path: String, body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.body = body
    }
}

/// The answer: 204 with no body, 200 with JSON, or 400 with `{"fault_message": …}`.
public struct ApiResponse: Sendable, Equatable {
    public var status: Int
    public var body: [UInt8]
    /// Firecracker's warning for a request that used a deprecated field (`PUT /machine-config:
    /// cpu_template field is deprecated.`): logged, and answered with `Deprecation: true`.
    public var deprecationWarning: String?
    public var deprecated: Bool { deprecationWarning != nil }

    static let noContent = ApiResponse(status: 204, body: [])

    static func json(_ value: some Encodable) -> ApiResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return ApiResponse(status: 200, body: Array((try? encoder.encode(value)) ?? Data("{}".utf8)))
    }

    static func failure(_ failure: ApiFailure) -> ApiResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return ApiResponse(status: 400, body: Array((try? encoder.encode(ApiError(fault_message: failure.message))) ?? Data()))
    }
}

/// The VMM side of the API: Firecracker's resources before `InstanceStart`, the VM after, and
/// the rules on which request is allowed when. Requests run one at a time, on the thread that
/// calls `handle` (the VMM thread), never on a vCPU.
public final class Controller: Sendable {
    public static let firecrackerVersion = "1.17.0-dev"

    public let id: String
    let sandbox: Bool
    let console: ConsoleConnection
    let resources = Mutex(Resources())
    private let vm = Mutex<VirtualMachine?>(nil)
    /// Called with the VM once `InstanceStart` has started it (to watch for its end).
    private let onStart: @Sendable (VirtualMachine) -> Void
    private let metricsSet = Mutex(false)
    /// `PUT /serial`'s file, which takes the serial console's output instead of `console`'s.
    private let serialOutput = Mutex<ConsoleOutput?>(nil)
    private let metrics = Mutex<MetricsWriter?>(nil)
    /// The API's own counters, by metrics group (absolute; the writer reports changes).
    private let apiCounters = Mutex<[String: [String: UInt64]]>([:])

    /// The log's settings, which `PUT /logger` changes (nil: the request is only recorded).
    let logSettings: LogSettings?

    public init(id: String, sandbox: Bool, console: ConsoleConnection, logSettings: LogSettings? = nil,
                onStart: @escaping @Sendable (VirtualMachine) -> Void = { _ in }) {
        self.id = id
        self.logSettings = logSettings
        self.sandbox = sandbox
        self.console = console
        self.onStart = onStart
    }

    public var currentResources: Resources { resources.withLock { $0 } }
    public var machine: VirtualMachine? { vm.withLock { $0 } }
    var started: Bool { vm.withLock { $0 } != nil }

    /// `GET /`'s `state`.
    var stateName: String {
        guard let vm = machine else { return "Not started" }
        switch vm.state {
        case .paused: return "Paused"
        case .notStarted: return "Not started"
        default: return "Running"
        }
    }

    public func handle(_ request: ApiRequest) -> ApiResponse {
        var response: ApiResponse
        do { response = try Router.route(request, to: self) }
        catch { response = .failure(error) }
        response.deprecationWarning = Router.deprecationWarning(request)
        count(request, failed: response.status >= 400, deprecated: response.deprecated)
        return response
    }

    /// Counts `request` under Firecracker's `get_/put_/patch_api_requests` names.
    /// Each path's first segment, as the metrics name its requests.
    private static let metricNames: [String: String] = [
        "actions": "actions", "boot-source": "boot_source", "drives": "drive", "logger": "logger",
        "machine-config": "machine_cfg", "cpu-config": "cpu_cfg", "metrics": "metrics",
        "network-interfaces": "network", "mmds": "mmds", "vsock": "vsock", "pmem": "pmem",
        "serial": "serial", "hotplug": "hotplug_memory",
    ]

    private func count(_ request: ApiRequest, failed: Bool, deprecated: Bool) {
        let first = request.path.split(separator: "/").first.map(String.init) ?? ""
        let names = Self.metricNames
        apiCounters.withLock { counters in
            if request.method == "GET" {
                let name = first.isEmpty ? "instance_info" : first == "version" ? "vmm_version" : names[first]
                if let name { counters["get_api_requests", default: [:]]["\(name)_count", default: 0] += 1 }
            } else if let name = names[first], request.method == "PUT" || request.method == "PATCH" {
                let group = request.method == "PUT" ? "put_api_requests" : "patch_api_requests"
                counters[group, default: [:]]["\(name)_count", default: 0] += 1
                if failed { counters[group, default: [:]]["\(name)_fails", default: 0] += 1 }
            }
            if deprecated { counters["deprecated_api", default: [:]]["deprecated_http_api_calls", default: 0] += 1 }
        }
    }

    /// Writes a metrics line, if metrics are set up.
    public func flushMetrics() {
        guard let writer = metrics.withLock({ $0 }) else { return }
        let resources = currentResources
        let sample = MetricsWriter.sample(api: apiCounters.withLock { $0 }, machine: machine?.runningMachineForControl?.statistics,
                                          drives: resources.orderedDrives.map(\.drive_id), networks: resources.networks.map(\.iface_id))
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        writer.write(sample, timestamp: UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec) / 1_000_000)
    }

    // MARK: - Pre-boot resources

    func preBoot(_ change: (inout Resources) throws(ApiFailure) -> Void) throws(ApiFailure) -> ApiResponse {
        guard !started else { throw .afterStart }
        var copy = currentResources
        try change(&copy)
        resources.withLock { $0 = copy }
        return .noContent
    }

    /// Applies a whole configuration file, as `--config-file` does.
    public func apply(configFile body: [UInt8]) throws(ApiFailure) {
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: Data(body)) }
        catch { throw .deserialize(describe(error)) }
        guard case let .object(top) = value else { throw .deserialize("invalid type: expected a JSON object") }
        for (key, shape) in Shape.configFile {
            switch top[key] {
            case let .array(items)?: for item in items { try shape.check(item) }
            case let item?: try shape.check(item)
            case nil: break
            }
        }
        let file: FullVmConfiguration
        do { file = try JSONDecoder().decode(FullVmConfiguration.self, from: Data(body)) }
        catch { throw .deserialize(describe(error)) }
        _ = try preBoot { (r: inout Resources) throws(ApiFailure) in
            if let boot = file.bootSource { try r.setBootSource(boot) }
            if let machine = file.machineConfig { try r.setMachine(machine) }
            for drive in file.drives ?? [] { try Router.checkID(drive.drive_id); try r.putDrive(drive) }
            for network in file.networkInterfaces ?? [] { try Router.checkID(network.iface_id); try r.putNetwork(network) }
            if let entropy = file.entropy { r.entropy = entropy }
            if let vsock = file.vsock { try r.setVsock(vsock) }
            if let balloon = file.balloon { try r.setBalloon(balloon) }
            if let logger = file.logger { r.logger = logger }
            if let metrics = file.metrics { r.metrics = metrics }
        }
    }

    // MARK: - Actions

    func instanceStart() throws(ApiFailure) -> ApiResponse {
        guard !started else { throw .afterStart }
        let configuration = try currentResources.configuration(sandbox: sandbox)
        var console = self.console
        if let output = serialOutput.withLock({ $0 }) { console.output = output }
        let machine = VirtualMachine(configuration: configuration, console: console)
        do throws(LaunchError) { try machine.start() }
        catch { throw .fault("Cannot start the microVM: \(error.description)") }
        adopt(machine)
        return .noContent
    }

    /// From now on the API serves `machine` (started by InstanceStart or a snapshot load).
    func adopt(_ machine: VirtualMachine) {
        vm.withLock { $0 = machine }
        onStart(machine)
    }

    /// The serial console's output for a VM started now: `PUT /serial`'s file, if any.
    var serialOutputForStart: ConsoleOutput? { serialOutput.withLock { $0 } }

    func replaceResources(_ new: Resources) { resources.withLock { $0 = new } }

    func setVMState(_ state: String) throws(ApiFailure) -> ApiResponse {
        guard ["Paused", "Resumed"].contains(state) else {
            throw .deserialize("unknown variant `\(state)`, expected `Paused` or `Resumed`")
        }
        guard let machine else { throw .beforeStart }
        do throws(VirtualMachine.StateError) {
            if state == "Paused", machine.state != .paused { try machine.pause() }
            if state == "Resumed", machine.state == .paused { try machine.resume() }
        } catch { throw .fault("Cannot change the microVM's state: \(error.description)") }
        return .noContent
    }

    func sendCtrlAltDel() throws(ApiFailure) -> ApiResponse {
        guard let machine else { throw .beforeStart }
        guard let running = machine.runningMachineForControl else { throw .fault("The microVM is not running.") }
        running.pressCtrlAltDel()
        return .noContent
    }

    /// `PATCH /drives/{id}` on a running VM: `path_on_host` serves the guest's disk from the new
    /// file from its next request on; `rate_limiter` replaces the disk's limits.
    func patchDrive(_ id: String, path: String?, rateLimiter: RateLimiter?) throws(ApiFailure) -> ApiResponse {
        guard let index = currentResources.orderedDrives.firstIndex(where: { $0.drive_id == id }) else {
            throw .fault("Invalid block device ID: \(id) not found.")
        }
        guard let running = machine?.runningMachineForControl else { throw .fault("The microVM is not running.") }
        do throws(LaunchError) {
            if let path { try running.replaceDisk(index, path: path) }
            if let rateLimiter { try running.setDiskRateLimit(index, rateLimiter.limit) }
        } catch { throw .fault("Unable to patch the block device: \(error.description)") }
        resources.withLock { r in
            guard let i = r.drives.firstIndex(where: { $0.drive_id == id }) else { return }
            if let path { r.drives[i].path_on_host = path }
            if let rateLimiter { r.drives[i].rate_limiter = rateLimiter }
        }
        return .noContent
    }

    /// `PATCH /network-interfaces/{id}` on a running VM: the given directions' rate limits are
    /// replaced, the others kept.
    func patchNetwork(_ id: String, receive: RateLimiter?, transmit: RateLimiter?) throws(ApiFailure) -> ApiResponse {
        let networks = currentResources.networks
        guard let index = networks.firstIndex(where: { $0.iface_id == id }) else {
            throw .fault("Invalid network interface ID - not found.")
        }
        guard let running = machine?.runningMachineForControl else { throw .fault("The microVM is not running.") }
        let rx = receive ?? networks[index].rx_rate_limiter, tx = transmit ?? networks[index].tx_rate_limiter
        do throws(LaunchError) {
            try running.setNetworkRateLimit(index, receive: rx?.limit ?? .unlimited, transmit: tx?.limit ?? .unlimited)
        } catch { throw .fault("Unable to patch the network device: \(error.description)") }
        resources.withLock { r in
            r.networks[index].rx_rate_limiter = rx
            r.networks[index].tx_rate_limiter = tx
        }
        return .noContent
    }

    /// Writes out what the serial output file still has buffered: for the process's last moments.
    public func closeSerialOutput() {
        serialOutput.withLock { $0 }?.close()
    }

    /// `PUT /serial`: the serial console writes to `serial_out_path` (a file, created if
    /// missing and appended to, or a FIFO) instead of standard output.
    func setSerial(_ config: SerialConfig) throws(ApiFailure) -> ApiResponse {
        guard !started else { throw .afterStart }
        if config.rate_limiter != nil { throw .fault("A rate limiter on the serial console is not supported by lguest yet.") }
        guard let path = config.serial_out_path else {
            serialOutput.withLock { $0 = nil }
            return .noContent
        }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .fault("Cannot open the serial output file \(path): \(Resources.osError(errno))") }
        let output: ConsoleOutput
        do throws(LaunchError) { output = try ConsoleOutput(descriptor: fd, sandboxed: sandbox) }
        catch { close(fd); throw .fault(error.description) }
        let old = serialOutput.withLock { current -> ConsoleOutput? in defer { current = output }; return current }
        if let old { old.close(); Glibc.close(old.descriptor) }
        return .noContent
    }

    func setLogger(_ config: LoggerConfig) throws(ApiFailure) -> ApiResponse {
        guard !started else { throw .afterStart }
        try logSettings?.apply(config)
        resources.withLock { $0.logger = config }
        return .noContent
    }

    func setMetrics(_ config: MetricsConfig) throws(ApiFailure) -> ApiResponse {
        guard !started else { throw .afterStart }
        guard metricsSet.withLock({ done in defer { done = true }; return !done }) else {
            throw .fault("Reinitialization of metrics not allowed.")
        }
        let writer: MetricsWriter
        do throws(ApiFailure) { writer = try MetricsWriter(path: config.metrics_path, emitID: config.emit_id == true ? id : nil, properties: config.properties) }
        catch {
            metricsSet.withLock { $0 = false }
            throw error
        }
        metrics.withLock { $0 = writer }
        resources.withLock { $0.metrics = config }
        return .noContent
    }
}
