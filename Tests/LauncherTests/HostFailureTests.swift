import Foundation
@testable import Launcher
import Synchronization
import TestSupport
import Testing

/// What the host does to lguest rather than the guest: a reader that goes away, a failing
/// event loop.
@Suite struct HostFailureTests {
    final class Finished: Sendable { let done = Atomic<Bool>(false) }

    /// `lguest … | head -1` (or a `tee` that was killed): writing the console to a pipe with no
    /// reader must not kill lguest with SIGPIPE, which would skip restoring the terminal.
    @Test(.enabled(if: kvmUsable, "no usable /dev/kvm on this host")) func aClosedStandardOutputDoesNotKillLguest() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff("nobody reads this\n")), name: "tiny.elf")
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        close(ends[0]) // the reader is gone before lguest writes a byte
        let process = Process()
        process.executableURL = Tool.binary
        process.arguments = ["run", "--kernel", kernel, "--memory", "64"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(fileDescriptor: ends[1], closeOnDealloc: true)
        let err = Pipe()
        process.standardError = err
        try process.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit, "killed by signal \(process.terminationStatus)")
        #expect(process.terminationStatus == 0, "stderr: \(stderr)")
        #expect(stderr.hasPrefix("lguest: ") && stderr.contains("bytes of console output were dropped"), "stderr: \(stderr)")
    }

    /// An epoll_wait that fails for good (here its descriptor is no longer an epoll set: EINVAL)
    /// ends the loop with the reason, instead of retrying it forever at full speed.
    @Test func anEventLoopWhoseWaitFailsStops() throws {
        let loop = try EventLoop()
        // /dev/null takes the epoll set's place, so the loop still owns exactly one descriptor
        // there and closes it once. (Closing it here would make the loop's deinit close it a
        // second time: by then the number may be another test's pipe.)
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        try #require(null >= 0 && dup2(null, loop.epoll) == loop.epoll)
        close(null)
        let finished = Finished()
        let thread = Thread {
            _ = loop.run(gate: RunGate())
            finished.done.store(true, ordering: .releasing)
        }
        thread.start()
        let deadline = Date().addingTimeInterval(2)
        while !finished.done.load(ordering: .acquiring), Date() < deadline { usleep(1000) }
        let stopped = finished.done.load(ordering: .acquiring)
        #expect(stopped, "the event loop is still retrying a failed epoll_wait")
    }
}
