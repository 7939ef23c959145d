import Devices
import Launcher
#if canImport(Glibc)
import Glibc
#endif

/// Why a request was refused: Firecracker's `fault_message`, one line.
public enum ApiFailure: Error, Equatable, Sendable {
    /// The body did not decode: worded as Firecracker's serde errors are.
    case deserialize(String)
    /// Anything else, worded as Firecracker's `VmmActionError`s are.
    case fault(String)

    public var message: String {
        switch self {
        case let .deserialize(why): "An error occurred when deserializing the json body of a request: \(why)."
        case let .fault(why): why
        }
    }

    static let beforeStart = ApiFailure.fault("The requested operation is not supported before starting the microVM.")
    static let afterStart = ApiFailure.fault("The requested operation is not supported after starting the microVM.")
}

/// What the API and the configuration file have set up before `InstanceStart`: Firecracker's
/// resources, kept in its own terms, and turned into a `VMConfiguration` at start.
public struct Resources: Equatable, Sendable {
    public var bootSource: BootSource?
    public var machine = MachineConfig.default
    /// In the order they were first put; the root device becomes the guest's first disk.
    public var drives: [Drive] = []
    public var networks: [NetworkInterface] = []
    public var entropy: EntropyDevice?
    public var vsock: VsockSettings?
    public var balloon: Balloon?
    /// The listener `PUT /vsock` bound, handed to the device at start.
    var vsockListener: BoundListener?
    public var logger: LoggerConfig?
    public var metrics: MetricsConfig?

    public init() {}

    /// Firecracker's kernel command line when `boot_args` is absent.
    public static let defaultBootArgs = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"

    // MARK: - Setting each resource, checked as Firecracker checks it

    public mutating func setBootSource(_ source: BootSource) throws(ApiFailure) {
        try Self.checkReadable(source.kernel_image_path, what: "kernel")
        if let initrd = source.initrd_path { try Self.checkReadable(initrd, what: "initrd") }
        bootSource = source
    }

