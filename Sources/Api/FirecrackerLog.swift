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
    public var metadata: Logger.Metadata = [:]
    let id: String
    let thread: String
    let settings: LogSettings

    /// The level, destination and fields come from `settings`, which `PUT /logger` changes.
    public init(id: String, thread: String, settings: LogSettings) {
        self.id = id
        self.thread = thread
        self.settings = settings
    }

    public var logLevel: Logger.Level {
        get { settings.current.level }
        set { settings.update { $0.level = newValue } }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        let settings = settings.current
        var tags = "\(id):\(thread)"
        if settings.showLevel { tags += ":\(Self.name(level))" }
        if settings.showOrigin { tags += ":\(file.split(separator: "/").last ?? ""):\(line)" }
        let text = "\(Self.timestamp()) [\(tags)] \(message)\n"
        var bytes = text
        bytes.withUTF8 { writeAll(settings.descriptor, UnsafeRawBufferPointer($0)) }
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

/// Where log lines go and what they show: set from the command line, changed by `PUT /logger`.
public final class LogSettings: Sendable {
    public struct Values: Sendable {
        public var descriptor: CInt
        public var level: Logger.Level
        public var showLevel: Bool
        public var showOrigin: Bool
    }
    private let values: Mutex<Values>

    public init(descriptor: CInt, level: Logger.Level, showLevel: Bool, showOrigin: Bool) {
        values = Mutex(Values(descriptor: descriptor, level: level, showLevel: showLevel, showOrigin: showOrigin))
    }

    public var current: Values { values.withLock { $0 } }
    public func update(_ change: (inout Values) -> Void) { values.withLock { change(&$0) } }

    /// Applies `PUT /logger`: a new file (opened for appending, created if missing), level and fields.
    func apply(_ config: LoggerConfig) throws(ApiFailure) {
        var descriptor: CInt?
        if let path = config.log_path {
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o644)
            guard fd >= 0 else { throw .fault("Cannot open the log file \(path): \(Resources.osError(errno))") }
            descriptor = fd
        }
        let old = values.withLock { values -> CInt in
            let old = values.descriptor
            if let descriptor { values.descriptor = descriptor }
            if let level = config.level { values.level = FirecrackerLogHandler.level(named: level) }
            if let show = config.show_level { values.showLevel = show }
            if let show = config.show_log_origin { values.showOrigin = show }
            return old
        }
        if descriptor != nil, old > 2 { close(old) }
    }
}
