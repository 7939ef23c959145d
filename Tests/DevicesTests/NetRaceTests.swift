import Foundation
import GuestMemory
import Synchronization
import Testing
@testable import Devices
import Virtio

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

}
