import Foundation
import HostSystem
import Testing
@testable import Devices
import Virtio
import VirtioTesting

@Suite("virtio-vsock: connections and credit") struct VsockTests {
    @Test func describesItself() throws {
        let rig = try VsockRig()
        #expect(rig.device.deviceType == 19)
        #expect(rig.device.queueMaxSizes.count == 3)
        #expect(rig.device.configSpace == [3, 0, 0, 0, 0, 0, 0, 0])
        #expect(rig.driver.read(.deviceID) == 19)
    }

    /// The guest connects to the host's port 1234: the program on `uds_1234` gets the stream.
    @Test func guestConnectsToAHostProgram() throws {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 1234)
        try rig.send(rig.guest(VsockOp.request, from: 5000, to: 1234))
        let answer = try rig.exchange()
        #expect(answer.count == 1)
        #expect(answer.first?.header.op == VsockOp.response)
        #expect(answer.first?.header.sourcePort == 1234)
        #expect(answer.first?.header.destinationPort == 5000)
        #expect(answer.first?.header.destinationCID == VsockRig.cid)
        #expect(answer.first?.header.sourceCID == VsockCID.host)
        #expect(answer.first.map { Int($0.header.bufferAllocation) } == 262_144)
        let host = try hostAccept(listener)

        try rig.send(rig.guest(VsockOp.readWrite, from: 5000, to: 1234, length: 5), payload: Array("hello".utf8))
        #expect(hostRead(host).bytes == Array("hello".utf8))

        try hostWrite(host, Array("world".utf8))
        let data = try rig.exchange()
        #expect(data.map(\.header.op) == [VsockOp.readWrite])
        #expect(data.first?.payload == Array("world".utf8))
        #expect(data.first?.header.forwardCount == 5)

