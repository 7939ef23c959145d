@testable import Devices
import GuestMemory
import Snapshot
import Synchronization
import Testing
import Virtio
import VirtioTesting

/// Each device's state saved and restored into a new device: the guest reads back what it
/// programmed and finds what was waiting for it, as if nothing had happened.
@Suite struct DeviceSnapshotTests {
    // MARK: - The UART

    static func out(_ uart: Serial, _ offset: UInt64, _ value: UInt8) {
        withUnsafeBytes(of: value) { uart.write(offset: offset, from: $0) }
    }

    static func inb(_ uart: Serial, _ offset: UInt64) -> UInt8 {
        var value: UInt8 = 0xEE
        withUnsafeMutableBytes(of: &value) { uart.read(offset: offset, into: $0) }
        return value
    }

    /// What a driver reads from the UART, in an order that also drains its input and its
    /// pending transmit-empty interrupt: IER, LCR, MCR, SCR, LSR, the divisor through DLAB,
    /// then IIR and data until both are quiet.
    static func observe(_ uart: Serial) -> [UInt8] {
        var seen = [inb(uart, 1), inb(uart, 3), inb(uart, 4), inb(uart, 7), inb(uart, 5), inb(uart, 6)]
        let lcr = inb(uart, 3)
        out(uart, 3, lcr | 0x80)
        seen += [inb(uart, 0), inb(uart, 1)]
        out(uart, 3, lcr)
        for _ in 0 ..< 40 {
            let iir = inb(uart, 2)
            seen.append(iir)
            if iir & 0x0F == 0x04 { seen.append(inb(uart, 0)) } else if iir & 0x01 == 1 { break }
        }
        return seen
    }

    /// A UART the way Linux leaves it: 115200/12 = 9600 baud (divisor 12, here 0x0102), 8N1 with
    /// break off, FIFO on, both interrupts enabled, OUT2|RTS|DTR, a scratch value; then typed
    /// input, partly read.
    static func programmedUART() -> Serial {
        let uart = Serial(output: Discard(), interrupt: {})
        out(uart, 3, 0x80)         // DLAB
        out(uart, 0, 0x02)         // DLL
        out(uart, 1, 0x01)         // DLM
        out(uart, 3, 0x03)         // 8N1
        out(uart, 2, 0x07)         // FIFO on, both cleared
        out(uart, 4, 0x0B)         // OUT2 | RTS | DTR
        out(uart, 7, 0x5A)
        out(uart, 1, 0x03)         // receive and transmit-empty interrupts
        uart.enqueueInput(Array("hello\r".utf8))
        #expect(inb(uart, 0) == UInt8(ascii: "h"))
        return uart
    }

    final class Discard: ByteSink {
        func write(_ data: UnsafeRawBufferPointer) {}
    }

    @Test("the UART's registers, its pending input and its owed interrupt come back")
    func serialRoundTrip() throws {
        let original = Self.programmedUART()
        var w = StateWriter()
        original.saveState(to: &w)

        let restored = Serial(output: Discard(), interrupt: {})
        var r = StateReader(w.bytes)
        try restored.restoreState(from: &r)
        #expect(r.isAtEnd)

        let seen = Self.observe(restored)
        #expect(seen == Self.observe(original))
        // IER, LCR, MCR, SCR; LSR says data ready; MSR; the divisor.
        #expect(Array(seen.prefix(8)) == [0x03, 0x03, 0x0B, 0x5A, 0x61, 0xB0, 0x02, 0x01])
        // The input the guest had not read, with received-data interrupts, FIFO bits set; then
        // the transmit-empty interrupt still owed; then nothing.
        var expected: [UInt8] = []
        for byte in "ello\r".utf8 { expected += [0xC4, byte] }
        expected += [0xC2, 0xC1]
        #expect(Array(seen.dropFirst(8)) == expected)
        // The restored UART's statistics are its own, not the saved one's.
        #expect(restored.statistics.received == 5)
    }

