import Foundation
import Testing
@testable import Firmware

// Our tables, checked by Intel's reference ACPI tools (Debian package `acpica-tools`):
// `iasl`, the compiler/disassembler, decodes every field and flags anything it doubts;
// `acpiexec` runs ACPICA — the very interpreter inside the Linux kernel — over the tables,
// so "Linux would load this and power off through port 0x600" is something we can watch.

/// A scratch directory with some files in it, where the ACPICA tools are run.
final class AcpicaWorkspace {
    struct Run {
        let status: Int32
        let output: String
    }

    static let setupHint = "run the project's setup (apt-get install acpica-tools) and test again"

    let directory: URL

    init(files: [String: [UInt8]]) throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("lguest-acpi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (name, bytes) in files {
            try Data(bytes).write(to: directory.appendingPathComponent(name))
        }
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// The tool's path on PATH, or nil.
    static func find(_ tool: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(tool)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    /// Runs `tool arguments...` in the workspace; stdout and stderr together.
    func run(_ tool: String, _ arguments: [String]) throws -> Run {
        let executable = try #require(AcpicaWorkspace.find(tool),
                                      "\(tool) is not installed: \(AcpicaWorkspace.setupHint)")
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, output: String(decoding: output, as: UTF8.self))
    }

    func text(_ name: String) -> String? {
        try? String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
    }

    func bytes(_ name: String) -> [UInt8]? {
        (try? Data(contentsOf: directory.appendingPathComponent(name))).map { [UInt8]($0) }
    }
}

/// Files named `<signature>.dat` for every table but the RSDP (the tools build their own).
func tableFiles(_ config: AcpiConfiguration) throws -> [String: [UInt8]] {
    var files: [String: [UInt8]] = [:]
    for (name, bytes) in try ACPI.build(config) where name != "RSDP" { files["\(name).dat"] = bytes }
    return files
}

func hex(_ value: some BinaryInteger, digits: Int) -> String {
    let text = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
}

@Suite("ACPICA accepts our tables")
struct AcpicaTests {
    @Test("iasl and acpiexec are installed", arguments: ["iasl", "acpiexec"])
    func installed(tool: String) {
        #expect(AcpicaWorkspace.find(tool) != nil, "\(tool) is not on PATH: \(AcpicaWorkspace.setupHint)")
    }

    @Test("iasl disassembles XSDT, FADT, MADT and DSDT without a complaint", arguments: [1, 2, 8, 64])
    func disassemble(cpus: Int) throws {
        let files = try tableFiles(AcpiConfiguration(cpus: cpus, virtioMMIO: virtioWindows(4)))
        for name in files.keys.sorted() {
            let workspace = try AcpicaWorkspace(files: [name: files[name]!])
            let run = try workspace.run("iasl", ["-d", name])
            #expect(run.status == 0, "iasl -d \(name) exited \(run.status):\n\(run.output)")
            for word in ["error", "warning"] {
                #expect(!run.output.localizedCaseInsensitiveContains(word), "iasl -d \(name):\n\(run.output)")
            }
            let stem = String(name.dropLast(4))
            let listing = try #require(workspace.text("\(stem).dsl"), "iasl wrote no listing:\n\(run.output)")
            // Doubts about a data table (a bad checksum, a field out of range) are written into
            // the listing as comments, not printed.
            for word in ["Invalid", "Incorrect", "Unknown", "Error", "Warning"] {
                #expect(!listing.contains(word), "\(stem).dsl mentions \"\(word)\":\n\(listing)")
            }
        }
    }

