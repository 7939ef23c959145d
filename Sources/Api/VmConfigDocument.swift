import FoundationEssentials

/// `GET /vm/config` as Firecracker writes it: every section present, `null` where nothing was
/// configured, and every field of a drive or a network interface present, with Firecracker's
/// defaults filled in (`cache_type` `Unsafe`, `io_engine` `Sync`) and `null` for the rest.
/// Clients compare this document whole, so each type below encodes its optionals as `null`
/// (`encode`, not `encodeIfPresent`).
struct VmConfigDocument: Encodable {
    let resources: Resources

    enum Key: String, CodingKey {
        case balloon, drives, bootSource = "boot-source", cpuConfig = "cpu-config", logger
        case machineConfig = "machine-config", metrics, mmdsConfig = "mmds-config"
        case networkInterfaces = "network-interfaces", pmem, vsock, entropy, memoryHotplug = "memory-hotplug"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(resources.balloon.map(BalloonDocument.init), forKey: .balloon)
        for key in [Key.cpuConfig, .logger, .metrics, .mmdsConfig, .memoryHotplug] {
            try c.encodeNil(forKey: key)
        }
        try c.encode(resources.vsock.map { VsockDocument(guest_cid: $0.guest_cid, uds_path: $0.uds_path) }, forKey: .vsock)
        try c.encode(resources.drives.map(DriveDocument.init), forKey: .drives)
        try c.encode(resources.bootSource.map(BootSourceDocument.init), forKey: .bootSource)
        try c.encode(MachineDocument(config: resources.machine), forKey: .machineConfig)
        try c.encode(resources.networks.map(NetworkDocument.init), forKey: .networkInterfaces)
        try c.encode([String](), forKey: .pmem)
        try c.encode(resources.entropy.map { EntropyDocument(limiter: $0.rate_limiter) }, forKey: .entropy)
    }

    static func json(_ resources: Resources) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return Array((try? encoder.encode(VmConfigDocument(resources: resources))) ?? Data("{}".utf8))
    }
}

private struct VsockDocument: Encodable {
    let guest_cid: UInt32
    let uds_path: String
}

private struct BootSourceDocument: Encodable {
    let source: BootSource
    enum Key: String, CodingKey { case kernel_image_path, initrd_path, boot_args }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(source.kernel_image_path, forKey: .kernel_image_path)
        try c.encode(source.initrd_path, forKey: .initrd_path)
        try c.encode(source.boot_args, forKey: .boot_args)
    }
}

private struct MachineDocument: Encodable {
    let config: MachineConfig
    enum Key: String, CodingKey { case vcpu_count, mem_size_mib, smt, track_dirty_pages, huge_pages, cpu_template }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(config.vcpu_count, forKey: .vcpu_count)
        try c.encode(config.mem_size_mib, forKey: .mem_size_mib)
        try c.encode(config.smt ?? false, forKey: .smt)
        try c.encode(config.track_dirty_pages ?? false, forKey: .track_dirty_pages)
        try c.encode(config.huge_pages ?? "None", forKey: .huge_pages)
        // Firecracker writes the (deprecated) template only when one was set.
        try c.encodeIfPresent(config.cpu_template, forKey: .cpu_template)
    }
}

private struct BucketDocument: Encodable {
    let bucket: TokenBucket
    enum Key: String, CodingKey { case size, one_time_burst, refill_time }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(bucket.size, forKey: .size)
        try c.encode(bucket.one_time_burst, forKey: .one_time_burst)
        try c.encode(bucket.refill_time, forKey: .refill_time)
    }
}

private struct LimiterDocument: Encodable {
    let limiter: RateLimiter
    enum Key: String, CodingKey { case bandwidth, ops }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(limiter.bandwidth.map(BucketDocument.init), forKey: .bandwidth)
        try c.encode(limiter.ops.map(BucketDocument.init), forKey: .ops)
    }
}

private struct DriveDocument: Encodable {
    let drive: Drive
    enum Key: String, CodingKey {
        case drive_id, partuuid, is_root_device, cache_type, is_read_only, path_on_host, rate_limiter, io_engine, socket
    }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(drive.drive_id, forKey: .drive_id)
        try c.encode(drive.partuuid, forKey: .partuuid)
        try c.encode(drive.is_root_device, forKey: .is_root_device)
        try c.encode(drive.cache_type ?? "Unsafe", forKey: .cache_type)
        try c.encode(drive.is_read_only ?? false, forKey: .is_read_only)
        try c.encode(drive.path_on_host, forKey: .path_on_host)
        try c.encode(drive.rate_limiter.map(LimiterDocument.init), forKey: .rate_limiter)
        try c.encode(drive.io_engine ?? "Sync", forKey: .io_engine)
        try c.encode(drive.socket, forKey: .socket)
    }
}

private struct NetworkDocument: Encodable {
    let network: NetworkInterface
    enum Key: String, CodingKey { case iface_id, host_dev_name, guest_mac, mtu, rx_rate_limiter, tx_rate_limiter }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(network.iface_id, forKey: .iface_id)
        try c.encode(network.host_dev_name, forKey: .host_dev_name)
        try c.encode(network.guest_mac, forKey: .guest_mac)
        try c.encode(network.mtu, forKey: .mtu)
        try c.encode(network.rx_rate_limiter.map(LimiterDocument.init), forKey: .rx_rate_limiter)
        try c.encode(network.tx_rate_limiter.map(LimiterDocument.init), forKey: .tx_rate_limiter)
    }
}

private struct EntropyDocument: Encodable {
    let limiter: RateLimiter?
    enum Key: String, CodingKey { case rate_limiter }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(limiter.map(LimiterDocument.init), forKey: .rate_limiter)
    }
}
