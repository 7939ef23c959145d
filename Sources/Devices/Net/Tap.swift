import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// Why a TAP device could not be opened or configured. Each message is one line that names
/// the device and what to do about it.
public enum TapError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The name cannot be an interface name (empty, too long, or with `/`, `:` or spaces).
    case invalidName(String, reason: String)
    /// A `--tunnet` address that is not dotted-quad IPv4.
    case invalidIPv4Address(String)
    /// `.existing(name)`, but there is no such interface.
    case noSuchDevice(String)
    /// `.existing(name)`, but the interface is not a (single-queue) TAP device.
    case notATap(String)
    /// `.existing(name)`, but another process has the TAP device open.
    case busy(String)
    /// `.create(name:)`, but an interface with that name exists already.
    case alreadyExists(String)
    /// `/dev/net/tun` could not be opened.
    case tunUnavailable(errno: Int32)
    /// `what` failed with `errno`.
    case failed(String, errno: Int32)

    public var description: String {
        switch self {
        case let .invalidName(name, reason):
            return "invalid TAP device name '\(name)': \(reason)"
        case let .invalidIPv4Address(text):
            return "invalid IPv4 address '\(text)': expected four numbers 0-255 such as 192.0.2.1"
        case let .noSuchDevice(name):
            return "no TAP device named \(name) (create it first: ip tuntap add \(name) mode tap)"
        case let .notATap(name):
            return "\(name) is not a TAP device (only single-queue TAP interfaces can be attached)"
        case let .busy(name):
            return "TAP device \(name) is busy (another process has it open)"
        case let .alreadyExists(name):
            return "cannot create TAP device \(name): a network interface with that name already exists"
        case let .tunUnavailable(code):
            switch code {
            case ENOENT, ENODEV, ENXIO:
                return "cannot open /dev/net/tun: \(tapErrnoText(code)) (load the tun module: modprobe tun)"
            case EACCES, EPERM:
                return "cannot open /dev/net/tun: \(tapErrnoText(code)) (needs root or CAP_NET_ADMIN)"
            default:
                return "cannot open /dev/net/tun: \(tapErrnoText(code))"
            }
        case let .failed(what, code):
            let hint = code == EPERM || code == EACCES ? " (needs CAP_NET_ADMIN)" : ""
            return "\(what): \(tapErrnoText(code))\(hint)"
        }
    }
}

/// `strerror`, starting with a small letter so it reads as the tail of a sentence.
func tapErrnoText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "error \(code)" }
    let message = String(cString: text)
    guard let first = message.first else { return "error \(code)" }
    return first.lowercased() + message.dropFirst()
}

/// A TAP device: the host end of the guest's Ethernet cable.
///
/// Opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`: every frame comes and goes with a
/// virtio-net header in front instead of TUN's packet-information word, and the header is set
/// to the 12-byte `virtio_net_hdr_v1` a VERSION_1 driver uses, so the guest's headers pass
/// through untouched in both directions. The descriptor is non-blocking and close-on-exec.
///
/// A TAP device lguest created goes away when the `Tap` is released (its descriptor closes);
/// an existing one stays. Creating a TAP device or configuring its address needs
/// CAP_NET_ADMIN; attaching to one the caller owns does not.
///
/// Network namespaces: the device is created in the namespace of the thread that opens
/// `/dev/net/tun`, and `setHostAddress`/`bringUp` configure it through a socket made in the
/// calling thread's namespace — call them on the same thread (or in the same namespace).
public final class Tap: PacketEndpoint {
    /// The interface name, as the kernel reports it (useful when it chose `lguestN`).
    public let name: String
    public let fileDescriptor: CInt
    /// Linux TAP devices take every offload the net device knows.
    public var supportedOffloads: TapOffloads { .all }

    /// `sizeof(struct virtio_net_hdr_v1)`: with VIRTIO_F_VERSION_1 the header always has
    /// `num_buffers`, mergeable buffers or not.
    public static let vnetHeaderSize: CInt = 12
    /// The name pattern the kernel fills in when lguest creates an unnamed device.
    public static let defaultNamePattern = "lguest%d"

    /// Opens (and, for `.create`, configures) the TAP device `spec` describes.
    public static func open(_ spec: TapSpec) throws(TapError) -> Tap {
        switch spec {
        case let .existing(name):
            return try Tap(attachingTo: name)
        case let .create(name, hostAddress):
            let tap = try Tap(creating: name)
            if let hostAddress { try tap.setHostAddress(hostAddress) }
            try tap.bringUp()
            return tap
        }
    }

