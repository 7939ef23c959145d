import Foundation
import TestSupport
import HostSystem
import Testing

/// The `lguest` tool as a user runs it: a real process, real files, this machine's /dev/kvm.
/// Tiny guests stand in for Linux here (a full kernel boots in the lab tier).

/// What the guest chooses to do with its life, and what lguest makes of it.
@Suite(.enabled(if: kvmUsable, "no usable /dev/kvm on this host: tiny-guest runs skipped"))
struct GuestLifecycleTests {
    @Test func powerOffExitsZeroAfterPrintingOnTheSerialConsole() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff()), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("hello from a tiny guest"))
        #expect(result.stderr.isEmpty)
    }

    @Test func classicFormBootsTheSameGuest() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff("classic\n")), name: "tiny.elf")
        let result = try Tool.run(["64", kernel, "console=ttyS0"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("classic"))
    }

    @Test func rebootThroughTheKeyboardControllerExitsZero() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.rebootThroughKeyboardController()), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
    }

    @Test func tripleFaultExitsOneWithOneLine() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.tripleFault()), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64"])
        #expect(result.status == 1)
        #expect(result.stdout.contains("about to fault"))
        #expect(result.stderrLines.count == 1)
        #expect(result.stderr.contains("triple-fault"))
    }

    @Test("a triple fault after \\_TTS(5) announced a shutdown is a reboot (reboot=t): exit 0")
    func tripleFaultAfterAnnouncedShutdownIsAReboot() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.announceThenTripleFault(state: 5)), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("about to fault"))
        #expect(result.stderr.isEmpty)
    }

    @Test("a triple fault after \\_TTS(3), a suspend, is still a crash: exit 1")
    func tripleFaultAfterAnnouncedSuspendIsACrash() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.announceThenTripleFault(state: 3)), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("triple-fault"))
    }

    @Test("a block device as a disk: opened, served under the sandbox, the guest powers off",
          .enabled(if: LoopDevice.available, "no loop devices here"))
    func blockDeviceDisk() throws {
        let image = try Tool.temporaryFile([UInt8](repeating: 0, count: 1 << 20), name: "disk.img")
        let loop = try LoopDevice(file: image)
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff()), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64", "--disk", loop.path])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stderr.isEmpty)
    }

    @Test func pvpanicExitsOneSayingTheGuestPanicked() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.panic()), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64"])
        #expect(result.status == 1)
        #expect(result.stderrLines.count == 1)
        #expect(result.stderr.contains("panicked"))
    }

    @Test func virtioWindowsAnswerOnTheMMIOBus() throws {
        // The guest reads the first virtio-mmio window's magic ("virt") and prints its bytes.
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.printVirtioMagic()), name: "tiny.elf")
        let image = try Tool.temporaryFile([UInt8](repeating: 0, count: 1 << 20), name: "disk.img")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64", "--rng", "--disk", image, "--console", "virtio"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("virt"))
    }

    @Test func sharedDirectoriesAreServedUnderTheSandboxAndTheGuestRuns() throws {
        // Two shares: their devices answer on the MMIO bus, the file-system thread starts under
        // its filter, and stops with the machine.
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.printVirtioMagic()), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64",
                                   "--share", "/tmp,tag=tmp", "--share", "/usr,tag=usr,readonly"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("virt"))
    }

    @Test func aBalloonIsWiredUnderTheSandboxAndTheGuestRuns() throws {
        // Its window answers with the virtio magic, and its statistics timer is watched by the
        // I/O thread, under its filter, from the start.
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.printVirtioMagic()), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64",
                                   "--balloon", "amount_mib=16,deflate_on_oom,stats_polling_interval_s=1,free_page_reporting"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("virt"))
    }

    @Test func aRateLimitedDiskIsWiredAndTheGuestRuns() throws {
        // The throttle timer is watched by the I/O thread from the start, under its filter.
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.printVirtioMagic()), name: "tiny.elf")
        let image = try Tool.temporaryFile([UInt8](repeating: 0, count: 1 << 20), name: "disk.img")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64", "--disk", "\(image),bw=1M/1000/4M,ops=100/1000"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("virt"))
    }

    @Test func bootTimerMarksAreTimedFromTheProcessStart() throws {
        // The guest marks twice on the boot-timer port, then powers off. Each mark is one line,
        // in order, with a time since lguest started that is plausible for a tiny guest.
        let code = TinyGuest.out(0x440, 0x01) + TinyGuest.out(0x440, 0x2a) + TinyGuest.helloThenPowerOff("timed\n")
        let kernel = try Tool.temporaryFile(TinyGuest.elf(code), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64", "--trace-boot"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let marks = result.stderrLines.filter { $0.contains("boot timer") }
        try #require(marks.count == 2, "stderr: \(result.stderr)")
        #expect(marks[0].contains("the guest wrote 0x1 at "))
        #expect(marks[1].contains("the guest wrote 0x2a at "))
        let steps = result.stderrLines.map { line -> String in
            String(line.split(separator: " at ").first ?? "")
        }
        #expect(steps == ["lguest: trace: configuration read",
                          "lguest: trace: kernel boots as it is (not a bzImage with an LZ4 payload)",
                          "lguest: trace: kernel and initrd read",
                          "lguest: trace: guest memory mapped", "lguest: trace: devices opened",
                          "lguest: trace: kernel loaded", "lguest: trace: VM created",
                          "lguest: trace: guest memory given to KVM", "lguest: trace: VM built", "lguest: trace: first KVM_RUN",
                          "lguest: boot timer: the guest wrote 0x1", "lguest: boot timer: the guest wrote 0x2a"])
        let times = result.stderrLines.compactMap { line in
            line.split(separator: " at ").last?.split(separator: " ").first.flatMap { Double($0) }
        }
        #expect(times.count == 12)
        #expect(times == times.sorted(), "marks out of order: \(times)")
        #expect(times.allSatisfy { $0 > 0 && $0 < 60_000 }, "implausible times: \(times)")
    }

    @Test func theBootTimerWorksInsideTheSandboxWithoutTracing() throws {
        // Without --trace-boot nothing reads the clock before the guest's mark, which arrives
        // on a vCPU thread under its seccomp filter.
        let code = TinyGuest.out(0x440, 0x07) + TinyGuest.helloThenPowerOff("marked\n")
        let kernel = try Tool.temporaryFile(TinyGuest.elf(code), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stderrLines.count == 1 && result.stderr.contains("boot timer: the guest wrote 0x7 at "),
                "stderr: \(result.stderr)")
    }

    @Test func severalVCPUsStartAndTheBootProcessorStillRuns() throws {
        let kernel = try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff("smp\n")), name: "tiny.elf")
        let result = try Tool.run(["run", "--kernel", kernel, "--memory", "64", "--cpus", "4"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("smp"))
    }
}

