import CKVM
import Devices
import KVM
@testable import Launcher
import Snapshot
import Testing

/// A state file's payload, section by section, the way `SavedMachine` reads it
/// (MachineSnapshot.swift, ConfigurationState.swift, VMState.swift, VCPUState.swift), with a
/// knob for each thing a hostile or damaged file can get wrong.
struct PayloadBuilder {
    // CONF
    var memoryMiB: UInt64 = 256
    var cpus: UInt32 = 2
    var console: UInt8 = 0
    var diskCount: UInt32 = 1
    var macs: [[UInt8]] = [[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]]
    var networkCount: UInt32?
    var tapKind: UInt8 = 0
    var rateLimitFlag: UInt8 = 1
    // KVMV
    var chipCount: UInt32 = 3
    var chipIDs: [UInt32] = [0, 1, 2]
    // KVMC
    var vcpuStates: UInt32?
    var cpuidLeaves: UInt32 = 1
    var msrCount: UInt32?
    var registersSize = MemoryLayout<kvm_regs>.size
    var extendedControlRegisters: UInt32 = 1
    // VIRT
    var virtioStates: UInt32?
    var virtioStateSize = 40
    // NOTE
    var notes: [UInt8] = Array("{\"kept\":true}".utf8)
    var sections = ["CONF", "KVMV", "KVMC", "PLAT", "VIRT", "NOTE"]
    var trailing: [UInt8] = []

    /// The virtio devices this configuration makes: a virtio console, one per disk, one per NIC.
    var devices: Int { (console == 1 ? 1 : 0) + Int(diskCount) + macs.count }

    func conf(_ w: inout StateWriter) {
        w.string("/boot/vmlinuz")
        w.optionalString(nil)
        w.string("console=ttyS0")
        w.u64(memoryMiB)
        w.u32(cpus)
        w.u8(console)
        w.bool(false) // rng
        w.bool(false) // virtio devices on the command line
        w.u32(diskCount)
        for index in 0 ..< min(Int(diskCount), 64) {
            w.string("/images/disk\(index).img")
            w.bool(index % 2 == 1)
            w.optionalString(index == 0 ? "serial0" : nil)
            w.u8(rateLimitFlag); w.u64(1 << 20); w.u64(1000); w.u64(0) // bandwidth
            w.bool(false)                                              // operations
        }
        w.u32(networkCount ?? UInt32(macs.count))
        for (index, mac) in macs.enumerated() {
            w.u8(tapKind)
            w.string("tap\(index)")
            w.data(mac)
            for _ in 0 ..< 4 { w.bool(false) } // receive and transmit limits, no buckets
        }
        w.bool(false) // vsock
        w.bool(false) // balloon
    }

    func kvmv(_ w: inout StateWriter) {
        w.u32(chipCount)
        for id in chipIDs {
            var chip = kvm_irqchip()
            chip.chip_id = id
            w.raw(chip)
        }
        w.raw(kvm_pit_state2())
        w.u64(5_000_000_000)
        w.u64(1_700_000_000_000_000_000)
    }

    func kvmc(_ w: inout StateWriter) {
        let count = vcpuStates ?? cpus
        w.u32(count)
        for _ in 0 ..< min(count, 8) {
            w.u32(cpuidLeaves)
            for function in 0 ..< min(cpuidLeaves, 4) {
                var leaf = kvm_cpuid_entry2()
                leaf.function = function
                w.raw(leaf)
            }
            w.data([UInt8](repeating: 0, count: registersSize)) // kvm_regs, raw
            w.raw(kvm_sregs())
            w.raw(kvm_xsave())
            var xcrs = kvm_xcrs()
            xcrs.nr_xcrs = extendedControlRegisters
            w.raw(xcrs)
            w.raw(kvm_debugregs())
            w.raw(kvm_lapic_state())
            w.raw(kvm_vcpu_events())
            w.raw(kvm_mp_state())
            w.u32(msrCount ?? 2)
            for index in 0 ..< min(msrCount ?? 2, 2) { w.u32(0x10 + index); w.u64(UInt64(index) * 1000) }
        }
    }

