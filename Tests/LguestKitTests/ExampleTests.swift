import Foundation
import TestSupport
import Testing

/// The example package in Examples/EmbedVM, built as a user of the library would build it (a
/// package of its own that depends on lguest by path) and run on a tiny guest.
@Suite(.enabled(if: kvmUsable, "no usable /dev/kvm on this host: tiny-guest runs skipped"))
struct ExampleTests {
    @Test(.timeLimit(.minutes(10))) func theEmbeddingExampleBootsATinyGuest() throws {
        let root = Tool.packageRoot
        let scratch = root.appendingPathComponent(".build-example").path
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        build.arguments = ["swift", "build", "--package-path", root.appendingPathComponent("Examples/EmbedVM").path, "--scratch-path", scratch]
        let log = Pipe()
        build.standardOutput = log
        build.standardError = log
        try build.run()
        let buildOutput = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        build.waitUntilExit()
        try #require(build.terminationStatus == 0, "the example did not build:\n\(buildOutput.suffix(2000))")

        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff()), name: "hello.elf")
        let run = Process()
        run.executableURL = URL(fileURLWithPath: scratch + "/debug/embed-vm")
        run.arguments = [kernel]
        let out = Pipe()
        run.standardOutput = out
        try run.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
        #expect(text.contains("guest| hello from a tiny guest"))
        #expect(text.contains("embed-vm: the VM is now Running"))
        #expect(text.contains("embed-vm: the guest stopped: powerOff"))
    }
}
