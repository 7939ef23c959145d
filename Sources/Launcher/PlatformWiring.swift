import Devices
import Firmware

/// The platform devices on the I/O port bus, each at the port the ACPI tables describe
/// (`PlatformPorts`): the 16550 UART on COM1, the i8042, the POST port, the boot timer,
/// pvpanic, and the ACPI sleep, reset and `\_TTS` registers.
///
/// `Machine` wires its VM with this, and the platform fuzz harness wires its bus with it too,
/// so what is fuzzed is what the guest meets.
public enum PlatformWiring {
    public static func ports(serial: Serial, keyboard: I8042, power: PowerControl, bootTimer: BootTimer) throws(Bus.Error) -> Bus {
        try Bus([
            Bus.window(UInt64(PlatformPorts.com1), UInt64(PlatformPorts.com1Length), serial),
            Bus.window(UInt64(PlatformPorts.i8042Data), 5, keyboard),
            Bus.window(0x80, 1, DebugPort()),
            Bus.window(UInt64(PlatformPorts.bootTimer), 1, bootTimer),
            Bus.window(UInt64(PlatformPorts.pvpanic), 1, PanicDevice(
                power: power, capabilities: PlatformPorts.pvpanicCapabilities, panicked: PlatformPorts.pvpanicPanicked)),
            Bus.window(UInt64(PlatformPorts.sleepControl), 4, ACPIPowerDevice(
                power: power,
                sleepControlOffset: 0,
                sleepStatusOffset: UInt64(PlatformPorts.sleepStatus - PlatformPorts.sleepControl),
                resetOffset: UInt64(PlatformPorts.reset - PlatformPorts.sleepControl),
                transitionOffset: UInt64(PlatformPorts.transitionToState - PlatformPorts.sleepControl),
                powerOffValue: PlatformPorts.s5PowerOff, resetValue: PlatformPorts.resetValue,
                softOffState: PlatformPorts.s5SleepType)),
        ])
    }
}
