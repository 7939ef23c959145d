import CKVM
import Devices
import FuzzSupport
import GuestMemory
import Launcher
import Snapshot
import Virtio
import VirtioTesting

/// A snapshot's state file is input from the user (`lguest restore --snapshot`, `PUT
/// /snapshot/load`): every size, count and offset in it is checked before use. The first byte
/// picks what the rest of the input becomes:
///
/// ```
/// 0  file       the bytes of a state file: `StateFile.decode`, then `SavedMachine(payload:)`
/// 1  payload    a payload, wrapped as a state file with a right checksum (so every input gets
///               past the envelope to the sections), decoded, then `SavedMachine(payload:)`
/// 2  platform   the PLAT section's body: the UART's, the i8042's and the power controller's
///               state restored into new devices, which are then read the way a guest would
/// 3  transport  u8 device (even: virtio-rng, odd: the balloon), u16 n and n bytes of guest
///               memory from address 0, then a virtio-mmio transport's state restored over a
///               new device of that kind; a restored transport is kicked on every queue,
///               read, and reset
/// ```
///
/// Nothing here touches KVM: this is everything a restore reads before it creates a VM.
enum SnapshotHarness {
    enum Mode: UInt8, CaseIterable {
        case file, payload, platform, transport
    }

    static let memorySize: UInt64 = 0x10000

    static func run(_ input: inout FuzzInput) {
        let mode = Mode(rawValue: input.byte() % UInt8(Mode.allCases.count))!
        switch mode {
        case .file:
            guard let payload = try? StateFile.decode(input.rest()) else { return }
            machine(payload)
        case .payload:
            let payload = input.rest()
            // Encoding then decoding gives the payload back: StateFile promises it.
            guard let decoded = try? StateFile.decode(StateFile.encode(payload: payload)), decoded == payload else {
                fatalError("a payload of \(payload.count) bytes did not survive encode and decode")
            }
            machine(payload)
        case .platform:
            platform(input.rest())
        case .transport:
            transport(&input)
        }
    }

    static func machine(_ payload: [UInt8]) {
        guard let saved = try? SavedMachine(payload: payload) else { return }
        // What SavedMachine accepts is a configuration `Machine.init` would accept.
        do throws(LaunchError) { try saved.configuration.validate() } catch {
            fatalError("SavedMachine accepted a configuration that does not validate: \(error)")
        }
        _ = saved.notes.count
    }

    /// A sink for what the UART transmits (nothing, here).
    final class Discard: ByteSink {
        func write(_ data: UnsafeRawBufferPointer) {}
    }

    static func platform(_ bytes: [UInt8]) {
        let power = PowerControl()
        let serial = Serial(output: Discard(), interrupt: {})
        let keyboard = I8042(power: power)
        var reader = StateReader(bytes, context: "section PLAT")
        do throws(SnapshotError) {
            try serial.restoreState(from: &reader)
            try keyboard.restoreState(from: &reader)
            try power.restoreState(from: &reader)
        } catch { return }
        guard reader.isAtEnd else { return }
        // The guest reads what was restored: every UART register, some input, the i8042's
        // status and data; then writes the i8042 a data byte (which a half-written command takes).
        var byte: UInt8 = 0
        withUnsafeMutableBytes(of: &byte) { buffer in
            for offset: UInt64 in 0 ... 7 { serial.read(offset: offset, into: buffer) }
            for _ in 0 ..< 16 { serial.read(offset: 0, into: buffer) }
            for _ in 0 ..< 4 {
                keyboard.read(offset: I8042.commandOffset, into: buffer)
                keyboard.read(offset: I8042.dataOffset, into: buffer)
            }
        }
        withUnsafeBytes(of: UInt8(0x47)) { keyboard.write(offset: I8042.dataOffset, from: $0) }
        var again = StateWriter()
        serial.saveState(to: &again)
        keyboard.saveState(to: &again)
        power.saveState(to: &again)
    }