        // The guest closes: it says so, we answer with a reset, and the program reads end of file.
        try rig.send(rig.guest(VsockOp.shutdown, from: 5000, to: 1234, flags: VsockShutdown.both))
        #expect(try rig.exchange().map(\.header.op) == [VsockOp.reset])
        #expect(hostRead(host).eof)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func nobodyListeningRefusesTheGuest() throws {
        let rig = try VsockRig()
        try rig.send(rig.guest(VsockOp.request, from: 5000, to: 99))
        let answer = try rig.exchange()
        #expect(answer.map(\.header.op) == [VsockOp.reset])
        #expect(answer.first?.header.destinationPort == 5000)
        #expect(answer.first?.header.sourcePort == 99)
        #expect(rig.device.connectionCount == 0)
    }

    /// A host program writes `CONNECT 52`, the guest accepts, the program reads `OK <port>`
    /// and the stream is raw from then on.
    @Test func hostProgramConnectsToAGuestPort() throws {
        let rig = try VsockRig()
        let host = try rig.hostConnect(line: "CONNECT 52\n")
        let request = try rig.exchange()
        #expect(request.map(\.header.op) == [VsockOp.request])
        let hostPort = try #require(request.first?.header.sourcePort)
        #expect(hostPort == 1 << 30)
        #expect(request.first?.header.destinationPort == 52)

        try rig.send(rig.guest(VsockOp.response, from: 52, to: hostPort))
        #expect(hostRead(host).bytes == Array("OK 1073741824\n".utf8))

        try hostWrite(host, vsockPattern(10_000))
        var got: [UInt8] = []
        for packet in try rig.exchange() where packet.header.op == VsockOp.readWrite { got += packet.payload }
        #expect(got == vsockPattern(10_000))

        try rig.send(rig.guest(VsockOp.readWrite, from: 52, to: hostPort, length: 3), payload: [1, 2, 3])
        #expect(hostRead(host).bytes == [1, 2, 3])

        // The program closes: after its last bytes the guest hears SHUTDOWN(send).
        try hostWrite(host, [9, 9])
        let ending = try rig.exchange()
        _ = host // keep it open until written
        #expect(ending.map(\.header.op) == [VsockOp.readWrite])
    }

    @Test func hostEndOfFileBecomesShutdownAfterTheData() throws {
        let rig = try VsockRig()
        var host: OwnedDescriptor? = try rig.hostConnect(line: "connect 7\n")
        let hostPort = try #require(try rig.exchange().first?.header.sourcePort)
        try rig.send(rig.guest(VsockOp.response, from: 7, to: hostPort))
        _ = hostRead(host!)
        try hostWrite(host!, vsockPattern(6000))
        host = nil // closed
        let packets = try rig.exchange()
        #expect(packets.map(\.header.op) == [VsockOp.readWrite, VsockOp.readWrite, VsockOp.shutdown])
        #expect(packets.last?.header.flags == VsockShutdown.send)
        #expect(packets.filter { $0.header.op == VsockOp.readWrite }.flatMap(\.payload) == vsockPattern(6000))
    }

    @Test func guestRefusalClosesTheHostProgramsSocket() throws {
        let rig = try VsockRig()
        let host = try rig.hostConnect(line: "CONNECT 52\n")
        let hostPort = try #require(try rig.exchange().first?.header.sourcePort)
        try rig.send(rig.guest(VsockOp.reset, from: 52, to: hostPort))
        let read = hostRead(host)
        #expect(read.eof)
        #expect(read.bytes.isEmpty)
        #expect(rig.device.connectionCount == 0)
    }

    @Test(arguments: ["HELLO 5\n", "CONNECT\n", "CONNECT -1\n", "CONNECT 4294967296\n", "CONNECT 5 6\n",
                      String(repeating: "A", count: 40) + "\n"])
    func badConnectLinesAreClosed(line: String) throws {
        let rig = try VsockRig()
        let host = try rig.hostConnect(line: line)
        #expect(try rig.exchange().isEmpty)
        #expect(hostRead(host).eof)
        #expect(rig.device.statistics.badConnectLines == 1)
    }

    /// The guest posted 8 KiB of buffer: that much arrives, then nothing until it says it
    /// consumed some; every byte arrives once, in order.
    @Test func hostToGuestRespectsTheGuestsCredit() throws {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 80)
        try rig.send(rig.guest(VsockOp.request, from: 6000, to: 80, bufferAllocation: 8192))
        _ = try rig.exchange()
        let host = try hostAccept(listener)
        let message = vsockPattern(40_000, seed: 3)
        try hostWrite(host, message)
        var got: [UInt8] = []
        for _ in 0 ..< 20 where got.count < message.count {
            let packets = try rig.exchange()
            got += packets.flatMap(\.payload)
            #expect(got.count % 8192 == 0 || got.count == message.count, "credit exceeded: \(got.count)")
            try rig.send(rig.guest(VsockOp.creditUpdate, from: 6000, to: 80, bufferAllocation: 8192,
                                   forwardCount: UInt32(got.count)))
        }
        #expect(got == message)
    }

    /// The host program does not read: the guest may fill our buffer (its credit) and no more;
    /// once the program reads, the guest hears how much was forwarded.
    @Test func guestToHostBacklogIsBoundedByCredit() throws {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 81)
        try rig.send(rig.guest(VsockOp.request, from: 6001, to: 81))
        _ = try rig.exchange()
        let host = try hostAccept(listener)
        var sent: [UInt8] = []
        let chunk = 32 * 1024
        for i in 0 ..< 8 { // 256 KiB: exactly the credit, whatever the socket holds
            let payload = vsockPattern(chunk, seed: i)
            try rig.send(rig.guest(VsockOp.readWrite, from: 6001, to: 81, length: UInt32(chunk)), payload: payload)
            sent += payload
        }
        #expect(rig.device.connectionCount == 1)
        var got: [UInt8] = []
        for _ in 0 ..< 50 where got.count < sent.count {
            got += hostRead(host, timeout: 20).bytes
            rig.watcher.settle(quietMilliseconds: 10)
        }
        #expect(got == sent)
        // Once the program has read it all, the guest knows it has at least half its credit back.
        let updates = try rig.received().filter { $0.header.op == VsockOp.creditUpdate }
        let advertised = try #require(updates.last?.header.forwardCount)
        #expect(sent.count - Int(advertised) <= 128 * 1024)
    }

    @Test func guestSendingPastItsCreditIsReset() throws {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 82)
        try rig.send(rig.guest(VsockOp.request, from: 6002, to: 82))
        _ = try rig.exchange()
        let host = try hostAccept(listener)
        // A program that never reads, and a guest that ignores its credit: once the socket and
        // our 256 KiB are full, the connection is reset.
        var total = 0
        while total <= 8 << 20 {
            try rig.send(rig.guest(VsockOp.readWrite, from: 6002, to: 82, length: 65536), payload: vsockPattern(65536))
            total += 65536
            if rig.device.connectionCount == 0 { break }
        }
        #expect(rig.device.connectionCount == 0)
        #expect(rig.device.statistics.protocolErrors >= 1)
        #expect(try rig.exchange().contains { $0.header.op == VsockOp.reset })
        _ = host
    }

    @Test func creditRequestIsAnswered() throws {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 83)
        try rig.send(rig.guest(VsockOp.request, from: 6003, to: 83))
        _ = try rig.exchange()
        let host = try hostAccept(listener)
        try rig.send(rig.guest(VsockOp.creditRequest, from: 6003, to: 83))
        let answer = try rig.exchange()
        #expect(answer.map(\.header.op) == [VsockOp.creditUpdate])
        #expect(answer.first.map { Int($0.header.bufferAllocation) } == 262_144)
        withExtendedLifetime(host) {}
    }

    /// Two host programs that always have bytes: the rx queue alternates between them.
    @Test func connectionsTakeTurns() throws {
        let rig = try VsockRig(rxBuffers: 8)
        let listener = try rig.hostListener(port: 90)
        var hosts: [OwnedDescriptor] = []
        for port in [7001, 7002] as [UInt32] {
            try rig.send(rig.guest(VsockOp.request, from: port, to: 90, bufferAllocation: 1 << 30))
            hosts.append(try hostAccept(listener))
        }
        _ = try rig.exchange()
        for host in hosts { try hostWrite(host, vsockPattern(60_000)) }
        rig.watcher.settle()
        let first = try rig.received()
        let ports = first.filter { $0.header.op == VsockOp.readWrite }.map(\.header.destinationPort)
        #expect(ports.count == 8)
        #expect(Set(ports) == [7001, 7002])
        #expect(zip(ports, ports.dropFirst()).allSatisfy { $0 != $1 }, "\(ports)")
    }

    @Test func manyConnectionsAtOnceInBothDirections() throws {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 95)
        var guestSide: [(UInt32, OwnedDescriptor)] = []
        for i in 0 ..< 4 {
            let port = UInt32(8000 + i)
            try rig.send(rig.guest(VsockOp.request, from: port, to: 95))
            guestSide.append((port, try hostAccept(listener)))
        }
        var hostSide: [(UInt32, OwnedDescriptor)] = []
        for i in 0 ..< 4 {
            let host = try rig.hostConnect(line: "CONNECT \(9000 + i)\n")
            rig.watcher.settle()
            let request = try #require(try rig.received().first { $0.header.op == VsockOp.request })
            try rig.send(rig.guest(VsockOp.response, from: request.header.destinationPort, to: request.header.sourcePort))
            #expect(hostRead(host).bytes == Array("OK \(request.header.sourcePort)\n".utf8))
            hostSide.append((request.header.sourcePort, host))
        }
        _ = try rig.exchange()
        // Each program sends its own bytes; each guest socket gets exactly its own.
        for (i, (_, socket)) in (guestSide + hostSide).enumerated() { try hostWrite(socket, vsockPattern(3000, seed: i)) }
        var byPort: [UInt32: [UInt8]] = [:]
        for _ in 0 ..< 10 { for packet in try rig.exchange() { byPort[packet.header.sourcePort == 95 ? packet.header.destinationPort : packet.header.sourcePort, default: []] += packet.payload } }
        for (i, (port, _)) in guestSide.enumerated() { #expect(byPort[port] == vsockPattern(3000, seed: i)) }
        for (i, (port, _)) in hostSide.enumerated() { #expect(byPort[port] == vsockPattern(3000, seed: 4 + i)) }
        #expect(rig.device.connectionCount == 8)
    }

    /// Connections come and go: after one has ended (and its descriptor number is free for the
    /// next), host programs still connect.
    @Test func connectionsAfterOneEnded() throws {
        let rig = try VsockRig()
        for round in 0 ..< 3 {
            let host = try rig.hostConnect(line: "CONNECT 5000\n")
            let request = try #require(try rig.exchange().first { $0.header.op == VsockOp.request }, "round \(round)")
            let hostPort = request.header.sourcePort
            try rig.send(rig.guest(VsockOp.response, from: 5000, to: hostPort))
            #expect(hostRead(host).bytes == Array("OK \(hostPort)\n".utf8))
            try hostWrite(host, vsockPattern(5000, seed: round))
            #expect(try rig.exchange().flatMap(\.payload) == vsockPattern(5000, seed: round))
            try rig.send(rig.guest(VsockOp.shutdown, from: 5000, to: hostPort, flags: VsockShutdown.both, forwardCount: 5000))
            #expect(try rig.exchange().map(\.header.op) == [VsockOp.reset])
            #expect(hostRead(host).eof)
        }
        #expect(rig.device.statistics.connectionsAdded == 3)
    }

    /// A driver reset ends every connection: host programs see their sockets close.
    @Test func resetClosesEveryConnection() throws {
        let rig = try VsockRig()
        let listener = try rig.hostListener(port: 96)
        try rig.send(rig.guest(VsockOp.request, from: 6100, to: 96))
        _ = try rig.exchange()
        let host = try hostAccept(listener)
        rig.driver.reset()
        rig.watcher.settle()
        #expect(hostRead(host).eof)
        #expect(rig.device.connectionCount == 0)
    }
}
