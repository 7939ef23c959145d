import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A loop device over a file (`losetup --find --show`), detached when the value goes away: a
/// real block device for tests, the way an LVM volume or a partition would be one.
public final class LoopDevice {
    public let path: String

    public init(file: String, readOnly: Bool = false) throws {
        let output = try Self.losetup((readOnly ? ["--read-only"] : []) + ["--find", "--show", file])
        path = output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    deinit { _ = try? Self.losetup(["--detach", path]) }

    struct Failed: Error {}

    @discardableResult
    static func losetup(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/losetup")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw Failed() }
        return String(decoding: data, as: UTF8.self)
    }

    /// Whether this host lets us make loop devices (root, /dev/loop-control, losetup).
    public static let available: Bool = {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/losetup"),
              access("/dev/loop-control", R_OK | W_OK) == 0 else { return false }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("lguest-loop-probe-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        guard FileManager.default.createFile(atPath: file.path, contents: Data(count: 4096)) else { return false }
        return (try? LoopDevice(file: file.path)) != nil
    }()
}
