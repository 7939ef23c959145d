import GuestMemory

// The fixed-layout tables: RSDP → XSDT → {FADT → DSDT, MADT}.
//
// Layouts follow ACPI 6.5 chapter 5. Every field is written explicitly, in order, so each
// builder reads like the table in the spec; the tests check lengths, checksums, and that
// `iasl` decodes every field without complaint.

/// The Root System Description Pointer (ACPI 6.5 §5.2.5.3), revision 2: 36 bytes.
///
/// It is not a normal table — no standard header — and carries two checksums: one over the
/// first 20 bytes (all an ACPI 1.0 reader knows about) and one over all 36.
enum RootPointer {
    static let size = 36

    static func bytes(xsdt: GuestAddress) -> [UInt8] {
        var rsdp: [UInt8] = []
        rsdp.appendASCII("RSD PTR ", width: 8)
        rsdp.append(0)                            // checksum of bytes 0..<20, patched below
        rsdp.appendASCII(AcpiIdentity.oemID, width: 6)
        rsdp.append(2)                            // revision: ACPI 2.0+, so the XSDT is used
        rsdp.appendLittleEndian(UInt32(0))        // 32-bit RSDT address: we have no RSDT
        rsdp.appendLittleEndian(UInt32(size))     // length
        rsdp.appendLittleEndian(xsdt.rawValue)    // XSDT address
        rsdp.append(0)                            // extended checksum, patched below
        rsdp.appendZeros(3)                       // reserved
        rsdp[8] = acpiChecksum(rsdp[0..<20])
        rsdp[32] = acpiChecksum(rsdp)
        return rsdp
    }
}

/// The Extended System Description Table: 64-bit pointers to every other table except the
/// DSDT (which the FADT points at).
enum ExtendedSystemDescriptionTable {
    static func size(entries: Int) -> Int { SystemDescriptionTable.headerSize + 8 * entries }

    static func bytes(pointingAt tables: [GuestAddress]) -> [UInt8] {
        var body: [UInt8] = []
        for address in tables { body.appendLittleEndian(address.rawValue) }
        return SystemDescriptionTable(signature: "XSDT", revision: 1, body: body).bytes
    }
}

/// The Fixed ACPI Description Table, revision 6.5: 276 bytes.
///
/// We declare a **hardware-reduced** ACPI platform (flag bit 20). A full ACPI PC has a fixed
/// register block (PM1 event/control, PM timer, GPEs) and an SCI interrupt the VMM would have
/// to emulate; hardware-reduced ACPI drops all of it and describes power-off through two
/// one-byte registers instead. Linux then also skips the legacy PIC and PIT
/// (`acpi_generic_reduced_hw_init`) and runs on the local APIC timer and kvm-clock, which is
/// what a VM wants anyway. Firecracker and cloud-hypervisor make the same choice.
enum FixedDescriptionTable {
    static let size = 276

    // FADT flags (ACPI 6.5 §5.2.9, Table 5.10).
    static let powerButtonIsControlMethod: UInt32 = 1 << 4 // "no fixed power button"
    static let sleepButtonIsControlMethod: UInt32 = 1 << 5 // "no fixed sleep button"
    static let resetRegisterSupported: UInt32 = 1 << 10
    static let hardwareReduced: UInt32 = 1 << 20

    // IA-PC boot architecture flags (ACPI 6.5 §5.2.9.3).
    static let has8042: UInt16 = 1 << 1
    static let vgaNotPresent: UInt16 = 1 << 2
    static let msiNotSupported: UInt16 = 1 << 3
    static let pcieASPMControls: UInt16 = 1 << 4
    static let cmosRTCNotPresent: UInt16 = 1 << 5

    static func bootArchitectureFlags(_ config: AcpiConfiguration) -> UInt16 {
        // No VGA, no MSI (nothing is on PCI yet; drop this flag when virtio-pci with MSI-X
        // arrives), and the OS must leave PCIe link power management alone.
        var flags = vgaNotPresent | msiNotSupported | pcieASPMControls
        // Linux believes this bit: without it, it marks the i8042 as absent.
        if config.keyboardController { flags |= has8042 }
        if !config.cmosRTC { flags |= cmosRTCNotPresent }
        return flags
    }

