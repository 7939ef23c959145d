import Foundation
import TestSupport
import Testing

/// A jail often has no /proc: lguest must still read its arguments (Swift's CommandLine reads
/// them from /proc/self; lguest takes them from what the C runtime passed to main).
@Suite(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/chroot"), "needs root and chroot"))
struct NoProcTests {
    /// A directory holding the binary (under `name`) and the libraries it links, for chroot.
    static func jail(named name: String) throws -> String {
        let root = NSTemporaryDirectory() + "lguest-jail-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Tool.binary.path, toPath: root + "/" + name)
        let ldd = Process()
        ldd.executableURL = URL(fileURLWithPath: "/usr/bin/ldd")
        ldd.arguments = [Tool.binary.path]
        let out = Pipe()
        ldd.standardOutput = out
        try ldd.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        ldd.waitUntilExit()
        for word in text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }) where word.hasPrefix("/") {
            let library = String(word)
            let target = root + library
            try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: target) {
                try FileManager.default.copyItem(atPath: URL(fileURLWithPath: library).resolvingSymlinksInPath().path, toPath: target)
            }
        }
        return root
    }

    func runInJail(_ root: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/chroot")
        process.arguments = [root] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    @Test func argumentsAreReadWithoutProc() throws {
        let root = try Self.jail(named: "firecracker")
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(!FileManager.default.fileExists(atPath: root + "/proc/self"))
        let version = try runInJail(root, ["/firecracker", "--version"])
        #expect(version.status == 0 && version.output.hasPrefix("Firecracker v"), "\(version)")
        try FileManager.default.copyItem(atPath: root + "/firecracker", toPath: root + "/lguest")
        let refused = try runInJail(root, ["/lguest", "run", "--kernel", "/no-such-kernel"])
        #expect(refused.status == 2 && refused.output.contains("cannot read kernel /no-such-kernel"), "\(refused)")
    }
}
