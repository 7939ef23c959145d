import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// The transmit queue turns the guest's kicks off while it drains, and always leaves them on
/// when it returns: a frame published after the drain must still get a kick through.
@Suite struct NetKickTests {
    @Test("after sending, the guest's kicks are on again: avail_event is current, NO_NOTIFY clear", arguments: [true, false])
    func kicksAreOnWhenTransmitReturns(eventIndex: Bool) throws {
        let rig = try NetRig(exclude: eventIndex ? 0 : VirtioFeature.ringEventIndex)
        #expect((rig.features & VirtioFeature.ringEventIndex != 0) == eventIndex)
        let frame = [UInt8](repeating: 0xAB, count: 60)
        for round in 1 ... 3 {
            for _ in 0 ..< 4 { try rig.tx.addChain(readable: [netHeader(), frame]) }
            rig.driver.kick(1)
            #expect(try rig.tx.drainUsed().count == 4, "round \(round)")
            #expect(try rig.tx.usedFlags() & RingFlags.usedNoNotify == 0, "round \(round)")
            if eventIndex { #expect(try rig.tx.availEvent() == UInt16(4 * round), "round \(round)") }
        }
        #expect(rig.device.statistics.txPackets == 12)
    }
}
