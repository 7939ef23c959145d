import Synchronization

/// Where a UART's transmitted bytes go (the terminal, a log file, a test's buffer).
public protocol ByteSink: Sendable {
    func write(_ bytes: UnsafeRawBufferPointer)
}

/// A 16550A UART, the PC's COM1: the first console a Linux guest has, long before any module loads.
///
/// Linux's 8250 driver probes the chip (scratch register, FIFO bits, loopback), then sends a
/// byte and waits for the "transmit holding register empty" interrupt before sending the next.
/// A UART that never raises that interrupt makes the console crawl along on a fallback timer,
/// so THRE is modelled properly: writing a byte with THRE interrupts enabled raises IRQ 4 at once
/// (the byte has "gone" the moment we hand it to the host), and reading IIR acknowledges it.
public final class Serial: BusDevice {
    // Register offsets (from the base port) and bits, named as in the 16550 data sheet.
    enum Register {
        static let data: UInt64 = 0            // RBR (read) / THR (write); DLL when DLAB
        static let interruptEnable: UInt64 = 1 // IER; DLM when DLAB
        static let interruptId: UInt64 = 2     // IIR (read) / FCR (write)
        static let lineControl: UInt64 = 3     // LCR
        static let modemControl: UInt64 = 4    // MCR
        static let lineStatus: UInt64 = 5      // LSR
        static let modemStatus: UInt64 = 6     // MSR
        static let scratch: UInt64 = 7         // SCR
    }
    static let ierReceivedData: UInt8 = 0x01
    static let ierTransmitEmpty: UInt8 = 0x02
    static let iirNone: UInt8 = 0x01
    static let iirTransmitEmpty: UInt8 = 0x02
    static let iirReceivedData: UInt8 = 0x04
    static let iirFIFOEnabled: UInt8 = 0xC0
    static let lcrDivisorLatch: UInt8 = 0x80
    static let mcrLoopback: UInt8 = 0x10
    static let lsrDataReady: UInt8 = 0x01
    static let lsrTransmitIdle: UInt8 = 0x60 // THR empty | transmitter empty: always, for us
    static let fifoSize = 64
    /// Host input beyond this many bytes, while the guest is not reading, is dropped.
    static let inputLimit = 64 * 1024

    struct State {
        var interruptEnable: UInt8 = 0
        var lineControl: UInt8 = 0x03
        var modemControl: UInt8 = 0x08
        var scratch: UInt8 = 0
        var divisor: UInt16 = 0x0C
        var fifoEnabled = false
        var transmitEmptyPending = false
        var input: [UInt8] = []
        var inputStart = 0
        var statistics = UartStatistics()
        var inputCount: Int { input.count - inputStart }

        var interruptPending: Bool {
            (interruptEnable & Serial.ierReceivedData != 0 && inputCount > 0) ||
            (interruptEnable & Serial.ierTransmitEmpty != 0 && transmitEmptyPending)
        }

        mutating func popInput() -> UInt8 {
            guard inputCount > 0 else { return 0 }
            let byte = input[inputStart]
            inputStart += 1
            if inputStart == input.count { input.removeAll(keepingCapacity: true); inputStart = 0 }
            return byte
        }
    }

    let state = Mutex(State())
    private let output: any ByteSink
    private let interrupt: @Sendable () -> Void

    /// What the UART has carried, for metrics.
    public var statistics: UartStatistics { state.withLock { $0.statistics } }

    /// `interrupt` raises the UART's line (IRQ 4 for COM1) as an edge.
    public init(output: any ByteSink, interrupt: @escaping @Sendable () -> Void) {
        self.output = output
        self.interrupt = interrupt
    }

