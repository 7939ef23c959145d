import GuestMemory
import Testing
@testable import Firmware

// MARK: - Reading tables back

extension Array where Element == UInt8 {
    func u8(_ offset: Int) -> UInt8 { self[offset] }
    func u16(_ offset: Int) -> UInt16 { UInt16(self[offset]) | UInt16(self[offset + 1]) << 8 }
    func u32(_ offset: Int) -> UInt32 { UInt32(u16(offset)) | UInt32(u16(offset + 2)) << 16 }
    func u64(_ offset: Int) -> UInt64 { UInt64(u32(offset)) | UInt64(u32(offset + 4)) << 32 }
    func ascii(_ offset: Int, _ count: Int) -> String {
        String(decoding: self[offset..<(offset + count)], as: UTF8.self)
    }
    func contains(_ needle: [UInt8]) -> Bool {
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { Array(self[$0..<($0 + needle.count)]) == needle }
    }
}

func byteSum(_ bytes: some Sequence<UInt8>) -> UInt8 { bytes.reduce(0, &+) }

/// Four virtio-mmio windows on the architecture's layout (0xD000_0000 + 4 KiB × n, GSI 5 + n).
func virtioWindows(_ count: Int) -> [VirtioMMIOWindow] {
    (0..<count).map {
        VirtioMMIOWindow(base: GuestAddress(0xD000_0000 + 0x1000 * UInt64($0)), gsi: 5 + UInt32($0))
    }
}

let sampleConfiguration = AcpiConfiguration(cpus: 2, virtioMMIO: virtioWindows(4))

// MARK: - Tests

@Suite("ACPI tables")
struct TableTests {
    @Test("every table sums to zero and its header length is its size",
          arguments: [1, 2, 8, 64, 255])
    func checksums(cpus: Int) throws {
        let tables = try AcpiTables(AcpiConfiguration(cpus: cpus, virtioMMIO: virtioWindows(19)))
        for table in tables.tables where table.signature != "RSDP" {
            #expect(byteSum(table.bytes) == 0, "\(table.signature) checksum")
            #expect(Int(table.bytes.u32(4)) == table.bytes.count, "\(table.signature) length")
            #expect(table.bytes.ascii(0, 4) == table.signature)
            #expect(table.bytes.ascii(10, 6) == "LGUEST")
        }
        let rsdp = try #require(tables["RSDP"]).bytes
        #expect(rsdp.count == 36)
        #expect(byteSum(rsdp[0..<20]) == 0, "RSDP checksum over the first 20 bytes")
        #expect(byteSum(rsdp) == 0, "RSDP extended checksum over all 36 bytes")
    }

    @Test("RSDP → XSDT → FADT/MADT → DSDT pointers all agree with the layout")
    func pointers() throws {
        let tables = try AcpiTables(sampleConfiguration)
        let rsdp = try #require(tables["RSDP"])
        let xsdt = try #require(tables["XSDT"])
        let fadt = try #require(tables["FACP"])
        let madt = try #require(tables["APIC"])
        let dsdt = try #require(tables["DSDT"])

        #expect(tables.rsdpAddress == GuestAddress(0xE0000))
        #expect(rsdp.address == tables.rsdpAddress)
        #expect(rsdp.bytes.ascii(0, 8) == "RSD PTR ")
        #expect(rsdp.bytes.u8(15) == 2, "revision 2")
        #expect(rsdp.bytes.u32(16) == 0, "no RSDT")
        #expect(rsdp.bytes.u32(20) == 36)
        #expect(rsdp.bytes.u64(24) == xsdt.address.rawValue)

        #expect(xsdt.bytes.count == 36 + 16)
        #expect(xsdt.bytes.u64(36) == fadt.address.rawValue)
        #expect(xsdt.bytes.u64(44) == madt.address.rawValue)

        #expect(fadt.bytes.u32(40) == 0, "32-bit DSDT pointer unused")
        #expect(fadt.bytes.u64(140) == dsdt.address.rawValue, "X_DSDT")

        // Ordered, 16-byte aligned, non-overlapping, inside [0xE0000, 0x100000).
        var previousEnd = tables.rsdpAddress
        for table in tables.tables {
            #expect(table.address.isAligned(to: 16))
            #expect(table.address >= previousEnd)
            previousEnd = table.address + UInt64(table.bytes.count)
        }
        #expect(previousEnd == tables.end)
        #expect(tables.end <= AcpiLayout.limit)
    }

