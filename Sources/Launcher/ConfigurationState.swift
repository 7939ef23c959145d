import Devices
import Snapshot

// The machine's configuration inside a state file: what a restoring lguest needs to rebuild the
// same machine (memory size, vCPUs, the console, each device and its options). The kernel and
// initrd are not needed again (they are in the memory file) and their paths are kept only to
// describe the machine. Disks, TAP devices and the vsock socket are opened again by path at
// restore, the same ones or new ones the user names.
extension VMConfiguration {
    func encode(to w: inout StateWriter, macs: [MACAddress]) {
        w.string(kernelPath)
        w.optionalString(initrdPath)
        w.string(commandLine)
        w.u64(memoryMiB)
        w.u32(UInt32(cpus))
        w.u8(console == .serial ? 0 : 1)
        w.bool(rng)
        w.bool(virtioOnCommandLine)
        w.u32(UInt32(disks.count))
        for disk in disks {
            w.string(disk.path)
            w.bool(disk.readOnly)
            w.optionalString(disk.serial)
            encode(disk.rateLimit, to: &w)
        }
        w.u32(UInt32(networks.count))
        for (network, mac) in zip(networks, macs) {
            switch network.tap {
            case let .existing(name): w.u8(0); w.string(name)
            case let .create(name, address): w.u8(1); w.optionalString(name); w.optionalString(address?.description)
            }
            w.data(mac.bytes)
            encode(network.receiveLimit, to: &w)
            encode(network.transmitLimit, to: &w)
        }
        w.bool(vsock != nil)
        if let vsock { w.u64(vsock.guestCID); w.string(vsock.udsPath) }
        w.bool(balloon != nil)
        if let balloon {
            w.u32(balloon.amountMiB)
            w.bool(balloon.deflateOnOOM)
            w.u16(balloon.statisticsIntervalSeconds)
            w.bool(balloon.freePageReporting)
        }
    }

    private func encode(_ limit: RateLimit, to w: inout StateWriter) {
        for bucket in [limit.bandwidth, limit.operations] {
            w.bool(bucket != nil)
            if let bucket { w.u64(bucket.size); w.u64(bucket.refillTime); w.u64(bucket.oneTimeBurst) }
        }
    }

    init(from r: inout StateReader) throws(SnapshotError) {
        let kernel = try r.string()
        let initrd = try r.optionalString()
        let commandLine = try r.string(limit: 1 << 16)
        let memory = try r.u64()
        let cpus = Int(try r.u32())
        let console: ConsoleKind
        switch try r.u8() {
        case 0: console = .serial
        case 1: console = .virtio
        case let other: throw .malformed("console kind \(other)")
        }
        self.init(kernelPath: kernel, initrdPath: initrd, commandLine: commandLine, memoryMiB: memory,
                  cpus: cpus, console: console, rng: try r.bool())
        virtioOnCommandLine = try r.bool()
        for _ in 0..<(try r.count(limit: 64, of: "disks")) {
            let path = try r.string()
            let readOnly = try r.bool()
            let serial = try r.optionalString()
            disks.append(BlockConfiguration(path: path, readOnly: readOnly, serial: serial, rateLimit: try Self.rateLimit(&r)))
        }
        for _ in 0..<(try r.count(limit: 64, of: "network devices")) {
            let tap: TapSpec
            switch try r.u8() {
            case 0: tap = .existing(try r.string())
            case 1:
                let name = try r.optionalString()
                var address: IPv4Address?
                if let text = try r.optionalString() {
                    do throws(TapError) { address = try IPv4Address(text) }
                    catch { throw .malformed("a TAP address \(text.debugDescription)") }
                }
                tap = .create(name: name, hostAddress: address)
            case let other: throw .malformed("TAP kind \(other)")
            }
            let mac: MACAddress
            let macBytes = try r.data(limit: 6)
            do throws(NetConfigurationError) { mac = try MACAddress(bytes: macBytes) }
            catch { throw .malformed("a MAC address: \(error)") }
            networks.append(NetConfiguration(tap: tap, mac: mac, receiveLimit: try Self.rateLimit(&r), transmitLimit: try Self.rateLimit(&r)))
        }
        if try r.bool() {
            vsock = VsockConfiguration(guestCID: try r.u64(), udsPath: try r.string())
        }
        if try r.bool() {
            balloon = BalloonConfiguration(amountMiB: try r.u32(), deflateOnOOM: try r.bool(),
                                           statisticsIntervalSeconds: try r.u16(), freePageReporting: try r.bool())
        }
    }

    private static func rateLimit(_ r: inout StateReader) throws(SnapshotError) -> RateLimit {
        var buckets: [TokenBucket.Configuration?] = []
        for _ in 0..<2 {
            guard try r.bool() else { buckets.append(nil); continue }
            buckets.append(TokenBucket.Configuration(size: try r.u64(), refillTime: try r.u64(), oneTimeBurst: try r.u64()))
        }
        return RateLimit(bandwidth: buckets[0], operations: buckets[1])
    }
}
