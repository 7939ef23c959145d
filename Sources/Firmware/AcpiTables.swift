import GuestMemory

/// One table, placed.
public struct AcpiTable: Sendable, Hashable {
    /// The table's signature: "RSDP" for the root pointer (whose bytes begin "RSD PTR "),
    /// otherwise the 4-byte signature in its header ("XSDT", "FACP", "APIC", "DSDT").
    public let signature: String
    public let address: GuestAddress
    public let bytes: [UInt8]
}

/// A complete, placed set of ACPI tables, ready to be copied into guest memory.
///
/// The guest finds them from the RSDP, whose address the boot layer also stores in the zero
/// page (`boot_params.acpi_rsdp_addr`) so Linux need not search for it.
public struct AcpiTables: Sendable {
    public let rsdpAddress: GuestAddress
    /// In address order: RSDP, XSDT, FADT, MADT, DSDT.
    public let tables: [AcpiTable]
    /// The first byte after the last table.
    public let end: GuestAddress

    /// Each table starts on this boundary. The RSDP needs 16 (a guest searching for it steps
    /// through memory 16 bytes at a time); the others only want their 64-bit fields aligned,
    /// and using 16 throughout makes hex dumps line up.
    static let alignment: UInt64 = 16

    /// Lays out the tables for `config` starting at `base`, all of them ending by `limit`.
    public init(_ config: AcpiConfiguration, at base: GuestAddress = AcpiLayout.base,
                limit: GuestAddress = AcpiLayout.limit) throws(AcpiError) {
        try config.validate()
        guard base.isAligned(to: Self.alignment) else { throw .misalignedBase(base) }

        // The DSDT and MADT do not depend on where anything is, so build them first; then the
        // sizes of all five tables are known and the addresses can be handed out.
        let dsdt = DifferentiatedSystemDescriptionTable.bytes(config)
        let madt = MultipleAPICDescriptionTable.bytes(config)
        let sizes = [
            RootPointer.size,
            ExtendedSystemDescriptionTable.size(entries: 2),
            FixedDescriptionTable.size,
            madt.count,
            dsdt.count,
        ]
        var offsets: [UInt64] = []
        var next: UInt64 = 0
        for size in sizes {
            offsets.append(next)
            next = (next + UInt64(size) + Self.alignment - 1) & ~(Self.alignment - 1)
        }
        let needed = offsets[4] + UInt64(dsdt.count)
        guard let end = base.adding(needed), end <= limit else {
            throw .doesNotFit(needed: needed, base: base, limit: limit)
        }
        // Every address is below `end`, which did not overflow.
        let addresses = offsets.map { base + $0 }

        let (rsdpAt, xsdtAt, fadtAt, madtAt, dsdtAt) =
            (addresses[0], addresses[1], addresses[2], addresses[3], addresses[4])
        tables = [
            AcpiTable(signature: "RSDP", address: rsdpAt, bytes: RootPointer.bytes(xsdt: xsdtAt)),
            AcpiTable(signature: "XSDT", address: xsdtAt,
                      bytes: ExtendedSystemDescriptionTable.bytes(pointingAt: [fadtAt, madtAt])),
            AcpiTable(signature: "FACP", address: fadtAt,
                      bytes: FixedDescriptionTable.bytes(dsdt: dsdtAt, config)),
            AcpiTable(signature: "APIC", address: madtAt, bytes: madt),
            AcpiTable(signature: "DSDT", address: dsdtAt, bytes: dsdt),
        ]
        rsdpAddress = rsdpAt
        self.end = end
    }

    /// The table with `signature`, if there is one.
    public subscript(signature: String) -> AcpiTable? {
        tables.first { $0.signature == signature }
    }

    /// Copies the tables into guest memory, zeroing the gaps between them.
    public func write(into memory: GuestMemory) throws(AcpiError) {
        do {
            try memory.zero(at: rsdpAddress, length: end.offset(from: rsdpAddress)!)
            for table in tables { try memory.write(table.bytes, at: table.address) }
        } catch {
            throw .memory(error)
        }
    }
}

/// The front door: build the tables for a configuration and put them in guest memory.
public enum ACPI {
    /// Builds the tables for `config`, writes them into `memory` at `base`, and returns the
    /// RSDP's address for the zero page.
    @discardableResult
    public static func write(_ config: AcpiConfiguration, into memory: GuestMemory,
                             at base: GuestAddress = AcpiLayout.base) throws(AcpiError) -> GuestAddress {
        let tables = try AcpiTables(config, at: base)
        try tables.write(into: memory)
        return tables.rsdpAddress
    }

    /// The tables for `config` at the default place, as (signature, bytes) pairs: what tests,
    /// `iasl` and table dumps want.
    public static func build(_ config: AcpiConfiguration) throws(AcpiError) -> [(name: String, bytes: [UInt8])] {
        try AcpiTables(config).tables.map { ($0.signature, $0.bytes) }
    }
}
