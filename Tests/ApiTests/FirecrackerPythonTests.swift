import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// firecracker-python (from PyPI, pinned by Scripts/python-tools.sh), a Firecracker client used
/// unchanged, drives lguest on this host's /dev/kvm: Scripts/firecracker-python-test.sh links
/// lguest at /usr/local/bin/firecracker (the client's binary path) inside a mount and network
/// namespace of the test's own, and Scripts/firecracker-python-check.py has the client create a VM
/// (kernel, root drive, machine config, network interface on a TAP, InstanceStart), read its
/// configuration and state, pause it, resume it and delete it. The guest is a tiny one that
/// prints "hi" and then a "." every 20 ms or so; the check reads its console (lguest's standard
/// output, which the client sends to a file) to see that it runs, stops while paused and goes on
/// after resuming. About 5 to 10 s.
///
/// Needs root (namespaces, TAP devices), /dev/kvm, /dev/net/tun, python3-nftables (the client's
/// NAT rules; Scripts/setup.sh installs it) and the Python tools; skipped, saying which, otherwise.
@Suite(.enabled(if: LiveAPI.kvmUsable, "no usable /dev/kvm: firecracker-python's run is skipped"),
       .enabled(if: FirecrackerPythonHost.ready, "this host cannot run firecracker-python's test (why is printed above)"),
       .enabled(if: PythonTools.available, PythonTools.unavailable))
struct FirecrackerPythonTests {
    @Test func firecrackerPythonConfiguresStartsPausesResumesAndStopsLguest() throws {
        let work = try LiveAPI.temporaryDirectory("firecracker-python")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/ticking-guest.elf"
        try LiveAPI.write(LiveAPI.tickingGuest, to: kernel)
        // The root drive the client insists on: the tiny guest never reads it.
        let rootfs = work + "/rootfs.ext4"
        try LiveAPI.write([UInt8](repeating: 0, count: 1 << 20), to: rootfs)

        let result = Command.run("/usr/bin/env", ["bash", LiveAPI.path("Scripts/firecracker-python-test.sh"), LiveAPI.binary, kernel, rootfs],
                                 directory: work, timeout: 120)
        print("firecracker-python: exit \(result.status) in \(String(format: "%.1f", result.seconds)) s")
        #expect(!result.timedOut, "firecracker-python's run did not finish within 120 s:\n\(result.tail())")
        #expect(result.status == 0, "firecracker-python's run failed:\n\(result.tail(60))")
        #expect(result.output.contains("all steps passed"), "firecracker-python's run did not finish its steps:\n\(result.tail(60))")
        for step in ["create() started the VM", "GET / says Paused", "the console stays at", "the console grows again after resuming",
                     "delete() stopped the VM", "lguest has ended"] {
            #expect(result.output.contains("ok: \(step)"), "missing step: \(step)")
        }
    }
}

/// Whether this host can run firecracker-python in namespaces of the test's own.
enum FirecrackerPythonHost {
    /// Why this host cannot run the client in a namespace, or nil.
    static let hostReason: String? = {
        if getuid() != 0 { return "not root: firecracker-python's run (namespaces, TAP devices) is skipped" }
        if access("/dev/net/tun", R_OK | W_OK) != 0 { return "no /dev/net/tun: firecracker-python's run is skipped" }
        if access("/usr/lib/python3/dist-packages/nftables", R_OK) != 0 {
            return "python3-nftables is not installed (Scripts/setup.sh installs it): firecracker-python's run is skipped"
        }
        let probe = Command.run("/usr/bin/unshare", ["--mount", "--net", "--", "true"], timeout: 20)
        if probe.status != 0 { return "cannot make mount and network namespaces (\(probe.output)): firecracker-python's run is skipped" }
        return nil
    }()

    static var ready: Bool {
        if let hostReason { print("lguest tests: \(hostReason)") }
        return hostReason == nil
    }
}