    /// iasl 20200925 cannot load a bare RSDP binary ("does not contain a valid ACPI table"), so
    /// we go the other way: describe our RSDP's fields in iasl's data-table language, let iasl
    /// compile it — computing both checksums itself — and require the very same 36 bytes.
    @Test("the RSDP is byte for byte what iasl compiles from the same fields")
    func rsdp() throws {
        let tables = try AcpiTables(sampleConfiguration)
        let ours = try #require(tables["RSDP"]).bytes
        let xsdt = try #require(tables["XSDT"]).address
        let source = """
            [0008]          Signature : "RSD PTR "
            [0001]           Checksum : 00
            [0006]             Oem ID : "LGUEST"
            [0001]           Revision : 02
            [0004]       RSDT Address : 00000000
            [0004]             Length : 00000024
            [0008]       XSDT Address : \(hex(xsdt.rawValue, digits: 16))
            [0001]  Extended Checksum : 00
            [0003]           Reserved : 000000

            """
        let workspace = try AcpicaWorkspace(files: ["rsdp.asl": Array(source.utf8)])
        let run = try workspace.run("iasl", ["rsdp.asl"])
        #expect(run.status == 0 && run.output.contains("0 Errors, 0 Warnings"), "iasl rsdp.asl:\n\(run.output)")
        #expect(workspace.bytes("rsdp.aml") == ours)
    }

    @Test("the DSDT disassembles to the devices we meant")
    func dsdtListing() throws {
        let config = AcpiConfiguration(cpus: 2, virtioMMIO: virtioWindows(3))
        let workspace = try AcpicaWorkspace(files: ["DSDT.dat": try #require(try AcpiTables(config)["DSDT"]).bytes])
        _ = try workspace.run("iasl", ["-d", "DSDT.dat"])
        let listing = try #require(workspace.text("DSDT.dsl"))
        for expected in [
            "Device (COM1)", "EisaId (\"PNP0501\")", "IO (Decode16,", "0x03F8,",
            "Device (PS2)", "EisaId (\"PNP0303\")", "0x0060,", "0x0064,",
            "Device (PEVT)", "\"QEMU0001\"", "0x0505,", "Method (_STA, 0, NotSerialized)",
            "Device (V000)", "Device (V001)", "Device (V002)", "\"LNRO0005\"", "Name (_CCA, One)",
            "Memory32Fixed (ReadWrite,", "0xD0000000,", "0xD0002000,", "0x00001000,",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
            "0x00000004,", "0x00000001,", "0x00000005,", "0x00000007,",
            "Name (\\_S5, Package (0x04)",
            "OperationRegion (\\TTSR, SystemIO, 0x0603, One)", "Field (\\TTSR, ByteAcc, NoLock, Preserve)",
            "TTSV,   8", "Method (\\_TTS, 1, NotSerialized)", "\\TTSV = Arg0",
        ] {
            #expect(listing.contains(expected), "DSDT listing lacks \(expected):\n\(listing)")
        }
        #expect(!listing.contains("Device (V003)"))
    }

    /// The strongest check on the AML writer: Intel's compiler, given the ASL that Intel's
    /// disassembler reads out of our DSDT, produces exactly our bytes (optimisations off, so it
    /// does not shorten name paths we spelled out in full).
    @Test("disassembling the DSDT and compiling it again gives back the same AML")
    func dsdtRoundTrip() throws {
        let config = AcpiConfiguration(cpus: 4, virtioMMIO: virtioWindows(19))
        let ours = try #require(try AcpiTables(config)["DSDT"]).bytes
        let workspace = try AcpicaWorkspace(files: ["DSDT.dat": ours])
        _ = try workspace.run("iasl", ["-d", "DSDT.dat"])
        let compile = try workspace.run("iasl", ["-oa", "DSDT.dsl"])
        #expect(compile.status == 0 && compile.output.contains("0 Errors, 0 Warnings"),
                "iasl -oa DSDT.dsl:\n\(compile.output)")
        let theirs = try #require(workspace.bytes("DSDT.aml"))
        // The headers differ (iasl signs the table as its own compiler); the AML must not.
        #expect(theirs.dropFirst(36) == ours.dropFirst(36))
        #expect(theirs.count == ours.count)
    }

    @Test("ACPICA loads the tables and evaluates our objects", arguments: [1, 255])
    func interpreter(cpus: Int) throws {
        let files = try tableFiles(AcpiConfiguration(cpus: cpus, virtioMMIO: virtioWindows(19)))
        let workspace = try AcpicaWorkspace(files: files)
        let run = try workspace.run("acpiexec", [
            "-b", "evaluate \\_S5_; evaluate \\_SB_.PEVT._STA; evaluate \\_SB_.V018._CRS",
        ] + files.keys.sorted())
        #expect(run.status == 0, "acpiexec exited \(run.status):\n\(run.output)")
        for word in ["warning", "error", "exception"] {
            #expect(!run.output.localizedCaseInsensitiveContains(word), "acpiexec:\n\(run.output)")
        }
        #expect(run.output.contains("1 ACPI AML tables successfully acquired and loaded"), "\(run.output)")
        #expect(run.output.contains("[Package] Contains 4 Elements:\n    [Integer] = 0000000000000005"),
                "\\_S5_ must start with SLP_TYP 5:\n\(run.output)")
        #expect(run.output.contains("[Integer] = 000000000000000F"), "PEVT._STA:\n\(run.output)")
        // V018: the 19th window, 0xD0012000, GSI 23 (0x17).
        #expect(run.output.contains("86 09 00 01 00 20 01 D0 00 10 00 00 89 06 00 03"), "V018._CRS:\n\(run.output)")
    }

