import Foundation
import GuestMemory
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// The net device's logic over a socket pair: features, configuration, transmit and receive,
/// flow control — no TAP device, no privileges.
@Suite struct NetDeviceTests {
    static let allOffloadFeatures: UInt64 = VirtioNetFeature.checksum | VirtioNetFeature.guestChecksum
        | VirtioNetFeature.hostTSO4 | VirtioNetFeature.hostTSO6 | VirtioNetFeature.hostECN
        | VirtioNetFeature.guestTSO4 | VirtioNetFeature.guestTSO6 | VirtioNetFeature.guestECN

    // MARK: - Identity, configuration, features

    @Test func configurationSpaceHoldsTheMACAndLinkUp() throws {
        let rig = try NetRig()
        #expect(rig.driver.read(.deviceID) == 1)
        var bytes: [UInt8] = []
        for offset in 0 ..< 8 {
            var byte = [UInt8](repeating: 0xEE, count: 1)
            rig.transport.read(offset: MMIOTransport.configOffset + UInt64(offset), into: &byte)
            bytes += byte
        }
        #expect(bytes == [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x01, 0x00])
        var status = [UInt8](repeating: 0, count: 2)
        rig.transport.read(offset: MMIOTransport.configOffset + 6, into: &status)
        #expect(status == [1, 0])
        #expect(rig.device.configSpace == [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x01, 0x00])
    }

    @Test func aDeviceWithoutAMACGetsALocallyAdministeredOne() throws {
        let device = NetDevice(endpoint: try NetSocketEndpoint())
        #expect(device.mac.bytes[0] == 0x02)
        #expect(Array(device.configSpace.prefix(6)) == device.mac.bytes)
    }

    @Test func offeredFeaturesFollowTheEndpointsOffloads() throws {
        let full = NetDevice(endpoint: try NetSocketEndpoint(offloads: .all))
        let base = VirtioNetFeature.mac | VirtioNetFeature.status | VirtioNetFeature.mergeableRxBuffers
        #expect(full.offeredFeatures == base | Self.allOffloadFeatures)
        let none = NetDevice(endpoint: try NetSocketEndpoint(offloads: []))
        #expect(none.offeredFeatures == base)
        let csumOnly = NetDevice(endpoint: try NetSocketEndpoint(offloads: [.checksum]))
        #expect(csumOnly.offeredFeatures == base | VirtioNetFeature.checksum | VirtioNetFeature.guestChecksum)
        #expect(full.queueMaxSizes == [256, 256])
        #expect(full.deviceType == VirtioDeviceID.net)
    }

    @Test func theDriverSeesTheFeaturesThroughTheTransport() throws {
        let rig = try NetRig()
        let offered = rig.driver.deviceFeatures()
        #expect(offered & VirtioFeature.version1 != 0)
        #expect(offered & 0xFF_FFFF == rig.device.offeredFeatures)
        #expect(rig.features == offered)
        #expect(rig.transport.isActivated)
    }

    @Test(arguments: [
        (NetDeviceTests.allOffloadFeatures, TapOffloads.all),
        (VirtioNetFeature.guestChecksum, TapOffloads.checksum),
        (VirtioNetFeature.guestChecksum | VirtioNetFeature.guestTSO4, TapOffloads([.checksum, .tso4])),
        (VirtioNetFeature.guestChecksum | VirtioNetFeature.guestECN, TapOffloads.checksum),
        // A driver acking TSO without GUEST_CSUM breaks the spec; the TAP must still get a set
        // the kernel accepts.
        (VirtioNetFeature.guestTSO4 | VirtioNetFeature.guestTSO6, TapOffloads()),
        (VirtioNetFeature.checksum | VirtioNetFeature.hostTSO4, TapOffloads()),
        (UInt64(0), TapOffloads()),
    ] as [(UInt64, TapOffloads)])
    func activationSetsTheTapOffloadsFromTheAckedGuestFeatures(features: UInt64, expected: TapOffloads) throws {
        let rig = try NetRig(features: VirtioFeature.version1 | VirtioNetFeature.mac | features)
        #expect(rig.endpoint.offloadHistory.last == expected)
        rig.driver.reset()
        #expect(rig.endpoint.offloadHistory.last == [])
    }