    /// Attaches to the existing TAP device `name`.
    public convenience init(attachingTo name: String) throws(TapError) {
        try Tap.validate(name, pattern: false)
        guard if_nametoindex(name) != 0 else { throw .noSuchDevice(name) }
        try self.init(name: name, create: false)
    }

    /// Creates a new TAP device named `name`, or `lguestN` if `name` is nil. A given name may
    /// contain one `%d` for the kernel to fill in.
    public convenience init(creating name: String? = nil) throws(TapError) {
        if let name { try Tap.validate(name, pattern: true) }
        try self.init(name: name, create: true)
    }

    private init(name requested: String?, create: Bool) throws(TapError) {
        let fd = lg_open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC, 0)
        guard fd >= 0 else { throw .tunUnavailable(errno: -fd) }

        var request = tapRequest(named: requested ?? Tap.defaultNamePattern)
        var flags = Int32(IFF_TAP) | Int32(IFF_NO_PI) | Int32(IFF_VNET_HDR)
        // A named device we create must be new: without TUN_EXCL the kernel would quietly
        // attach us to an existing device of that name.
        if create, requested != nil { flags |= Int32(IFF_TUN_EXCL) }
        request.ifr_ifru.ifru_flags = Int16(truncatingIfNeeded: flags)
        // Safe: TUNSETIFF reads and rewrites one struct ifreq, which `request` is.
        let result = lg_ioctl_pointer(fd, LG_TUNSETIFF, &request)
        guard result >= 0 else {
            close(fd)
            throw Tap.setIFFError(-result, name: requested, create: create)
        }
        let actual = tapInterfaceName(request)

