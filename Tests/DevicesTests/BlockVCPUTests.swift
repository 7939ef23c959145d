import Dispatch
import Foundation
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// No vCPU waits on the disk: a drain holds the device's `serving` lock through its system calls
/// on the image (a `pwritev`, an `fdatasync` that may take seconds), and nothing a guest's register
/// access does may need that lock.
@Suite struct BlockVCPUTests {
    @Test("configuration reads, a reset and a re-activation do not wait for a request being served")
    func registerAccessesDoNotWaitOnTheDisk() throws {
        let rig = try BlockRig(sectors: 64)
        let driver = rig.driver
        let finished = DispatchSemaphore(value: 0)
        let capacity = Mutex<UInt32?>(nil)
        // What a drain in the middle of an fdatasync holds.
        rig.device.serving.withLock { _ in
            Thread.detachNewThread {
                // A vCPU: reads the capacity, resets the device, and brings it up again.
                var bytes = [UInt8](repeating: 0, count: 4)
                driver.transport.read(offset: MMIOTransport.configOffset + UInt64(BlockConfigOffset.capacity), into: &bytes)
                capacity.withLock { $0 = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
                driver.reset()
                driver.addStatus([.acknowledge, .driver])
                finished.signal()
            }
            #expect(finished.wait(timeout: .now() + 10) == .success,
                    "a register access waited for the drain in progress")
        }
        #expect(capacity.withLock { $0 } == 64)
        #expect(rig.device.negotiatedFeatures == 0)
    }

    @Test("a kick the transport sees on a vCPU thread goes to the I/O thread's doorbell when there is one")
    func kicksGoToTheDoorbell() throws {
        let rig = try BlockRig(sectors: 64)
        let rung = Mutex<[UInt32]>([])
        rig.transport.forwardKicks { queue in rung.withLock { $0.append(queue) } }
        try rig.queue.addChain(readable: [blockHeader(BlockRequestType.read, sector: 0)], writable: [512, 1])
        rig.driver.kick(0)
        // Forwarded, not served on this thread: nothing is used yet.
        #expect(rung.withLock { $0 } == [0])
        #expect(try rig.queue.drainUsed().isEmpty)
        // The I/O thread's doorbell handler serves it.
        rig.transport.handleNotification(queue: 0)
        #expect(try rig.queue.drainUsed().count == 1)
    }
}
