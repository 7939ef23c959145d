import CKVM

/// Host offloads a TAP device can take, as `TUNSETOFFLOAD` flags (`linux/if_tun.h`).
///
/// They describe packets travelling *towards the guest*: with `.checksum` the host may hand us
/// packets whose checksum is still to be filled in (`NEEDS_CSUM`), with `.tso4`/`.tso6` up to
/// 64 KiB TCP segments the guest splits itself. The kernel only accepts TSO together with
/// checksum offload, and ECN only together with some TSO.
public struct TapOffloads: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `TUN_F_CSUM`: partially checksummed packets.
    public static let checksum = TapOffloads(rawValue: UInt32(TUN_F_CSUM))
    /// `TUN_F_TSO4`: TCP segmentation offload over IPv4.
    public static let tso4 = TapOffloads(rawValue: UInt32(TUN_F_TSO4))
    /// `TUN_F_TSO6`: TCP segmentation offload over IPv6.
    public static let tso6 = TapOffloads(rawValue: UInt32(TUN_F_TSO6))
    /// `TUN_F_TSO_ECN`: TSO packets with the ECN (CWR) bit.
    public static let tsoECN = TapOffloads(rawValue: UInt32(TUN_F_TSO_ECN))

    /// Everything a Linux TAP device supports that the net device offers.
    public static let all: TapOffloads = [.checksum, .tso4, .tso6, .tsoECN]

    /// `self` reduced to a set the kernel accepts: TSO needs checksum offload, ECN needs TSO.
    public var consistent: TapOffloads {
        guard contains(.checksum) else { return [] }
        var result = intersection([.checksum, .tso4, .tso6])
        if contains(.tsoECN), !result.isDisjoint(with: [.tso4, .tso6]) { result.insert(.tsoECN) }
        return result
    }
}

/// Where a `NetDevice` sends and receives Ethernet frames: a file descriptor carrying one
/// packet per `read`/`write`, each packet being a 12-byte `virtio_net_hdr_v1` followed by the
/// frame — exactly what a TAP device with `IFF_VNET_HDR` and `TUNSETVNETHDRSZ 12` does.
///
/// `Tap` is the real one. Tests use a datagram socket pair, which keeps packet boundaries the
/// same way, so the device's logic can be driven without privileges.
public protocol PacketEndpoint: AnyObject, Sendable {
    /// A non-blocking descriptor: `read` returns one packet or fails with EAGAIN, `write`
    /// sends one packet whole. The endpoint owns it and keeps it open for its lifetime.
    var fileDescriptor: CInt { get }
    /// The offloads this endpoint can take (the device offers the matching virtio features).
    var supportedOffloads: TapOffloads { get }
    /// Tells the host which offloads the guest accepts, so it never sends the guest a packet
    /// the guest cannot take. Called on activation with the acked features, and with `[]` on
    /// reset.
    func setOffloads(_ offloads: TapOffloads) throws(TapError)
}
