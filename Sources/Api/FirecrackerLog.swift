import HostSystem
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler that writes Firecracker's log lines,
/// `2026-12-05T16:03:16.123456789 [anonymous-instance:fc_api:INFO] API server started.`,
/// to a file (`--log-path`, `PUT /logger`) or standard output, with its level, thread name and
/// optional level and origin fields.
public struct FirecrackerLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    let id: String
    let thread: String
    let showLevel: Bool
    let showOrigin: Bool
    let descriptor: CInt

    public init(id: String, thread: String, descriptor: CInt, level: Logger.Level, showLevel: Bool, showOrigin: Bool) {
        self.id = id
        self.thread = thread
        self.descriptor = descriptor
        self.logLevel = level
        self.showLevel = showLevel
        self.showOrigin = showOrigin
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        var tags = "\(id):\(thread)"
        if showLevel { tags += ":\(Self.name(level))" }
        if showOrigin { tags += ":\(file.split(separator: "/").last ?? ""):\(line)" }
        let text = "\(Self.timestamp()) [\(tags)] \(message)\n"
        var bytes = text
        bytes.withUTF8 { writeAll(descriptor, UnsafeRawBufferPointer($0)) }
    }

    static func name(_ level: Logger.Level) -> String {
        switch level {
        case .trace: "TRACE"
        case .debug: "DEBUG"
        case .info, .notice: "INFO"
        case .warning: "WARN"
        case .error, .critical: "ERROR"
        }
    }

    /// Firecracker's `--level` names (case-insensitive; `Off` is above every level).
    public static func level(named name: String?) -> Logger.Level {
        switch name?.lowercased() {
        case "error": .error
        case "warning", "warn": .warning
        case "debug": .debug
        case "trace": .trace
        case "off": .critical
        default: .info
        }
    }

    /// Local time, to the nanosecond, ISO 8601 without a zone, as Firecracker prints it.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        localtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int = 2) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let nanos = String(now.tv_nsec)
        return "\(parts.tm_year + 1900)-\(pad(parts.tm_mon + 1))-\(pad(parts.tm_mday))T\(pad(parts.tm_hour)):\(pad(parts.tm_min)):\(pad(parts.tm_sec)).\(String(repeating: "0", count: 9 - nanos.count) + nanos)"
    }
}