    // MARK: - Transmit

    @Test func aFrameInOneDescriptorReachesTheHostWithItsHeader() throws {
        let rig = try NetRig()
        let packet = netHeader() + netFrame(60)
        let used = try rig.transmit([packet])
        #expect(used.map(\.length) == [0])
        #expect(rig.endpoint.allSent() == [packet])
        #expect(rig.line.count == 1)
        #expect(rig.device.statistics.txPackets == 1)
        #expect(rig.device.statistics.txBytes == 60)
    }

    @Test func aFrameSplitAnyWayIsGatheredIntoOnePacket() throws {
        let rig = try NetRig()
        let packet = netHeader(flags: VirtioNetHeader.needsChecksum, csumStart: 34, csumOffset: 16) + netFrame(1514, seed: 9)
        let splits: [[Int]] = [[12, 1514], [5, 7, 100, 1414], [3, 1, 1, 1, 6, 2, 1512], [1526]]
        for split in splits {
            var pieces: [[UInt8]] = []
            var offset = 0
            for size in split {
                pieces.append(Array(packet[offset ..< offset + size]))
                offset += size
            }
            try rig.transmit(pieces)
            try rig.transmit(pieces, indirect: true)
        }
        let sent = rig.endpoint.allSent()
        #expect(sent.count == 2 * splits.count)
        #expect(sent.allSatisfy { $0 == packet })
    }

    @Test func aChainInMorePiecesThanOneWritevTakesIsCopiedOut() throws {
        let rig = try NetRig()
        let packet = netHeader() + netFrame(12 * 100 - 12, seed: 3)
        let pieces = stride(from: 0, to: packet.count, by: 12).map { Array(packet[$0 ..< $0 + 12]) }
        #expect(pieces.count > GuestIOVectors.maxVectors)
        #expect(try rig.transmit(pieces, indirect: true).map(\.length) == [0])
        #expect(rig.endpoint.allSent() == [packet])
    }

    @Test func aMaximumSizeFrameIsSent() throws {
        let rig = try NetRig()
        let packet = netHeader() + netFrame(NetDevice.maxFrameLength)
        try rig.transmit([packet])
        #expect(rig.endpoint.allSent() == [packet])
    }

    @Test func malformedTransmitChainsAreCompletedButNotSent() throws {
        let rig = try NetRig(exclude: VirtioNetFeature.checksum | VirtioNetFeature.hostTSO4 | VirtioNetFeature.hostTSO6
                                | VirtioNetFeature.hostECN)
        let cases: [(String, [[UInt8]], [UInt32])] = [
            ("shorter than an Ethernet header", [netHeader() + netFrame(13)], []),
            ("only a header", [netHeader()], []),
            ("longer than 65550 bytes", [netHeader() + netFrame(NetDevice.maxFrameLength + 1)], []),
            ("with a writable descriptor", [netHeader() + netFrame(60)], [16]),
            ("NEEDS_CSUM without CSUM", [netHeader(flags: VirtioNetHeader.needsChecksum) + netFrame(60)], []),
            ("TSO4 without HOST_TSO4", [netHeader(gso: VirtioNetHeader.gsoTCPv4, gsoSize: 1448) + netFrame(60)], []),
            ("UDP fragmentation", [netHeader(gso: VirtioNetHeader.gsoUDP) + netFrame(60)], []),
            ("ECN without a TCP type", [netHeader(gso: VirtioNetHeader.gsoECN) + netFrame(60)], []),
        ]
        for (name, pieces, writable) in cases {
            let used = try rig.transmit(pieces, writable: writable)
            #expect(used.map(\.length) == [0], "\(name)")
            rig.tx.resetDataArea()
        }
        #expect(rig.endpoint.allSent().isEmpty)
        #expect(rig.device.statistics.txMalformed == UInt64(cases.count))
        // A good frame afterwards still goes through.
        try rig.transmit([netHeader() + netFrame(60)])
        #expect(rig.endpoint.allSent().count == 1)
    }