    public mutating func setMachine(_ config: MachineConfig) throws(ApiFailure) {
        guard (1...32).contains(config.vcpu_count), config.smt != true || config.vcpu_count == 1 || config.vcpu_count % 2 == 0 else {
            throw .fault("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
        }
        guard config.mem_size_mib > 0 else {
            throw .fault("The memory size (MiB) is either 0, or not a multiple of the configured page size.")
        }
        guard UInt64(config.mem_size_mib) >= VMConfiguration.minimumMemoryMiB,
              UInt64(config.mem_size_mib) <= VMConfiguration.maximumMemoryMiB else {
            throw .fault("The memory size of \(config.mem_size_mib) MiB is out of lguest's range: give \(VMConfiguration.minimumMemoryMiB) to \(VMConfiguration.maximumMemoryMiB) MiB.")
        }
        if config.smt == true { throw .fault("Enabling simultaneous multithreading is not supported by lguest.") }
        if let balloon, UInt64(balloon.amount_mib) > UInt64(config.mem_size_mib) {
            throw .fault("The memory size (MiB) is smaller than the previously set balloon device target size.")
        }
        if let pages = config.huge_pages, !["None", "Transparent", "2M"].contains(pages) {
            throw .deserialize("unknown variant `\(pages)`, expected one of `None`, `Transparent`, `2M`")
        }
        if let template = config.cpu_template, template != "None" {
            throw .fault("CPU templates are not supported by lguest: the guest sees the host's CPU model as KVM reports it.")
        }
        var config = config
        if config.smt == nil { config.smt = false }
        if config.track_dirty_pages == nil { config.track_dirty_pages = false }
        if config.huge_pages == nil { config.huge_pages = "None" }
        machine = config
    }

    public mutating func patchMachine(_ patch: MachineConfigPatch) throws(ApiFailure) {
        var config = machine
        if let v = patch.vcpu_count { config.vcpu_count = v }
        if let v = patch.mem_size_mib { config.mem_size_mib = v }
        if let v = patch.smt { config.smt = v }
        if let v = patch.track_dirty_pages { config.track_dirty_pages = v }
        if let v = patch.huge_pages { config.huge_pages = v }
        if let v = patch.cpu_template { config.cpu_template = v }
        try setMachine(config)
    }

    public mutating func putDrive(_ drive: Drive) throws(ApiFailure) {
        if drive.socket != nil { throw .fault("vhost-user block devices (`socket`) are not supported by lguest.") }
        guard let path = drive.path_on_host else { throw .fault("Unable to create the block device: `path_on_host` is required.") }
        if let engine = drive.io_engine, !["Sync", "Async"].contains(engine) {
            throw .deserialize("unknown variant `\(engine)`, expected `Sync` or `Async`")
        }
        if let cache = drive.cache_type, !["Unsafe", "Writeback"].contains(cache) {
            throw .deserialize("unknown variant `\(cache)`, expected `Unsafe` or `Writeback`")
        }
        if drive.is_root_device, drives.contains(where: { $0.is_root_device && $0.drive_id != drive.drive_id }) {
            throw .fault("A root block device already exists!")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .fault("Unable to create the block device: \(path): \(Self.osError(errno))") }
        close(fd)
        if let index = drives.firstIndex(where: { $0.drive_id == drive.drive_id }) { drives[index] = drive }
        else { drives.append(drive) }
    }

    public mutating func putNetwork(_ network: NetworkInterface) throws(ApiFailure) {
        let config = try Self.netConfiguration(network)
        if let mac = config.mac, networks.contains(where: { $0.iface_id != network.iface_id && $0.guest_mac.flatMap { try? MACAddress($0) } == mac }) {
            throw .fault("The MAC address is already in use: \(network.guest_mac ?? "")")
        }
        if networks.contains(where: { $0.iface_id != network.iface_id && $0.host_dev_name == network.host_dev_name }) {
            throw .fault("Could not create the network device: the TAP device \(network.host_dev_name) is already in use")
        }
        if let mtu = network.mtu, !(68...65535).contains(mtu) { throw .fault("The MTU \(mtu) is out of range: give 68 to 65535.") }
        if let index = networks.firstIndex(where: { $0.iface_id == network.iface_id }) { networks[index] = network }
        else { networks.append(network) }
    }

    static func netConfiguration(_ network: NetworkInterface) throws(ApiFailure) -> NetConfiguration {
        var option = "tap=\(network.host_dev_name)"
        if let mac = network.guest_mac { option += ",mac=\(mac)" }
        do throws(NetConfigurationError) { return try NetConfiguration(option: option) }
        catch { throw .fault("Could not create the network device: \(error.description)") }
    }

    // MARK: - At InstanceStart

    /// The VM these resources describe, with Firecracker's kernel command line: `boot_args` or
    /// its default, then `root=` and `ro`/`rw` for a root drive.
    public func configuration(sandbox: Bool) throws(ApiFailure) -> VMConfiguration {
        guard let boot = bootSource else {
            throw .fault("Cannot start microvm without kernel configuration.")
        }
        var commandLine = boot.boot_args ?? Self.defaultBootArgs
        let ordered = orderedDrives
        if let root = ordered.first, root.is_root_device {
            let device = root.partuuid.map { "PARTUUID=\($0)" } ?? "/dev/vda"
            commandLine += " root=\(device) \(root.is_read_only == true ? "ro" : "rw")"
        }
        var networkConfigurations: [NetConfiguration] = []
        for network in networks {
            var config = try Self.netConfiguration(network)
            config.receiveLimit = network.rx_rate_limiter?.limit ?? .unlimited
            config.transmitLimit = network.tx_rate_limiter?.limit ?? .unlimited
            networkConfigurations.append(config)
        }
        var configuration = VMConfiguration(
            kernelPath: boot.kernel_image_path, initrdPath: boot.initrd_path, commandLine: commandLine,
            memoryMiB: UInt64(machine.mem_size_mib), cpus: machine.vcpu_count, console: .serial,
            disks: ordered.map { BlockConfiguration(path: $0.path_on_host ?? "", readOnly: $0.is_read_only == true,
                                                    rateLimit: $0.rate_limiter?.limit ?? .unlimited) },
            networks: networkConfigurations, rng: entropy != nil, sandbox: sandbox)
        if let vsock {
            configuration.vsock = VsockConfiguration(guestCID: UInt64(vsock.guest_cid), udsPath: vsock.uds_path,
                                                     listener: vsockListener?.listener)
        }
        configuration.balloon = balloonConfiguration
        configuration.traceBoot = false
        do throws(LaunchError) { try configuration.validate() } catch { throw .fault(error.description) }
        return configuration
    }

    static func checkReadable(_ path: String, what: String) throws(ApiFailure) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .fault("The \(what) file cannot be opened: \(osError(errno))") }
        close(fd)
    }

    /// The drives in the guest's order: the root drive first (`vda`), then the others as put.
    public var orderedDrives: [Drive] { drives.filter(\.is_root_device) + drives.filter { !$0.is_root_device } }

    /// Rust's way of printing an OS error, which clients match: `No such file or directory (os error 2)`.
    static func osError(_ code: Int32) -> String { "\(String(cString: strerror(code))) (os error \(code))" }
}