    @Test("a UART saved with its divisor latch open comes back with it open")
    func serialWithDLAB() throws {
        let uart = Serial(output: Discard(), interrupt: {})
        Self.out(uart, 3, 0x83)
        Self.out(uart, 0, 0x30)
        var w = StateWriter()
        uart.saveState(to: &w)
        let restored = Serial(output: Discard(), interrupt: {})
        var r = StateReader(w.bytes)
        try restored.restoreState(from: &r)
        #expect(Self.inb(restored, 3) == 0x83)
        #expect(Self.inb(restored, 0) == 0x30 && Self.inb(restored, 1) == 0x00)
    }

    @Test("a UART state that is cut short, has a bad yes/no, or more input than a UART holds is refused")
    func serialRefusals() throws {
        var w = StateWriter()
        Self.programmedUART().saveState(to: &w)
        for length in 0 ..< w.bytes.count {
            var r = StateReader(Array(w.bytes.prefix(length)))
            #expect(throws: SnapshotError.self) { try Serial(output: Discard(), interrupt: {}).restoreState(from: &r) }
        }
        var badBool = w.bytes
        badBool[6] = 2 // fifoEnabled, after four registers and the divisor
        var r = StateReader(badBool)
        #expect(throws: SnapshotError.self) { try Serial(output: Discard(), interrupt: {}).restoreState(from: &r) }

        var tooMuch = StateWriter()
        for _ in 0 ..< 4 { tooMuch.u8(0) }
        tooMuch.u16(12)
        tooMuch.bool(false)
        tooMuch.bool(false)
        tooMuch.data([UInt8](repeating: 0x41, count: 64 * 1024 + 1))
        var big = StateReader(tooMuch.bytes)
        let uart = Serial(output: Discard(), interrupt: {})
        #expect(throws: SnapshotError.self) { try uart.restoreState(from: &big) }
        // Refused, the UART is as it was: nothing to read.
        #expect(Self.inb(uart, 5) & 0x01 == 0)
    }

    @Test("a UART state with register bits no UART holds is refused")
    func serialImpossibleRegisters() throws {
        var w = StateWriter()
        Self.programmedUART().saveState(to: &w)
        // IER is byte 0, MCR byte 2: a guest's writes keep IER to its low four bits, MCR to five.
        for (index, value): (Int, UInt8) in [(0, 0x10), (0, 0xFF), (2, 0x20), (2, 0xFF)] {
            var state = w.bytes
            state[index] = value
            var r = StateReader(state)
            let uart = Serial(output: Discard(), interrupt: {})
            #expect(throws: SnapshotError.self, "byte \(index) = 0x\(String(value, radix: 16))") { try uart.restoreState(from: &r) }
            #expect(Self.inb(uart, 1) == 0 && Self.inb(uart, 5) & 0x01 == 0)
        }
    }

    // MARK: - The i8042 and the power controller

    static func write(_ i8042: I8042, _ offset: UInt64, _ value: UInt8) {
        withUnsafeBytes(of: value) { i8042.write(offset: offset, from: $0) }
    }

    static func read(_ i8042: I8042, _ offset: UInt64) -> UInt8 {
        var value: UInt8 = 0xEE
        withUnsafeMutableBytes(of: &value) { i8042.read(offset: offset, into: $0) }
        return value
    }

    /// Status and data until the output buffer is empty; then a data byte (taken by a
    /// half-written command, or acknowledged by the keyboard), and the command byte read back.
    static func observe(_ i8042: I8042) -> [UInt8] {
        var seen: [UInt8] = []
        for _ in 0 ..< 20 {
            let status = read(i8042, I8042.commandOffset)
            seen.append(status)
            guard status & 1 == 1 else { break }
            seen.append(read(i8042, I8042.dataOffset))
        }
        write(i8042, I8042.dataOffset, 0x00)
        seen.append(read(i8042, I8042.commandOffset))
        write(i8042, I8042.commandOffset, 0x20)
        seen.append(read(i8042, I8042.dataOffset))
        return seen
    }

