/// Which TAP device a network card is plugged into.
public enum TapSpec: Hashable, Sendable {
    /// A TAP device someone already made (`ip tuntap add NAME mode tap`), perhaps on a bridge.
    /// lguest attaches to it and configures nothing on the host side.
    case existing(String)
    /// A TAP device lguest creates and that disappears when lguest exits: named `name`, or
    /// `lguest0`, `lguest1`, … as the kernel chooses. With `hostAddress` (lguest's classic
    /// `--tunnet=IP`) the host end gets that address with a /24 netmask. Either way lguest
    /// brings the link up.
    case create(name: String? = nil, hostAddress: IPv4Address? = nil)
}

/// One virtio-net card: where its frames go, and its MAC address.
public struct NetConfiguration: Hashable, Sendable {
    public var tap: TapSpec
    /// The guest's MAC address; `nil` picks a random locally administered one.
    public var mac: MACAddress?
    /// Rate limits on what the guest receives and what it sends.
    public var receiveLimit: RateLimit
    public var transmitLimit: RateLimit
    /// The host kernel moves the frames (`/dev/vhost-net`, `VhostNet`); lguest keeps the
    /// control plane. Frames then never pass through lguest, so there are no rate limits.
    public var vhost: Bool

    public init(tap: TapSpec, mac: MACAddress? = nil, receiveLimit: RateLimit = .unlimited,
                transmitLimit: RateLimit = .unlimited, vhost: Bool = false) {
        self.tap = tap
        self.mac = mac
        self.receiveLimit = receiveLimit
        self.transmitLimit = transmitLimit
        self.vhost = vhost
    }

    /// lguest's `--tunnet=IP`: a new TAP device whose host end is `IP`/24.
    public init(tunnet address: String) throws(TapError) {
        self.init(tap: .create(hostAddress: try IPv4Address(address)))
    }

    /// The `--net` option, `tap=NAME[,mac=MAC][,rx-bw=…][,rx-ops=…][,tx-bw=…][,tx-ops=…][,vhost=on|off]`:
    /// attach to the existing TAP device `NAME`; rate limits take `SIZE/REFILL_MS[/BURST]`;
    /// `vhost=on` hands the data path to the host kernel (and takes no rate limit).
    public init(option: String) throws(NetConfigurationError) {
        var name: String?
        var mac: MACAddress?
        var receive = RateLimit.unlimited, transmit = RateLimit.unlimited
        var vhost: Bool?
        for item in option.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2 else {
                throw NetConfigurationError("invalid network option '\(option)': expected tap=NAME[,mac=MAC]")
            }
            let (key, value) = (String(pair[0]), String(pair[1]))
            switch key {
            case "tap" where name == nil:
                guard !value.isEmpty else { throw NetConfigurationError("invalid network option '\(option)': tap= needs a device name") }
                name = value
            case "mac" where mac == nil:
                mac = try MACAddress(value)
            case "vhost" where vhost == nil:
                switch value {
                case "on": vhost = true
                case "off": vhost = false
                default: throw NetConfigurationError("invalid network option '\(option)': vhost= takes on or off")
                }
            case "tap", "mac", "vhost":
                throw NetConfigurationError("invalid network option '\(option)': \(key)= given twice")
            case "rx-bw", "rx-ops", "tx-bw", "tx-ops":
                let flag = String(key.dropFirst(3)) + "=" + value
                do throws(RateLimitOptionError) {
                    _ = key.hasPrefix("rx") ? try receive.apply(flag: flag) : try transmit.apply(flag: flag)
                } catch {
                    throw NetConfigurationError("invalid network option '\(option)': \(key): \(error)")
                }
            default:
                throw NetConfigurationError("invalid network option '\(option)': unknown key '\(key)' (known: tap, mac, rx-bw, rx-ops, tx-bw, tx-ops, vhost)")
            }
        }
        guard let name else {
            throw NetConfigurationError("invalid network option '\(option)': tap=NAME is required")
        }
        if vhost == true, receive != .unlimited || transmit != .unlimited {
            throw NetConfigurationError("invalid network option '\(option)': with vhost=on frames never pass through lguest, so rx-/tx- rate limits cannot apply")
        }
        self.init(tap: .existing(name), mac: mac, receiveLimit: receive, transmitLimit: transmit, vhost: vhost ?? false)
    }
}