        var headerSize = Tap.vnetHeaderSize
        // Safe: TUNSETVNETHDRSZ reads one int, which `headerSize` is.
        let sized = lg_ioctl_pointer(fd, LG_TUNSETVNETHDRSZ, &headerSize)
        guard sized >= 0 else {
            close(fd)
            throw .failed("cannot set a 12-byte virtio-net header on TAP device \(actual)", errno: -sized)
        }
        // Start with no offloads: until a driver says what it accepts, the kernel must finish
        // checksums and segment large packets itself.
        let offloaded = lg_ioctl_value(fd, LG_TUNSETOFFLOAD, 0)
        guard offloaded >= 0 else {
            close(fd)
            throw .failed("cannot clear offloads on TAP device \(actual)", errno: -offloaded)
        }
        self.name = actual
        self.fileDescriptor = fd
    }

    deinit { close(fileDescriptor) }

    /// `TUNSETOFFLOAD`: which offloaded packets the host may hand the guest. The set is first
    /// made consistent (TSO needs checksum offload, ECN needs TSO), as the kernel demands.
    public func setOffloads(_ offloads: TapOffloads) throws(TapError) {
        let result = lg_ioctl_value(fileDescriptor, LG_TUNSETOFFLOAD, UInt(offloads.consistent.rawValue))
        guard result >= 0 else { throw .failed("cannot set offloads on TAP device \(name)", errno: -result) }
    }

    /// Gives the host end `address` with a `/prefixLength` netmask (lguest's `--tunnet` uses
    /// /24: the guest picks another address in the same /24).
    public func setHostAddress(_ address: IPv4Address, prefixLength: Int = 24) throws(TapError) {
        guard (1 ... 32).contains(prefixLength) else {
            throw .failed("cannot give \(name) the address \(address)/\(prefixLength)", errno: EINVAL)
        }
        let mask = IPv4Address(UInt32.max << UInt32(32 - prefixLength))
        try withConfigurationSocket { socket throws(TapError) in
            var request = tapRequest(named: name)
            setSocketAddress(&request.ifr_ifru.ifru_addr, to: address)
            // Safe: SIOCSIFADDR reads one struct ifreq, which `request` is.
            let added = lg_ioctl_pointer(socket, LG_SIOCSIFADDR, &request)
            guard added >= 0 else { throw .failed("cannot give \(name) the address \(address)", errno: -added) }

            request = tapRequest(named: name)
            setSocketAddress(&request.ifr_ifru.ifru_netmask, to: mask)
            // Safe: SIOCSIFNETMASK reads one struct ifreq, which `request` is.
            let masked = lg_ioctl_pointer(socket, LG_SIOCSIFNETMASK, &request)
            guard masked >= 0 else { throw .failed("cannot set the netmask \(mask) on \(name)", errno: -masked) }
        }
    }

    /// Sets IFF_UP on the host end (what `ip link set NAME up` does).
    public func bringUp() throws(TapError) {
        try withConfigurationSocket { socket throws(TapError) in
            var request = tapRequest(named: name)
            // Safe: SIOCGIFFLAGS fills in one struct ifreq, which `request` is.
            let read = lg_ioctl_pointer(socket, LG_SIOCGIFFLAGS, &request)
            guard read >= 0 else { throw .failed("cannot read the flags of \(name)", errno: -read) }
            request.ifr_ifru.ifru_flags |= Int16(IFF_UP)
            // Safe: SIOCSIFFLAGS reads one struct ifreq, which `request` is.
            let written = lg_ioctl_pointer(socket, LG_SIOCSIFFLAGS, &request)
            guard written >= 0 else { throw .failed("cannot bring \(name) up", errno: -written) }
        }
    }

    // MARK: - Helpers

    /// Interface configuration ioctls go through any AF_INET socket in the device's namespace.
    private func withConfigurationSocket(_ body: (CInt) throws(TapError) -> Void) throws(TapError) {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { throw .failed("cannot configure \(name): no AF_INET socket", errno: errno) }
        defer { close(socket) }
        try body(socket)
    }

    /// The kernel's `dev_valid_name`, so the user hears about a bad name before any ioctl.
    /// `pattern` allows the `%d` the kernel fills in when it creates a device.
    public static func validate(_ name: String, pattern: Bool) throws(TapError) {
        guard !name.isEmpty else { throw .invalidName(name, reason: "it is empty") }
        guard name.utf8.count < Int(IFNAMSIZ) else {
            throw .invalidName(name, reason: "longer than \(Int(IFNAMSIZ) - 1) bytes")
        }
        guard name != ".", name != ".." else { throw .invalidName(name, reason: "'.' and '..' are reserved") }
        guard !name.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 0x20 || $0 == 0x7F }) else {
            throw .invalidName(name, reason: "it contains '/', ':', a space or a control character")
        }
        if !pattern, name.contains("%") {
            throw .invalidName(name, reason: "'%' only makes sense when creating a device")
        }
    }

    private static func setIFFError(_ code: Int32, name: String?, create: Bool) -> TapError {
        let shown = name ?? Tap.defaultNamePattern
        switch (code, create) {
        case (EBUSY, true), (EEXIST, true): return .alreadyExists(shown)
        case (EBUSY, false): return .busy(shown)
        case (EINVAL, false): return .notATap(shown)
        case (EINVAL, true): return .invalidName(shown, reason: "the kernel refused it")
        case (_, true): return .failed(name.map { "cannot create TAP device \($0)" } ?? "cannot create a TAP device", errno: code)
        case (_, false): return .failed("cannot attach to TAP device \(shown)", errno: code)
        }
    }
}

/// A zeroed `struct ifreq` naming `name` (truncated to fit, always NUL-terminated).
private func tapRequest(named name: String) -> ifreq {
    var request = ifreq()
    let bytes = Array(name.utf8.prefix(Int(IFNAMSIZ) - 1))
    // Safe: at most IFNAMSIZ − 1 bytes go into the IFNAMSIZ-byte name, which stays NUL-terminated.
    withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: bytes) }
    return request
}

/// The interface name in `request`, up to its NUL.
private func tapInterfaceName(_ request: ifreq) -> String {
    var field = request.ifr_ifrn.ifrn_name
    // Safe: reads only the IFNAMSIZ bytes of the name field.
    return withUnsafeBytes(of: &field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// Writes `address` into `target` as a `sockaddr_in` (port 0).
private func setSocketAddress(_ target: inout sockaddr, to address: IPv4Address) {
    var inet = sockaddr_in()
    inet.sin_family = sa_family_t(AF_INET)
    inet.sin_addr.s_addr = address.value.bigEndian
    // Safe: sockaddr_in and sockaddr are both 16 bytes, so the copy fills `target` exactly.
    withUnsafeBytes(of: &inet) { source in
        withUnsafeMutableBytes(of: &target) { $0.copyMemory(from: source) }
    }
}