    @Test("the i8042's output buffer, command byte and half-written command come back")
    func i8042RoundTrip() throws {
        let power = PowerControl()
        let original = I8042(power: power)
        Self.write(original, I8042.commandOffset, 0x60)   // write command byte...
        Self.write(original, I8042.dataOffset, 0x47)      // ...0x47
        original.pressKeys([0x1E, 0x9E, 0x30])
        Self.write(original, I8042.commandOffset, 0xD1)   // a command whose data byte is still to come
        power.noteShutdownAnnounced()
        var w = StateWriter()
        original.saveState(to: &w)
        power.saveState(to: &w)

        let newPower = PowerControl()
        let interrupts = Mutex(0)
        let restored = I8042(power: newPower, interrupt: { interrupts.withLock { $0 += 1 } })
        var r = StateReader(w.bytes)
        try restored.restoreState(from: &r)
        try newPower.restoreState(from: &r)
        #expect(r.isAtEnd)
        #expect(newPower.shutdownAnnounced)

        let seen = Self.observe(restored)
        #expect(seen == Self.observe(original))
        // Three keys waiting; the data byte went to the pending command (no 0xFA); 0x47.
        #expect(seen == [0x05, 0x1E, 0x05, 0x9E, 0x05, 0x30, 0x04, 0x04, 0x47])
        // The restored controller interrupts through its own line, with the restored command byte.
        #expect(interrupts.withLock { $0 } == 2)
    }

    @Test("a power controller saved without an announced shutdown stays without one")
    func powerWithoutAnnouncement() throws {
        var w = StateWriter()
        PowerControl().saveState(to: &w)
        let power = PowerControl()
        var r = StateReader(w.bytes)
        try power.restoreState(from: &r)
        #expect(!power.shutdownAnnounced)
        #expect(w.bytes == [0])
    }

    @Test("an i8042 state with more output than a keyboard holds, or cut short, is refused")
    func i8042Refusals() {
        var w = StateWriter()
        w.data([UInt8](repeating: 0x1E, count: I8042.outputLimit + 1))
        w.u8(0x45); w.bool(false); w.u8(0)
        var r = StateReader(w.bytes)
        #expect(throws: SnapshotError.self) { try I8042(power: PowerControl()).restoreState(from: &r) }
        var good = StateWriter()
        I8042(power: PowerControl()).saveState(to: &good)
        for length in 0 ..< good.bytes.count {
            var cut = StateReader(Array(good.bytes.prefix(length)))
            #expect(throws: SnapshotError.self) { try I8042(power: PowerControl()).restoreState(from: &cut) }
        }
        // Only a command that takes a data byte can be waiting for one.
        for command: UInt8 in [0x00, 0x20, 0xAA, 0xFE] {
            var w = StateWriter()
            w.data([]); w.u8(0x45); w.bool(true); w.u8(command)
            var r = StateReader(w.bytes)
            let i8042 = I8042(power: PowerControl())
            #expect(throws: SnapshotError.self, "command 0x\(String(command, radix: 16))") { try i8042.restoreState(from: &r) }
        }
        for command: UInt8 in [0x60, 0xD1, 0xD4] {
            var w = StateWriter()
            w.data([]); w.u8(0x45); w.bool(true); w.u8(command)
            var r = StateReader(w.bytes)
            #expect(throws: Never.self) { try I8042(power: PowerControl()).restoreState(from: &r) }
        }
    }

    // MARK: - The balloon