    /// Queues bytes typed on the host for the guest to read, and interrupts it if it asked.
    public func enqueueInput(_ bytes: some Sequence<UInt8>) {
        // Every batch of input gets its own edge: an edge lost while another reason was pending
        // would leave the guest never reading. A spare one costs the guest one IIR read.
        let raise = state.withLock { s -> Bool in
            for byte in bytes {
                if s.inputCount < Self.inputLimit { s.input.append(byte) } else { s.statistics.droppedInput += 1 }
            }
            return s.interruptEnable & Self.ierReceivedData != 0 && s.inputCount > 0
        }
        if raise { interrupt() }
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard !data.isEmpty else { return }
        let (value, raise) = state.withLock { s -> (UInt8, Bool) in
            let dlab = s.lineControl & Self.lcrDivisorLatch != 0
            switch offset {
            case Register.data where dlab:
                return (UInt8(truncatingIfNeeded: s.divisor), false)
            case Register.data:
                if s.inputCount > 0 { s.statistics.received += 1 }
                let byte = s.popInput()
                // More input waiting: the guest's handler reads in a loop while LSR says data ready.
                return (byte, false)
            case Register.interruptEnable where dlab:
                return (UInt8(truncatingIfNeeded: s.divisor >> 8), false)
            case Register.interruptEnable:
                return (s.interruptEnable, false)
            case Register.interruptId:
                let fifo = s.fifoEnabled ? Self.iirFIFOEnabled : 0
                if s.interruptEnable & Self.ierReceivedData != 0, s.inputCount > 0 {
                    return (Self.iirReceivedData | fifo, false)
                }
                if s.interruptEnable & Self.ierTransmitEmpty != 0, s.transmitEmptyPending {
                    s.transmitEmptyPending = false // reading IIR acknowledges THRE
                    return (Self.iirTransmitEmpty | fifo, false)
                }
                return (Self.iirNone | fifo, false)
            case Register.lineControl:
                return (s.lineControl, false)
            case Register.modemControl:
                return (s.modemControl, false)
            case Register.lineStatus:
                return (Self.lsrTransmitIdle | (s.inputCount > 0 ? Self.lsrDataReady : 0), false)
            case Register.modemStatus:
                if s.modemControl & Self.mcrLoopback != 0 {
                    // Loopback wires the modem outputs back to the inputs: DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
                    let m = s.modemControl
                    return (((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4), false)
                }
                return (0xB0, false) // carrier detect, data set ready, clear to send
            case Register.scratch:
                return (s.scratch, false)
            default:
                return (0, false)
            }
        }
        data[0] = value
        if raise { interrupt() }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        var transmit: UInt8?
        let raise = state.withLock { s -> Bool in
            let wasPending = s.interruptPending
            let dlab = s.lineControl & Self.lcrDivisorLatch != 0
            switch offset {
            case Register.data where dlab:
                s.divisor = (s.divisor & 0xFF00) | UInt16(value)
            case Register.data:
                if s.modemControl & Self.mcrLoopback != 0 {
                    if s.inputCount < Self.fifoSize { s.input.append(value) }
                } else {
                    transmit = value
                    s.statistics.transmitted += 1
                }
                s.transmitEmptyPending = true
            case Register.interruptEnable where dlab:
                s.divisor = (s.divisor & 0x00FF) | (UInt16(value) << 8)
            case Register.interruptEnable:
                let enablingTransmit = value & Self.ierTransmitEmpty != 0 && s.interruptEnable & Self.ierTransmitEmpty == 0
                s.interruptEnable = value & 0x0F
                // The holding register is always empty here, so enabling THRE interrupts fires one.
                if enablingTransmit { s.transmitEmptyPending = true }
            case Register.interruptId: // FCR
                s.fifoEnabled = value & 0x01 != 0
                if value & 0x02 != 0 { s.input.removeAll(); s.inputStart = 0 }
            case Register.lineControl:
                s.lineControl = value
            case Register.modemControl:
                s.modemControl = value & 0x1F
            case Register.scratch:
                s.scratch = value
            default:
                break
            }
            // An edge for each new reason to interrupt; THRE re-arms on every transmitted byte.
            return s.interruptPending && (!wasPending || offset == Register.data)
        }
        if let transmit {
            withUnsafeBytes(of: transmit) { output.write($0) }
        }
        if raise { interrupt() }
    }
}

/// What a UART has carried since it was created.
public struct UartStatistics: Sendable, Equatable {
    /// Bytes the guest transmitted (to the host's console).
    public var transmitted: UInt64 = 0
    /// Bytes the guest read from the receive buffer.
    public var received: UInt64 = 0
    /// Bytes typed on the host that did not fit while the guest was not reading.
    public var droppedInput: UInt64 = 0
}
