import Devices
import Foundation
import GuestMemory
import Testing
import VirtioTesting

/// After a restore the vsock device tells the guest's driver that every connection it had is
/// gone: one VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue, in a buffer the driver posted.
@Suite struct VsockTransportResetTests {
    @Test func theResetEventGoesToAnEventBuffer() throws {
        let rig = try VsockRig()
        #expect(!rig.device.announceTransportReset(), "with no event buffer posted there is nothing to send it in")
        let chain = try rig.events.addChain(writable: [8])
        rig.driver.kick(UInt32(VsockDevice.eventQueue))
        #expect(rig.device.announceTransportReset())
        let used = try rig.events.drainUsed()
        #expect(used == [UsedElement(id: UInt32(chain.head), length: 4)])
        // struct virtio_vsock_event { le32 id; }: 0 is VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
        #expect(try rig.events.read(chain.writable[0]).prefix(4) == [0, 0, 0, 0])
    }

    @Test func aBufferTooSmallIsRefusedAndCounted() throws {
        let rig = try VsockRig()
        try rig.events.addChain(writable: [2])
        rig.driver.kick(UInt32(VsockDevice.eventQueue))
        let before = rig.device.statistics.malformed
        #expect(!rig.device.announceTransportReset())
        #expect(rig.device.statistics.malformed == before + 1)
    }
}