    /// Power-off, end to end on the guest side: ACPICA's S5 entry on our tables clears WAK_STS
    /// in the sleep status register, then writes SLP_TYP|SLP_EN to the sleep control register.
    @Test("entering S5 writes 0x34 to the sleep control port")
    func powerOff() throws {
        let workspace = try AcpicaWorkspace(files: try tableFiles(sampleConfiguration))
        // Debug level ACPI_LV_IO makes ACPICA log every register access.
        let run = try workspace.run("acpiexec", ["-x", "0x04000000", "-b", "sleep 5",
                                                 "APIC.dat", "DSDT.dat", "FACP.dat"])
        #expect(run.status == 0, "acpiexec exited \(run.status):\n\(run.output)")
        #expect(run.output.contains("Sleep-A: 05"), "\(run.output)")
        func write(_ value: UInt8, to port: UInt16) throws -> Regex<AnyRegexOutput> {
            try Regex("Wrote: \(hex(value, digits: 16)) width +8 +to \(hex(port, digits: 16)) \\(SystemIO\\)")
        }
        let clear = try write(PlatformPorts.wakeStatus, to: PlatformPorts.sleepStatus)
        let sleep = try write(PlatformPorts.s5PowerOff, to: PlatformPorts.sleepControl)
        let clearAt = try #require(run.output.firstMatch(of: clear), "no WAK_STS clear:\n\(run.output)")
        let sleepAt = try #require(run.output.firstMatch(of: sleep), "no 0x34 to 0x600:\n\(run.output)")
        #expect(clearAt.range.lowerBound < sleepAt.range.lowerBound)
    }

    /// Linux's reboot notifier evaluates `\_TTS(5)` before every restart, halt and power-off;
    /// ours must write the 5 to the port the VMM watches. acpiexec logs the region access
    /// (ACPI_LV_OPREGION) but not its value; it keeps what was written, so reading the field
    /// back shows the value.
    @Test("\\_TTS(5) writes 5 to the transition port")
    func transitionToState() throws {
        let workspace = try AcpicaWorkspace(files: try tableFiles(sampleConfiguration))
        let run = try workspace.run("acpiexec", ["-x", "0x00000800", "-b", "evaluate \\_TTS 5; evaluate \\TTSV",
                                                 "APIC.dat", "DSDT.dat", "FACP.dat"])
        #expect(run.status == 0, "acpiexec exited \(run.status):\n\(run.output)")
        let port = "0x" + String(PlatformPorts.transitionToState, radix: 16)
        #expect(run.output.contains("Operation Region request on SystemIO at \(port), BitWidth 0x8"), "\(run.output)")
        let readBack = try #require(run.output.range(of: "Evaluating \\TTSV"), "\(run.output)")
        #expect(run.output[readBack.upperBound...].contains("[Integer] = 0000000000000005"), "\(run.output)")
    }
}
