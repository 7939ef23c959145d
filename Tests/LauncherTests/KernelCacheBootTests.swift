import Foundation
import TestSupport
import Testing

/// A bzImage booted through the kernel cache, on this host: the tiny guest inside the bzImage's
/// LZ4 payload runs only if lguest expanded it (the bzImage's own code is `ud2`s).
@Suite(.enabled(if: kvmUsable, "no usable /dev/kvm on this host"))
struct KernelCacheBootTests {
    static let greeting = "hello from the expanded kernel\n"

    static func kernel(in directory: String) throws -> String {
        let path = directory + "/vmlinuz"
        let image = TinyGuest.bzImage(wrapping: TinyGuest.elf(TinyGuest.helloThenPowerOff(greeting)))
        try Data(image).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func entries(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".vmlinux") }
    }

    @Test("the first boot expands the kernel into the cache, the second boots from it, and both run the guest inside")
    func firstExpandsThenReuses() throws {
        let directory = try Tool.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let kernel = try Self.kernel(in: directory)
        let arguments = ["run", "--kernel", kernel, "--memory", "64", "--cmdline", "", "--trace-boot",
                         "--kernel-cache", directory + "/cache"]
        let first = try Tool.run(arguments, timeout: 30)
        #expect(first.status == 0 && first.stdout == Self.greeting, "\(first.stderr)")
        #expect(first.stderr.contains("trace: kernel expanded into the cache, \(directory)/cache/"), "\(first.stderr)")
        #expect(Self.entries(directory + "/cache").count == 1)
        let second = try Tool.run(arguments, timeout: 30)
        #expect(second.status == 0 && second.stdout == Self.greeting, "\(second.stderr)")
        #expect(second.stderr.contains("trace: kernel from the cache, \(directory)/cache/"), "\(second.stderr)")
    }

    @Test("by default the cache is $XDG_CACHE_HOME/lguest/kernels; beside puts it in the kernel's directory")
    func whereTheCacheIs() throws {
        let directory = try Tool.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let kernel = try Self.kernel(in: directory)
        let run = try Tool.run(["run", "--kernel", kernel, "--memory", "64", "--cmdline", ""], timeout: 30,
                               environment: ["XDG_CACHE_HOME": directory + "/xdg"])
        #expect(run.status == 0 && run.stdout == Self.greeting, "\(run.stderr)")
        #expect(Self.entries(directory + "/xdg/lguest/kernels").count == 1)
        let beside = try Tool.run(["run", "--kernel", kernel, "--memory", "64", "--cmdline", "", "--kernel-cache", "beside"], timeout: 30)
        #expect(beside.status == 0 && beside.stdout == Self.greeting, "\(beside.stderr)")
        #expect(Self.entries(directory).count == 1)
    }

    @Test("--kernel-cache off boots the bzImage as it is, and a bad value is one line and exit 2")
    func offAndRefusals() throws {
        let directory = try Tool.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let kernel = try Self.kernel(in: directory)
        // The bzImage's own code faults at once: lguest says the guest failed, and nothing was expanded.
        let off = try Tool.run(["run", "--kernel", kernel, "--memory", "64", "--cmdline", "", "--kernel-cache", "off"], timeout: 30,
                               environment: ["XDG_CACHE_HOME": directory + "/xdg"])
        #expect(off.stdout.isEmpty && off.status != 0, "\(off.stderr)")
        #expect(Self.entries(directory + "/xdg/lguest/kernels").isEmpty)
        let bad = try Tool.run(["run", "--kernel", kernel, "--kernel-cache", "somewhere"], timeout: 30)
        #expect(bad.status == 2 && bad.stderrLines.count == 1, "\(bad.stderr)")
        #expect(bad.stderr.contains("--kernel-cache somewhere"))
    }
}