    @Test("FADT: revision 6.5, hardware-reduced, sleep and reset registers on our ports")
    func fadt() throws {
        let fadt = try #require(try AcpiTables(sampleConfiguration)["FACP"]).bytes
        #expect(fadt.count == 276)
        #expect(fadt.u8(8) == 6, "revision")
        #expect(fadt.u8(131) == 5, "minor version")

        let flags = fadt.u32(112)
        #expect(flags & (1 << 20) != 0, "HW_REDUCED_ACPI")
        #expect(flags & (1 << 4) != 0, "PWR_BUTTON")
        #expect(flags & (1 << 5) != 0, "SLP_BUTTON")
        #expect(flags & (1 << 10) != 0, "RESET_REG_SUP")

        // Generic Address Structures: SystemIO, 8 bits wide, offset 0, byte access.
        func gas(_ offset: Int) -> (UInt8, UInt8, UInt8, UInt8, UInt64) {
            (fadt.u8(offset), fadt.u8(offset + 1), fadt.u8(offset + 2), fadt.u8(offset + 3), fadt.u64(offset + 4))
        }
        #expect(gas(116) == (1, 8, 0, 1, UInt64(PlatformPorts.reset)))
        #expect(fadt.u8(128) == PlatformPorts.resetValue)
        #expect(gas(244) == (1, 8, 0, 1, UInt64(PlatformPorts.sleepControl)))
        #expect(gas(256) == (1, 8, 0, 1, UInt64(PlatformPorts.sleepStatus)))
        #expect(fadt.ascii(268, 8) == "LGUESTVM")

        let bootFlags = fadt.u16(109)
        #expect(bootFlags & (1 << 1) != 0, "8042 present")
        #expect(bootFlags & (1 << 2) != 0, "VGA not present")
        #expect(bootFlags & (1 << 5) != 0, "CMOS RTC not present (none configured)")

        var withRTC = sampleConfiguration
        withRTC.cmosRTC = true
        withRTC.keyboardController = false
        let other = try #require(try AcpiTables(withRTC)["FACP"]).bytes.u16(109)
        #expect(other & (1 << 5) == 0)
        #expect(other & (1 << 1) == 0)
    }

    @Test("MADT: one enabled Local APIC per vCPU, the IOAPIC, and LINT1 as NMI",
          arguments: [1, 2, 8, 64, 255])
    func madt(cpus: Int) throws {
        let madt = try #require(try AcpiTables(AcpiConfiguration(cpus: cpus))["APIC"]).bytes
        #expect(madt.u32(36) == 0xFEE0_0000, "local APIC address")
        #expect(madt.u32(40) == 0, "no PCAT_COMPAT")

        var localAPICs: [(uid: UInt8, apicID: UInt8, flags: UInt32)] = []
        var ioapics: [(id: UInt8, address: UInt32, gsiBase: UInt32)] = []
        var nmis: [(uid: UInt8, lint: UInt8)] = []
        var offset = 44
        while offset < madt.count {
            let type = madt.u8(offset), length = Int(madt.u8(offset + 1))
            try #require(length >= 2 && offset + length <= madt.count, "entry at \(offset) overruns the table")
            switch type {
            case 0:
                #expect(length == 8)
                localAPICs.append((madt.u8(offset + 2), madt.u8(offset + 3), madt.u32(offset + 4)))
            case 1:
                #expect(length == 12)
                ioapics.append((madt.u8(offset + 2), madt.u32(offset + 4), madt.u32(offset + 8)))
            case 4:
                #expect(length == 6)
                nmis.append((madt.u8(offset + 2), madt.u8(offset + 5)))
            default:
                Issue.record("unexpected MADT entry type \(type)")
            }
            offset += length
        }
        #expect(offset == madt.count)
        #expect(localAPICs.count == cpus)
        for (index, entry) in localAPICs.enumerated() {
            #expect(Int(entry.uid) == index && Int(entry.apicID) == index && entry.flags == 1)
        }
        #expect(ioapics.count == 1)
        #expect(ioapics.first.map { $0.id == 0 && $0.address == 0xFEC0_0000 && $0.gsiBase == 0 } == true)
        #expect(nmis.count == 1)
        #expect(nmis.first.map { $0.uid == 0xFF && $0.lint == 1 } == true)
    }

