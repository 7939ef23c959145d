import Foundation
import GuestMemory
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting
import TestSupport

/// The net device against a driver that does not wait its turn: a second thread reading the
/// used ring while the device publishes, a guest rewriting a header while it is being sent,
/// and a receive path that fails once.
@Suite struct NetRaceTests {
    final class Flags: Sendable {
        let stop = Atomic<Bool>(false)
        let consumed = Atomic<UInt16>(0)
        let violations = Atomic<Int>(0)
        let exited = Atomic<Bool>(false)

        /// Stops the other thread and waits until it has, so it never touches guest memory
        /// that the test has freed.
        func stopAndJoin() {
            stop.store(true, ordering: .relaxed)
            while !exited.load(ordering: .acquiring) { sched_yield() }
        }
    }

    /// A polling driver (Linux's virtnet_poll without interrupts) reads `used.idx` and, for
    /// each frame's first element, its `num_buffers`: every buffer it promises must already be
    /// visible, or Linux counts a length error and takes the rest for new frames.
    @Test func aMergeableFrameIsPublishedWithAllItsBuffersAtOnce() throws {
        let rig = try NetRig()
        #expect(rig.features & VirtioNetFeature.mergeableRxBuffers != 0)
        let memory = rig.memory, layout = rig.rx.layout, size = rig.rx.size
        let flags = Flags()
        let poller = Thread {
            defer { flags.exited.store(true, ordering: .releasing) }
            var cursor: UInt16 = 0
            while !flags.stop.load(ordering: .relaxed) {
                guard let published = try? memory.loadAcquire16(at: layout.deviceArea + 2) else { return }
                while cursor != published {
                    let slot = layout.deviceArea + 4 + 8 * UInt64(cursor % size)
                    guard let id = try? memory.read(UInt32.self, at: slot),
                          let buffer = try? memory.read(UInt64.self, at: layout.descriptorTable + 16 * UInt64(id % UInt32(size))),
                          let count = try? memory.read(UInt16.self, at: GuestAddress(buffer) + 10)
                    else { return }
                    // The frame's buffers are the `count` elements from `cursor` on.
                    if published &- cursor < count { flags.violations.add(1, ordering: .relaxed) ; break }
                    cursor &+= max(count, 1)
                }
                flags.consumed.store(cursor, ordering: .releasing)
            }
        }
        poller.start()
        defer { flags.stopAndJoin() }

        // Each round: 32 chains of 256 bytes, and 8 frames of 1000 bytes that take 4 chains each.
        let deadline = Date().addingTimeInterval(3)
        var rounds = 0
        while rounds < 4000, Date() < deadline, flags.violations.load(ordering: .relaxed) == 0 {
            rig.rx.resetDataArea()
            for _ in 0 ..< 32 { try rig.post([256]) }
            rig.driver.kick(0)
            for seed in 0 ..< 8 { try rig.endpoint.inject(netHeader() + netFrame(988, seed: UInt8(seed))) }
            rig.device.tapReadable()
            rounds += 1
            let target = UInt16(truncatingIfNeeded: rounds * 32)
            // Wait for the poller, so the next round does not rewrite what it is reading.
            let wait = Date().addingTimeInterval(5)
            while flags.consumed.load(ordering: .acquiring) != target, flags.violations.load(ordering: .relaxed) == 0 {
                guard Date() < wait else { Issue.record("the poller fell behind at round \(rounds)"); return }
                sched_yield()
            }
            #expect(try rig.rx.drainUsed().count == 32)
        }
        let violations = flags.violations.load(ordering: .relaxed)
        #expect(violations == 0,
                "the poller saw num_buffers promise elements not yet published (after \(rounds) rounds)")
        #expect(rig.device.statistics.rxPackets == UInt64(rounds * 8))
    }

    /// The guest flips NEEDS_CSUM on and off in a frame's header while the device sends it,
    /// without CSUM negotiated: what the host receives must be the header that was checked.
    @Test func aHeaderTheGuestRewritesDuringTransmitIsSentAsChecked() throws {
        let rig = try NetRig(exclude: NetDeviceTests.allOffloadFeatures)
        let header = try rig.tx.allocate(12)
        try rig.memory.write(netHeader(), at: header)
        let frame = try rig.tx.allocate(60)
        try rig.memory.write(netFrame(60), at: frame)
        let memory = rig.memory
        let flags = Flags()
        let scribbler = Thread {
            defer { flags.exited.store(true, ordering: .releasing) }
            var value: UInt8 = 0
            while !flags.stop.load(ordering: .relaxed) {
                value ^= VirtioNetHeader.needsChecksum
                try? memory.write(value, at: header)
            }
        }
        scribbler.start()
        defer { flags.stopAndJoin() }

        var bad = 0, sent = 0
        let deadline = Date().addingTimeInterval(3)
        for _ in 0 ..< 20000 where Date() < deadline && bad == 0 {
            try rig.tx.addRawChain([RawDescriptor(address: header, length: 12, flags: .next),
                                    RawDescriptor(address: frame, length: 60)])
            rig.driver.kick(1)
            _ = try rig.tx.drainUsed()
            for packet in rig.endpoint.allSent() {
                sent += 1
                if packet[0] & VirtioNetHeader.needsChecksum != 0 { bad += 1 }
            }
        }
        #expect(sent > 0)
        #expect(bad == 0, "the host got \(bad) frames with NEEDS_CSUM, which was never negotiated")
    }

    /// An endpoint whose descriptor fails reads (the write end of a pipe: EBADF) until told
    /// to use the working socket pair.
    final class FailingOnceEndpoint: PacketEndpoint {
        let working: NetSocketEndpoint
        let pipeEnds: [CInt]
        let failing = Atomic<Bool>(true)
        init() throws {
            working = try NetSocketEndpoint()
            var fds: [CInt] = [-1, -1]
            guard pipe(&fds) == 0 else { throw NetTestError("pipe failed") }
            pipeEnds = fds
        }
        deinit { pipeEnds.forEach { close($0) } }
        var fileDescriptor: CInt { failing.load(ordering: .relaxed) ? pipeEnds[1] : working.fileDescriptor }
        var supportedOffloads: TapOffloads { working.supportedOffloads }
        func setOffloads(_ offloads: TapOffloads) throws(TapError) { try working.setOffloads(offloads) }
    }

    @Test func afterAReceiveErrorTheDeviceKeepsWatchingTheTap() throws {
        let endpoint = try FailingOnceEndpoint()
        let memory = try GuestMemory(size: 0x40_0000)
        let device = NetDevice(endpoint: endpoint, mac: NetRig.mac)
        let interest = NetInterestLog()
        device.setTapReadableHandler { interest.record($0) }
        let transport = MMIOTransport(device: device, memory: memory, interrupt: NetInterruptCounter())
        let driver = MockDriver(transport: transport)
        let rx = try MockDriverQueue(memory: memory, size: 64, base: 0x1_0000, dataAreaSize: 0x10_0000)
        let tx = try MockDriverQueue(memory: memory, size: 64, base: 0x20_0000, dataAreaSize: 0x10_0000)
        try driver.initialize(queues: [rx, tx])
        let chain = try rx.addChain(writable: [1526])
        driver.kick(0)
        #expect(device.statistics.rxErrors == 1)
        // The guest will not kick again: its buffer is posted. The TAP must stay watched.
        #expect(device.wantsTapReadable)
        #expect(interest.values.last == true)

        endpoint.failing.store(false, ordering: .relaxed)
        try endpoint.working.inject(netHeader() + netFrame(64))
        device.tapReadable()
        #expect(try rx.drainUsed() == [UsedElement(id: UInt32(chain.head), length: 76)])
    }

    /// A read a signal interrupts is retried, not counted as a lost frame. The endpoint is made
    /// blocking (a TAP never is) so that signals find the device inside `readv`: each one used to
    /// cost a turn of the receive burst, and a storm of them ended the burst with nothing read.
    @Test func aReadInterruptedBySignalsIsRetried() throws {
        let restore = installInterruptingSignal(SIGUSR2)
        defer { restore() }
        let rig = try NetRig()
        try rig.post([1526])
        rig.driver.kick(0)
        let fd = rig.endpoint.fileDescriptor
        #expect(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0)
        let me = pthread_self(), endpoint = rig.endpoint
        let storm = Thread {
            for _ in 0 ..< 150 {
                pthread_kill(me, SIGUSR2)
                usleep(2000)
            }
            try? endpoint.inject(netHeader() + netFrame(64))
            shutdown(endpoint.peer, Int32(SHUT_WR)) // then end of file, which ends the burst
        }
        storm.start()
        rig.device.tapReadable()
        #expect(rig.device.statistics.rxPackets == 1)
        #expect(try rig.rx.drainUsed().map(\.length) == [76])
    }
}