    @Test func offloadedFramesAreSentWhenTheOffloadWasNegotiated() throws {
        let rig = try NetRig()
        let packet = netHeader(flags: VirtioNetHeader.needsChecksum, gso: VirtioNetHeader.gsoTCPv6 | VirtioNetHeader.gsoECN,
                               hdrLen: 74, gsoSize: 1428, csumStart: 54, csumOffset: 16) + netFrame(9000)
        try rig.transmit([packet])
        #expect(rig.endpoint.allSent() == [packet])
    }

    @Test func aChainTheQueueRefusesIsCountedAndTheNextOneStillGoes() throws {
        let rig = try NetRig()
        try rig.tx.addRawChain([RawDescriptor(address: 0xFFFF_0000, length: 64)], publish: false)
        try rig.tx.addChain(readable: [netHeader() + netFrame(60)])
        rig.driver.kick(1)
        #expect(try rig.tx.drainUsed().map(\.length) == [0, 0])
        #expect(rig.endpoint.allSent().count == 1)
        #expect(rig.device.statistics.txMalformed == 1)
    }

    @Test func framesTheHostCannotTakeAreDroppedNotRetried() throws {
        let rig = try NetRig()
        // Fill the socket until it would block, then transmit: the frame is dropped and counted.
        var filler = netHeader() + netFrame(60_000)
        var stuffed = 0
        while filler.withUnsafeMutableBytes({ send(rig.endpoint.fileDescriptor, $0.baseAddress, $0.count, 0) }) > 0 {
            stuffed += 1
            if stuffed > 1000 { break }
        }
        #expect(stuffed < 1000)
        let used = try rig.transmit([netHeader() + netFrame(60_000)])
        #expect(used.map(\.length) == [0])
        #expect(rig.device.statistics.txDroppedBusy == 1)
        #expect(rig.device.statistics.txPackets == 0)
    }

    // MARK: - Receive

    @Test func aPacketLandsInTheNextReceiveChainWithNumBuffersSet() throws {
        let rig = try NetRig(exclude: VirtioNetFeature.mergeableRxBuffers)
        let chain = try rig.post([1526])
        rig.driver.kick(0)
        let frame = netFrame(1514, seed: 5)
        try rig.endpoint.inject(netHeader(numBuffers: 0xBEEF) + frame)
        rig.device.tapReadable()
        let used = try rig.rx.drainUsed()
        #expect(used == [UsedElement(id: UInt32(chain.head), length: 1526)])
        let bytes = try rig.contents(of: chain, length: used[0].length)
        #expect(Array(bytes[0 ..< 12]) == netHeader(numBuffers: 1))
        #expect(Array(bytes[12...]) == frame)
        #expect(rig.line.count == 1)
        #expect(rig.device.statistics.rxPackets == 1)
        #expect(rig.device.statistics.rxBytes == 1514)
    }

    @Test func withoutBuffersTheDeviceStopsWatchingTheTapUntilTheGuestKicks() throws {
        let rig = try NetRig()
        #expect(rig.interest.values == [false, true]) // told at once, then on activation
        try rig.endpoint.inject(netHeader() + netFrame(100))
        try rig.endpoint.inject(netHeader() + netFrame(200))
        rig.device.tapReadable()
        #expect(!rig.device.wantsTapReadable)
        #expect(rig.interest.values == [false, true, false])
        #expect(rig.device.statistics.rxStalls == 1)
        // Another readiness report while paused changes nothing.
        rig.device.tapReadable()
        #expect(rig.interest.values == [false, true, false])

        // The guest posts buffers and kicks: both waiting packets arrive at once, in order.
        let first = try rig.post([2048])
        let second = try rig.post([2048])
        rig.driver.kick(0)
        let used = try rig.rx.drainUsed()
        #expect(used == [UsedElement(id: UInt32(first.head), length: 112), UsedElement(id: UInt32(second.head), length: 212)])
        #expect(rig.device.statistics.rxPackets == 2)
        // Those used up the ring again, so the device still does not want to hear about the TAP…
        #expect(!rig.device.wantsTapReadable)
        #expect(rig.interest.values == [false, true, false])
        // …until a chain is waiting for the next packet.
        try rig.post([2048])
        rig.driver.kick(0)
        #expect(rig.device.wantsTapReadable)
        #expect(rig.interest.values == [false, true, false, true])
    }

