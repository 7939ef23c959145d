import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// schemathesis (from PyPI, pinned by Scripts/python-tools.sh) against a live lguest, with lguest's
/// own API document (docs/api/lguest.yaml) and with Firecracker's, each twice: before
/// `InstanceStart` (the configuration requests succeed or are refused on their merits) and after
/// it, on a VM started from a configuration file with a tiny guest that halts (the run-time
/// requests: `PATCH /vm`, `SendCtrlAltDel`, `FlushMetrics`, and every pre-boot request refused).
///
/// A run passes when schemathesis finds no server error (5xx), no response that breaks the
/// document (status code, content type, headers, body schema), and no request that breaks the
/// document yet is accepted, and lguest is still up and answering at the end. The checks a run
/// does not make are switched off in docs/api/schemathesis-lguest.toml and
/// docs/api/schemathesis-firecracker.toml (with Scripts/schemathesis-firecracker-hooks.py), each
/// with its reason; for Firecracker's document none of them is a difference of lguest's.
///
/// Bounded: each run's fuzzing phase generates at most $LGUEST_SCHEMATHESIS_EXAMPLES (default 6)
/// cases per operation, after the coverage phase's boundary cases (some 2,000 requests in all),
/// with a fixed seed ($LGUEST_SCHEMATHESIS_SEED, or `random`); 15 to 30 s a run on two busy
/// cores, stopped after 120 s (a failure). Python's tools missing (no PyPI): skipped, saying so.
@Suite(.enabled(if: PythonTools.available, PythonTools.unavailable), .serialized)
struct SchemathesisTests {
    enum Document: String, CustomTestStringConvertible {
        case lguest, firecracker

        var path: String {
            switch self {
            case .lguest: LiveAPI.path("docs/api/lguest.yaml")
            case .firecracker: LiveAPI.firecrackerDocument
            }
        }
        var configuration: String { LiveAPI.path("docs/api/schemathesis-\(rawValue).toml") }
        var hooks: String? { self == .firecracker ? LiveAPI.path("Scripts/schemathesis-firecracker-hooks.py") : nil }
        var testDescription: String { self == .lguest ? "docs/api/lguest.yaml" : "Firecracker's document" }
    }

    static let firecrackerDocumentPresent = access(LiveAPI.firecrackerDocument, R_OK) == 0

    @Test("before InstanceStart, lguest's document") func beforeStartLguestDocument() throws {
        try run(.lguest, started: false)
    }

    @Test("before InstanceStart, Firecracker's document",
          .enabled(if: firecrackerDocumentPresent, "Firecracker's API document is not at \(LiveAPI.firecrackerDocument)"))
    func beforeStartFirecrackerDocument() throws {
        try run(.firecracker, started: false)
    }

    @Test("after InstanceStart, lguest's document",
          .enabled(if: LiveAPI.kvmUsable, "no usable /dev/kvm: the runs on a started VM are skipped"))
    func afterStartLguestDocument() throws {
        try run(.lguest, started: true)
    }

    @Test("after InstanceStart, Firecracker's document",
          .enabled(if: firecrackerDocumentPresent, "Firecracker's API document is not at \(LiveAPI.firecrackerDocument)"),
          .enabled(if: LiveAPI.kvmUsable, "no usable /dev/kvm: the runs on a started VM are skipped"))
    func afterStartFirecrackerDocument() throws {
        try run(.firecracker, started: true)
    }

    func run(_ document: Document, started: Bool) throws {
        let python = try PythonTools.python.get()
        let work = try LiveAPI.temporaryDirectory("schemathesis")
        defer { try? FileManager.default.removeItem(atPath: work) }

        var configFile: String?
        if started {
            let kernel = work + "/guest.elf"
            try LiveAPI.write(LiveAPI.haltingGuest, to: kernel)
            configFile = work + "/vm.json"
            let json = #"{"boot-source": {"kernel_image_path": "\#(kernel)"}, "drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}"#
            try LiveAPI.write(Array(json.utf8), to: configFile!)
        }
        let lguest = try LiveLguest(id: "schemathesis", configFile: configFile)
        defer { lguest.stop() }
        if started {
            try #require(lguest.waitForOutput("hi\n"), "the guest did not start: \(lguest.output)")
            try #require(lguest.get("/")?.body.contains(#""state":"Running""#) == true)
        }

        let environment = ProcessInfo.processInfo.environment
        let examples = environment["LGUEST_SCHEMATHESIS_EXAMPLES"] ?? "6"
        let seed = environment["LGUEST_SCHEMATHESIS_SEED"] ?? "20261205"
        var arguments = [LiveAPI.path("Scripts/schemathesis-uds.py"), "--socket", lguest.socket,
                         "--schema", document.path, "--config", document.configuration]
        if let hooks = document.hooks { arguments += ["--hooks", hooks] }
        arguments += ["--", "--max-examples", examples, "--workers", "1", "--request-timeout", "10", "--no-shrink"]
        if seed != "random" { arguments += ["--seed", seed] }

        let result = Command.run(python, arguments, directory: work, timeout: 120)
        print("schemathesis, \(document.testDescription), \(started ? "after" : "before") InstanceStart: exit \(result.status) in \(String(format: "%.1f", result.seconds)) s")
        #expect(!result.timedOut, "schemathesis did not finish within 120 s:\n\(result.tail())")
        #expect(result.status == 0, "schemathesis found failures (\(document.testDescription)):\n\(result.tail(150))")
        #expect(result.output.contains(" passed"), "schemathesis ran no test:\n\(result.tail())")

        // lguest is still there, and still answers.
        #expect(lguest.isRunning, "lguest ended during the run:\n\(lguest.output.suffix(3000))")
        let info = lguest.get("/")
        #expect(info?.status == 200, "GET / after the run: \(String(describing: info))")
        let states = started ? [#""state":"Running""#, #""state":"Paused""#] : [#""state":"Not started""#]
        #expect(states.contains { info?.body.contains($0) == true }, "GET / after the run: \(String(describing: info))")
    }
}