    static func bytes(dsdt: GuestAddress, _ config: AcpiConfiguration) -> [UInt8] {
        var body: [UInt8] = []
        body.appendLittleEndian(UInt32(0))      // 36 FIRMWARE_CTRL: no FACS (optional when HW-reduced)
        body.appendLittleEndian(UInt32(0))      // 40 DSDT: 32-bit pointer unused, X_DSDT below
        body.append(0)                          // 44 reserved
        body.append(0)                          // 45 preferred PM profile: unspecified
        // 46..<109: SCI_INT through CENTURY describe the fixed hardware a hardware-reduced
        // platform does not have; the spec says they are ignored, so they stay zero.
        body.appendZeros(109 - 46)
        body.appendLittleEndian(bootArchitectureFlags(config)) // 109 IAPC_BOOT_ARCH
        body.append(0)                          // 111 reserved
        let flags = hardwareReduced | powerButtonIsControlMethod | sleepButtonIsControlMethod
            | resetRegisterSupported
        body.appendLittleEndian(flags)          // 112 flags
        GenericAddress.ioPort(PlatformPorts.reset).encode(into: &body) // 116 RESET_REG
        body.append(PlatformPorts.resetValue)   // 128 RESET_VALUE
        body.appendLittleEndian(UInt16(0))      // 129 ARM_BOOT_ARCH
        body.append(5)                          // 131 FADT minor version: ACPI 6.5
        body.appendLittleEndian(UInt64(0))      // 132 X_FIRMWARE_CTRL
        body.appendLittleEndian(dsdt.rawValue)  // 140 X_DSDT
        // 148..<244: the eight extended fixed-hardware blocks (PM1a/b event and control,
        // PM2, PM timer, GPE0/1), all absent.
        for _ in 0..<8 { GenericAddress.none.encode(into: &body) }
        GenericAddress.ioPort(PlatformPorts.sleepControl).encode(into: &body) // 244 SLEEP_CONTROL_REG
        GenericAddress.ioPort(PlatformPorts.sleepStatus).encode(into: &body)  // 256 SLEEP_STATUS_REG
        body.appendASCII(AcpiIdentity.hypervisorVendorID, width: 8)          // 268 hypervisor vendor
        assert(SystemDescriptionTable.headerSize + body.count == size)
        return SystemDescriptionTable(signature: "FACP", revision: 6, body: body).bytes
    }
}

/// The Multiple APIC Description Table: which interrupt controllers exist.
///
/// This is the only way a Debian cloud kernel learns about a second CPU: it is built without
/// the MP-table parser (`CONFIG_X86_MPPARSE` is off), so without LAPIC entries here it boots
/// on one CPU whatever KVM was told.
enum MultipleAPICDescriptionTable {
    static let localAPICEntrySize = 8
    static let ioAPICEntrySize = 12
    static let localAPICNMIEntrySize = 6

    static func size(cpus: Int) -> Int {
        SystemDescriptionTable.headerSize + 8 + cpus * localAPICEntrySize + ioAPICEntrySize
            + localAPICNMIEntrySize
    }

    /// The IOAPIC's id. KVM's in-kernel IOAPIC resets its ID register to 0, so we say 0 too,
    /// as QEMU and Firecracker do. It may equal the BSP's APIC id: 64-bit Linux keeps IOAPIC
    /// ids in their own namespace (`io_apic_unique_id` only checks other IOAPICs), and the
    /// MP-table rule that they be distinct from CPU ids does not apply to the MADT.
    static let ioAPICID: UInt8 = 0

    static func bytes(_ config: AcpiConfiguration) -> [UInt8] {
        var body: [UInt8] = []
        body.appendLittleEndian(UInt32(PlatformAddresses.localAPIC.rawValue))
        // Flags: PCAT_COMPAT (bit 0, "dual 8259 PICs are present and must be masked before
        // using the APICs") stays clear, as in Firecracker. KVM does emulate the PICs, but on a
        // hardware-reduced platform Linux never drives them (`legacy_pic` becomes the null PIC)
        // and takes every interrupt through the IOAPIC, so as far as the guest is concerned
        // there are none.
        body.appendLittleEndian(UInt32(0))

        // One Processor Local APIC entry per vCPU, boot CPU first: ACPI processor UID and
        // APIC id are both the vCPU index, matching the ids the KVM layer gives its vCPUs.
        for cpu in 0..<config.cpus {
            body += [0, UInt8(localAPICEntrySize), UInt8(cpu), UInt8(cpu)]
            body.appendLittleEndian(UInt32(1)) // flags: enabled
        }

        // The IOAPIC: GSIs 0–23 start at its pin 0.
        body += [1, UInt8(ioAPICEntrySize), ioAPICID, 0]
        body.appendLittleEndian(UInt32(PlatformAddresses.ioapic.rawValue))
        body.appendLittleEndian(UInt32(0)) // global system interrupt base

        // Local APIC NMI: LINT1 of every processor (UID 0xFF) is wired to NMI, as on a PC.
        // Polarity/trigger 0 = "conforms to the bus".
        body += [4, UInt8(localAPICNMIEntrySize), 0xFF]
        body.appendLittleEndian(UInt16(0))
        body.append(1) // LINT1

        // No Interrupt Source Overrides: every ISA IRQ is the IOAPIC pin of the same number
        // (KVM's default routing), edge-triggered and active-high, which is exactly what the
        // MADT means when it says nothing.
        return SystemDescriptionTable(signature: "APIC", revision: 6, body: body).bytes
    }
}
