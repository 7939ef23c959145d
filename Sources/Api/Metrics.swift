import HostSystem
import Launcher
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Firecracker's metrics: one JSON object per line, every group present (zeros for what lguest
/// does not have), counters as the change since the previous line, written on `FlushMetrics`
/// and every 60 s. Groups and names follow Firecracker's (its docs/metrics.md).
public final class MetricsWriter: @unchecked Sendable {
    // @unchecked: `previous` is touched only from the VMM thread, which writes every line.
    public let descriptor: CInt
    let emitID: String?
    let properties: [String: String]?
    private var previous: [String: [String: UInt64]] = [:]

    public init(path: String, emitID: String? = nil, properties: [String: String]? = nil) throws(ApiFailure) {
        descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o644)
        guard descriptor >= 0 else { throw .fault("Cannot open the metrics file \(path): \(Resources.osError(errno))") }
        self.emitID = emitID
        self.properties = properties
    }

    deinit { close(descriptor) }

    /// The groups and their counters, in Firecracker's order. `_agg` entries are latency
    /// aggregates ({min_us, max_us, sum_us}), which lguest does not measure: always zero.
    static let block = ["activate_fails", "cfg_fails", "no_avail_buffer", "event_fails", "execute_fails", "invalid_reqs_count", "flush_count", "queue_event_count", "rate_limiter_event_count", "update_count", "update_fails", "read_bytes", "write_bytes", "read_count", "write_count", "rate_limiter_throttled_events", "io_engine_throttled_events", "remaining_reqs_count", "read_agg", "write_agg"]
    static let net = ["activate_fails", "cfg_fails", "no_rx_avail_buffer", "no_tx_avail_buffer", "event_fails", "rx_queue_event_count", "rx_event_rate_limiter_count", "rx_rate_limiter_throttled", "rx_tap_event_count", "rx_bytes_count", "rx_packets_count", "rx_fails", "rx_count", "tap_read_fails", "tap_write_fails", "tx_bytes_count", "tx_malformed_frames", "tx_fails", "tx_count", "tx_packets_count", "tx_queue_event_count", "tx_rate_limiter_event_count", "tx_rate_limiter_throttled", "tx_spoofed_mac_count", "tx_remaining_reqs_count", "tap_write_agg"]
    static let groups: [(String, [String])] = [
        ("api_server", ["process_startup_time_us", "process_startup_time_cpu_us"]),
        ("balloon", ["activate_fails", "inflate_count", "stats_updates_count", "stats_update_fails", "deflate_count", "event_fails", "free_page_report_count", "free_page_report_freed", "free_page_report_fails", "free_page_hint_count", "free_page_hint_freed", "free_page_hint_fails"]),
        ("block", block),
        ("deprecated_api", ["deprecated_http_api_calls"]),
        ("get_api_requests", ["instance_info_count", "machine_cfg_count", "mmds_count", "vmm_version_count", "hotplug_memory_count"]),
        ("i8042", ["error_count", "missed_read_count", "missed_write_count", "read_count", "reset_count", "write_count"]),
        ("latencies_us", ["full_create_snapshot", "diff_create_snapshot", "load_snapshot", "pause_vm", "resume_vm", "vmm_full_create_snapshot", "vmm_diff_create_snapshot", "vmm_load_snapshot", "vmm_pause_vm", "vmm_resume_vm"]),
        ("logger", ["missed_metrics_count", "metrics_fails", "missed_log_count", "rate_limited_log_count"]),
        ("mmds", ["rx_accepted", "rx_accepted_err", "rx_accepted_unusual", "rx_bad_eth", "rx_invalid_token", "rx_no_token", "rx_count", "tx_bytes", "tx_count", "tx_errors", "tx_frames", "connections_created", "connections_destroyed"]),
        ("net", net),
        ("patch_api_requests", ["drive_count", "drive_fails", "network_count", "network_fails", "machine_cfg_count", "machine_cfg_fails", "mmds_count", "mmds_fails", "hotplug_memory_count", "hotplug_memory_fails", "pmem_count", "pmem_fails"]),
        ("put_api_requests", ["actions_count", "actions_fails", "boot_source_count", "boot_source_fails", "drive_count", "drive_fails", "logger_count", "logger_fails", "machine_cfg_count", "machine_cfg_fails", "cpu_cfg_count", "cpu_cfg_fails", "metrics_count", "metrics_fails", "network_count", "network_fails", "mmds_count", "mmds_fails", "vsock_count", "vsock_fails", "pmem_count", "pmem_fails", "serial_count", "serial_fails", "hotplug_memory_count", "hotplug_memory_fails"]),
        ("seccomp", ["num_faults"]),
        ("vcpu", ["exit_io_in", "exit_io_out", "exit_mmio_read", "exit_mmio_write", "failures", "kvmclock_ctrl_fails", "exit_io_in_agg", "exit_io_out_agg", "exit_mmio_read_agg", "exit_mmio_write_agg"]),
        ("vmm", ["panic_count"]),
        ("uart", ["error_count", "flush_count", "missed_read_count", "missed_write_count", "read_count", "write_count", "rate_limiter_dropped_bytes"]),
        ("signals", ["sigbus", "sigsegv", "sigxfsz", "sigxcpu", "sigpipe", "sighup", "sigill"]),
        ("vsock", ["activate_fails", "cfg_fails", "rx_queue_event_fails", "tx_queue_event_fails", "ev_queue_event_fails", "muxer_event_fails", "conn_event_fails", "rx_queue_event_count", "tx_queue_event_count", "rx_bytes_count", "tx_bytes_count", "rx_packets_count", "tx_packets_count", "conns_added", "conns_killed", "conns_removed", "killq_resync", "tx_flush_fails", "tx_write_fails", "rx_read_fails"]),
        ("entropy", ["activate_fails", "entropy_event_fails", "entropy_event_count", "entropy_bytes", "host_rng_fails", "entropy_rate_limiter_throttled", "rate_limiter_event_count"]),
        ("interrupts", ["triggers", "config_updates"]),
        ("pmem", ["activate_fails", "cfg_fails", "event_fails", "queue_event_count", "rate_limiter_throttled_events", "rate_limiter_event_count"]),
        ("memory_hotplug", ["activate_fails", "queue_event_fails", "queue_event_count", "plug_count", "plug_bytes", "plug_fails", "plug_agg", "unplug_count", "unplug_bytes", "unplug_fails", "unplug_discard_fails", "unplug_agg", "state_count", "state_fails", "state_agg", "unplug_all_count", "unplug_all_fails", "unplug_all_agg"]),
    ]
    /// Absolute values that are reported as they are, not as changes.
    static let absolute: Set<String> = ["api_server.process_startup_time_us", "api_server.process_startup_time_cpu_us"]

    /// The absolute counters of `machine` and the API, by group; per-device groups are named
    /// `block_<drive id>` and `net_<iface id>`, and `block`/`net` are their sums.
    static func sample(api: [String: [String: UInt64]], machine: MachineStatistics?,
                       drives: [String], networks: [String]) -> [String: [String: UInt64]] {
        var values = api
        guard let machine else { return values }
        for (id, stats) in zip(drives, machine.blocks) {
            let errors = stats.errors.values.reduce(0, +)
            values["block_\(id)"] = [
                "read_bytes": stats.bytesRead, "write_bytes": stats.bytesWritten, "read_count": stats.reads,
                "write_count": stats.writes, "flush_count": stats.flushes, "invalid_reqs_count": errors - stats[.hostIO],
                "execute_fails": stats[.hostIO], "queue_event_count": stats.requests,
                "rate_limiter_throttled_events": stats.throttled,
            ]
        }
        for (id, stats) in zip(networks, machine.networks) {
            values["net_\(id)"] = [
                "rx_bytes_count": stats.rxBytes, "rx_packets_count": stats.rxPackets, "rx_count": stats.rxPackets,
                "rx_fails": stats.rxErrors + stats.rxDroppedTooLarge + stats.rxDroppedUnsupported, "tap_read_fails": stats.rxErrors,
                "no_rx_avail_buffer": stats.rxStalls, "tx_bytes_count": stats.txBytes, "tx_packets_count": stats.txPackets,
                "tx_count": stats.txPackets, "tx_malformed_frames": stats.txMalformed,
                "tx_fails": stats.txErrors + stats.txDroppedBusy, "tap_write_fails": stats.txErrors,
            ]
        }
        for (aggregate, prefix) in [("block", "block_"), ("net", "net_")] {
            var sum: [String: UInt64] = [:]
            for (group, counters) in values where group.hasPrefix(prefix) {
                for (key, value) in counters { sum[key, default: 0] += value }
            }
            values[aggregate] = sum
        }
        values["vcpu"] = ["exit_io_in": machine.exitsIOIn, "exit_io_out": machine.exitsIOOut, "exit_mmio_read": machine.exitsMMIORead,
                          "exit_mmio_write": machine.exitsMMIOWrite, "failures": machine.vcpuFailures]
        values["uart"] = ["write_count": machine.uart.transmitted, "read_count": machine.uart.received,
                          "missed_read_count": machine.uart.droppedInput]
        values["vmm"] = ["panic_count": machine.panicked ? 1 : 0]
        if let vsock = machine.vsock {
            values["vsock"] = ["rx_bytes_count": vsock.rxBytes, "tx_bytes_count": vsock.txBytes,
                               "rx_packets_count": vsock.rxPackets, "tx_packets_count": vsock.txPackets,
                               "conns_added": vsock.connectionsAdded, "conns_killed": vsock.connectionsReset,
                               "conns_removed": vsock.connectionsRemoved, "tx_write_fails": vsock.hostErrors]
        }
        if let balloon = machine.balloon {
            values["balloon"] = ["inflate_count": balloon.inflateRequests, "deflate_count": balloon.deflateRequests,
                                 "stats_updates_count": balloon.statisticsUpdates, "stats_update_fails": balloon.statisticsFailures,
                                 "free_page_report_count": balloon.freePageReports, "free_page_report_freed": balloon.freePageReportedBytes,
                                 "free_page_report_fails": balloon.freePageReportFailures,
                                 "event_fails": balloon.malformed + balloon.invalidPages + balloon.discardFailures]
        }
        if let rng = machine.rng {
            values["entropy"] = ["entropy_event_count": UInt64(rng.requests), "entropy_bytes": UInt64(rng.bytes)]
        }
        return values
    }

    /// Writes one line: the change of every counter since the previous line.
    public func write(_ values: [String: [String: UInt64]], timestamp: UInt64) {
        let groups = Self.groups + values.keys.filter { $0.hasPrefix("block_") || $0.hasPrefix("net_") }.sorted()
            .map { ($0, $0.hasPrefix("block_") ? Self.block : Self.net) }
        var line = "{\"utc_timestamp_ms\":\(timestamp)"
        if let emitID { line += ",\"id\":\(jsonString(emitID))" }
        if let properties {
            line += ",\"properties\":{" + properties.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",") + "}"
        }
        for (group, keys) in groups {
            let fields = keys.map { key -> String in
                if key.hasSuffix("_agg") { return "\"\(key)\":{\"min_us\":0,\"max_us\":0,\"sum_us\":0}" }
                let now = values[group]?[key] ?? 0
                let before = Self.absolute.contains("\(group).\(key)") ? 0 : previous[group]?[key] ?? 0
                return "\"\(key)\":\(now >= before ? now - before : now)"
            }
            line += ",\"\(group)\":{" + fields.joined(separator: ",") + "}"
        }
        line += "}\n"
        previous = values
        var bytes = line
        bytes.withUTF8 { writeAll(descriptor, UnsafeRawBufferPointer($0)) }
    }
}

/// A JSON string literal.
public func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
