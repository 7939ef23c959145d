import Devices
import Synchronization
import Testing

/// A byte sink that remembers what it was given.
final class RecordingSink: ByteSink {
    let bytes = Mutex<[UInt8]>([])
    func write(_ data: UnsafeRawBufferPointer) { bytes.withLock { $0 += data } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

final class Pulses: Sendable {
    let count = Atomic<Int>(0)
    func pulse() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

@Suite struct SerialTests {
    let sink = RecordingSink()
    let pulses = Pulses()
    let uart: Serial

    init() {
        let pulses = self.pulses
        uart = Serial(output: sink, interrupt: { pulses.pulse() })
    }

    func out(_ offset: UInt64, _ value: UInt8) { withUnsafeBytes(of: value) { uart.write(offset: offset, from: $0) } }
    func inb(_ offset: UInt64) -> UInt8 {
        var value: UInt8 = 0xFF
        withUnsafeMutableBytes(of: &value) { uart.read(offset: offset, into: $0) }
        return value
    }

    @Test func transmittedBytesReachTheHost() {
        for byte in "boot\r\n".utf8 { out(0, byte) }
        #expect(sink.text == "boot\r\n")
        #expect(inb(5) & 0x60 == 0x60) // always ready to send
    }

    @Test func transmitEmptyInterruptFiresAndIsAcknowledgedByReadingIIR() {
        out(1, 0x02) // IER: THRE
        #expect(pulses.value == 1)
        #expect(inb(2) & 0x0F == 0x02) // THRE pending
        #expect(inb(2) & 0x0F == 0x01) // acknowledged by that read
        out(0, UInt8(ascii: "x"))
        #expect(pulses.value == 2)
        #expect(inb(2) & 0x0F == 0x02)
    }

    @Test func receivedBytesAreReadInOrderWithDataReady() {
        out(1, 0x01) // IER: received data
        uart.enqueueInput(Array("hi".utf8))
        #expect(pulses.value == 1)
        #expect(inb(5) & 0x01 == 1)
        #expect(inb(2) & 0x0F == 0x04)
        #expect(inb(0) == UInt8(ascii: "h"))
        #expect(inb(0) == UInt8(ascii: "i"))
        #expect(inb(5) & 0x01 == 0)
        #expect(inb(2) & 0x0F == 0x01)
    }

    @Test func probeSeesA16550A() {
        out(7, 0x5A)
        #expect(inb(7) == 0x5A) // scratch register
        out(2, 0x01)            // FCR: enable FIFOs
        #expect(inb(2) & 0xC0 == 0xC0)
        out(4, 0x10 | 0x0A)     // loopback with RTS and OUT2
        #expect(inb(6) & 0xF0 == 0x90) // CTS and DCD
        out(3, 0x80)            // DLAB
        out(0, 0x01); out(1, 0x00)
        #expect(inb(0) == 0x01 && inb(1) == 0x00)
        out(3, 0x03)
    }

    @Test func loopbackSendsBytesBackInsteadOfToTheHost() {
        out(4, 0x10)
        out(0, 0x42)
        #expect(sink.text.isEmpty)
        #expect(inb(0) == 0x42)
    }
}

@Suite struct PlatformDeviceTests {
    @Test func keyboardControllerResetRequestsReboot() {
        let power = PowerControl()
        let i8042 = I8042(power: power)
        withUnsafeBytes(of: UInt8(0xAA)) { i8042.write(offset: 4, from: $0) }
        var status: UInt8 = 0, data: UInt8 = 0
        withUnsafeMutableBytes(of: &status) { i8042.read(offset: 4, into: $0) }
        withUnsafeMutableBytes(of: &data) { i8042.read(offset: 0, into: $0) }
        #expect(status & 1 == 1 && data == 0x55) // self-test passed
        #expect(power.stopReason == nil)
        withUnsafeBytes(of: UInt8(0xFE)) { i8042.write(offset: 4, from: $0) }
        #expect(power.stopReason == .reboot)
    }

    @Test func ctrlAltDeleteIsReadOneByteAnInterruptAtATime() {
        let interrupts = Mutex(0)
        let i8042 = I8042(power: PowerControl(), interrupt: { interrupts.withLock { $0 += 1 } })
        i8042.pressKeys(I8042.ctrlAltDelete)
        #expect(interrupts.withLock { $0 } == 1)
        var read: [UInt8] = []
        for _ in 0..<20 {
            var status: UInt8 = 0, data: UInt8 = 0
            withUnsafeMutableBytes(of: &status) { i8042.read(offset: 4, into: $0) }
            guard status & 1 == 1 else { break }
            withUnsafeMutableBytes(of: &data) { i8042.read(offset: 0, into: $0) }
            read.append(data)
        }
        #expect(read == I8042.ctrlAltDelete)
        // One interrupt for the first byte, then one for each read that left more behind.
        #expect(interrupts.withLock { $0 } == I8042.ctrlAltDelete.count)
    }

    @Test func keyboardCommandsAreAcknowledgedAndTheBufferIsBounded() {
        let i8042 = I8042(power: PowerControl())
        withUnsafeBytes(of: UInt8(0xED)) { i8042.write(offset: 0, from: $0) } // set LEDs
        var data: UInt8 = 0
        withUnsafeMutableBytes(of: &data) { i8042.read(offset: 0, into: $0) }
        #expect(data == 0xFA)
        for _ in 0..<1000 { withUnsafeBytes(of: UInt8(0xF2)) { i8042.write(offset: 0, from: $0) } }
        i8042.pressKeys([UInt8](repeating: 0x1D, count: 1000))
        var count = 0
        for _ in 0..<2000 {
            var status: UInt8 = 0
            withUnsafeMutableBytes(of: &status) { i8042.read(offset: 4, into: $0) }
            guard status & 1 == 1 else { break }
            withUnsafeMutableBytes(of: &data) { i8042.read(offset: 0, into: $0) }
            count += 1
        }
        #expect(count == I8042.outputLimit)
    }

    /// Real hardware has a one-byte output buffer; a guest repeating "read command byte" must
    /// not make lguest hold a byte per repetition.
    @Test func keyboardControllerOutputHoldsOneByte() {
        let i8042 = I8042(power: PowerControl())
        for _ in 0 ..< 10_000 { withUnsafeBytes(of: UInt8(0x20)) { i8042.write(offset: 4, from: $0) } }
        withUnsafeBytes(of: UInt8(0xAA)) { i8042.write(offset: 4, from: $0) } // the newest reply wins
        var status: UInt8 = 0, data: UInt8 = 0
        withUnsafeMutableBytes(of: &data) { i8042.read(offset: 0, into: $0) }
        withUnsafeMutableBytes(of: &status) { i8042.read(offset: 4, into: $0) }
        #expect(data == 0x55)
        #expect(status & 1 == 0, "more output after reading the only byte")
    }

    @Test func pvpanicReportsCapabilitiesAndPanics() {
        let power = PowerControl()
        let device = PanicDevice(power: power, capabilities: 0x03, panicked: 0x01)
        var capabilities: UInt8 = 0
        withUnsafeMutableBytes(of: &capabilities) { device.read(offset: 0, into: $0) }
        #expect(capabilities == 0x03)
        withUnsafeBytes(of: UInt8(2)) { device.write(offset: 0, from: $0) } // crash kernel loaded: not a stop
        #expect(power.stopReason == nil)
        withUnsafeBytes(of: UInt8(1)) { device.write(offset: 0, from: $0) }
        #expect(power.stopReason == .guestPanic)
    }

    @Test func firstStopReasonWins() {
        let power = PowerControl()
        power.requestStop(.powerOff)
        power.requestStop(.guestPanic)
        #expect(power.waitForStop() == .powerOff)
    }

    @Test func busRefusesOverlapsAndFillsUnclaimedReadsWithOnes() throws {
        #expect(throws: Bus.Error.self) {
            try Bus([Bus.window(0x3F8, 8, DebugPort()), Bus.window(0x3FF, 1, DebugPort())])
        }
        let bus = try Bus([Bus.window(0x80, 1, DebugPort())])
        var word: UInt32 = 0
        let claimed = withUnsafeMutableBytes(of: &word) { bus.read(0x1234, into: $0) }
        #expect(!claimed && word == 0xFFFF_FFFF)
        // An access that runs past the end of a window is not that window's.
        var pair: UInt16 = 0
        #expect(!withUnsafeMutableBytes(of: &pair) { bus.read(0x80, into: $0) })
    }
}