    @Test("DSDT names the devices it was asked for, and only those")
    func dsdtContents() throws {
        let dsdt = try #require(try AcpiTables(sampleConfiguration)["DSDT"]).bytes
        #expect(dsdt.contains(Array("LNRO0005".utf8)))
        #expect(dsdt.contains(Array("QEMU0001".utf8)))
        #expect(dsdt.contains(AML.EisaId("PNP0501").amlBytes))
        #expect(dsdt.contains(AML.EisaId("PNP0303").amlBytes))
        #expect(dsdt.contains([0x08, 0x5C] + Array("_S5_".utf8)))
        for index in 0..<4 { #expect(dsdt.contains(Array("V00\(index)".utf8))) }
        #expect(!dsdt.contains(Array("V004".utf8)))

        let bare = AcpiConfiguration(cpus: 1, serial: false, keyboardController: false, pvpanic: false)
        let small = try #require(try AcpiTables(bare)["DSDT"]).bytes
        #expect(!small.contains(Array("COM1".utf8)))
        #expect(!small.contains(Array("PS2_".utf8)))
        #expect(!small.contains(Array("QEMU0001".utf8)))
        #expect(small.contains(Array("_S5_".utf8)), "power-off works whatever else is configured")
    }

    @Test("the power-off byte is SLP_TYP 5 in bits 4:2 plus SLP_EN")
    func powerOffByte() {
        #expect(PlatformPorts.s5PowerOff == 0x34)
        #expect(PlatformPorts.pvpanicCapabilities == 0x03)
    }
}

@Suite("ACPI configuration limits")
struct LimitTests {
    @Test("vCPU counts outside 1...255 are refused", arguments: [0, -1, 256, 1000])
    func cpuCount(cpus: Int) {
        #expect(throws: AcpiError.cpuCount(cpus)) { try AcpiTables(AcpiConfiguration(cpus: cpus)) }
    }

    @Test("more virtio devices than free interrupt lines is an error, not a trap")
    func tooManyDevices() {
        let windows = (0..<40).map {
            VirtioMMIOWindow(base: GuestAddress(0xD000_0000 + 0x1000 * UInt64($0)), gsi: 5 + UInt32($0 % 19))
        }
        #expect(throws: AcpiError.tooManyVirtioDevices(count: 40, maximum: 19)) {
            try AcpiTables(AcpiConfiguration(cpus: 1, virtioMMIO: windows))
        }
        #expect(throws: Never.self) { try AcpiTables(AcpiConfiguration(cpus: 255, virtioMMIO: virtioWindows(19))) }
    }

