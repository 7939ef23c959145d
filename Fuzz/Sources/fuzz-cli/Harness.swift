import FuzzSupport
import LguestCommands

/// The `lguest` command line, as a user (or a script with a bad variable) could type it: the
/// input is the argument list, arguments separated by NUL bytes, parsed and checked the way
/// the tool does before it opens any file — and, when it is refused, the message and exit code
/// the tool would print.
enum CommandLineHarness {
    static func run(_ bytes: [UInt8]) {
        let arguments = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        do {
            _ = try Lguest.configuration(from: arguments)
        } catch {
            _ = Lguest.fullMessage(for: error)
            _ = Lguest.exitCode(for: error)
        }
    }

    static func seed(_ arguments: [String]) -> [UInt8] {
        Array(arguments.joined(separator: "\0").utf8)
    }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        [
            ("classic", seed(["--initrd=initrd.img", "--block=disk.img", "--tunnet=192.0.2.1", "--rng", "512", "vmlinuz", "root=/dev/vda", "console=ttyS0"])),
            ("run", seed(["run", "--kernel", "vmlinuz", "--initrd", "initrd.img", "--cmdline", "console=hvc0", "--memory", "512",
                          "--cpus", "2", "--console", "virtio", "--disk", "disk.img,readonly", "--net", "tap=lg0,mac=52:54:00:12:34:56", "--rng"])),
            ("help", seed(["run", "--help"])),
            ("bad", seed(["run", "--kernel", "k", "--memory", "0", "--disk", ",ro", "--net", "mac=01:00:00:00:00:00"])),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(CommandLineHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    CommandLineHarness.run(FuzzInput(data: data, count: count).bytes)
    return 0
}

@_cdecl("fuzz_cli_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