    func bytes() -> [UInt8] {
        var w = StateWriter()
        for tag in sections {
            w.section(tag) { w in
                switch tag {
                case "CONF": conf(&w)
                case "KVMV": kvmv(&w)
                case "KVMC": kvmc(&w)
                case "PLAT": w.u8(0x03); w.u16(0x0C)
                case "VIRT":
                    let count = virtioStates ?? UInt32(clamping: devices)
                    w.u32(count)
                    for _ in 0 ..< min(count, 300) { w.data([UInt8](repeating: 0xA5, count: virtioStateSize)) }
                case "NOTE": w.data(notes)
                default: w.u32(0)
                }
            }
        }
        return w.bytes + trailing
    }
}

/// `SavedMachine(payload:)` decodes what a state file holds before anything is built from it:
/// every count, size and kind in it is checked, and a bad one is a `SnapshotError`, never a
/// crash or an allocation of what the file claims.
@Suite struct SavedMachineTests {
    static func decode(_ payload: [UInt8]) -> Result<SavedMachine, SnapshotError> {
        do throws(SnapshotError) { return .success(try SavedMachine(payload: payload)) } catch { return .failure(error) }
    }

    static func refusal(_ builder: PayloadBuilder) -> SnapshotError? {
        if case let .failure(error) = decode(builder.bytes()) { return error }
        return nil
    }

    static func isMalformed(_ error: SnapshotError?) -> Bool {
        if case .malformed = error { return true }
        return false
    }

    @Test("a well-formed payload decodes, its configuration and notes as written")
    func wellFormed() throws {
        let saved = try SavedMachine(payload: PayloadBuilder().bytes())
        #expect(saved.configuration.cpus == 2)
        #expect(saved.configuration.memoryMiB == 256)
        #expect(saved.configuration.console == .serial)
        #expect(saved.configuration.disks.map(\.path) == ["/images/disk0.img"])
        #expect(saved.configuration.disks.first?.serial == "serial0")
        #expect(saved.configuration.disks.first?.rateLimit.bandwidth?.size == 1 << 20)
        #expect(saved.configuration.networks.map(\.mac?.bytes) == [[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]])
        #expect(saved.configuration.networks.first?.tap == .existing("tap0"))
        #expect(saved.notes == Array("{\"kept\":true}".utf8))
        #expect(saved.vcpus.count == 2)
        #expect(saved.vcpus.first?.msrs == [VCPUState.MSR(index: 0x10, value: 0), VCPUState.MSR(index: 0x11, value: 1000)])
        #expect(saved.vm.irqchips.map(\.chip_id) == [0, 1, 2])
        #expect(saved.vm.clock == 5_000_000_000)
        #expect(saved.platform == [0x03, 0x0C, 0x00])
        #expect(saved.transports.map(\.count) == [40, 40])
    }

    @Test("the configuration lguest writes is the configuration it reads back")
    func configurationRoundTrip() throws {
        var configuration = VMConfiguration(
            kernelPath: "/boot/vmlinuz", initrdPath: "/boot/initrd.img", commandLine: "root=/dev/vda rw",
            memoryMiB: 512, cpus: 3, console: .virtio,
            disks: [BlockConfiguration(path: "/a.img", readOnly: true, serial: "a",
                                       rateLimit: RateLimit(bandwidth: TokenBucket.Configuration(size: 4096, refillTime: 100, oneTimeBurst: 8192), operations: nil)),
                    BlockConfiguration(path: "/b.img")],
            networks: [NetConfiguration(tap: .create(name: "lg%d", hostAddress: try IPv4Address("192.0.2.1")))],
            rng: true)
        configuration.vsock = VsockConfiguration(guestCID: 7, udsPath: "/tmp/vsock.sock")
        configuration.balloon = BalloonConfiguration(amountMiB: 64, deflateOnOOM: true, statisticsIntervalSeconds: 3, freePageReporting: true)
        configuration.virtioOnCommandLine = true
        let mac = try MACAddress(bytes: [0x02, 0, 0, 0, 0, 9])

        var builder = PayloadBuilder()
        builder.cpus = 3
        var w = StateWriter()
        w.section("CONF") { configuration.encode(to: &$0, macs: [mac]) }
        w.section("KVMV") { builder.kvmv(&$0) }
        w.section("KVMC") { builder.kvmc(&$0) }
        w.section("PLAT") { _ in }
        let devices = Machine.deviceCount(configuration)
        #expect(devices == 7)
        w.section("VIRT") { w in w.u32(UInt32(devices)); for _ in 0 ..< devices { w.data([]) } }
        w.section("NOTE") { $0.data([]) }

        let saved = try SavedMachine(payload: w.bytes)
        var expected = configuration
        expected.networks[0].mac = mac // the NIC's actual address is kept
        #expect(saved.configuration == expected)
    }