/// Bad input gets exit code 2 (or 64 for usage) and exactly one line on stderr — never a crash.
@Suite struct BadInputTests {
    func expectRefusal(_ arguments: [String], status: Int32 = 2, mentioning words: [String],
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try Tool.run(arguments)
        #expect(result.status == status, "stderr: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderrLines.count == 1, "stderr: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.hasPrefix("lguest: "), "stderr: \(result.stderr)", sourceLocation: sourceLocation)
        for word in words {
            #expect(result.stderr.contains(word), "stderr: \(result.stderr)", sourceLocation: sourceLocation)
        }
        #expect(!result.stderr.contains("Fatal error"), sourceLocation: sourceLocation)
    }

    var tinyKernel: String { get throws { try Tool.temporaryFile(TinyGuest.elf(TinyGuest.helloThenPowerOff()), name: "tiny.elf") } }

    @Test func missingKernelFile() throws {
        try expectRefusal(["run", "--kernel", "/nonexistent/vmlinuz"], mentioning: ["/nonexistent/vmlinuz", "No such file"])
        try expectRefusal(["256", "/nonexistent/vmlinuz"], mentioning: ["/nonexistent/vmlinuz"])
    }

    @Test func kernelIsADirectory() throws {
        try expectRefusal(["run", "--kernel", "/tmp"], mentioning: ["/tmp"])
    }