    @Test func aChainThatFindsTheTapEmptyWaitsForTheNextPacket() throws {
        let rig = try NetRig()
        let chain = try rig.post([1526])
        rig.driver.kick(0) // nothing to read yet: the chain is kept, not returned
        #expect(try rig.rx.drainUsed().isEmpty)
        #expect(rig.device.wantsTapReadable)
        try rig.endpoint.inject(netHeader() + netFrame(64))
        rig.device.tapReadable()
        #expect(try rig.rx.drainUsed() == [UsedElement(id: UInt32(chain.head), length: 76)])
    }

    @Test func aPacketTooLargeForTheChainIsDroppedAndTheChainReused() throws {
        let rig = try NetRig(exclude: VirtioNetFeature.mergeableRxBuffers)
        let chain = try rig.post([100, 100])
        rig.driver.kick(0)
        try rig.endpoint.inject(netHeader() + netFrame(189)) // 201 bytes: one too many
        let small = netFrame(188, seed: 4)
        try rig.endpoint.inject(netHeader() + small)          // exactly 200
        rig.device.tapReadable()
        let used = try rig.rx.drainUsed()
        #expect(used == [UsedElement(id: UInt32(chain.head), length: 200)])
        #expect(Array(try rig.contents(of: chain, length: 200)[12...]) == small)
        #expect(rig.device.statistics.rxDroppedTooLarge == 1)
        #expect(rig.device.statistics.rxPackets == 1)
    }

    @Test func aHeaderSplitAcrossDescriptorsGetsItsNumBuffers() throws {
        let rig = try NetRig(exclude: VirtioNetFeature.mergeableRxBuffers)
        // num_buffers (bytes 10 and 11) straddles the first two descriptors.
        let chain = try rig.post([11, 3, 1600])
        rig.driver.kick(0)
        let frame = netFrame(1000, seed: 8)
        try rig.endpoint.inject(netHeader(numBuffers: 0xFFFF) + frame)
        rig.device.tapReadable()
        let used = try rig.rx.drainUsed()
        #expect(used.map(\.length) == [1012])
        let bytes = try rig.contents(of: chain, length: 1012)
        #expect(Array(bytes[0 ..< 12]) == netHeader(numBuffers: 1))
        #expect(Array(bytes[12...]) == frame)
    }

