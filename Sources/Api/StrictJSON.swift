import FoundationEssentials

/// Any JSON value, for looking at a body's shape before decoding it into a model.
enum JSONValue: Decodable, Equatable {
    case null, bool(Bool), number(Double), string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }
}

/// The fields an API object may have and the objects nested in it: what Firecracker's
/// `deny_unknown_fields` enforces.
struct Shape: Sendable {
    let fields: [String]
    var nested: [String: Shape] = [:]
    /// Checks `value`'s keys (recursively); the first unknown one is the error, worded as serde words it.
    func check(_ value: JSONValue) throws(ApiFailure) {
        // An array of objects (`network_overrides`) is checked item by item.
        if case let .array(items) = value {
            for item in items { try check(item) }
            return
        }
        guard case let .object(object) = value else { return }
        for key in object.keys.sorted() {
            guard fields.contains(key) else {
                let expected = fields.map { "`\($0)`" }.joined(separator: ", ")
                throw .deserialize("unknown field `\(key)`, expected \(fields.count == 1 ? "" : "one of ")\(expected)")
            }
            if let inner = nested[key], let child = object[key] { try inner.check(child) }
        }
    }
}

extension Shape {
    static let bucket = Shape(fields: ["size", "one_time_burst", "refill_time"])
    static let limiter = Shape(fields: ["bandwidth", "ops"], nested: ["bandwidth": bucket, "ops": bucket])
    static let bootSource = Shape(fields: ["kernel_image_path", "boot_args", "initrd_path"])
    static let machineConfig = Shape(fields: ["vcpu_count", "mem_size_mib", "smt", "cpu_template", "track_dirty_pages", "huge_pages"])
    static let drive = Shape(fields: ["drive_id", "partuuid", "is_root_device", "cache_type", "is_read_only", "path_on_host", "rate_limiter", "io_engine", "socket"], nested: ["rate_limiter": limiter])
    static let drivePatch = Shape(fields: ["drive_id", "path_on_host", "rate_limiter"], nested: ["rate_limiter": limiter])
    static let network = Shape(fields: ["iface_id", "host_dev_name", "guest_mac", "mtu", "rx_rate_limiter", "tx_rate_limiter"], nested: ["rx_rate_limiter": limiter, "tx_rate_limiter": limiter])
    static let networkPatch = Shape(fields: ["iface_id", "rx_rate_limiter", "tx_rate_limiter"], nested: ["rx_rate_limiter": limiter, "tx_rate_limiter": limiter])
    static let entropy = Shape(fields: ["rate_limiter"], nested: ["rate_limiter": limiter])
    static let vsock = Shape(fields: ["guest_cid", "uds_path", "vsock_id"])
    static let balloon = Shape(fields: ["amount_mib", "deflate_on_oom", "stats_polling_interval_s", "free_page_hinting", "free_page_reporting"])
    static let balloonUpdate = Shape(fields: ["amount_mib"])
    static let balloonStatsUpdate = Shape(fields: ["stats_polling_interval_s"])
    static let balloonHintingStart = Shape(fields: ["acknowledge_on_stop"])
    static let action = Shape(fields: ["action_type"])
    static let serial = Shape(fields: ["serial_out_path", "rate_limiter"], nested: ["rate_limiter": bucket])
    static let vmState = Shape(fields: ["state"])
    static let logger = Shape(fields: ["log_path", "level", "show_level", "show_log_origin", "module"])
    static let metrics = Shape(fields: ["metrics_path", "emit_id", "properties"])
    /// The configuration file: unknown top-level keys are ignored (as Firecracker's `VmmConfig`
    /// does), the objects inside are strict.
    static let configFile: [String: Shape] = [
        "boot-source": bootSource, "machine-config": machineConfig, "drives": drive,
        "network-interfaces": network, "entropy": entropy, "vsock": vsock, "balloon": balloon, "logger": logger, "metrics": metrics,
    ]
}

/// Decodes `body` into `T` after checking it against `shape`; every failure is worded as
/// Firecracker words it: `An error occurred when deserializing the json body of a request: …`.
func decodeStrict<T: Decodable>(_ type: T.Type, _ body: [UInt8], shape: Shape) throws(ApiFailure) -> T {
    let value: JSONValue
    do { value = try JSONDecoder().decode(JSONValue.self, from: Data(body)) }
    catch { throw .deserialize(describe(error)) }
    guard case .object = value else { throw .deserialize("invalid type: expected a JSON object") }
    try shape.check(value)
    do { return try JSONDecoder().decode(T.self, from: Data(body)) }
    catch DecodingError.dataCorrupted(let context) {
        // The body is JSON (it parsed above), so a number did not fit its field: negative or
        // fractional where a whole unsigned one belongs, or too large. Foundation does not say which.
        let field = context.codingPath.map(\.stringValue).joined(separator: ".")
        if !field.isEmpty { throw .deserialize("invalid value for `\(field)`: \(context.debugDescription)") }
        throw .deserialize("invalid value: a number is out of its field's range, or not a whole number")
    } catch { throw .deserialize(describe(error)) }
}

/// A decoding error in serde's words, on one line.
func describe(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return "invalid JSON" }
    func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map(\.stringValue).joined(separator: ".")
    }
    switch error {
    case let .keyNotFound(key, _): return "missing field `\(key.stringValue)`"
    case let .typeMismatch(type, context): return "invalid type for `\(path(context))`: expected \(typeName(type))"
    case let .valueNotFound(type, context): return "invalid type for `\(path(context))`: null, expected \(typeName(type))"
    case .dataCorrupted: return "the body is not valid JSON"
    @unknown default: return "invalid JSON"
    }
}

private func typeName(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is Bool.Type: "a boolean"
    case is Int.Type, is UInt64.Type, is Double.Type: "a number"
    default: "a JSON object"
    }
}
