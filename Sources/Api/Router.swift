import FoundationEssentials

/// Firecracker's routing: (method, first path segment, body present?) → an action, with its
/// generic refusals. There are no 404s or 405s: every refusal is a 400 with a fault message.
enum Router {
    /// Endpoints of Firecracker's API that lguest does not serve yet, and why.
    static let notYet: [String: String] = [
        "mmds": "the microVM metadata service", "cpu-config": "CPU templates",
        "hotplug": "memory hot-plug", "pmem": "virtio-pmem",
    ]

    static func route(_ request: ApiRequest, to controller: Controller) throws(ApiFailure) -> ApiResponse {
        let method = request.method
        let path = request.path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        let first = segments.first ?? ""
        let hasBody = !request.body.isEmpty
        let invalid = ApiFailure.fault("Invalid request method and/or path: \(method) \(path).")

        guard ["GET", "PUT", "PATCH", "DELETE"].contains(method) else { throw invalid }
        if method == "GET", hasBody { throw .fault("GET request cannot have a body.") }
        if method != "GET", !hasBody {
            let name = method == "DELETE" ? "Delete" : method
            throw .fault("Empty \(name) request.")
        }
        func body<T: Decodable>(_ type: T.Type, _ shape: Shape) throws(ApiFailure) -> T {
            try decodeStrict(type, request.body, shape: shape)
        }
        /// `/resource/{id}`: exactly two segments, a valid ID.
        func resourceID() throws(ApiFailure) -> String {
            guard segments.count == 2 else {
                if segments.count == 1 || (segments.count == 2 && segments[1].isEmpty) { throw .fault("The ID cannot be empty.") }
                throw invalid
            }
            try checkID(segments[1])
            return segments[1]
        }
        func single() throws(ApiFailure) { if segments.count != 1 { throw invalid } }

        switch (method, first) {
        case ("GET", ""):
            guard segments.count <= 1 else { throw invalid }
            return .json(InstanceInfo(app_name: "Firecracker", id: controller.id, state: controller.stateName,
                                      vmm_version: Controller.firecrackerVersion))
        case ("GET", "version"):
            try single()
            return .json(FirecrackerVersion(firecracker_version: Controller.firecrackerVersion))
        case ("GET", "vm") where segments == ["vm", "config"]:
            return ApiResponse(status: 200, body: VmConfigDocument.json(controller.currentResources))
        case ("GET", "machine-config"):
            try single()
            return .json(controller.currentResources.machine)
        case ("PUT", "boot-source"):
            try single()
            let source = try body(BootSource.self, .bootSource)
            return try controller.preBoot { (r: inout Resources) throws(ApiFailure) in try r.setBootSource(source) }
        case ("PUT", "machine-config"):
            try single()
            let config = try body(MachineConfig.self, .machineConfig)
            return try controller.preBoot { (r: inout Resources) throws(ApiFailure) in try r.setMachine(config) }
        case ("PATCH", "machine-config"):
            try single()
            let patch = try body(MachineConfigPatch.self, .machineConfig)
            guard patch != MachineConfigPatch() else { throw .fault("Empty PATCH request.") }
            return try controller.preBoot { (r: inout Resources) throws(ApiFailure) in try r.patchMachine(patch) }
        case ("PUT", "drives"):
            let id = try resourceID()
            let drive = try body(Drive.self, .drive)
            guard drive.drive_id == id else { throw .fault("The id from the path does not match the id from the body!") }
            if controller.started { throw .fault("Hot-plugging block devices is not supported by lguest (it has no PCI).") }
            return try controller.preBoot { (r: inout Resources) throws(ApiFailure) in try r.putDrive(drive) }
        case ("PATCH", "drives"):
            let id = try resourceID()
            let patch = try body(DrivePatch.self, .drivePatch)
            guard patch.drive_id == id else { throw .fault("The id from the path does not match the id from the body!") }
            guard controller.started else { throw .beforeStart }
            guard controller.currentResources.drives.contains(where: { $0.drive_id == id }) else {
                throw .fault("Invalid block device ID: \(id) not found.")
            }
            if patch.path_on_host == nil, patch.rate_limiter == nil { throw .fault("Running method expected different backend.") }
            return try controller.patchDrive(id, path: patch.path_on_host, rateLimiter: patch.rate_limiter)
        case ("PUT", "network-interfaces"):
            let id = try resourceID()
            let network = try body(NetworkInterface.self, .network)
            guard network.iface_id == id else {
                throw .fault("The id from the path [\(id)] does not match the id from the body [\(network.iface_id)]!")
            }
            if controller.started { throw .fault("Hot-plugging network devices is not supported by lguest (it has no PCI).") }
            return try controller.preBoot { (r: inout Resources) throws(ApiFailure) in try r.putNetwork(network) }
        case ("PATCH", "network-interfaces"):
            let id = try resourceID()
            let patch = try body(NetworkInterfacePatch.self, .networkPatch)
            guard patch.iface_id == id else {
                throw .fault("The id from the path [\(id)] does not match the id from the body [\(patch.iface_id)]!")
            }
            guard controller.started else { throw .beforeStart }
            return try controller.patchNetwork(id, receive: patch.rx_rate_limiter, transmit: patch.tx_rate_limiter)
        case ("PUT", "entropy"):
            try single()
            let entropy = try body(EntropyDevice.self, .entropy)
            if entropy.rate_limiter != nil { throw .fault("A rate limiter on the entropy device is not supported by lguest yet.") }
            return try controller.preBoot { (r: inout Resources) in r.entropy = entropy }
        case ("PUT", "vsock"):
            // Extra segments are ignored, as Firecracker does (`PUT /vsock/vsock0`).
            let settings = try body(VsockSettings.self, .vsock)
            return try controller.preBoot { (r: inout Resources) throws(ApiFailure) in try r.setVsock(settings) }
        case ("PUT", "balloon"):
            try single()
            let balloon = try body(Balloon.self, .balloon)
            return try controller.preBoot { (r: inout Resources) throws(ApiFailure) in try r.setBalloon(balloon) }
        case ("GET", "balloon") where segments.count == 1:
            return try controller.balloonConfig()
        case ("PATCH", "balloon") where segments.count == 1:
            let update = try body(BalloonUpdate.self, .balloonUpdate)
            guard controller.started else { throw .beforeStart }
            return try controller.patchBalloon(update)
        case ("GET", "balloon") where segments == ["balloon", "statistics"]:
            guard controller.started else { throw .beforeStart }
            return try controller.balloonStatistics()
        case ("PATCH", "balloon") where segments == ["balloon", "statistics"]:
            let update = try body(BalloonStatsUpdate.self, .balloonStatsUpdate)
            guard controller.started else { throw .beforeStart }
            return try controller.patchBalloonStatistics(update)
        case ("PATCH", "balloon") where segments == ["balloon", "hinting", "start"] || segments == ["balloon", "hinting", "stop"],
             ("GET", "balloon") where segments == ["balloon", "hinting", "status"]:
            if segments.last == "start" { _ = try body(JSONValue.self, .balloonHintingStart) }
            guard controller.started else { throw .beforeStart }
            guard controller.currentResources.balloon != nil else { throw .noBalloon }
            throw .fault("Balloon config error: free page hinting is not supported by lguest, so it cannot have been enabled.")
        case ("PUT", "actions"):
            let action = try body(InstanceActionInfo.self, .action)
            switch action.action_type {
            case "InstanceStart": return try controller.instanceStart()
            case "SendCtrlAltDel": return try controller.sendCtrlAltDel()
            case "FlushMetrics":
                guard controller.started else { throw .beforeStart }
                controller.flushMetrics()
                return .noContent
            default:
                throw .deserialize("unknown variant `\(action.action_type)`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`")
            }
        case ("PUT", "snapshot") where segments == ["snapshot", "create"]:
            return try controller.createSnapshot(try body(SnapshotCreateParams.self, .snapshotCreate))
        case ("PUT", "snapshot") where segments == ["snapshot", "load"]:
            return try controller.loadSnapshot(try body(SnapshotLoadParams.self, .snapshotLoad))
        case ("PATCH", "vm"):
            try single()
            return try controller.setVMState(try body(VmState.self, .vmState).state)
        case ("PUT", "logger"):
            try single()
            let logger = try body(LoggerConfig.self, .logger)
            if let level = logger.level, !["error", "warning", "warn", "info", "debug", "trace", "off"].contains(level.lowercased()) {
                throw .deserialize("unknown variant `\(level)`, expected one of `Error`, `Warning`, `Info`, `Debug`, `Trace`, `Off`")
            }
            return try controller.setLogger(logger)
        case ("PUT", "serial"):
            try single()
            return try controller.setSerial(try body(SerialConfig.self, .serial))
        case ("PUT", "metrics"):
            try single()
            return try controller.setMetrics(try body(MetricsConfig.self, .metrics))
        default:
            if let what = notYet[first] {
                throw .fault("\(method) /\(first) is not supported by lguest yet: \(what) is not implemented.")
            }
            throw invalid
        }
    }

