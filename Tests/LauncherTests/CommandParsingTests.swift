import ArgumentParser
import Devices
import Launcher
@testable import LguestCommands
import Testing

/// The argument handling on its own, without a process: `Lguest.configuration(from:)` parses
/// and checks exactly what the tool checks before it opens any file (its fuzz harness relies
/// on that).
@Suite struct CommandParsingTests {
    @Test func classicFormTakesMemoryKernelAndTheKernelsArguments() throws {
        let configuration = try Lguest.configuration(from: ["--block=disk.img", "--tunnet=192.0.2.1", "--rng",
                                                            "512", "vmlinuz", "root=/dev/vda", "quiet"])
        #expect(configuration.memoryMiB == 512)
        #expect(configuration.kernelPath == "vmlinuz")
        #expect(configuration.commandLine == "root=/dev/vda quiet")
        #expect(configuration.disks == [BlockConfiguration(path: "disk.img")])
        #expect(configuration.networks == [NetConfiguration(tap: .create(hostAddress: IPv4Address(192, 0, 2, 1)))])
        #expect(configuration.rng)
    }

    @Test func runFormTakesEveryOption() throws {
        let configuration = try Lguest.configuration(from: [
            "run", "--kernel", "vmlinuz", "--memory", "64", "--cpus", "2", "--console", "virtio",
            "--disk", "a.img,ro", "--net", "tap=lg0,mac=52:54:00:12:34:56",
        ])
        #expect(configuration.cpus == 2)
        #expect(configuration.console == .virtio)
        #expect(configuration.disks == [BlockConfiguration(path: "a.img", readOnly: true)])
        #expect(configuration.networks == [NetConfiguration(tap: .existing("lg0"), mac: try MACAddress("52:54:00:12:34:56"))])
    }

