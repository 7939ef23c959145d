/// `GET /vm/config` as Firecracker writes it: every section present, `null` where nothing was
/// configured, and every field of a drive or a network interface present, with Firecracker's
/// defaults filled in (`cache_type` `Unsafe`, `io_engine` `Sync`) and `null` for the rest.
/// Clients compare this document whole, so its shape is spelled out here rather than left to
/// an encoder that drops nils.
enum VmConfigJSON {
    indirect enum Value {
        case null, bool(Bool), number(String), string(String)
        case array([Value])
        case object([(String, Value)])

        var text: String {
            switch self {
            case .null: "null"
            case let .bool(value): value ? "true" : "false"
            case let .number(value): value
            case let .string(value): jsonString(value)
            case let .array(items): "[" + items.map(\.text).joined(separator: ",") + "]"
            case let .object(fields): "{" + fields.map { jsonString($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
            }
        }
    }

    static func string(_ value: String?) -> Value { value.map(Value.string) ?? .null }
    static func number(_ value: (some BinaryInteger)?) -> Value { value.map { .number(String($0)) } ?? .null }

    static func bucket(_ bucket: TokenBucket?) -> Value {
        guard let bucket else { return .null }
        return .object([("size", number(bucket.size)), ("one_time_burst", number(bucket.one_time_burst)),
                        ("refill_time", number(bucket.refill_time))])
    }

    static func limiter(_ limiter: RateLimiter?) -> Value {
        guard let limiter else { return .null }
        return .object([("bandwidth", bucket(limiter.bandwidth)), ("ops", bucket(limiter.ops))])
    }

    static func document(_ resources: Resources) -> String {
        let boot: Value = resources.bootSource.map { source in
            .object([("kernel_image_path", .string(source.kernel_image_path)),
                     ("initrd_path", string(source.initrd_path)),
                     ("boot_args", string(source.boot_args))])
        } ?? .null
        let machine = resources.machine
        var machineFields: [(String, Value)] = [
            ("vcpu_count", number(machine.vcpu_count)), ("mem_size_mib", number(machine.mem_size_mib)),
            ("smt", .bool(machine.smt ?? false)), ("track_dirty_pages", .bool(machine.track_dirty_pages ?? false)),
            ("huge_pages", .string(machine.huge_pages ?? "None")),
        ]
        if let template = machine.cpu_template { machineFields.append(("cpu_template", .string(template))) }
        let drives = resources.drives.map { drive -> Value in
            .object([("drive_id", .string(drive.drive_id)), ("partuuid", string(drive.partuuid)),
                     ("is_root_device", .bool(drive.is_root_device)), ("cache_type", .string(drive.cache_type ?? "Unsafe")),
                     ("is_read_only", .bool(drive.is_read_only ?? false)), ("path_on_host", string(drive.path_on_host)),
                     ("rate_limiter", limiter(drive.rate_limiter)), ("io_engine", .string(drive.io_engine ?? "Sync")),
                     ("socket", string(drive.socket))])
        }
        let networks = resources.networks.map { network -> Value in
            .object([("iface_id", .string(network.iface_id)), ("host_dev_name", .string(network.host_dev_name)),
                     ("guest_mac", string(network.guest_mac)), ("mtu", number(network.mtu)),
                     ("rx_rate_limiter", limiter(network.rx_rate_limiter)), ("tx_rate_limiter", limiter(network.tx_rate_limiter))])
        }
        let entropy: Value = resources.entropy.map { .object([("rate_limiter", limiter($0.rate_limiter))]) } ?? .null
        return Value.object([
            ("balloon", .null), ("drives", .array(drives)), ("boot-source", boot), ("cpu-config", .null),
            ("logger", .null), ("machine-config", .object(machineFields)), ("metrics", .null),
            ("mmds-config", .null), ("network-interfaces", .array(networks)), ("pmem", .array([])),
            ("vsock", .null), ("entropy", entropy), ("memory-hotplug", .null),
        ]).text
    }
}
