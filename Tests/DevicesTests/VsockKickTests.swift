import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// The vsock tx queue turns the guest's kicks off while it drains, and leaves them on when it
/// returns: a packet published after the drain must still get a kick through.
@Suite struct VsockKickTests {
    @Test("after a drain of the tx queue, the guest's kicks are on again: avail_event is current, NO_NOTIFY clear")
    func kicksAreOnWhenTransmitReturns() throws {
        let rig = try VsockRig()
        for round in 1 ... 3 {
            // Resets for connections that do not exist: taken, answered with nothing.
            for port in 0 ..< 4 {
                try rig.tx.addChain(readable: [rig.guest(VsockOp.reset, from: UInt32(5000 + port), to: 1234).bytes])
            }
            rig.driver.kick(UInt32(VsockDevice.transmitQueue))
            #expect(try rig.tx.drainUsed().count == 4, "round \(round)")
            #expect(try rig.tx.usedFlags() & RingFlags.usedNoNotify == 0, "round \(round)")
            #expect(try rig.tx.availEvent() == UInt16(4 * round), "round \(round)")
            rig.tx.resetDataArea()
        }
        #expect(rig.device.statistics.txPackets == 12)
        #expect(rig.device.statistics.malformed == 0)
    }
}
