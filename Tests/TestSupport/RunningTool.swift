import Foundation
import Synchronization

/// The `lguest` binary started in the background, for tests that look at it while it runs: its
/// standard error is collected as it comes; standard input is /dev/null.
public final class RunningTool: @unchecked Sendable {
    // @unchecked: `process` is used by the thread that made it; what the pipe's handler writes
    // is behind `collected`'s mutex.
    public let process: Process
    private let errors = Pipe()
    private let collected = Mutex(Data())

    /// Starts `Tool.binary` with `arguments`; its standard output goes to `output` (a Pipe the
    /// caller reads, or /dev/null).
    public init(_ arguments: [String], output: Any = FileHandle.nullDevice) throws {
        process = Process()
        process.executableURL = Tool.binary
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = errors
        errors.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            self?.collected.withLock { $0.append(data) }
        }
        try process.run()
    }

    deinit {
        errors.fileHandleForReading.readabilityHandler = nil
        if process.isRunning { process.terminate() }
    }

    /// What it has written to standard error so far.
    public var stderr: String { collected.withLock { String(decoding: $0, as: UTF8.self) } }

    /// Waits up to `seconds` for standard error to mention `text` (or for the process to end).
    public func waitForStderr(containing text: String?, seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, process.isRunning {
            if let text, stderr.contains(text) { return }
            usleep(50_000)
        }
    }

    /// Sends SIGTERM if it still runs, and waits for it to end.
    public func terminateAndWait() {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
        errors.fileHandleForReading.readabilityHandler = nil
    }
}