    @Test func withMergeableBuffersAPacketSpansSeveralChains() throws {
        let rig = try NetRig()
        #expect(rig.features & VirtioNetFeature.mergeableRxBuffers != 0)
        let chains = try (0 ..< 4).map { _ in try rig.post([1000]) }
        rig.driver.kick(0)
        let frame = netFrame(2488, seed: 2)
        try rig.endpoint.inject(netHeader() + frame) // 2500 bytes: 1000 + 1000 + 500
        let next = netFrame(60, seed: 3)
        try rig.endpoint.inject(netHeader() + next)
        rig.device.tapReadable()
        let used = try rig.rx.drainUsed()
        #expect(used == [UsedElement(id: UInt32(chains[0].head), length: 1000),
                         UsedElement(id: UInt32(chains[1].head), length: 1000),
                         UsedElement(id: UInt32(chains[2].head), length: 500),
                         UsedElement(id: UInt32(chains[3].head), length: 72)])
        let joined = try rig.contents(of: chains[0], length: 1000) + rig.contents(of: chains[1], length: 1000)
            + rig.contents(of: chains[2], length: 500)
        #expect(Array(joined[0 ..< 12]) == netHeader(numBuffers: 3))
        #expect(Array(joined[12...]) == frame)
        let second = try rig.contents(of: chains[3], length: 72)
        #expect(Array(second[0 ..< 12]) == netHeader(numBuffers: 1))
        #expect(Array(second[12...]) == next)
        // One interrupt for the burst.
        #expect(rig.line.count == 1)
    }

    @Test func aBigPacketWithTooFewMergeableBuffersIsDropped() throws {
        let rig = try NetRig()
        try rig.post([1000])
        try rig.post([1000])
        rig.driver.kick(0)
        try rig.endpoint.inject(netHeader() + netFrame(3000))
        try rig.endpoint.inject(netHeader() + netFrame(1500))
        rig.device.tapReadable()
        #expect(try rig.rx.drainUsed().map(\.length) == [1000, 512])
        #expect(rig.device.statistics.rxDroppedTooLarge == 1)
    }

    @Test func aReceiveChainInManyPiecesIsFilledThroughTheHostBuffer() throws {
        let rig = try NetRig(exclude: VirtioNetFeature.mergeableRxBuffers)
        let chain = try rig.post(Array(repeating: 32, count: 100), indirect: true)
        rig.driver.kick(0)
        let frame = netFrame(2000, seed: 6)
        try rig.endpoint.inject(netHeader() + frame)
        try rig.endpoint.inject(netHeader() + netFrame(4000)) // larger than the 3200-byte chain
        let last = netFrame(3188, seed: 7)
        try rig.endpoint.inject(netHeader() + last)             // exactly fills it
        rig.device.tapReadable()
        var used = try rig.rx.drainUsed()
        #expect(used == [UsedElement(id: UInt32(chain.head), length: 2012)])
        var bytes = try rig.contents(of: chain, length: 2012)
        #expect(Array(bytes[0 ..< 12]) == netHeader(numBuffers: 1))
        #expect(Array(bytes[12...]) == frame)

        rig.rx.resetDataArea()
        let again = try rig.post(Array(repeating: 32, count: 100), indirect: true)
        rig.driver.kick(0)
        used = try rig.rx.drainUsed()
        #expect(used == [UsedElement(id: UInt32(again.head), length: 3200)])
        bytes = try rig.contents(of: again, length: 3200)
        #expect(Array(bytes[12...]) == last)
        #expect(rig.device.statistics.rxDroppedTooLarge == 1)
    }

    @Test func receiveChainsTooSmallForAHeaderGoBackEmpty() throws {
        let rig = try NetRig()
        let tiny = try rig.post([11])
        let readableOnly = try rig.rx.addChain(readable: [[1, 2, 3]])
        let good = try rig.post([1526])
        rig.driver.kick(0)
        try rig.endpoint.inject(netHeader() + netFrame(60))
        rig.device.tapReadable()
        #expect(try rig.rx.drainUsed() == [UsedElement(id: UInt32(tiny.head), length: 0),
                                           UsedElement(id: UInt32(readableOnly.head), length: 0),
                                           UsedElement(id: UInt32(good.head), length: 72)])
        #expect(rig.device.statistics.rxMalformedBuffers == 2)
    }

    @Test func withoutGuestChecksumFlagsAreClearedAndPartialChecksumsDropped() throws {
        let rig = try NetRig(exclude: Self.allOffloadFeatures)
        let chains = try (0 ..< 3).map { _ in try rig.post([1526]) }
        rig.driver.kick(0)
        try rig.endpoint.inject(netHeader(flags: VirtioNetHeader.dataValid) + netFrame(60))
        try rig.endpoint.inject(netHeader(flags: VirtioNetHeader.needsChecksum, csumStart: 34, csumOffset: 6) + netFrame(60))
        try rig.endpoint.inject(netHeader(gso: VirtioNetHeader.gsoTCPv4, hdrLen: 54, gsoSize: 1448) + netFrame(60))
        try rig.endpoint.inject(netHeader() + netFrame(61))
        rig.device.tapReadable()
        let used = try rig.rx.drainUsed()
        #expect(used == [UsedElement(id: UInt32(chains[0].head), length: 72),
                         UsedElement(id: UInt32(chains[1].head), length: 73)])
        #expect(try rig.contents(of: chains[0], length: 12) == netHeader(numBuffers: 1))
        #expect(rig.device.statistics.rxDroppedUnsupported == 2)
    }

    @Test func withGuestChecksumTheHostsFlagsReachTheGuest() throws {
        let rig = try NetRig()
        let chain = try rig.post([70000])
        rig.driver.kick(0)
        let header = netHeader(flags: VirtioNetHeader.needsChecksum, gso: VirtioNetHeader.gsoTCPv4,
                               hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        try rig.endpoint.inject(header + netFrame(NetDevice.maxFrameLength))
        rig.device.tapReadable()
        #expect(try rig.rx.drainUsed().map(\.length) == [UInt32(NetDevice.maxFrameLength + 12)])
        var expected = header
        expected.replaceSubrange(10 ..< 12, with: netLE(1))
        #expect(try rig.contents(of: chain, length: 12) == expected)
    }

    @Test func receptionIsBoundedPerCallSoOtherDescriptorsGetTheirTurn() throws {
        let rig = try NetRig(exclude: VirtioNetFeature.mergeableRxBuffers)
        for _ in 0 ..< 64 { try rig.post([128]) }
        rig.driver.kick(0)
        for i in 0 ..< 70 { try rig.endpoint.inject(netHeader() + netFrame(60, seed: UInt8(i))) }
        rig.device.tapReadable()
        // One burst: at most `receiveBurst` packets, and the device still wants to hear more.
        #expect(try rig.rx.drainUsed().count == NetDevice.receiveBurst)
        #expect(rig.device.wantsTapReadable)
        for _ in 0 ..< 10 { try rig.post([128]) }
        rig.device.tapReadable()
        #expect(try rig.rx.drainUsed().count == 6)
        #expect(rig.device.wantsTapReadable)
    }

    @Test func theEndOfTheStreamStopsReceptionInsteadOfSpinning() throws {
        let rig = try NetRig()
        try rig.post([1526])
        rig.driver.kick(0)
        shutdown(rig.endpoint.peer, Int32(SHUT_RDWR))
        rig.device.tapReadable()
        #expect(!rig.device.wantsTapReadable)
        #expect(rig.device.statistics.rxErrors == 1)
    }

    // MARK: - Reset

    @Test func resetDropsHeldChainsStopsWatchingAndClearsOffloads() throws {
        let rig = try NetRig()
        try rig.post([1526])
        rig.driver.kick(0)
        #expect(rig.device.wantsTapReadable)
        rig.driver.reset()
        #expect(!rig.device.wantsTapReadable)
        #expect(rig.interest.values.last == false)
        #expect(rig.endpoint.offloadHistory.last == [])
        // Calls after the reset do nothing.
        try rig.endpoint.inject(netHeader() + netFrame(60))
        rig.device.tapReadable()
        rig.device.processQueue(1)
        #expect(rig.device.statistics.rxPackets == 0)

        // A new driver starts over on fresh rings, and the waiting packet arrives.
        let rx = try MockDriverQueue(memory: rig.memory, size: 64, base: 0x1_0000, dataAreaSize: 0x18_0000)
        let tx = try MockDriverQueue(memory: rig.memory, size: 64, base: 0x20_0000, dataAreaSize: 0x18_0000)
        try rig.driver.initialize(queues: [rx, tx])
        #expect(rig.device.wantsTapReadable)
        let chain = try rx.addChain(writable: [1526])
        rig.driver.kick(0)
        #expect(try rx.drainUsed() == [UsedElement(id: UInt32(chain.head), length: 72)])
    }
}
