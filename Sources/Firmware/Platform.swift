import GuestMemory

// The fixed facts of our virtual platform: which port each small device sits on, which
// interrupt it raises, and the values the guest writes to ask for a power-off or a reset.
// The ACPI tables *describe* these devices; the Devices layer *implements* them. Both read the
// numbers from here, so the description and the hardware cannot drift apart.

/// I/O ports of the platform devices, and the values the guest writes to them.
public enum PlatformPorts {
    /// COM1, a 16550A UART: 8 registers at 0x3F8, interrupt 4. Bound by Linux's 8250_pnp
    /// through `_HID PNP0501`.
    public static let com1: UInt16 = 0x3F8
    public static let com1Length: UInt8 = 8

    /// The i8042 keyboard controller: data at 0x60, status/command at 0x64. Writing
    /// `i8042ResetCommand` to the command port pulses the CPU reset line (`reboot=k`).
    public static let i8042Data: UInt16 = 0x60
    public static let i8042Command: UInt16 = 0x64
    public static let i8042ResetCommand: UInt8 = 0xFE

    /// QEMU's pvpanic device (`_HID QEMU0001`), one byte at the port QEMU uses.
    ///
    /// Linux's pvpanic driver *reads* the port once at probe time and only ever reports the
    /// events whose bits come back set, so the device must answer reads with
    /// `pvpanicCapabilities`. On a panic the guest then writes `pvpanicPanicked` (or
    /// `pvpanicCrashLoaded` when a kdump kernel is standing by).
    public static let pvpanic: UInt16 = 0x505
    public static let pvpanicPanicked: UInt8 = 1 << 0
    public static let pvpanicCrashLoaded: UInt8 = 1 << 1
    public static let pvpanicCapabilities: UInt8 = pvpanicPanicked | pvpanicCrashLoaded

    /// The hardware-reduced ACPI sleep control register (FADT `SLEEP_CONTROL_REG`), 8 bits.
    ///
    /// To power off, Linux (ACPICA `acpi_hw_extended_sleep`) takes the first value of
    /// `\_S5_` as SLP_TYP, shifts it into bits 4:2 and sets SLP_EN (bit 5):
    /// `(5 << 2) & 0x1C | 0x20` = `s5PowerOff` = 0x34. Any write of that byte means
    /// "power off now". Reads return 0.
    public static let sleepControl: UInt16 = 0x600

    /// The sleep status register (FADT `SLEEP_STATUS_REG`), 8 bits. Just before writing the
    /// control register Linux writes `wakeStatus` here to clear WAK_STS; after it, it polls
    /// this register for WAK_STS, which a VMM that has stopped the guest never needs to set.
    /// Reads return 0, writes are ignored.
    public static let sleepStatus: UInt16 = 0x601

    /// The FADT reset register: writing `resetValue` here restarts the machine. Linux tries it
    /// first when rebooting (ACPI comes before the keyboard controller in its default order).
    public static let reset: UInt16 = 0x602
    public static let resetValue: UInt8 = 1

    /// The shutdown-announcement register: one byte the DSDT's `\_TTS` ("transition to
    /// state") method writes its argument to. Linux evaluates `\_TTS(5)` from a reboot notifier
    /// on every restart, halt and power-off, before it picks a way to do it; so once the guest
    /// has written `s5SleepType` here, a triple fault is the reset it chose (`reboot=t`), not a
    /// crash. Reads return 0.
    public static let transitionToState: UInt16 = 0x603

    /// The sleep type `\_S5_` declares for soft-off.
    public static let s5SleepType: UInt8 = 5
    /// SLP_EN in the sleep control register.
    public static let sleepEnable: UInt8 = 1 << 5
    /// WAK_STS in the sleep status register.
    public static let wakeStatus: UInt8 = 1 << 7
    /// The byte the guest writes to `sleepControl` to power off: 0x34.
    public static let s5PowerOff: UInt8 = (s5SleepType << 2) & 0x1C | sleepEnable

    /// The boot timer: a one-byte port with no driver and no ACPI description. Whatever a guest
    /// writes here (its /init, typically, as its first act) is timestamped by the VMM, so a
    /// boot can be measured from the moment lguest started to the moment the guest's userspace
    /// ran. The value written is reported with the time, so a guest can mark several points.
    public static let bootTimer: UInt16 = 0x440
}

/// Interrupt lines (GSIs, which are IOAPIC pins here) of the platform devices.
public enum PlatformInterrupts {
    /// The i8042's keyboard interrupt, ISA IRQ 1.
    public static let keyboard: UInt32 = 1
    /// COM1, ISA IRQ 4.
    public static let com1: UInt32 = 4
    /// The lines virtio-mmio devices may use: above the ISA devices we describe, up to the
    /// last pin of KVM's in-kernel IOAPIC (24 pins, GSI 0–23).
    public static let virtio: ClosedRange<UInt32> = 5...23
}

/// Guest-physical addresses of the interrupt controllers KVM's in-kernel irqchip emulates.
public enum PlatformAddresses {
    public static let ioapic: GuestAddress = 0xFEC0_0000
    public static let localAPIC: GuestAddress = 0xFEE0_0000
}

/// Where the ACPI tables go.
///
/// The RSDP must sit on a 16-byte boundary, and a guest that is not told where it is searches
/// [0xE0000, 0x100000) for it, so that is our table area. The boot layer reserves
/// [0x9FC00, 0x100000) in the e820 map, which keeps the guest from reusing the tables' memory.
public enum AcpiLayout {
    public static let base: GuestAddress = 0xE0000
    /// The tables end before the reset vector's code (`ResetVector`).
    public static let limit: GuestAddress = ResetVector.address
}
