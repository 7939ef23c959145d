import Synchronization

/// Port 0x80, the POST diagnostic port. Linux writes to it as a tiny delay between slow I/O
/// accesses; it has no effect and must cost nothing.
public final class DebugPort: BusDevice {
    public init() {}
    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {}
    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {}
}

/// The ACPI hardware-reduced sleep and reset registers the FADT points at, and the byte the
/// DSDT's `\_TTS` writes.
///
/// Linux powers off by writing `SLP_TYP << 2 | SLP_EN` to the sleep control register, with
/// SLP_TYP taken from the DSDT's `\_S5_` package; it resets by writing the FADT's reset value
/// to the reset register. Before either (and before a halt) it evaluates `\_TTS(5)`, which
/// writes 5 to the transition register: the guest has announced that it is going down.
public final class ACPIPowerDevice: BusDevice {
    /// Offsets within the device's window.
    public let sleepControlOffset: UInt64
    public let sleepStatusOffset: UInt64
    public let resetOffset: UInt64
    public let transitionOffset: UInt64
    public let powerOffValue: UInt8
    public let resetValue: UInt8
    /// The sleep state whose announcement through `\_TTS` means "going down" (S5).
    public let softOffState: UInt8
    private let power: PowerControl

    public init(power: PowerControl, sleepControlOffset: UInt64, sleepStatusOffset: UInt64,
                resetOffset: UInt64, transitionOffset: UInt64, powerOffValue: UInt8,
                resetValue: UInt8, softOffState: UInt8) {
        self.power = power
        self.transitionOffset = transitionOffset
        self.softOffState = softOffState
        self.sleepControlOffset = sleepControlOffset
        self.sleepStatusOffset = sleepStatusOffset
        self.resetOffset = resetOffset
        self.powerOffValue = powerOffValue
        self.resetValue = resetValue
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        // Sleep status reads as "not waking"; nothing else is readable.
        for i in data.indices { data[i] = 0 }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        switch offset {
        case sleepControlOffset where value == powerOffValue: power.requestStop(.powerOff)
        case resetOffset where value == resetValue: power.requestStop(.reboot)
        case transitionOffset where value == softOffState: power.noteShutdownAnnounced()
        default: break
        }
    }
}

/// The pvpanic device (ACPI `QEMU0001`): a one-byte port. Reading it tells the guest which
/// events we understand; the guest's panic notifier writes bit 0 when the kernel panics.
public final class PanicDevice: BusDevice {
    /// The events the device reports it understands (read back by the guest at probe time).
    let capabilities: UInt8
    /// The bit the guest writes when its kernel panics.
    let panicked: UInt8
    private let power: PowerControl

    /// `capabilities` and `panicked` come from the platform's definition (the ACPI tables
    /// describe the same device); a crash kernel being loaded is not a reason to stop.
    public init(power: PowerControl, capabilities: UInt8, panicked: UInt8) {
        self.power = power
        self.capabilities = capabilities
        self.panicked = panicked
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        for i in data.indices { data[i] = 0 }
        if !data.isEmpty { data[0] = capabilities }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        if let value = data.first, value & panicked != 0 { power.requestStop(.guestPanic) }
    }
}

/// Just enough of the i8042 keyboard controller (ports 0x60 and 0x64) for Linux to probe it
/// and to reboot through it: command 0xFE on port 0x64 pulses the CPU reset line, which is how
/// `reboot=k` restarts a PC.
public final class I8042: BusDevice {
    struct State {
        /// The output buffer. A controller reply replaces whatever the guest has not read (one
        /// byte, as on real hardware, so a guest repeating a command cannot make lguest hold
        /// more); keys and the keyboard's acknowledgements queue behind each other, up to
        /// `outputLimit` bytes (a keyboard's own buffer).
        var output: [UInt8] = []
        var commandByte: UInt8 = 0x45   // keyboard interrupt on, translation on, system flag
        var pendingCommand: UInt8?      // a command waiting for its data byte on port 0x60
    }
    let state = Mutex(State())
    private let power: PowerControl
    /// Raises the keyboard's interrupt line (ISA IRQ 1).
    private let interrupt: @Sendable () -> Void

    /// The window covers ports 0x60..0x64; offsets 0 (data) and 4 (status/command) matter.
    public static let dataOffset: UInt64 = 0
    public static let commandOffset: UInt64 = 4

    /// The most bytes the output buffer holds; more are dropped (a real controller holds one).
    public static let outputLimit = 16

    /// Ctrl, Alt and Delete pressed, then released, in scan code set 1 (what the guest reads
    /// with translation on): Linux's keyboard driver hands the combination to init.
    public static let ctrlAltDelete: [UInt8] = [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D]

    public init(power: PowerControl, interrupt: @escaping @Sendable () -> Void = {}) {
        self.power = power
        self.interrupt = interrupt
    }

    /// Puts `scancodes` in the output buffer as keys pressed on the keyboard, and interrupts the
    /// guest if its command byte lets the keyboard interrupt. The guest reads one byte per
    /// interrupt; each read that leaves more behind interrupts again.
    public func pressKeys(_ scancodes: [UInt8]) {
        let raise = state.withLock { s -> Bool in
            s.output.append(contentsOf: scancodes.prefix(max(0, Self.outputLimit - s.output.count)))
            return s.commandByte & 0x01 != 0
        }
        if raise { interrupt() }
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard !data.isEmpty else { return }
        for i in data.indices { data[i] = 0 }
        var more = false
        defer { if more { interrupt() } }
        state.withLock { s in
            switch offset {
            case Self.dataOffset:
                data[0] = s.output.isEmpty ? 0 : s.output.removeFirst()
                if !s.output.isEmpty, s.commandByte & 0x01 != 0 { more = true }
            case Self.commandOffset:
                // Status: bit 0 output buffer full, bit 2 system flag (self-test passed).
                data[0] = (s.output.isEmpty ? 0 : 0x01) | 0x04
            default:
                break
            }
        }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        var reset = false
        var acknowledged = false
        defer { if acknowledged { interrupt() } }
        state.withLock { s in
            switch offset {
            case Self.commandOffset:
                switch value {
                case 0x20: s.output = [s.commandByte]          // read command byte
                case 0x60, 0xD1, 0xD2, 0xD3, 0xD4: s.pendingCommand = value // data byte follows
                case 0xAA: s.output = [0x55]                  // controller self-test: passed
                case 0xAB: s.output = [0x00]                  // keyboard interface test: passed
                case 0xA9: s.output = [0xFF]                  // aux interface test: no aux port
                case 0xFE: reset = true                            // pulse the reset line
                default: break                                     // enable/disable: nothing to do
                }
            case Self.dataOffset:
                if let command = s.pendingCommand {
                    if command == 0x60 { s.commandByte = value }
                    s.pendingCommand = nil
                } else if s.output.count < Self.outputLimit {
                    // A command for the keyboard itself (LEDs, typematic rate, identify...):
                    // acknowledge it, as a keyboard that has nothing more to say would, so
                    // that Linux's driver finds a keyboard to hand Ctrl-Alt-Delete to.
                    s.output.append(0xFA)
                    acknowledged = s.commandByte & 0x01 != 0
                }
            default:
                break
            }
        }
        if reset { power.requestStop(.reboot) }
    }
}
