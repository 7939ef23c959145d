import Foundation
import TestSupport
import Testing

/// lguest on a real pseudo-terminal: raw mode while the guest runs, the user's settings back
/// afterwards, whichever way lguest ends, and Ctrl-A x to quit.
@Suite(.enabled(if: kvmUsable, "no usable /dev/kvm on this host: terminal tests skipped"), .serialized)
struct TerminalTests {
    struct PseudoTerminal {
        let master: Int32, slave: Int32
        // posix_openpt and friends are hidden from Swift's Glibc module; these are what they do:
        // open the multiplexer, unlock the new pair (TIOCSPTLCK), ask its number (TIOCGPTN).
        static let lockRequest: UInt = 0x4004_5431   // TIOCSPTLCK = _IOW('T', 0x31, int)
        static let numberRequest: UInt = 0x8004_5430 // TIOCGPTN = _IOR('T', 0x30, unsigned int)

        init() throws {
            master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
            var unlock: Int32 = 0, number: UInt32 = 0
            guard master >= 0, ioctl(master, Self.lockRequest, &unlock) == 0,
                  ioctl(master, Self.numberRequest, &number) == 0 else { throw POSIXError(.ENOTTY) }
            slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
            guard slave >= 0 else { throw POSIXError(.ENOTTY) }
        }
        var settings: termios { var t = termios(); tcgetattr(slave, &t); return t }
        func type(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { write(master, $0.baseAddress, $0.count) } }
        func close() { Glibc.close(master); Glibc.close(slave) }
    }

    /// Starts lguest on the terminal's slave side with a guest that prints and then spins.
    func start(_ terminal: PseudoTerminal, guest: [UInt8]) throws -> Process {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(guest), name: "tiny.elf")
        let process = Process()
        process.executableURL = Tool.binary
        process.arguments = ["run", "--kernel", kernel, "--memory", "64"]
        let handle = FileHandle(fileDescriptor: terminal.slave, closeOnDealloc: false)
        process.standardInput = handle
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    /// Waits until the terminal leaves canonical mode (lguest went raw), or times out.
    func waitForRawMode(_ terminal: PseudoTerminal) -> Bool {
        for _ in 0..<500 {
            if terminal.settings.c_lflag & tcflag_t(ICANON) == 0 { return true }
            usleep(10_000)
        }
        return false
    }

    func wait(_ process: Process, seconds: Int = 30) -> Bool {
        for _ in 0..<(seconds * 100) where process.isRunning { usleep(10_000) }
        if process.isRunning { process.terminate(); return false }
        process.waitUntilExit()
        return true
    }

    @Test func ctrlAXQuitsAndRestoresTheTerminal() throws {
        let terminal = try PseudoTerminal()
        defer { terminal.close() }
        let before = terminal.settings
        #expect(before.c_lflag & tcflag_t(ICANON) != 0)
        let process = try start(terminal, guest: TinyGuest.print("waiting\n") + TinyGuest.spin)
        #expect(waitForRawMode(terminal), "lguest never put the terminal into raw mode")
        terminal.type([0x01, UInt8(ascii: "x")])
        #expect(wait(process), "Ctrl-A x did not end lguest")
        #expect(process.terminationStatus == 0)
        let after = terminal.settings
        #expect(after.c_lflag == before.c_lflag && after.c_iflag == before.c_iflag && after.c_oflag == before.c_oflag)
    }

    @Test func aFailingGuestRestoresTheTerminalToo() throws {
        let terminal = try PseudoTerminal()
        defer { terminal.close() }
        let before = terminal.settings
        // Print, then wait for a key before triple-faulting, so raw mode is observable first.
        let guest = TinyGuest.print("press a key\n") + TinyGuest.movDX(0x3FD)
            + [0xEC, 0xA8, 0x01, 0x74, 0xFB] // poll: in al, dx; test al, 1; jz poll
            + TinyGuest.ud2
        let process = try start(terminal, guest: guest)
        #expect(waitForRawMode(terminal))
        terminal.type([UInt8(ascii: "k")])
        #expect(wait(process))
        #expect(process.terminationStatus == 1)
        let after = terminal.settings
        #expect(after.c_lflag == before.c_lflag && after.c_iflag == before.c_iflag)
    }

    @Test func aSignalRestoresTheTerminal() throws {
        let terminal = try PseudoTerminal()
        defer { terminal.close() }
        let before = terminal.settings
        let process = try start(terminal, guest: TinyGuest.spin)
        #expect(waitForRawMode(terminal))
        kill(process.processIdentifier, SIGTERM)
        #expect(wait(process))
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGTERM)
        let after = terminal.settings
        #expect(after.c_lflag == before.c_lflag && after.c_iflag == before.c_iflag)
    }
}
