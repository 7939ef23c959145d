import GuestMemory
import Testing
@testable import Firmware

/// The code at F000:FFF0, where Linux jumps to restart by default on this platform.
struct ResetVectorTests {
    @Test("the reset vector's 16 bytes end at 1 MiB and write the ACPI reset value to its port")
    func code() {
        let code = ResetVector.code
        #expect(code.count == 16)
        #expect(ResetVector.address.rawValue + UInt64(code.count) == 0x10_0000)
        let port = PlatformPorts.reset
        // cli; mov al, 1; mov dx, 0x602; out dx, al; then halts for ever.
        #expect(Array(code.prefix(7)) == [0xFA, 0xB0, PlatformPorts.resetValue,
                                          0xBA, UInt8(port & 0xFF), UInt8(port >> 8), 0xEE])
        #expect(Array(code[7..<10]) == [0xF4, 0xEB, 0xFD])
    }

    @Test("the largest set of ACPI tables ends before the reset vector", arguments: [1, 255])
    func tablesLeaveRoom(cpus: Int) throws {
        let tables = try AcpiTables(AcpiConfiguration(cpus: cpus, virtioMMIO: virtioWindows(19)))
        #expect(tables.end <= ResetVector.address)
    }

    @Test("written into guest memory at 0xFFFF0")
    func written() throws {
        let memory = try GuestMemory(layout: [(start: 0, size: 2 << 20)])
        try ResetVector.write(into: memory)
        #expect(try memory.readBytes(at: ResetVector.address, count: 16) == ResetVector.code)
    }
}
