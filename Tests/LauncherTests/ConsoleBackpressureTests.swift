import Foundation
import TestSupport
import Testing

/// A console nobody reads must not stall the guest: lguest's output is a full pipe here, and
/// the guest still runs to its power-off.
@Suite(.enabled(if: kvmUsable, "no usable /dev/kvm on this host: tiny-guest runs skipped"))
struct ConsoleBackpressureTests {
    /// Prints `count` bytes on COM1 (`mov ecx, count; again: mov al, 'x'; out dx, al; dec ecx;
    /// jnz again`), then powers off.
    static func chatterThenPowerOff(_ count: UInt32) -> [UInt8] {
        TinyGuest.movDX(0x3F8) + [0xB9] + withUnsafeBytes(of: count.littleEndian, Array.init)
            + TinyGuest.movAL(0x78) + TinyGuest.outDXAL + [0xFF, 0xC9, 0x75, 0xF9]
            + TinyGuest.out(0x600, 0x34) + TinyGuest.spin
    }

    @Test func aFullPipeOnStandardOutputDoesNotStallTheGuest() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(Self.chatterThenPowerOff(300_000)), name: "chatter.elf")
        let process = Process()
        process.executableURL = Tool.binary
        process.arguments = ["run", "--kernel", kernel, "--memory", "64"]
        process.standardInput = FileHandle.nullDevice
        let unread = Pipe() // nobody reads it: it fills after 64 KiB
        process.standardOutput = unread
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let finished = !process.isRunning
        if !finished { process.terminate(); process.waitUntilExit() }
        #expect(finished, "the guest stalled behind a console nobody reads")
        #expect(!finished || process.terminationStatus == 0)
        try unread.fileHandleForReading.close()
    }
}