    static func transport(_ input: inout FuzzInput) {
        let balloon = input.bool()
        let image = input.take(Int(input.le(UInt16.self)))
        guard let memory = try? GuestMemory(size: memorySize), (try? memory.write(image, at: GuestAddress(0))) != nil else { return }
        let device: any VirtioDevice = balloon
            ? BalloonDevice(configuration: BalloonConfiguration(amountMiB: 1, deflateOnOOM: true, statisticsIntervalSeconds: 1,
                                                                freePageReporting: true))
            : RngDevice()
        let transport = MMIOTransport(device: device, memory: memory, interrupt: Silent())
        var reader = StateReader(input.rest(), context: "a virtio device's state")
        do throws(SnapshotError) { try transport.restoreState(from: &reader) } catch { return }
        let driver = MockDriver(transport: transport)
        for queue in 0 ... UInt32(device.queueMaxSizes.count) {
            if transport.isQueueReady(Int(queue)) || queue == UInt32(device.queueMaxSizes.count) {
                transport.handleNotification(queue: queue)
            }
            driver.write(.queueSel, queue)
            _ = driver.read(.queueReady)
            _ = driver.read(.queueNumMax)
        }
        _ = driver.acknowledgeInterrupt()
        var bytes = [UInt8](repeating: 0, count: 8)
        transport.read(offset: MMIOTransport.configOffset, into: &bytes)
        var again = StateWriter()
        transport.saveState(to: &again)
        driver.reset()
    }

    final class Silent: InterruptLine {
        func trigger() {}
    }

