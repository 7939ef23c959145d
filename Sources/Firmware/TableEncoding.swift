// The common parts of every ACPI table: the 36-byte header, the checksum, fixed-width ASCII
// identifiers, and the Generic Address Structure the FADT uses to point at registers.

/// Who made these tables. The OEM fields are free-form; the guest only prints them
/// ("ACPI: FACP 0x00000000000E0080 000114 (v06 LGUEST LGVMFACP 00000001 LGST 00000001)").
enum AcpiIdentity {
    static let oemID = "LGUEST"            // 6 bytes
    static let oemTableIDPrefix = "LGVM"   // + the 4-byte signature = 8 bytes
    static let oemRevision: UInt32 = 1
    static let creatorID = "LGST"          // 4 bytes
    static let creatorRevision: UInt32 = 1
    /// FADT "Hypervisor Vendor Identity", 8 bytes.
    static let hypervisorVendorID = "LGUESTVM"
}

/// The byte that makes `bytes` sum to zero (mod 256) once it is stored in the checksum field,
/// which must hold 0 while this is computed.
func acpiChecksum(_ bytes: some Sequence<UInt8>) -> UInt8 {
    0 &- bytes.reduce(0, &+)
}

extension Array where Element == UInt8 {
    /// Appends `text` as exactly `width` ASCII bytes, padded with spaces (the convention for
    /// OEM identifiers).
    mutating func appendASCII(_ text: String, width: Int) {
        let ascii = Array(text.utf8)
        precondition(ascii.count <= width && ascii.allSatisfy { $0 < 0x80 }, "bad ACPI identifier \(text)")
        self += ascii
        self += [UInt8](repeating: 0x20, count: width - ascii.count)
    }

    mutating func appendZeros(_ count: Int) {
        self += [UInt8](repeating: 0, count: count)
    }
}

/// A System Description Table: a 36-byte header, then `body`.
struct SystemDescriptionTable {
    static let headerSize = 36

    /// Four ASCII characters: "FACP", "APIC", "DSDT", "XSDT".
    let signature: String
    let revision: UInt8
    let body: [UInt8]

    /// The whole table, checksum filled in.
    var bytes: [UInt8] {
        var table: [UInt8] = []
        table.appendASCII(signature, width: 4)
        table.appendLittleEndian(UInt32(Self.headerSize + body.count))
        table.append(revision)
        table.append(0) // checksum, patched below
        table.appendASCII(AcpiIdentity.oemID, width: 6)
        table.appendASCII(AcpiIdentity.oemTableIDPrefix + signature, width: 8)
        table.appendLittleEndian(AcpiIdentity.oemRevision)
        table.appendASCII(AcpiIdentity.creatorID, width: 4)
        table.appendLittleEndian(AcpiIdentity.creatorRevision)
        table += body
        table[9] = acpiChecksum(table)
        return table
    }
}

/// A Generic Address Structure (ACPI 6.5 §5.2.3.2): where a register lives and how wide it is.
struct GenericAddress {
    static let size = 12
    static let systemIO: UInt8 = 1
    static let byteAccess: UInt8 = 1

    var addressSpace: UInt8 = 0
    var bitWidth: UInt8 = 0
    var bitOffset: UInt8 = 0
    var accessSize: UInt8 = 0
    var address: UInt64 = 0

    /// An 8-bit register at I/O port `port`, accessed a byte at a time.
    static func ioPort(_ port: UInt16) -> GenericAddress {
        GenericAddress(addressSpace: systemIO, bitWidth: 8, bitOffset: 0, accessSize: byteAccess,
                       address: UInt64(port))
    }

    static let none = GenericAddress()

    func encode(into bytes: inout [UInt8]) {
        bytes += [addressSpace, bitWidth, bitOffset, accessSize]
        bytes.appendLittleEndian(address)
    }
}