    @Test func balloonOption() throws {
        let configuration = try Lguest.configuration(from: ["run", "--kernel", "k", "--memory", "512", "--balloon",
                                                            "amount_mib=64,deflate_on_oom,stats_polling_interval_s=2,free_page_reporting"])
        #expect(configuration.balloon == BalloonConfiguration(amountMiB: 64, deflateOnOOM: true, statisticsIntervalSeconds: 2,
                                                              freePageReporting: true))
        #expect(try Lguest.configuration(from: ["run", "--kernel", "k", "--balloon", "amount_mib=0"]).balloon == BalloonConfiguration(amountMiB: 0))
        #expect(try Lguest.configuration(from: ["run", "--kernel", "k"]).balloon == nil)
        for bad in ["amount_mib=x", "deflate_on_oom", "amount_mib=1,stats_polling_interval_s=-1", "amount_mib=1,hinting"] {
            #expect(throws: CommandLineError.self, "\(bad)") { try Lguest.configuration(from: ["run", "--kernel", "k", "--balloon", bad]) }
        }
        // Larger than the guest's memory: the Launcher's own check.
        #expect(throws: LaunchError.self) { try Lguest.configuration(from: ["run", "--kernel", "k", "--memory", "64", "--balloon", "amount_mib=65"]) }
    }

    @Test func vsockOption() throws {
        let configuration = try Lguest.configuration(from: ["run", "--kernel", "k", "--vsock", "cid=7,uds=/tmp/v.sock"])
        #expect(configuration.vsock == VsockConfiguration(guestCID: 7, udsPath: "/tmp/v.sock"))
        #expect(throws: CommandLineError.self) { try Lguest.configuration(from: ["run", "--kernel", "k", "--vsock", "cid=1,uds=/tmp/v"]) }
        #expect(throws: CommandLineError.self) { try Lguest.configuration(from: ["run", "--kernel", "k", "--vsock", "cid=3,uds=/tmp/v,x=1"]) }
    }

    @Test("the command line is the user's; virtio_mmio.device= only with --virtio-cmdline")
    func virtioOnTheCommandLineIsOptIn() throws {
        let plain = try Lguest.configuration(from: ["run", "--kernel", "k", "--disk", "a.img", "--cmdline", "quiet"])
        #expect(!plain.virtioOnCommandLine && plain.commandLine == "quiet")
        let classic = try Lguest.configuration(from: ["--block=a.img", "64", "k", "quiet"])
        #expect(!classic.virtioOnCommandLine)
        let asked = try Lguest.configuration(from: ["run", "--kernel", "k", "--disk", "a.img", "--virtio-cmdline"])
        #expect(asked.virtioOnCommandLine)
    }

    @Test func badOptionValuesAreCommandLineErrorsNamingTheValue() {
        #expect(throws: CommandLineError("--disk a.img,sideways: unknown flag 'sideways' (known: readonly, bw=, ops=, poll=, workers=)")) {
            try Lguest.configuration(from: ["run", "--kernel", "k", "--disk", "a.img,sideways"])
        }
        #expect(throws: CommandLineError.self) { try Lguest.configuration(from: ["--tunnet=1.2.3", "64", "k"]) }
        #expect(throws: CommandLineError.self) { try Lguest.configuration(from: ["run", "--kernel", "k", "--net", "bridge=br0"]) }
    }

    @Test func diskWorkersParse() throws {
        let configuration = try Lguest.configuration(from: [
            "run", "--kernel", "k", "--disk", "a.img", "--disk", "b.img,workers=0", "--disk", "c.img,ro,workers=32,poll=0",
        ])
        #expect(configuration.disks.map(\.workers) == [BlockWorkers.defaultCount, 0, 32])
        for bad in ["a.img,workers=", "a.img,workers=-1", "a.img,workers=33", "a.img,workers=many"] {
            #expect(throws: CommandLineError("--disk \(bad): workers= takes a count from 0 to 32")) {
                try Lguest.configuration(from: ["run", "--kernel", "k", "--disk", bad])
            }
        }
    }

    @Test func diskQueuePollingParses() throws {
        let configuration = try Lguest.configuration(from: [
            "run", "--kernel", "k", "--disk", "a.img", "--disk", "b.img,poll=0", "--disk", "c.img,ro,poll=250",
        ])
        #expect(configuration.disks.map(\.pollMicroseconds) == [BlockConfiguration.defaultPollMicroseconds, 0, 250])
        for bad in ["a.img,poll=", "a.img,poll=-1", "a.img,poll=1001", "a.img,poll=fast"] {
            #expect(throws: CommandLineError("--disk \(bad): poll= takes microseconds from 0 to 1000")) {
                try Lguest.configuration(from: ["run", "--kernel", "k", "--disk", bad])
            }
        }
    }

    @Test func diskRateLimitsParse() throws {
        let configuration = try Lguest.configuration(from: [
            "run", "--kernel", "k", "--disk", "a.img,bw=10M/1000,ops=500/1000/100,ro",
        ])
        #expect(configuration.disks == [BlockConfiguration(
            path: "a.img", readOnly: true,
            rateLimit: RateLimit(bandwidth: .init(size: 10 << 20, refillTime: 1000),
                                 operations: .init(size: 500, refillTime: 1000, oneTimeBurst: 100)))])
    }

    @Test(arguments: [
        ("a.img,bw=fast/1000", "--disk a.img,bw=fast/1000: bw: size 'fast' is not a number (with K, M or G) up to 2^50"),
        ("a.img,ops=10", "--disk a.img,ops=10: ops: '10' is not SIZE/REFILL_MS or SIZE/REFILL_MS/BURST"),
        ("a.img,bw=1M/x", "--disk a.img,bw=1M/x: bw: refill time 'x' is not a number of milliseconds up to 4294967296"),
    ])
    func badDiskRateLimitsAreOneLine(option: String, message: String) {
        #expect(throws: CommandLineError(message)) { try Lguest.configuration(from: ["run", "--kernel", "k", "--disk", option]) }
    }

    @Test func outOfRangeValuesAreTheLaunchersRefusal() {
        #expect(throws: LaunchError.self) { try Lguest.configuration(from: ["run", "--kernel", "k", "--memory", "0"]) }
        #expect(throws: LaunchError.self) { try Lguest.configuration(from: ["run", "--kernel", "k", "--cpus", "0"]) }
    }

    @Test func helpAndUsageErrorsAreArgumentParsersOwn() {
        for arguments in [["--help"], ["run", "--help"], ["help"]] {
            #expect(throws: (any Error).self) { try Lguest.configuration(from: arguments) }
            do { _ = try Lguest.configuration(from: arguments) } catch { #expect(Lguest.exitCode(for: error) == .success) }
        }
        do { _ = try Lguest.configuration(from: ["lots", "vmlinuz"]) } catch {
            #expect(Lguest.exitCode(for: error) == .validationFailure)
        }
    }

    @Test func sharesParse() throws {
        let configuration = try Lguest.configuration(from: [
            "run", "--kernel", "k", "--share", "/home/me/project,tag=work", "--share", "/srv/data,tag=data,readonly"])
        #expect(configuration.shares == [FsShareConfiguration(path: "/home/me/project", tag: "work"),
                                         FsShareConfiguration(path: "/srv/data", tag: "data", readOnly: true)])
        #expect(try Lguest.configuration(from: ["run", "--kernel", "k", "--share", "/a,ro,tag=t"]).shares.first?.readOnly == true)
    }

    @Test(arguments: [
        ("/a", "--share /a: no tag: give it as /a,tag=NAME"),
        ("/a,tag=", "--share /a,tag=: no tag: give it as /a,tag=NAME"),
        (",tag=x", "--share ,tag=x: no directory"),
        ("/a,tag=x,rw", "--share /a,tag=x,rw: unknown flag 'rw' (known: tag=, readonly)"),
        ("/a,tag=" + String(repeating: "x", count: 37),
         "--share /a,tag=\(String(repeating: "x", count: 37)): share tag \"\(String(repeating: "x", count: 37))\" is longer than 36 bytes"),
    ])
    func badShareOptions(option: String, message: String) throws {
        #expect(throws: CommandLineError(message)) { try Lguest.configuration(from: ["run", "--kernel", "k", "--share", option]) }
    }

    @Test func aTagUsedTwiceIsRefused() throws {
        #expect(throws: (any Error).self) {
            try Lguest.configuration(from: ["run", "--kernel", "k", "--share", "/a,tag=t", "--share", "/b,tag=t"])
        }
        // 36 bytes exactly is fine.
        let tag = String(repeating: "x", count: 36)
        #expect(try Lguest.configuration(from: ["run", "--kernel", "k", "--share", "/a,tag=\(tag)"]).shares.first?.tag == tag)
    }
}
