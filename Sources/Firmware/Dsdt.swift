// The Differentiated System Description Table: the AML that tells the guest which devices
// exist beyond what it can probe for itself.
//
// In ASL, the table we generate reads:
//
//     Scope (\_SB) {
//         Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, 0)
//                         Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 1, 8)
//                                                           Interrupt (..., Edge, ActiveHigh, ...) {4} }) }
//         Device (PS2_) { Name (_HID, EisaId ("PNP0303")) Method (_STA) { Return (0x0F) }
//                         Name (_CRS, ... IO 0x60, IO 0x64, Interrupt {1}) }
//         Device (PEVT) { Name (_HID, "QEMU0001") Method (_STA) { Return (0x0F) } Name (_CRS, ... IO 0x505) }
//         Device (V000) { Name (_HID, "LNRO0005") Name (_UID, 0) Name (_CCA, 1)
//                         Name (_CRS, ... Memory32Fixed (ReadWrite, base, 0x1000) Interrupt {gsi}) }
//         ...
//     }
//     Name (\_S5, Package () { 5, 0, 0, 0 })
//     OperationRegion (TTSR, SystemIO, 0x603, 1)
//     Field (TTSR, ByteAcc, NoLock, Preserve) { TTSV, 8 }
//     Method (\_TTS, 1) { TTSV = Arg0 }

enum DifferentiatedSystemDescriptionTable {
    /// DSDT revision 2 and up means 64-bit AML integers.
    static let revision: UInt8 = 2

    static func bytes(_ config: AcpiConfiguration) -> [UInt8] {
        SystemDescriptionTable(signature: "DSDT", revision: revision, body: aml(config)).bytes
    }

    /// The table's AML, without the header.
    static func aml(_ config: AcpiConfiguration) -> [UInt8] {
        var devices: [any AMLEncodable] = []
        if config.serial { devices.append(com1) }
        if config.keyboardController { devices.append(keyboardController) }
        if config.pvpanic { devices.append(pvpanic) }
        for (index, window) in config.virtioMMIO.enumerated() {
            devices.append(virtioMMIO(index: index, window: window))
        }
        return AML.encodeList([AML.Scope("\\_SB_", devices), softOff] + transitionToState)
    }

    /// `_STA` = 0x0F: present, enabled, shown in the UI, functioning.
    static let presentAndWorking = AML.Method("_STA", [AML.Return(0x0F)])

    /// COM1. Linux's 8250_pnp driver binds PNP0501 and takes the port and IRQ from `_CRS`;
    /// the serial core would find the UART at 0x3F8 anyway, but this way it is not a guess.
    static var com1: AML.Device {
        AML.Device("COM1", [
            AML.Name("_HID", AML.EisaId("PNP0501")),
            AML.Name("_UID", 0),
            AML.Name("_CRS", AML.ResourceTemplate([
                AML.IOPort(base: PlatformPorts.com1, length: PlatformPorts.com1Length),
                AML.Interrupt(edgeTriggered: true, gsi: PlatformInterrupts.com1),
            ])),
        ])
    }

    /// The i8042 keyboard controller (PNP0303). The i8042 driver's PNP probe takes the data
    /// port, the command port and the keyboard IRQ from here. We have no PS/2 mouse, so there
    /// is no PNP0F13 auxiliary device.
    static var keyboardController: AML.Device {
        AML.Device("PS2_", [
            AML.Name("_HID", AML.EisaId("PNP0303")),
            presentAndWorking,
            AML.Name("_CRS", AML.ResourceTemplate([
                AML.IOPort(base: PlatformPorts.i8042Data, length: 1),
                AML.IOPort(base: PlatformPorts.i8042Command, length: 1),
                AML.Interrupt(edgeTriggered: true, gsi: PlatformInterrupts.keyboard),
            ])),
        ])
    }

    /// QEMU's pvpanic device, so a panicking guest can tell us so instead of just stopping.
    ///
    /// Linux's pvpanic-mmio driver matches the ACPI id QEMU0001 and uses the first I/O or
    /// memory resource of `_CRS`; it needs nothing else. The explicit `_STA` is for older
    /// kernels (the pre-5.10 `drivers/misc/pvpanic.c` ACPI driver refused the device unless
    /// evaluating `_STA` succeeded with present/enabled/functioning set).
    static var pvpanic: AML.Device {
        AML.Device("PEVT", [
            AML.Name("_HID", "QEMU0001"),
            presentAndWorking,
            AML.Name("_CRS", AML.ResourceTemplate([
                AML.IOPort(base: PlatformPorts.pvpanic, length: 1),
            ])),
        ])
    }

    /// A virtio-mmio device: `_HID "LNRO0005"` is the id Linux's virtio_mmio driver (a module
    /// on Debian, autoloaded through its `acpi*:LNRO0005:*` alias) matches.
    ///
    /// The interrupt is declared **edge**-triggered because the VMM raises it through a plain
    /// irqfd, which pulses the IOAPIC pin rather than holding it; declared level-triggered, the
    /// IOAPIC would wait for an EOI-driven deassert that never comes unless we used a resample
    /// fd. Exclusive, because each device has its own line. `_CCA 1` says DMA is
    /// cache-coherent, which on x86 it always is.
    static func virtioMMIO(index: Int, window: VirtioMMIOWindow) -> AML.Device {
        AML.Device(AML.NameString(virtioDeviceName(index)), [
            AML.Name("_HID", "LNRO0005"),
            AML.Name("_UID", index),
            AML.Name("_CCA", 1),
            AML.Name("_CRS", AML.ResourceTemplate([
                // Validation guarantees base + size <= 4 GiB.
                AML.Memory32Fixed(writable: true, base: UInt32(window.base.rawValue),
                                  length: UInt32(window.size)),
                AML.Interrupt(edgeTriggered: true, gsi: window.gsi),
            ])),
        ])
    }

    /// "V000", "V001", ...: a letter and three decimal digits.
    static func virtioDeviceName(_ index: Int) -> String {
        precondition((0..<1000).contains(index))
        let digits = String(index)
        return "V" + String(repeating: "0", count: 3 - digits.count) + digits
    }

    /// `\_S5_`: the sleep type for soft-off. Linux only offers ACPI power-off when this object
    /// exists, and on a hardware-reduced platform it writes the first element, shifted into
    /// SLP_TYP, to the FADT sleep control register (see `PlatformPorts.s5PowerOff`). The second
    /// element is SLP_TYPb, unused without a PM1b block; older ACPICA insists on at least two
    /// elements, and the last two are reserved.
    static var softOff: AML.Name {
        AML.Name("\\_S5_", AML.Package([PlatformPorts.s5SleepType, 0, 0, 0]))
    }

    /// `\_TTS`: the OS calls it with the sleep state it is about to enter (5 on restart, halt
    /// and power-off, from Linux's reboot notifier), and ours writes that number to an I/O
    /// port, so the VMM knows the guest is going down on purpose (`PlatformPorts.transitionToState`).
    static var transitionToState: [any AMLEncodable] {
        [
            AML.SystemIORegion("\\TTSR", port: PlatformPorts.transitionToState, length: 1),
            AML.ByteField(in: "\\TTSR", "TTSV"),
            AML.Method("\\_TTS", argumentCount: 1, [AML.Store(AML.Argument(0), into: "\\TTSV")]),
        ]
    }
}
