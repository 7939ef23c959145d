import Foundation
import LguestKit
import Synchronization
import TestSupport
import Testing



/// Counts what the guest prints and keeps its first bytes.
final class ConsoleRecorder: Sendable {
    private let state = Mutex<(count: Int, head: [UInt8])>((0, []))
    var count: Int { state.withLock { $0.count } }
    var text: String { String(decoding: state.withLock { $0.head }, as: UTF8.self) }
    var sink: ConsoleHandler {
        ConsoleHandler { [self] bytes in
            state.withLock { state in
                state.count += bytes.count
                if state.head.count < 4096 { state.head += bytes.prefix(4096 - state.head.count) }
            }
        }
    }

    /// Waits up to five seconds for `condition`.
    func wait(for condition: (ConsoleRecorder) -> Bool) -> Bool {
        for _ in 0..<500 {
            if condition(self) { return true }
            usleep(10_000)
        }
        return condition(self)
    }
}

/// A guest that prints `x` on COM1 forever, one port write (one VM exit) per byte.
let printsForever = TinyGuest.elf(TinyGuest.print("go\n") + TinyGuest.movDX(0x3F8) + TinyGuest.movAL(0x78) + TinyGuest.outDXAL + [0xEB, 0xFB])

func temporaryKernel(_ bytes: [UInt8]) throws -> String {
    let path = NSTemporaryDirectory() + "lguestkit-\(UUID().uuidString).elf"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

func entries(_ directory: String) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: directory).count) ?? -1
}

/// The names of this process's threads that a machine starts (`lguest-…`).
func machineThreads() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8) }
        .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        .filter { $0.hasPrefix("lguest-") }
}

/// The embedding API's life cycle on this host's /dev/kvm, with tiny guests: in one process,
/// with no sandbox (seccomp would confine the test runner's own threads).
extension InProcessVMs {
    @Suite struct LifecycleTests {
        func configuration(_ kernel: String) -> VMConfiguration {
            VMConfiguration(kernelPath: kernel, commandLine: "", memoryMiB: 32, cpus: 1, sandbox: false)
        }

        @Test func fiftyStartStopCyclesLeaveNoThreadOrDescriptorBehind() throws {
            let kernel = try temporaryKernel(printsForever)
            defer { unlink(kernel) }
            // One cycle first, so that whatever the process sets up once (the kick signal's
            // handler, the runtime's own threads) is there before counting.
            func cycle() throws {
                let console = ConsoleRecorder()
                let vm = VirtualMachine(configuration: configuration(kernel), console: ConsoleConnection(output: console.sink))
                try vm.start()
                #expect(console.wait { $0.text.hasPrefix("go\n") && $0.count > 100 }, "the guest did not run")
                #expect(vm.stop() == .userQuit)
                #expect(vm.state == .stopped(.userQuit))
            }
            try cycle()
            let descriptors = entries("/proc/self/fd")
            for _ in 0..<50 { try cycle() }
            // Each cycle opens at least six descriptors (VM, vCPU, epoll, eventfds), so a leak would
            // leave hundreds behind; other suites running beside this one in the same process come
            // and go with a few dozen of their own.
            #expect(entries("/proc/self/fd") < descriptors + 50, "descriptors left open: \(descriptors) before, \(entries("/proc/self/fd")) after")
            #expect(machineThreads() == [], "threads left running")
        }

        @Test func pauseStopsTheGuestAndResumeLetsItGoOn() throws {
            let kernel = try temporaryKernel(printsForever)
            defer { unlink(kernel) }
            let console = ConsoleRecorder()
            let vm = VirtualMachine(configuration: configuration(kernel), console: ConsoleConnection(output: console.sink))
            var changes: [VirtualMachine.State] = []
            let seen = Mutex<[VirtualMachine.State]>([])
            vm.observeState { state in seen.withLock { $0.append(state) } }
            try vm.start()
            #expect(console.wait { $0.count > 1000 })
            try vm.pause()
            #expect(vm.state == .paused)
            let paused = console.count
            usleep(200_000)
            #expect(console.count == paused, "the guest printed while paused")
            try vm.resume()
            #expect(vm.state == .running)
            #expect(console.wait { $0.count > paused + 1000 }, "the guest did not go on after resume")
            vm.stop()
            changes = seen.withLock { $0 }
            #expect(changes == [.running, .paused, .running, .stopped(.userQuit)])
        }

        @Test func theGuestPoweringOffEndsTheVMWithItsReason() async throws {
            let kernel = try temporaryKernel(TinyGuest.elf(TinyGuest.helloThenPowerOff()))
            defer { unlink(kernel) }
            let console = ConsoleRecorder()
            let vm = VirtualMachine(configuration: configuration(kernel), console: ConsoleConnection(output: console.sink))
            try vm.start()
            #expect(await vm.exitStatus == .powerOff)
            #expect(vm.waitUntilStopped() == .powerOff)
            #expect(console.text == "hello from a tiny guest\n")
            #expect(throws: VirtualMachine.StateError.self) { try vm.pause() }
            // Watching a VM that has already stopped hears of it once (a guest can stop before its
            // starter gets to watch it).
            let late = Mutex<[VirtualMachine.State]>([])
            vm.observeState { state in late.withLock { $0.append(state) } }
            #expect(late.withLock { $0 } == [.stopped(.powerOff)])
        }

        @Test func severalVMsRunAtOnceInOneProcess() throws {
            let kernel = try temporaryKernel(printsForever)
            defer { unlink(kernel) }
            let consoles = (0..<3).map { _ in ConsoleRecorder() }
            let vms = consoles.map { VirtualMachine(configuration: configuration(kernel), console: ConsoleConnection(output: $0.sink)) }
            for vm in vms { try vm.start() }
            for console in consoles { #expect(console.wait { $0.count > 1000 }) }
            try vms[1].pause()
            #expect(vms[0].state == .running && vms[2].state == .running)
            let before = consoles[0].count
            #expect(consoles[0].wait { $0.count > before + 1000 }, "pausing one VM held up another")
            for vm in vms { #expect(vm.stop() == .userQuit) }
        }

        @Test func typedBytesReachTheGuestsSerialPort() throws {
            // The guest waits for a byte in COM1's receive buffer (LSR bit 0), reads it and echoes
            // it, once, then powers off.
            let waitForByte: [UInt8] = TinyGuest.movDX(0x3FD) + [0xEC, 0xA8, 0x01, 0x74, 0xFB] // in al,dx; test al,1; jz -5
            let echo: [UInt8] = TinyGuest.movDX(0x3F8) + [0xEC] + TinyGuest.outDXAL            // in al,dx; out dx,al
            let kernel = try temporaryKernel(TinyGuest.elf(TinyGuest.print("ready\n") + waitForByte + echo + TinyGuest.out(0x600, 0x34) + TinyGuest.spin))
            defer { unlink(kernel) }
            let console = ConsoleRecorder()
            let vm = VirtualMachine(configuration: configuration(kernel), console: ConsoleConnection(output: console.sink))
            try vm.start()
            #expect(console.wait { $0.text == "ready\n" })
            vm.writeConsole([UInt8(ascii: "Q")])
            #expect(vm.waitUntilStopped() == .powerOff)
            #expect(console.text == "ready\nQ")
        }
    }
}

/// Every suite that runs VMs inside the test process, one test at a time: a test that counts
/// this process's machine threads or descriptors must not see another suite's VM.
@Suite(.enabled(if: kvmUsable, "no usable /dev/kvm on this host: tiny-guest runs skipped"), .serialized)
struct InProcessVMs {}