    // MARK: - Seeds

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        var seeds: [(name: String, bytes: [UInt8])] = []
        for (name, payload) in [("serial-1cpu", machinePayload(cpus: 1, virtioConsole: false)),
                                ("virtio-2cpus", machinePayload(cpus: 2, virtioConsole: true))] {
            seeds.append(("file-\(name)", [Mode.file.rawValue] + StateFile.encode(payload: payload)))
            seeds.append(("payload-\(name)", [Mode.payload.rawValue] + payload))
        }
        seeds.append(("platform", [Mode.platform.rawValue] + platformState()))
        if let rng = transportSeed(balloon: false) { seeds.append(("transport-rng", rng)) }
        if let balloon = transportSeed(balloon: true) { seeds.append(("transport-balloon", balloon)) }
        return seeds
    }

    /// A whole machine's payload, its sections in the order and layout `SavedMachine` reads:
    /// a configuration with a disk, a network device and a balloon, the PICs, IOAPIC and PIT,
    /// `cpus` vCPUs with a few CPUID leaves and MSRs, the platform devices, one state per
    /// virtio device, and notes.
    static func machinePayload(cpus: Int, virtioConsole: Bool) -> [UInt8] {
        var w = StateWriter()
        w.section("CONF") { w in
            w.string("/boot/vmlinuz")
            w.optionalString("/boot/initrd.img")
            w.string("console=ttyS0 reboot=k panic=1")
            w.u64(256)
            w.u32(UInt32(cpus))
            w.u8(virtioConsole ? 1 : 0)
            w.bool(true)     // rng
            w.bool(false)    // virtio devices on the command line
            w.u32(1)         // disks
            w.string("/var/lib/root.img"); w.bool(false); w.optionalString("root")
            bucket(&w, (10 << 20, 1000, 0)); bucket(&w, nil)  // 10 MiB/s, any number of requests
            w.u32(1)         // network devices
            w.u8(0); w.string("tap0"); w.data([0x52, 0x54, 0, 0x12, 0x34, 0x56])
            bucket(&w, nil); bucket(&w, nil)                   // receive: no limit
            bucket(&w, (100, 1000, 50)); bucket(&w, nil)       // transmit: 100 bytes a second
            w.bool(true); w.u64(3); w.string("/tmp/v.sock")             // vsock
            w.bool(true); w.u32(64); w.bool(true); w.u16(5); w.bool(true) // balloon
        }
        w.section("KVMV") { w in
            w.u32(3)
            for id in 0 ..< 3 {
                var chip = kvm_irqchip()
                chip.chip_id = UInt32(id)
                w.raw(chip)
            }
            w.raw(kvm_pit_state2())
            w.u64(1_000_000_000)
            w.u64(1_700_000_000_000_000_000)
        }
        w.section("KVMC") { w in
            w.u32(UInt32(cpus))
            for _ in 0 ..< cpus {
                w.u32(2)
                var leaf = kvm_cpuid_entry2()
                leaf.function = 0; leaf.eax = 0xD; leaf.ebx = 0x756E_6547
                w.raw(leaf)
                leaf.function = 1; leaf.eax = 0x806EA; leaf.ecx = 1 << 31
                w.raw(leaf)
                w.raw(kvm_regs()); w.raw(kvm_sregs()); w.raw(kvm_xsave()); w.raw(kvm_xcrs())
                w.raw(kvm_debugregs()); w.raw(kvm_lapic_state()); w.raw(kvm_vcpu_events()); w.raw(kvm_mp_state())
                w.u32(2)
                w.u32(0x10); w.u64(123_456)          // TSC
                w.u32(0x4B56_4D01); w.u64(0x1001)    // kvmclock
            }
        }
        w.section("PLAT") { w in for byte in platformState() { w.u8(byte) } }
        // virtio-console, the disk, the NIC, rng, vsock, balloon: as many states as devices.
        let devices = (virtioConsole ? 1 : 0) + 5
        w.section("VIRT") { w in
            w.u32(UInt32(devices))
            for _ in 0 ..< devices { w.data([UInt8](repeating: 0, count: 16)) }
        }
        w.section("NOTE") { $0.data(Array("{\"resources\":{}}".utf8)) }
        return w.bytes
    }

    static func bucket(_ w: inout StateWriter, _ values: (UInt64, UInt64, UInt64)?) {
        w.bool(values != nil)
        if let values { w.u64(values.0); w.u64(values.1); w.u64(values.2) }
    }

    /// The platform devices' state as a running guest leaves it: a programmed UART with input
    /// waiting, an i8042 halfway through a command, a shutdown announced.
    static func platformState() -> [UInt8] {
        let power = PowerControl()
        let serial = Serial(output: Discard(), interrupt: {})
        let keyboard = I8042(power: power)
        for (offset, value): (UInt64, UInt8) in [(3, 0x80), (0, 0x01), (1, 0), (3, 0x03), (1, 0x03), (2, 0x07), (4, 0x0B), (7, 0x5A)] {
            withUnsafeBytes(of: value) { serial.write(offset: offset, from: $0) }
        }
        serial.enqueueInput(Array("ls\r".utf8))
        keyboard.pressKeys([0x1E, 0x9E])
        withUnsafeBytes(of: UInt8(0x60)) { keyboard.write(offset: I8042.commandOffset, from: $0) }
        power.noteShutdownAnnounced()
        var w = StateWriter()
        serial.saveState(to: &w)
        keyboard.saveState(to: &w)
        power.saveState(to: &w)
        return w.bytes
    }

    /// A transport saved after the mock driver initialized it, with a request published and
    /// not yet served.
    static func transportSeed(balloon: Bool) -> [UInt8]? {
        guard let memory = try? GuestMemory(size: memorySize) else { return nil }
        let device: any VirtioDevice = balloon
            ? BalloonDevice(configuration: BalloonConfiguration(amountMiB: 1, deflateOnOOM: true, statisticsIntervalSeconds: 1,
                                                                freePageReporting: true))
            : RngDevice()
        let transport = MMIOTransport(device: device, memory: memory, interrupt: Silent())
        let driver = MockDriver(transport: transport)
        let count = device.queueMaxSizes.count
        let size: UInt16 = 8
        let data = Rings.end(queues: count, size: size)
        guard let queues = try? (0 ..< count).map({ index throws(MockDriverError) in
            try MockDriverQueue(memory: memory, size: size, layout: Rings.layout(queue: index, size: size),
                                dataArea: data + UInt64(index) * 0x800, dataAreaSize: 0x800)
        }), (try? driver.initialize(queues: queues)) != nil else { return nil }
        if balloon {
            _ = try? queues[0].addChain(readable: [[0x8, 0, 0, 0, 0x9, 0, 0, 0]])
        } else {
            _ = try? queues[0].addChain(writable: [16])
        }
        var w = StateWriter()
        transport.saveState(to: &w)
        let image = Rings.image(of: memory)
        var seed = FuzzInputBuilder()
        seed.byte(Mode.transport.rawValue)
        seed.byte(balloon ? 1 : 0)
        seed.le(UInt16(image.count))
        seed.append(image)
        seed.append(w.bytes)
        return seed.bytes
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(SnapshotHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    SnapshotHarness.run(&input)
    return 0
}

@_cdecl("fuzz_snapshot_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
