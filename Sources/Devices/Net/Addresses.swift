/// Why a network option was refused: one line naming the bad value and what would be right.
public struct NetConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// An Ethernet address a guest NIC can own: six bytes, unicast, not all zeros.
///
/// The virtio-net driver takes the MAC from the configuration space as it is; Linux only
/// falls back to a random one if the address is not a valid unicast one, so the check happens
/// here, where the user can still be told which address was wrong.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The six bytes, in wire order.
    public let bytes: [UInt8]

    /// `text` as six two-digit hex bytes separated by colons (`52:54:00:12:34:56`).
    public init(_ text: String) throws(NetConfigurationError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        var bytes: [UInt8] = []
        for part in parts {
            guard part.utf8.count == 2, part.utf8.allSatisfy(\.isHexDigit), let byte = UInt8(part, radix: 16) else { break }
            bytes.append(byte)
        }
        guard parts.count == 6, bytes.count == 6 else {
            throw NetConfigurationError("invalid MAC address '\(text)': expected six hex bytes like 52:54:00:12:34:56")
        }
        try self.init(validating: bytes, text: text)
    }

    /// `text` parsed as by `init(_:)`, or `nil` if it is not a usable unicast address.
    public init?(parsing text: String) {
        guard let address = try? MACAddress(text) else { return nil }
        self = address
    }

    /// Six bytes, refused if they are not a usable unicast address.
    public init(bytes: [UInt8]) throws(NetConfigurationError) {
        try self.init(validating: bytes, text: nil)
    }

    private init(validating bytes: [UInt8], text: String?) throws(NetConfigurationError) {
        let shown = text ?? MACAddress.format(bytes)
        guard bytes.count == 6 else {
            throw NetConfigurationError("invalid MAC address '\(shown)': it has \(bytes.count) bytes, not 6")
        }
        // Bit 0 of the first byte is the I/G bit: set means a group (multicast/broadcast) address.
        guard bytes[0] & 1 == 0 else {
            throw NetConfigurationError(
                "MAC address \(shown) is multicast (low bit of the first byte set); a NIC needs a unicast one such as 52:54:00:12:34:56")
        }
        guard bytes.contains(where: { $0 != 0 }) else {
            throw NetConfigurationError("MAC address \(shown) is all zeros; choose a unicast one such as 52:54:00:12:34:56")
        }
        self.bytes = bytes
    }

    /// A random locally administered unicast address, `02:xx:xx:xx:xx:xx`: bit 1 of the first
    /// byte says "not from a vendor's range", so it cannot collide with real hardware.
    public static func random() -> MACAddress {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = [0x02]
        for _ in 0 ..< 5 { bytes.append(UInt8.random(in: 0 ... 255, using: &generator)) }
        if bytes.dropFirst().allSatisfy({ $0 == 0 }) { bytes[5] = 1 }
        // Valid by construction: first byte 0x02 is unicast, and the address is not zero.
        return try! MACAddress(bytes: bytes)
    }

    public var description: String { MACAddress.format(bytes) }

    private static func format(_ bytes: [UInt8]) -> String {
        bytes.map { byte in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined(separator: ":")
    }
}

private extension UInt8 {
    /// An ASCII hex digit (`UInt8(_:radix:)` alone would also take a sign).
    var isHexDigit: Bool {
        (0x30 ... 0x39).contains(self) || (0x41 ... 0x46).contains(self) || (0x61 ... 0x66).contains(self)
    }
}

/// An IPv4 address, for the host end of a `--tunnet` TAP device.
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    /// The four octets, first octet in the top byte (`192.0.2.1` is `0xC000_0201`).
    public let value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Dotted-quad notation: four decimal octets 0–255 without leading zeros (a leading zero
    /// means octal to `inet_aton`, so `010.0.0.1` is refused rather than guessed at).
    public init(_ text: String) throws(TapError) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { throw .invalidIPv4Address(text) }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.utf8.count <= 3, part.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  part == "0" || part.first != "0", let octet = UInt8(part)
            else { throw .invalidIPv4Address(text) }
            value = value << 8 | UInt32(octet)
        }
        self.value = value
    }

    /// `text` parsed as by `init(_:)`, or `nil`.
    public init?(parsing text: String) {
        guard let address = try? IPv4Address(text) else { return nil }
        self = address
    }

    /// The four octets, first to last.
    public var octets: [UInt8] { (0 ..< 4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }

    public var description: String { octets.map(String.init).joined(separator: ".") }
}