    @Test func kernelIsNotAKernel() throws {
        let junk = try Tool.temporaryFile(Array("this is not a kernel, just some text\n".utf8), name: "junk")
        try expectRefusal(["run", "--kernel", junk], mentioning: [junk])
        let empty = try Tool.temporaryFile([], name: "empty")
        try expectRefusal(["run", "--kernel", empty], mentioning: [empty])
    }

    @Test func truncatedELF() throws {
        let whole = TinyGuest.elf(TinyGuest.helloThenPowerOff())
        for length in [4, 40, 64, 100, 119] {
            let cut = try Tool.temporaryFile(Array(whole.prefix(length)), name: "cut\(length).elf")
            try expectRefusal(["run", "--kernel", cut], mentioning: [cut])
        }
    }

    @Test func missingInitrd() throws {
        try expectRefusal(["run", "--kernel", tinyKernel, "--initrd", "/nonexistent/initrd"], mentioning: ["initrd", "/nonexistent/initrd"])
    }

    @Test func memoryOutOfRange() throws {
        try expectRefusal(["run", "--kernel", tinyKernel, "--memory", "0"], mentioning: ["memory"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--memory", "99999999999"], mentioning: ["memory"])
    }

    /// `--balloon amount_mib=N[,...]`: a value that is not a number, an unknown key, a balloon
    /// larger than the guest's memory.
    @Test func balloonOptionRefusals() throws {
        try expectRefusal(["run", "--kernel", tinyKernel, "--balloon", "amount_mib=lots"], mentioning: ["balloon", "amount_mib=lots"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--balloon", "amount_mib=1,bogus"], mentioning: ["unknown key 'bogus'"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--balloon", "deflate_on_oom"], mentioning: ["amount_mib=N"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--memory", "64", "--balloon", "amount_mib=100"],
                          mentioning: ["amount_mib 100", "64 MiB"])
    }

    @Test func cpusOutOfRange() throws {
        try expectRefusal(["run", "--kernel", tinyKernel, "--cpus", "0"], mentioning: ["vCPUs"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--cpus", "100000"], mentioning: ["vCPUs"])
    }

    @Test func badDisks() throws {
        try expectRefusal(["run", "--kernel", tinyKernel, "--disk", "/nonexistent/disk.img"], mentioning: ["/nonexistent/disk.img", "does not exist"])
        try expectRefusal(["--block=/tmp", "64", tinyKernel], mentioning: ["/tmp", "directory"])
        let image = try Tool.temporaryFile([UInt8](repeating: 0, count: 4096), name: "disk.img")
        try expectRefusal(["run", "--kernel", tinyKernel, "--disk", "\(image),sideways"], mentioning: ["sideways"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--disk", ",readonly"], mentioning: ["path"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--disk", "\(image),bw=fast/1000"], mentioning: ["bw", "'fast'"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--disk", "\(image),ops=1/2/3/4"], mentioning: ["ops", "REFILL_MS"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--disk", "\(image),workers=33"], mentioning: ["workers=", "0 to 32"])
    }

    @Test("vhost=on: a bad value, rate limits beside it, and a host without /dev/vhost-net are refused with one line")
    func badVhostNetworks() throws {
        try expectRefusal(["run", "--kernel", tinyKernel, "--net", "tap=lgx0,vhost=yes"], mentioning: ["vhost= takes on or off"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--net", "tap=lgx0,vhost=on,tx-bw=1M/100"], mentioning: ["rate limits"])
        guard access("/dev/vhost-net", F_OK) != 0 else { return }
        // /dev/vhost-net is opened before the TAP is looked for.
        try expectRefusal(["run", "--kernel", tinyKernel, "--net", "tap=lgvhx0,vhost=on"],
                          mentioning: ["/dev/vhost-net", "modprobe vhost_net"])
    }

    @Test("a block device that is read-only, or busy, is refused with one line",
          .enabled(if: LoopDevice.available, "no loop devices here"))
    func badBlockDevices() throws {
        let image = try Tool.temporaryFile([UInt8](repeating: 0, count: 65536), name: "disk.img")
        let readOnly = try LoopDevice(file: image, readOnly: true)
        try expectRefusal(["run", "--kernel", tinyKernel, "--disk", readOnly.path],
                          mentioning: [readOnly.path, "read-only", "\(readOnly.path),readonly"])
        let other = try Tool.temporaryFile([UInt8](repeating: 0, count: 65536), name: "disk.img")
        let loop = try LoopDevice(file: other)
        // Opened exclusively by someone else (here, a descriptor of our own with O_EXCL).
        let holder = open(loop.path, O_RDONLY | O_EXCL)
        try #require(holder >= 0)
        defer { close(holder) }
        try expectRefusal(["run", "--kernel", tinyKernel, "--disk", loop.path], mentioning: [loop.path, "busy"])
    }

    @Test func badShares() throws {
        let kernel = try tinyKernel
        try expectRefusal(["run", "--kernel", kernel, "--share", "/nonexistent/project,tag=work"],
                          mentioning: ["/nonexistent/project", "does not exist"])
        try expectRefusal(["run", "--kernel", kernel, "--share", "\(kernel),tag=work"], mentioning: [kernel, "not a directory"])
        try expectRefusal(["run", "--kernel", kernel, "--share", "/tmp,tag=work", "--share", "/var,tag=work"],
                          mentioning: ["\"work\"", "twice"])
        let long = String(repeating: "t", count: 37)
        try expectRefusal(["run", "--kernel", kernel, "--share", "/tmp,tag=\(long)"], mentioning: [long, "36 bytes"])
        try expectRefusal(["run", "--kernel", kernel, "--share", "/tmp"], mentioning: ["tag"])
        try expectRefusal(["run", "--kernel", kernel, "--share", "/tmp,tag=x,sideways"], mentioning: ["sideways"])
    }

    @Test func badNetworks() throws {
        try expectRefusal(["run", "--kernel", tinyKernel, "--net", "tap=lg0,mac=zz:00:00:00:00:01"], mentioning: ["MAC", "zz:00:00:00:00:01"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--net", "tap=lg0,mac=01:00:5e:00:00:01"], mentioning: ["multicast"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--net", "bridge=br0"], mentioning: ["bridge", "tap"])
        try expectRefusal(["--tunnet=999.1.2.3", "64", tinyKernel], mentioning: ["999.1.2.3"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--net", "tap=no-such-tap-xyz"], mentioning: ["no-such-tap-xyz"])
    }

    /// `--vsock cid=N,uds=PATH`: a reserved CID, a path no Unix socket can have, a directory that
    /// is not there, a socket another program listens on.
    @Test func badVsock() throws {
        let directory = try Tool.temporaryDirectory()
        try expectRefusal(["run", "--kernel", tinyKernel, "--vsock", "cid=2,uds=\(directory)/v.sock"], mentioning: ["CID 2", "3"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--vsock", "cid=x,uds=\(directory)/v.sock"], mentioning: ["cid=x"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--vsock", "uds=\(directory)/v.sock"], mentioning: ["cid=N"])
        let long = directory + "/" + String(repeating: "s", count: 120)
        try expectRefusal(["run", "--kernel", tinyKernel, "--vsock", "cid=3,uds=\(long)"], mentioning: ["too long", "at most"])
        try expectRefusal(["run", "--kernel", tinyKernel, "--vsock", "cid=3,uds=/no-such-dir-xyz/v.sock"],
                          mentioning: ["/no-such-dir-xyz/v.sock", "directory does not exist"])
        let busy = try UnixListener(path: directory + "/busy.sock")
        try expectRefusal(["run", "--kernel", tinyKernel, "--vsock", "cid=3,uds=\(busy.path)"], mentioning: [busy.path, "in use"])
    }

    @Test func usageErrorsExit64() throws {
        try expectRefusal([], status: 64, mentioning: [])
        try expectRefusal(["run"], status: 64, mentioning: ["--kernel"])
        try expectRefusal(["lots", "/boot/vmlinuz"], status: 64, mentioning: [])
        try expectRefusal(["run", "--kernel", "k", "--memory", "many"], status: 64, mentioning: ["memory"])
    }
}
