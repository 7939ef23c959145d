import Devices

// Firecracker's API objects, field for field (its API document, firecracker-api-1.17.0-dev.yaml,
// and docs/api/lguest.yaml say where lguest differs). Every field is optional to the decoder;
// `Strict` checks required fields and refuses unknown ones, as Firecracker's serde does.

/// `PUT /boot-source`.
public struct BootSource: Codable, Equatable, Sendable {
    public var kernel_image_path: String
    public var boot_args: String?
    public var initrd_path: String?
}

/// `GET/PUT/PATCH /machine-config`.
public struct MachineConfig: Codable, Equatable, Sendable {
    public var vcpu_count: Int
    public var mem_size_mib: Int
    public var smt: Bool?
    public var track_dirty_pages: Bool?
    public var huge_pages: String?
    public var cpu_template: String?

    public static let `default` = MachineConfig(vcpu_count: 1, mem_size_mib: 128, smt: false,
                                                track_dirty_pages: false, huge_pages: "None", cpu_template: nil)
}

/// `PATCH /machine-config`: any subset.
public struct MachineConfigPatch: Codable, Equatable, Sendable {
    public var vcpu_count: Int?
    public var mem_size_mib: Int?
    public var smt: Bool?
    public var track_dirty_pages: Bool?
    public var huge_pages: String?
    public var cpu_template: String?
}

/// Firecracker's token bucket (`size` bytes or operations, refilled every `refill_time` ms).
/// Each value lies from 0 to 2^63 - 1, the `int64` of Firecracker's API document: a negative
/// value is refused, not stored.
public struct TokenBucket: Codable, Equatable, Sendable {
    public var size: UInt64
    public var refill_time: UInt64
    public var one_time_burst: UInt64?

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        func checked(_ value: UInt64, _ key: CodingKeys) throws -> UInt64 {
            guard value <= UInt64(Int64.max) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "\(value) is past \(Int64.max)")
            }
            return value
        }
        size = try checked(container.decode(UInt64.self, forKey: .size), .size)
        refill_time = try checked(container.decode(UInt64.self, forKey: .refill_time), .refill_time)
        one_time_burst = try container.decodeIfPresent(UInt64.self, forKey: .one_time_burst).map { try checked($0, .one_time_burst) }
    }
}

/// `rate_limiter`: a bandwidth bucket and an operations bucket, both optional.
public struct RateLimiter: Codable, Equatable, Sendable {
    public var bandwidth: TokenBucket?
    public var ops: TokenBucket?
}

/// `PUT /drives/{id}`.
public struct Drive: Codable, Equatable, Sendable {
    public var drive_id: String
    public var path_on_host: String?
    public var is_root_device: Bool
    public var is_read_only: Bool?
    public var partuuid: String?
    public var cache_type: String?
    public var io_engine: String?
    public var rate_limiter: RateLimiter?
    public var socket: String?
}

/// `PATCH /drives/{id}`.
public struct DrivePatch: Codable, Equatable, Sendable {
    public var drive_id: String
    public var path_on_host: String?
    public var rate_limiter: RateLimiter?
}

/// `PUT /network-interfaces/{id}`.
public struct NetworkInterface: Codable, Equatable, Sendable {
    public var iface_id: String
    public var host_dev_name: String
    public var guest_mac: String?
    public var mtu: Int?
    public var rx_rate_limiter: RateLimiter?
    public var tx_rate_limiter: RateLimiter?
}

/// `PATCH /network-interfaces/{id}`.
public struct NetworkInterfacePatch: Codable, Equatable, Sendable {
    public var iface_id: String
    public var rx_rate_limiter: RateLimiter?
    public var tx_rate_limiter: RateLimiter?
}

/// `PUT /entropy`.
public struct EntropyDevice: Codable, Equatable, Sendable {
    public var rate_limiter: RateLimiter?
}

/// `PUT /vsock`: the guest's CID and the Unix socket that stands for the host side.
public struct VsockSettings: Codable, Equatable, Sendable {
    public var guest_cid: UInt32
    public var uds_path: String
    /// Deprecated by Firecracker; taken and ignored.
    public var vsock_id: String?
}

/// `PUT /balloon` (and the configuration file's `balloon`): the target in MiB, and the
/// options that decide which queues the device has. `free_page_hinting` is accepted only off.
public struct Balloon: Codable, Equatable, Sendable {
    public var amount_mib: UInt32
    public var deflate_on_oom: Bool
    public var stats_polling_interval_s: UInt16?
    public var free_page_hinting: Bool?
    public var free_page_reporting: Bool?
}

/// `PATCH /balloon`: a new target, on a running VM.
public struct BalloonUpdate: Codable, Equatable, Sendable {
    public var amount_mib: UInt32
}

/// `PATCH /balloon/statistics`: a new polling interval, on a running VM.
public struct BalloonStatsUpdate: Codable, Equatable, Sendable {
    public var stats_polling_interval_s: UInt16
}

/// `PUT /serial`: where the serial console's output goes instead of standard output.
public struct SerialConfig: Codable, Equatable, Sendable {
    public var serial_out_path: String?
    public var rate_limiter: TokenBucket?
}

/// `PUT /actions`.
public struct InstanceActionInfo: Codable, Equatable, Sendable {
    public var action_type: String
}

/// `PATCH /vm`.
public struct VmState: Codable, Equatable, Sendable {
    public var state: String
}

/// `PUT /logger`.
public struct LoggerConfig: Codable, Equatable, Sendable {
    public var log_path: String?
    public var level: String?
    public var show_level: Bool?
    public var show_log_origin: Bool?
    public var module: String?
}

/// `PUT /metrics`.
public struct MetricsConfig: Codable, Equatable, Sendable {
    public var metrics_path: String
    public var emit_id: Bool?
    public var properties: [String: String]?
}

/// `GET /`.
public struct InstanceInfo: Codable, Equatable, Sendable {
    public var app_name: String
    public var id: String
    public var state: String
    public var vmm_version: String
}

/// `GET /version`.
public struct FirecrackerVersion: Codable, Equatable, Sendable {
    public var firecracker_version: String
}

/// The `--config-file` format (the shape `GET /vm/config` returns): kebab-case keys at the top.
public struct FullVmConfiguration: Decodable, Equatable, Sendable {
    public var bootSource: BootSource?
    public var drives: [Drive]?
    public var machineConfig: MachineConfig?
    public var networkInterfaces: [NetworkInterface]?
    public var entropy: EntropyDevice?
    public var vsock: VsockSettings?
    public var balloon: Balloon?
    public var logger: LoggerConfig?
    public var metrics: MetricsConfig?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case bootSource = "boot-source", drives, machineConfig = "machine-config"
        case networkInterfaces = "network-interfaces", entropy, vsock, balloon, logger, metrics
    }
}

/// The error body of every refusal.
public struct ApiError: Codable, Equatable, Sendable {
    public var fault_message: String
}

extension RateLimiter {
    /// The devices' form of these buckets.
    var limit: RateLimit {
        RateLimit(bandwidth: bandwidth?.configuration, operations: ops?.configuration)
    }
}

extension TokenBucket {
    var configuration: Devices.TokenBucket.Configuration {
        .init(size: size, refillTime: refill_time, oneTimeBurst: one_time_burst ?? 0)
    }
}