    @Test("as many vCPU states as the configuration has vCPUs, no more, no fewer")
    func vcpuCountMismatch() {
        for states: UInt32 in [0, 1, 3] {
            var b = PayloadBuilder()
            b.vcpuStates = states
            #expect(Self.refusal(b) == .malformed("\(states) vCPU states for 2 vCPUs"))
        }
    }

    @Test("an unknown console or TAP kind is refused")
    func unknownKinds() {
        for kind: UInt8 in [2, 7, 0xFF] {
            var b = PayloadBuilder()
            b.console = kind
            #expect(Self.refusal(b) == .malformed("console kind \(kind)"))
            var t = PayloadBuilder()
            t.tapKind = kind
            #expect(Self.refusal(t) == .malformed("TAP kind \(kind)"))
        }
        var flag = PayloadBuilder()
        flag.rateLimitFlag = 2
        #expect(Self.isMalformed(Self.refusal(flag)))
    }

    @Test("absurd counts are refused before anything is allocated for them")
    func absurdCounts() {
        var cases: [(String, PayloadBuilder)] = []
        for count: UInt32 in [65, 1 << 20, .max] {
            var disks = PayloadBuilder(); disks.diskCount = count; cases.append(("\(count) disks", disks))
            var nics = PayloadBuilder(); nics.networkCount = count; cases.append(("\(count) NICs", nics))
        }
        for count: UInt32 in [255, .max] {
            var cpus = PayloadBuilder(); cpus.cpus = count; cpus.vcpuStates = 1; cases.append(("\(count) CPUs", cpus))
            var states = PayloadBuilder(); states.vcpuStates = count; cases.append(("\(count) vCPU states", states))
        }
        for count: UInt32 in [1025, .max] {
            var leaves = PayloadBuilder(); leaves.cpuidLeaves = count; cases.append(("\(count) CPUID leaves", leaves))
        }
        for count: UInt32 in [4097, .max] {
            var msrs = PayloadBuilder(); msrs.msrCount = count; cases.append(("\(count) MSRs", msrs))
        }
        for count: UInt32 in [2, 4, .max] {
            var chips = PayloadBuilder(); chips.chipCount = count; cases.append(("\(count) interrupt controllers", chips))
        }
        for count: UInt32 in [257, .max] {
            var virtio = PayloadBuilder(); virtio.virtioStates = count; cases.append(("\(count) virtio states", virtio))
        }
        var virtioSize = PayloadBuilder(); virtioSize.virtioStateSize = (1 << 16) + 1; cases.append(("a 64 KiB + 1 virtio state", virtioSize))
        var notes = PayloadBuilder(); notes.notes = [UInt8](repeating: 0x20, count: (1 << 20) + 1); cases.append(("notes over 1 MiB", notes))
        var xcrs = PayloadBuilder(); xcrs.extendedControlRegisters = 17; cases.append(("17 XCRs", xcrs))
        for memory: UInt64 in [0, 31, (1 << 20) + 1, .max] {
            var b = PayloadBuilder(); b.memoryMiB = memory; cases.append(("\(memory) MiB", b))
        }
        var zeroCPUs = PayloadBuilder(); zeroCPUs.cpus = 0; cases.append(("no CPUs", zeroCPUs))

        for (name, builder) in cases {
            let error = Self.refusal(builder)
            #expect(Self.isMalformed(error), "\(name): \(String(describing: error))")
        }
        // One virtio state too few or too many for the devices configured.
        for states: UInt32 in [0, 1, 3] {
            var b = PayloadBuilder(); b.virtioStates = states
            #expect(Self.refusal(b) == .malformed("\(states) virtio device states for 2 devices"))
        }
    }