    /// Fields Firecracker still takes but has deprecated, by the path's first segment: a request
    /// that sends one gets `Deprecation: true`, whatever its outcome.
    static let deprecatedFields: [String: [String]] = [
        "machine-config": ["cpu_template"], "vsock": ["vsock_id"],
        "snapshot": ["mem_file_path", "enable_diff_snapshots"],
    ]

    /// The deprecated field `request` sends, if any, and Firecracker's warning about it:
    /// `PUT /machine-config: cpu_template field is deprecated.`
    static func deprecationWarning(_ request: ApiRequest) -> String? {
        deprecatedField(request).map { "\(request.method) /\(request.path.split(separator: "/").first ?? ""): \($0) field is deprecated." }
    }

    private static func deprecatedField(_ request: ApiRequest) -> String? {
        guard request.method == "PUT" || request.method == "PATCH" else { return nil }
        let first = request.path.split(separator: "/").first.map(String.init) ?? ""
        guard let fields = deprecatedFields[first],
              case let .object(object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(request.body)) else { return nil }
        return fields.first { object[$0] != nil }
    }

    /// Firecracker's resource IDs: letters, digits and `_`, not empty.
    static func checkID(_ id: String) throws(ApiFailure) {
        guard !id.isEmpty else { throw .fault("The ID cannot be empty.") }
        guard id.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x5F }) else {
            throw .fault("API Resource IDs can only contain alphanumeric characters and underscores.")
        }
    }
}
