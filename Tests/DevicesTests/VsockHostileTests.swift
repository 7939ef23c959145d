import Foundation
import HostSystem
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// A guest that sends whatever it likes: each bad packet is dropped and counted, or answered
/// with a reset, and a connection that was already open carries on.
@Suite("virtio-vsock: a hostile guest") struct VsockHostileTests {
    /// A rig with one healthy connection (guest port 4000 to host port 500) to check afterwards.
    func rigWithConnection() throws -> (VsockRig, UnixListener, OwnedDescriptor) {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 500)
        try rig.send(rig.guest(VsockOp.request, from: 4000, to: 500))
        _ = try rig.exchange()
        return (rig, listener, try hostAccept(listener))
    }

    func healthyConnectionStillWorks(_ rig: VsockRig, _ host: OwnedDescriptor, _ tag: UInt8) throws {
        try rig.send(rig.guest(VsockOp.readWrite, from: 4000, to: 500, length: 2), payload: [tag, tag])
        #expect(hostRead(host).bytes == [tag, tag])
        try hostWrite(host, [tag])
        #expect(try rig.exchange().first?.payload == [tag])
    }

    @Test func packetsThatCannotBeReadAreDroppedAndCounted() throws {
        let (rig, _, host) = try rigWithConnection()
        // Shorter than a header.
        try rig.sendRaw([[1, 2, 3]])
        // `len` claims more than the chain holds.
        try rig.send(rig.guest(VsockOp.readWrite, from: 4000, to: 500, length: 100), payload: [1, 2])
        // From another CID, and to a CID that is not the host.
        var spoofed = rig.guest(VsockOp.readWrite, from: 4000, to: 500, length: 1)
        spoofed.sourceCID = 42
        try rig.send(spoofed, payload: [7])
        var elsewhere = rig.guest(VsockOp.request, from: 4001, to: 500)
        elsewhere.destinationCID = 9
        try rig.send(elsewhere)
        // A packet with a buffer for the device to write.
        try rig.sendRaw([rig.guest(VsockOp.creditRequest, from: 4000, to: 500).bytes], writable: [16])
        #expect(rig.device.statistics.malformed == 5)
        #expect(try rig.exchange().isEmpty)
        #expect(hostRead(host).bytes.isEmpty)
        try healthyConnectionStillWorks(rig, host, 0x11)
    }

    @Test func aHeaderSplitAcrossDescriptorsIsRead() throws {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 501)
        try rig.send(rig.guest(VsockOp.request, from: 4100, to: 501), split: [1, 7, 20])
        #expect(try rig.exchange().map(\.header.op) == [VsockOp.response])
        let host = try hostAccept(listener)
        try rig.send(rig.guest(VsockOp.readWrite, from: 4100, to: 501, length: 4), payload: [1, 2, 3, 4], split: [43])
        #expect(hostRead(host).bytes == [1, 2, 3, 4])
    }

    @Test func unknownTypesOpsAndConnectionsAreReset() throws {
        let (rig, _, host) = try rigWithConnection()
        var seqpacket = rig.guest(VsockOp.request, from: 4002, to: 500)
        seqpacket.type = VsockType.seqpacket
        try rig.send(seqpacket)
        try rig.send(rig.guest(VsockOp.readWrite, from: 4999, to: 500, length: 1), payload: [1]) // no such connection
        try rig.send(rig.guest(VsockOp.shutdown, from: 4998, to: 501))
        try rig.send(rig.guest(VsockOp.reset, from: 4997, to: 501)) // a reset for nothing: silence
        let answers = try rig.exchange()
        #expect(answers.map(\.header.op) == [VsockOp.reset, VsockOp.reset, VsockOp.reset])
        #expect(answers.map(\.header.destinationPort) == [4002, 4999, 4998])
        try healthyConnectionStillWorks(rig, host, 0x22)

        // An op nobody defined ends that connection.
        try rig.send(rig.guest(99, from: 4000, to: 500))
        #expect(try rig.exchange().map(\.header.op) == [VsockOp.reset])
        #expect(hostRead(host).eof)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func impossibleCreditResetsTheConnection() throws {
        let (rig, _, host) = try rigWithConnection()
        // The guest claims to have consumed 1000 bytes we never sent.
        try rig.send(rig.guest(VsockOp.creditUpdate, from: 4000, to: 500, forwardCount: 1000))
        #expect(try rig.exchange().map(\.header.op) == [VsockOp.reset])
        #expect(hostRead(host).eof)
        #expect(rig.device.statistics.protocolErrors == 1)
    }

    @Test func oversizedPayloadResetsTheConnection() throws {
        let (rig, _, host) = try rigWithConnection()
        let big = 64 * 1024 + 1
        try rig.send(rig.guest(VsockOp.readWrite, from: 4000, to: 500, length: UInt32(big)), payload: vsockPattern(big))
        #expect(try rig.exchange().map(\.header.op) == [VsockOp.reset])
        #expect(hostRead(host).eof)
    }

    /// A second REQUEST for a connection that exists is refused; the first carries on.
    @Test func duplicateRequestIsRefused() throws {
        let (rig, _, host) = try rigWithConnection()
        try rig.send(rig.guest(VsockOp.request, from: 4000, to: 500))
        #expect(try rig.exchange().map(\.header.op) == [VsockOp.reset])
        try healthyConnectionStillWorks(rig, host, 0x33)
    }

    /// RX chains that cannot hold a header are handed back empty, and counted.
    @Test func tinyReceiveBuffersAreReturned() throws {
        let rig = try VsockRig(rxBuffers: 0)
        try rig.rx.addChain(writable: [8])
        try rig.rx.addChain(readable: [[1, 2, 3]])
        rig.driver.kick(UInt32(VsockDevice.receiveQueue))
        try rig.send(rig.guest(VsockOp.request, from: 4300, to: 777)) // a reset is owed
        let used = try rig.rx.drainUsed()
        #expect(used.map(\.length) == [0, 0])
        #expect(rig.device.statistics.rxMalformedBuffers == 2)
    }

    /// Resets owed for nonexistent connections while the guest posts no rx buffers are bounded.
    @Test func resetsOwedAreBounded() throws {
        let rig = try VsockRig(rxBuffers: 0)
        for port in 0 ..< UInt32(VsockDevice.maximumQueuedResets + 10) {
            try rig.send(rig.guest(VsockOp.readWrite, from: port, to: 1, length: 0))
        }
        #expect(rig.device.statistics.resetsDropped == 10)
    }

    /// Guest packets are parsed from whatever bytes it likes; none of them stop the device.
    @Test func randomPacketsNeverStopTheDevice() throws {
        let (rig, _, host) = try rigWithConnection()
        var generator = SystemRandomNumberGenerator()
        for _ in 0 ..< 300 {
            var header = rig.guest(UInt16.random(in: 0 ... 9, using: &generator), from: UInt32.random(in: 3999 ... 4001, using: &generator),
                                   to: UInt32.random(in: 499 ... 501, using: &generator), length: UInt32.random(in: 0 ... 64, using: &generator),
                                   flags: UInt32.random(in: 0 ... 3, using: &generator),
                                   forwardCount: UInt32.random(in: 0 ... 2, using: &generator))
            if Bool.random(using: &generator) { header.type = UInt16.random(in: 0 ... 3, using: &generator) }
            if header.sourcePort == 4000, header.destinationPort == 500 { continue } // keep the healthy one
            let payload = vsockPattern(Int.random(in: 0 ... 64, using: &generator))
            try rig.send(header, payload: payload, split: [Int.random(in: 1 ... 43, using: &generator)])
            _ = try rig.received()
        }
        try healthyConnectionStillWorks(rig, host, 0x44)
    }
}