    @Test("a MAC address of the wrong length, or not a unicast one, is refused")
    func badMACs() {
        for mac: [UInt8] in [[], [0x52, 0x54, 0, 0x12, 0x34], [0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x78],
                             [0x01, 0, 0x5E, 0, 0, 1], [0, 0, 0, 0, 0, 0], [UInt8](repeating: 0xFF, count: 4096)] {
            var b = PayloadBuilder()
            b.macs = [mac]
            #expect(Self.isMalformed(Self.refusal(b)), "MAC \(mac.prefix(8))")
        }
    }

    @Test("kernel structures of the wrong size, or interrupt controllers out of order, are refused")
    func kernelStructures() {
        for size in [0, MemoryLayout<kvm_regs>.size - 1, MemoryLayout<kvm_regs>.size + 8] {
            var b = PayloadBuilder(); b.registersSize = size
            #expect(Self.isMalformed(Self.refusal(b)), "kvm_regs of \(size) bytes")
        }
        var chips = PayloadBuilder(); chips.chipIDs = [0, 2, 1]
        #expect(Self.refusal(chips) == .malformed("interrupt controller 2 where 1 belongs"))
    }

    @Test("bytes after the last section, sections missing, repeated or out of order are refused")
    func sectionsAndTrailingBytes() {
        for trailing: [UInt8] in [[0], [UInt8](repeating: 0xFF, count: 100), Array("NOTE".utf8) + [0, 0, 0, 0]] {
            var b = PayloadBuilder(); b.trailing = trailing
            #expect(Self.refusal(b) == .malformed("\(trailing.count) bytes after the last section"))
        }
        let orders = [
            ["CONF", "KVMV", "KVMC", "PLAT", "VIRT"],
            ["CONF", "KVMC", "KVMV", "PLAT", "VIRT", "NOTE"],
            ["KVMV", "CONF", "KVMC", "PLAT", "VIRT", "NOTE"],
            ["CONF", "KVMV", "KVMC", "PLAT", "VIRT", "NOTE", "NOTE"],
            ["CONF", "KVMV", "KVMC", "PLAT", "PLAT", "VIRT", "NOTE"],
            [],
        ]
        for order in orders {
            var b = PayloadBuilder(); b.sections = order
            #expect(Self.refusal(b) != nil, "sections \(order)")
        }
    }

    @Test("every truncation of a well-formed payload is refused")
    func everyTruncation() {
        let payload = PayloadBuilder().bytes()
        var kinds: [String: Int] = [:]
        for length in 0 ..< payload.count {
            guard case let .failure(error) = Self.decode(Array(payload.prefix(length))) else {
                Issue.record("\(length) of \(payload.count) bytes accepted")
                continue
            }
            switch error {
            case .truncated: kinds["truncated", default: 0] += 1
            case .malformed: kinds["malformed", default: 0] += 1
            default: Issue.record("\(length) bytes: \(error)")
            }
        }
        #expect(kinds.values.reduce(0, +) == payload.count)
    }

    @Test("random damage anywhere in a payload is refused or decoded, never a crash")
    func randomDamage() {
        let payload = PayloadBuilder().bytes()
        // Only the fields that are not raw kernel structures are checked; damage elsewhere may
        // well decode. What matters is that it is one or the other.
        var generator = SplitMix(seed: 0x5EED)
        var refused = 0
        for _ in 0 ..< 3000 {
            var damaged = payload
            for _ in 0 ..< 1 + Int(generator.next() % 4) {
                let index = Int(generator.next() % UInt64(damaged.count))
                damaged[index] = UInt8(truncatingIfNeeded: generator.next())
            }
            if case .failure = Self.decode(damaged) { refused += 1 }
        }
        #expect(refused > 0)
    }
}

/// A small deterministic generator, so a failure reproduces.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
