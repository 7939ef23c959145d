import Foundation
import LguestKit
import Snapshot
import Synchronization
import TestSupport
import Testing

/// Keeps the first bytes a guest prints, and the last one.
final class ByteTail: Sendable {
    private let state = Mutex<(count: Int, head: [UInt8], last: UInt8?)>((0, [], nil))
    var count: Int { state.withLock { $0.count } }
    var head: [UInt8] { state.withLock { $0.head } }
    var last: UInt8? { state.withLock { $0.last } }
    var sink: ConsoleHandler {
        ConsoleHandler { [self] bytes in
            state.withLock { state in
                state.count += bytes.count
                if state.head.count < 4096 { state.head += bytes.prefix(4096 - state.head.count) }
                if let last = bytes.last { state.last = last }
            }
        }
    }

    func wait(atLeast bytes: Int) -> Bool {
        for _ in 0..<500 where count < bytes { usleep(10_000) }
        return count >= bytes
    }
}

/// A guest that keeps its count in the UART's scratch register and prints each number plus
/// 0x40 on COM1: `mov dx, 0x3FF; l: in al, dx; add al, 1; out dx, al; add al, 0x40; mov dx,
/// 0x3F8; out dx, al; mov dx, 0x3FF; jmp l`. Three exits per number; a snapshot taken at the
/// `in` is right only if KVM finished it (AL still holds the last number printed, 0x40 off),
/// and the count survives only if the UART's state does.
let countsForever = TinyGuest.elf(TinyGuest.movDX(0x3FF) + [0xEC, 0x04, 0x01, 0xEE, 0x04, 0x40]
    + TinyGuest.movDX(0x3F8) + [0xEE] + TinyGuest.movDX(0x3FF) + [0xEB, 0xEF])

/// Pause, snapshot and restore with tiny guests on this host's /dev/kvm, in one process.
extension InProcessVMs {
    @Suite struct SnapshotTests {
        func files() throws -> (directory: String, state: String, memory: String) {
            let directory = try Tool.temporaryDirectory()
            return (directory, directory + "/vm.state", directory + "/vm.mem")
        }

        @Test("a counting guest, snapshotted and restored into a new VM ten times over, counts on from the next number each time")
        func restoredGuestCountsOn() throws {
            let kernel = try temporaryKernel(countsForever)
            defer { unlink(kernel) }
            let (directory, statePath, memoryPath) = try files()
            defer { try? FileManager.default.removeItem(atPath: directory) }

            var console = ByteTail()
            var vm = VirtualMachine(configuration: VMConfiguration(kernelPath: kernel, memoryMiB: 32, cpus: 2, sandbox: false),
                                    console: ConsoleConnection(output: console.sink))
            try vm.start()
            var expected: UInt8 = 0x41
            for generation in 0..<10 {
                #expect(console.wait(atLeast: 1000), "generation \(generation) did not count: \(String(describing: vm.stop())) \(console.head.prefix(8))")
                try vm.pause()
                let printed = console.count
                let head = console.head
                // Each number once: the first of this generation follows the last of the one before.
                #expect(head.first == expected, "generation \(generation) began at \(head.prefix(4)), not \(expected)")
                #expect(zip(head, head.dropFirst()).allSatisfy { $1 == $0 &+ 1 }, "generation \(generation) skipped or repeated a number: \(head.prefix(16))")
                let last = try #require(console.last)
                usleep(20_000)
                #expect(console.count == printed, "the guest went on printing while paused")
                try vm.snapshot(statePath: statePath, memoryPath: memoryPath)
                #expect(vm.stop() == .userQuit)

                let saved = try SavedMachine(statePath: statePath)
                #expect(saved.configuration.cpus == 2 && saved.configuration.memoryMiB == 32)
                console = ByteTail()
                vm = VirtualMachine(restoring: saved, memoryPath: memoryPath, console: ConsoleConnection(output: console.sink))
                try vm.start()
                expected = last &+ 1
            }
            #expect(console.wait(atLeast: 1000))
            #expect(vm.stop() == .userQuit)
            #expect(console.head.first == expected)
        }

        @Test("restored paused, the guest runs nothing until resumed")
        func restoredPaused() throws {
            let kernel = try temporaryKernel(countsForever)
            defer { unlink(kernel) }
            let (directory, statePath, memoryPath) = try files()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let before = ByteTail()
            let first = VirtualMachine(configuration: VMConfiguration(kernelPath: kernel, memoryMiB: 32, sandbox: false),
                                       console: ConsoleConnection(output: before.sink))
            try first.start()
            #expect(before.wait(atLeast: 100))
            try first.pause()
            try first.snapshot(statePath: statePath, memoryPath: memoryPath)
            first.stop()

            let after = ByteTail()
            let second = VirtualMachine(restoring: try SavedMachine(statePath: statePath), memoryPath: memoryPath,
                                        console: ConsoleConnection(output: after.sink))
            try second.start(paused: true)
            #expect(second.state == .paused)
            usleep(100_000)
            #expect(after.count == 0, "a VM restored paused ran")
            try second.resume()
            #expect(after.wait(atLeast: 100))
            second.stop()
        }

        @Test("a snapshot needs a paused VM; a corrupt state file or a short memory file is refused")
        func refusals() throws {
            let kernel = try temporaryKernel(countsForever)
            defer { unlink(kernel) }
            let (directory, statePath, memoryPath) = try files()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let vm = VirtualMachine(configuration: VMConfiguration(kernelPath: kernel, memoryMiB: 32, sandbox: false),
                                    console: ConsoleConnection(output: ByteTail().sink))
            try vm.start()
            #expect(throws: LaunchError.self) { try vm.snapshot(statePath: statePath, memoryPath: memoryPath) }
            try vm.pause()
            try vm.snapshot(statePath: statePath, memoryPath: memoryPath)
            vm.stop()

            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: statePath)))
            bytes[bytes.count / 2] ^= 0x40
            try Data(bytes).write(to: URL(fileURLWithPath: statePath))
            #expect(throws: SnapshotError.checksum) { try SavedMachine(statePath: statePath) }

            bytes[bytes.count / 2] ^= 0x40
            try Data(bytes).write(to: URL(fileURLWithPath: statePath))
            let saved = try SavedMachine(statePath: statePath)
            truncate(memoryPath, 4096)
            let restored = VirtualMachine(restoring: saved, memoryPath: memoryPath, console: ConsoleConnection(output: ByteTail().sink))
            do {
                try restored.start()
                Issue.record("a memory file of 4 KiB was accepted for 32 MiB of guest memory")
            } catch {
                #expect(error.description.contains("holds 4096 bytes"), "\(error)")
            }
        }
    }
}
