import Api
import LguestKit
#if canImport(Glibc)
import Glibc
#endif

/// Firecracker's command line, for clients that start `firecracker` (or lguest installed under
/// that name): `--name value` flags, parsed as Firecracker parses them.
public struct FirecrackerOptions: Equatable, Sendable {
    public var apiSocket: String?
    public var configFile: String?
    public var noApi = false
    public var id = "anonymous-instance"
    public var bootTimer = false
    public var level: String?
    public var logPath: String?
    public var showLevel = false
    public var showLogOrigin = false
    public var metricsPath: String?
    public var maxPayload = 51_200
    public var version = false
    public var help = false
    public var noSeccomp = false

    public static let defaultSocket = "/run/firecracker.socket"
    /// Firecracker's exit code for a command line it cannot parse.
    public static let argumentError: Int32 = 153

    /// The flags that put lguest into this mode when it runs under its own name.
    public static let flags: Set<String> = [
        "--api-sock", "--config-file", "--no-api", "--id", "--boot-timer", "--level", "--log-path",
        "--show-level", "--show-log-origin", "--metrics-path", "--http-api-max-payload-size",
        "--start-time-us", "--start-time-cpu-us", "--parent-cpu-time-us", "--no-seccomp",
        "--seccomp-filter", "--metadata", "--mmds-size-limit", "--enable-pci", "--module",
        "--snapshot-version", "--describe-snapshot",
    ]

    /// Flags Firecracker has that lguest refuses, and why.
    static let unsupported: [String: String] = [
        "--seccomp-filter": "lguest builds its own filters (docs/Sandbox.md)",
        "--metadata": "lguest has no MMDS", "--mmds-size-limit": "lguest has no MMDS",
        "--enable-pci": "lguest has no PCI (its devices are virtio-mmio)",
        "--module": "lguest's log has no modules to filter",
        "--snapshot-version": "lguest writes its own snapshot format (lguest restore, PUT /snapshot/create)", "--describe-snapshot": "lguest writes its own snapshot format (lguest restore reads it)",
    ]

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public init(arguments: [String]) throws(ParseError) {
        var rest = arguments[...]
        var seen: Set<String> = []
        while let raw = rest.popFirst() {
            var name = raw
            var inline: String?
            if let equals = raw.firstIndex(of: "="), raw.hasPrefix("--") {
                name = String(raw[..<equals])
                inline = String(raw[raw.index(after: equals)...])
            }
            guard seen.insert(name).inserted else { throw ParseError(description: "the argument '\(name)' was provided more than once") }
            if let why = Self.unsupported[name] { throw ParseError(description: "\(name) is not supported: \(why)") }
            func value() throws(ParseError) -> String {
                if let inline { return inline }
                guard let next = rest.popFirst(), !next.hasPrefix("--") else {
                    throw ParseError(description: "the argument '\(name)' requires a value")
                }
                return next
            }
            func number() throws(ParseError) -> Int {
                let text = try value()
                guard let n = Int(text), n >= 0 else { throw ParseError(description: "'\(text)' is not a valid value for '\(name)'") }
                return n
            }
            switch name {
            case "--api-sock": apiSocket = try value()
            case "--config-file": configFile = try value()
            case "--no-api": noApi = true
            case "--id": id = try value()
            case "--boot-timer": bootTimer = true
            case "--level": level = try value()
            case "--log-path": logPath = try value()
            case "--show-level": showLevel = true
            case "--show-log-origin": showLogOrigin = true
            case "--metrics-path": metricsPath = try value()
            case "--http-api-max-payload-size": maxPayload = try number()
            case "--start-time-us", "--start-time-cpu-us", "--parent-cpu-time-us": _ = try number()
            case "--no-seccomp": noSeccomp = true
            case "--version": version = true
            case "--help", "-h": help = true
            default: throw ParseError(description: "found argument '\(raw)' which wasn't expected, or isn't valid in this context")
            }
        }
        if noApi, configFile == nil { throw ParseError(description: "--no-api needs --config-file: without the API, only a configuration file can start the VM") }
        guard !id.isEmpty, id.count <= 64, id.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x2D }) else {
            throw ParseError(description: "invalid instance ID '\(id)': use 1 to 64 letters, digits and '-'")
        }
        if let level, !["error", "warning", "warn", "info", "debug", "trace", "off"].contains(level.lowercased()) {
            throw ParseError(description: "invalid log level '\(level)': use Error, Warning, Info, Debug, Trace or Off")
        }
        guard maxPayload > 0 else { throw ParseError(description: "--http-api-max-payload-size must be above 0") }
    }

    /// Whether `arguments` (without the program name) are Firecracker's, when run as `name`.
    public static func applies(programName name: String, arguments: [String]) -> Bool {
        let base = name.split(separator: "/").last.map(String.init) ?? name
        if base == "firecracker" { return true }
        // A subcommand's options are its own (`lguest jail --id …` is not Firecracker's --id).
        if let first = arguments.first, ["run", "restore", "jail"].contains(first) { return false }
        return arguments.contains { argument in
            flags.contains(String(argument.split(separator: "=", maxSplits: 1).first ?? ""))
        }
    }
}

/// Runs lguest as Firecracker with `arguments` (without the program name); never returns.
public func runFirecracker(_ arguments: [String]) -> Never {
    let options: FirecrackerOptions
    do throws(FirecrackerOptions.ParseError) { options = try FirecrackerOptions(arguments: arguments) } catch {
        printError("lguest: \(error.description) (lguest --help lists the options)")
        exit(FirecrackerOptions.argumentError)
    }
    FirecrackerMain.run(options)
}
