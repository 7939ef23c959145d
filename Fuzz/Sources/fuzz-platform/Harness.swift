import Devices
import Firmware
import FuzzSupport
import Launcher

/// Where the guest's serial output goes: nowhere.
final class DiscardingSink: ByteSink {
    func write(_ bytes: UnsafeRawBufferPointer) {}
}

/// The platform devices on the port I/O bus, wired by `PlatformWiring` as `Machine` wires them
/// (16550 UART, i8042, port 0x80, the boot timer, pvpanic, ACPI sleep and reset registers), driven by a guest doing port I/O
/// of any width at any port, with keys arriving on the serial line in between. The input is a
/// list of operations, each an opcode byte and its operands:
///
/// ```
/// 0  u16 port (mod 0x700), u8 width (1 + n % 4), that many bytes: OUT
/// 1  u16 port, u8 width: IN
/// 2  u8 n, n bytes: typed on the host's terminal, for the UART
/// ```
enum PlatformHarness {
    static func run(_ input: inout FuzzInput) {
        let power = PowerControl()
        let serial = Serial(output: DiscardingSink(), interrupt: {})
        guard let ports = try? PlatformWiring.ports(serial: serial, keyboard: I8042(power: power), power: power, bootTimer: BootTimer { _ in }) else {
            fatalError("the platform's port windows overlap")
        }

        while !input.isAtEnd {
            let operation = input.byte() % 3
            switch operation {
            case 0:
                let port = UInt64(input.le(UInt16.self) % 0x700)
                let data = input.take(1 + Int(input.byte() % 4))
                // Safe: `data`'s storage is alive for the call, as the vCPU's exit buffer would be.
                data.withUnsafeBytes { _ = ports.write(port, from: $0) }
            case 1:
                let port = UInt64(input.le(UInt16.self) % 0x700)
                var data = [UInt8](repeating: 0, count: 1 + Int(input.byte() % 4))
                // Safe: as above; the bus fills exactly `data.count` bytes.
                data.withUnsafeMutableBytes { _ = ports.read(port, into: $0) }
            default:
                serial.enqueueInput(input.take(Int(input.byte())))
            }
        }
    }

    static func le(_ value: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8)] }
    static func out(_ port: UInt16, _ bytes: [UInt8]) -> [UInt8] { [0] + le(port) + [UInt8(bytes.count - 1)] + bytes }
    static func inb(_ port: UInt16) -> [UInt8] { [1] + le(port) + [0] }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        let com1 = PlatformPorts.com1
        // Linux's 8250 probe and setup, roughly: scratch, divisor latch, line control, FIFO, IER.
        let probe = out(com1 + 7, [0x5A]) + inb(com1 + 7) + out(com1 + 3, [0x80]) + out(com1, [0x01])
            + out(com1 + 1, [0x00]) + out(com1 + 3, [0x03]) + out(com1 + 2, [0xC7]) + out(com1 + 1, [0x03])
            + out(com1, [UInt8(ascii: "h")]) + inb(com1 + 5) + inb(com1 + 2)
        let typed = [2, 3] + Array("ls\n".utf8) + inb(com1 + 5) + inb(com1) + inb(com1 + 2)
        return [
            ("serial", probe),
            ("serial-input", probe + typed),
            ("i8042-reset", inb(PlatformPorts.i8042Command) + out(PlatformPorts.i8042Command, [PlatformPorts.i8042ResetCommand])),
            ("pvpanic", inb(PlatformPorts.pvpanic) + out(PlatformPorts.pvpanic, [PlatformPorts.pvpanicPanicked])),
            ("acpi-poweroff", out(PlatformPorts.sleepControl, [PlatformPorts.s5PowerOff]) + inb(PlatformPorts.sleepStatus)),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(PlatformHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    PlatformHarness.run(&input)
    return 0
}

@_cdecl("fuzz_platform_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