    @Test("the balloon's target, actual size and statistics interval come back")
    func balloonDeviceRoundTrip() throws {
        let device = BalloonDevice(configuration: BalloonConfiguration(amountMiB: 16, statisticsIntervalSeconds: 5))
        device.setTarget(pages: 1234)
        device.writeConfig(offset: 4, bytes: [77, 1, 0, 0])
        try device.setStatisticsInterval(seconds: 10)
        var w = StateWriter()
        device.saveState(to: &w)

        // A new device built from the configuration, which knows nothing of what happened since.
        let restored = BalloonDevice(configuration: BalloonConfiguration(amountMiB: 16, statisticsIntervalSeconds: 5))
        var r = StateReader(w.bytes)
        try restored.restoreState(from: &r)
        #expect(r.isAtEnd)
        #expect(restored.status.targetPages == 1234)
        #expect(restored.status.actualPages == 77 + 256)
        #expect(restored.status.statisticsIntervalSeconds == 10)
        #expect(restored.configSpace == device.configSpace)

        var cut = StateReader(Array(w.bytes.dropLast()))
        #expect(throws: SnapshotError.self) { try BalloonDevice(configuration: BalloonConfiguration(amountMiB: 1)).restoreState(from: &cut) }
    }

    @Test("a balloon state turns statistics neither on nor off: the device's queues say which")
    func balloonStatisticsStayAsMade() throws {
        func state(interval: UInt16) -> [UInt8] {
            var w = StateWriter()
            w.u32(100); w.u32(50); w.u16(interval)
            return w.bytes
        }
        let withStatistics = BalloonDevice(configuration: BalloonConfiguration(amountMiB: 1, statisticsIntervalSeconds: 1))
        var off = StateReader(state(interval: 0))
        #expect(throws: SnapshotError.self) { try withStatistics.restoreState(from: &off) }
        #expect(withStatistics.status.statisticsIntervalSeconds == 1 && withStatistics.status.actualPages == 0)
        var on = StateReader(state(interval: 30))
        try withStatistics.restoreState(from: &on)
        #expect(withStatistics.status.statisticsIntervalSeconds == 30)

        let without = BalloonDevice(configuration: BalloonConfiguration(amountMiB: 1))
        var some = StateReader(state(interval: 5))
        #expect(throws: SnapshotError.self) { try without.restoreState(from: &some) }
        var none = StateReader(state(interval: 0))
        try without.restoreState(from: &none)
        #expect(without.status.targetPages == 100 && without.status.actualPages == 50)
    }

    @Test("a balloon behind its transport comes back active, with its configuration space as the driver left it")
    func balloonTransportRoundTrip() throws {
        let rig = try BalloonRig(BalloonConfiguration(amountMiB: 4, deflateOnOOM: true, statisticsIntervalSeconds: 2))
        rig.device.setTarget(pages: 512)
        rig.transport.write(offset: MMIOTransport.configOffset + 4, data: [0x40, 0, 0, 0]) // actual: 64 pages
        // The guest inflates two pages the driver had given it.
        try rig.send(frames: [0x900, 0x901], on: 0)
        var w = StateWriter()
        rig.transport.saveState(to: &w)

        let device = BalloonDevice(configuration: BalloonConfiguration(amountMiB: 4, deflateOnOOM: true, statisticsIntervalSeconds: 2))
        let transport = MMIOTransport(device: device, memory: rig.memory, interrupt: BlockInterruptCounter())
        var r = StateReader(w.bytes)
        try transport.restoreState(from: &r)
        #expect(r.isAtEnd)
        #expect(transport.isActivated)
        #expect(transport.status == rig.transport.status)
        #expect(transport.driverFeatures == rig.transport.driverFeatures)
        var config = [UInt8](repeating: 0, count: 8)
        transport.read(offset: MMIOTransport.configOffset, into: &config)
        #expect(config == [0x00, 0x02, 0, 0, 0x40, 0, 0, 0])
        #expect(device.status.statisticsIntervalSeconds == 2)

        // The restored device serves the inflate queue from where it was: one more request.
        try rig.queues[0].addChain(readable: [[0x02, 0x09, 0, 0]])
        transport.handleNotification(queue: 0)
        #expect(try rig.queues[0].drainUsed().count == 1)
        #expect(device.statistics.malformed == 0)
    }
}
