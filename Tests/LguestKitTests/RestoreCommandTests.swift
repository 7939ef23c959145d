import Foundation
import LguestKit
import TestSupport
import Testing

/// `lguest restore` as a user runs it, on a snapshot a Swift program took: the guest goes on in
/// the new process (sandboxed), SIGTSTP pauses it, SIGCONT resumes it; a bad state file is one
/// line and exit 2.
extension InProcessVMs {
    @Suite struct RestoreCommandTests {
        /// A snapshot of the counting guest (SnapshotTests.swift), in a new directory.
        func snapshot() throws -> (directory: String, state: String, memory: String) {
            let kernel = try temporaryKernel(countsForever)
            defer { unlink(kernel) }
            let directory = try Tool.temporaryDirectory()
            let console = ByteTail()
            let vm = VirtualMachine(configuration: VMConfiguration(kernelPath: kernel, memoryMiB: 32, sandbox: false),
                                    console: ConsoleConnection(output: console.sink))
            try vm.start()
            _ = console.wait(atLeast: 100)
            try vm.pause()
            try vm.snapshot(statePath: directory + "/vm.state", memoryPath: directory + "/vm.mem")
            vm.stop()
            return (directory, directory + "/vm.state", directory + "/vm.mem")
        }

        /// lguest restore with `arguments`, its output and errors in files of `directory`.
        func start(_ arguments: [String], in directory: String) throws -> (Process, output: String, errors: String) {
            let output = directory + "/out", errors = directory + "/err"
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            _ = FileManager.default.createFile(atPath: errors, contents: nil)
            let process = Process()
            process.executableURL = Tool.binary
            process.arguments = ["restore"] + arguments
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle(forWritingAtPath: output)
            process.standardError = FileHandle(forWritingAtPath: errors)
            try process.run()
            return (process, output, errors)
        }

        func size(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }

        /// Whether the file at `path` grows within `seconds`.
        func grows(_ path: String, within seconds: Double = 5) -> Bool {
            let start = size(path)
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline { if size(path) > start { return true }; usleep(20_000) }
            return false
        }

        @Test("restored with --resume the guest counts on; kill -TSTP pauses it and kill -CONT resumes it")
        func resumeThenPauseAndResume() throws {
            let files = try snapshot()
            defer { try? FileManager.default.removeItem(atPath: files.directory) }
            let (process, output, errors) = try start(["--snapshot", files.state, "--memory-file", files.memory, "--resume"], in: files.directory)
            defer { if process.isRunning { process.terminate() }; process.waitUntilExit() }
            #expect(grows(output), "the restored guest printed nothing: \(String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: errors))) ?? Data(), as: UTF8.self))")
            kill(process.processIdentifier, SIGTSTP)
            usleep(200_000)
            #expect(!grows(output, within: 0.5), "the guest went on printing after SIGTSTP")
            #expect(process.isRunning)
            kill(process.processIdentifier, SIGCONT)
            #expect(grows(output), "the guest did not go on after SIGCONT")
            process.terminate()
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal)
        }

        @Test("restored without --resume the VM waits, paused, for SIGCONT, and says so")
        func startsPaused() throws {
            let files = try snapshot()
            defer { try? FileManager.default.removeItem(atPath: files.directory) }
            let (process, output, errors) = try start(["--snapshot", files.state, "--memory-file", files.memory], in: files.directory)
            defer { if process.isRunning { process.terminate() }; process.waitUntilExit() }
            #expect(!grows(output, within: 0.5), "a VM restored without --resume ran")
            let said = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: errors))) ?? Data(), as: UTF8.self)
            #expect(said.contains("paused: kill -CONT \(process.processIdentifier) resumes it"), "\(said)")
            kill(process.processIdentifier, SIGCONT)
            #expect(grows(output))
        }

        @Test("a corrupt or missing state file, or a memory file of the wrong size: one line, exit 2")
        func badInput() throws {
            let files = try snapshot()
            defer { try? FileManager.default.removeItem(atPath: files.directory) }
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: files.state)))
            let corrupt = files.directory + "/corrupt.state", short = files.directory + "/short.state"
            bytes[40] ^= 1
            try Data(bytes).write(to: URL(fileURLWithPath: corrupt))
            try Data(bytes.prefix(100)).write(to: URL(fileURLWithPath: short))
            let smallMemory = files.directory + "/small.mem"
            try Data(count: 4096).write(to: URL(fileURLWithPath: smallMemory))
            for (state, memory, words) in [(corrupt, files.memory, "checksum"), (short, files.memory, "truncated"),
                                           (files.directory + "/none", files.memory, "No such file"),
                                           (files.state, smallMemory, "holds 4096 bytes")] {
                let result = try Tool.run(["restore", "--snapshot", state, "--memory-file", memory, "--resume"])
                #expect(result.status == 2, "\(state): \(result.stderr)")
                #expect(result.stderrLines.count == 1 && result.stderr.contains(words), "\(result.stderr)")
            }
        }
    }
}