    @Test("bad virtio windows are refused with the device's index")
    func badWindows() {
        func check(_ windows: [VirtioMMIOWindow], _ expected: AcpiError) {
            #expect(throws: expected) { try AcpiTables(AcpiConfiguration(cpus: 1, virtioMMIO: windows)) }
        }
        let good = virtioWindows(2)
        check([good[0], VirtioMMIOWindow(base: 0xD000_1000, gsi: 4)], .gsiOutOfRange(device: 1, gsi: 4))
        check([VirtioMMIOWindow(base: 0xD000_0000, gsi: 24)], .gsiOutOfRange(device: 0, gsi: 24))
        check([good[0], VirtioMMIOWindow(base: 0xD000_1000, gsi: 5)], .gsiInUse(device: 1, gsi: 5))
        check([good[0], VirtioMMIOWindow(base: 0xD000_0800, gsi: 6)], .windowsOverlap(device: 1, other: 0))
        check([VirtioMMIOWindow(base: 0xFFFF_F000, size: 0x2000, gsi: 5)],
              .windowAbove4GiB(device: 0, base: 0xFFFF_F000, size: 0x2000))
        check([VirtioMMIOWindow(base: 0xFFFF_FFFF_FFFF_F000, size: 0x2000, gsi: 5)],
              .windowAbove4GiB(device: 0, base: 0xFFFF_FFFF_FFFF_F000, size: 0x2000))
        check([VirtioMMIOWindow(base: 0xD000_0000, size: 0, gsi: 5)], .badWindowSize(device: 0, size: 0))
        // The last page below 4 GiB is fine.
        #expect(throws: Never.self) {
            try AcpiTables(AcpiConfiguration(cpus: 1, virtioMMIO: [VirtioMMIOWindow(base: 0xFFFF_F000, gsi: 5)]))
        }
    }

    @Test("tables that would run past the limit are refused")
    func doesNotFit() throws {
        let config = AcpiConfiguration(cpus: 255, virtioMMIO: virtioWindows(19))
        let full = try AcpiTables(config)
        let needed = full.end.offset(from: full.rsdpAddress)!
        // Exactly enough room fits; 16 bytes less does not.
        let tight = GuestAddress(AcpiLayout.limit.rawValue - needed).alignedDown(to: 16)
        #expect(throws: Never.self) { try AcpiTables(config, at: tight) }
        #expect(throws: AcpiError.doesNotFit(needed: needed, base: tight + 16, limit: AcpiLayout.limit)) {
            try AcpiTables(config, at: tight + 16)
        }
        #expect(throws: AcpiError.misalignedBase(0xE0008)) { try AcpiTables(config, at: 0xE0008) }
        // A base at the very top of the address space must not wrap around.
        #expect(throws: AcpiError.self) {
            try AcpiTables(config, at: 0xFFFF_FFFF_FFFF_FFF0, limit: 0xFFFF_FFFF_FFFF_FFFF)
        }
    }

    @Test("every error message is one line")
    func messages() {
        let errors: [AcpiError] = [
            .cpuCount(0), .tooManyVirtioDevices(count: 20, maximum: 19), .gsiOutOfRange(device: 0, gsi: 3),
            .gsiInUse(device: 1, gsi: 5), .badWindowSize(device: 0, size: 0),
            .windowAbove4GiB(device: 0, base: 0xFFFF_F000, size: 0x2000), .windowsOverlap(device: 1, other: 0),
            .misalignedBase(0xE0008), .doesNotFit(needed: 200_000, base: 0xE0000, limit: 0x10_0000),
            .memory(.outOfBounds(address: 0xE0000, length: 36)),
        ]
        for error in errors {
            #expect(!error.description.isEmpty && !error.description.contains("\n"))
        }
    }
}

@Suite("Writing the tables into guest memory")
struct GuestMemoryWriteTests {
    @Test("the tables land where the layout says, byte for byte")
    func roundTrip() throws {
        let memory = try GuestMemory(size: 2 << 20)
        // Garbage in the table area must not survive between the tables.
        try memory.write([UInt8](repeating: 0xAA, count: 0x20000), at: AcpiLayout.base)
        let rsdp = try ACPI.write(sampleConfiguration, into: memory)
        #expect(rsdp == GuestAddress(0xE0000))
        let tables = try AcpiTables(sampleConfiguration)
        for table in tables.tables {
            #expect(try memory.readBytes(at: table.address, count: table.bytes.count) == table.bytes)
        }
        let span = Int(tables.end.offset(from: tables.rsdpAddress)!)
        let written = try memory.readBytes(at: tables.rsdpAddress, count: span)
        #expect(written.filter { $0 == 0xAA }.count < 8, "gaps are zeroed")
    }

    @Test("memory that does not cover the table area gives a typed error")
    func tooLittleMemory() throws {
        let memory = try GuestMemory(size: 0xE0000) // ends exactly where the tables start
        let error = #expect(throws: AcpiError.self) {
            try ACPI.write(AcpiConfiguration(cpus: 1), into: memory)
        }
        guard case .memory(.outOfBounds(let address, _)) = error else {
            Issue.record("expected a guest-memory error, got \(String(describing: error))")
            return
        }
        #expect(address == AcpiLayout.base)
    }

    @Test("build() lists the tables by name")
    func build() throws {
        let named = try ACPI.build(sampleConfiguration)
        #expect(named.map(\.name) == ["RSDP", "XSDT", "FACP", "APIC", "DSDT"])
    }
}
