import GuestMemory
import Synchronization
import Virtio
import VirtioTesting

/// An interrupt line that counts its pulses.
final class CountingLine: InterruptLine {
    private let pulses = Atomic<Int>(0)
    func trigger() { pulses.add(1, ordering: .sequentiallyConsistent) }
    var count: Int { pulses.load(ordering: .sequentiallyConsistent) }
}

/// 1 MiB of guest memory, enough for a few queues and their buffers.
func makeMemory(size: UInt64 = 0x10_0000) throws -> GuestMemory {
    try GuestMemory(size: size)
}

/// A mock queue at 0x10000 and its device side.
func makeQueuePair(size: UInt16 = 16, memory: GuestMemory? = nil, eventIndex: Bool = false,
                   indirect: Bool = true) throws -> (MockDriverQueue, Queue) {
    let memory = try memory ?? makeMemory()
    let driver = try MockDriverQueue(memory: memory, size: size, base: 0x10000)
    let queue = try driver.makeQueue(eventIndex: eventIndex, indirectDescriptors: indirect)
    return (driver, queue)
}

/// A test device that answers each request with the bytes it was sent (as many as fit), and
/// records what it saw. Drains its queue the way a real device would: pop until empty,
/// carry on after a request error, stop on a structural one.
final class EchoDevice: VirtioDevice {
    struct State {
        var queues: [Queue] = []
        var features: UInt64 = 0
        var interrupt: VirtioInterrupt?
        var activations = 0
        var resets = 0
        var processCalls = 0
        var errors: [VirtqueueError] = []
        var config: [UInt8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC]
        var failActivation = false
    }

    let state = Mutex(State())
    let deviceType: UInt32
    let queueMaxSizes: [UInt16]
    let offeredFeatures: UInt64

    init(deviceType: UInt32 = 42, queueMaxSizes: [UInt16] = [16], offeredFeatures: UInt64 = 0b101) {
        self.deviceType = deviceType
        self.queueMaxSizes = queueMaxSizes
        self.offeredFeatures = offeredFeatures
    }

    var configSpace: [UInt8] { state.withLock { $0.config } }

    func writeConfig(offset: Int, bytes: [UInt8]) {
        state.withLock { $0.config.replaceSubrange(offset ..< offset + bytes.count, with: bytes) }
    }

    func activate(features: UInt64, memory: GuestMemory, queues: [Queue],
                  interrupt: VirtioInterrupt) throws(DeviceActivationError) {
        let fail = state.withLock { $0.failActivation }
        if fail { throw DeviceActivationError("told to fail") }
        state.withLock {
            $0.features = features
            $0.queues = queues
            $0.interrupt = interrupt
            $0.activations += 1
        }
    }

    func processQueue(_ index: Int) {
        state.withLock { s in
            s.processCalls += 1
            guard index < s.queues.count else { return }
            while true {
                let chain: DescriptorChain
                do throws(VirtqueueError) {
                    guard let next = try s.queues[index].popAvailable() else { break }
                    chain = next
                } catch {
                    s.errors.append(error)
                    if error.isStructural { break } else { continue }
                }
                var reader = chain.reader()
                var writer = chain.writer()
                do throws(VirtqueueError) {
                    let bytes = try reader.read(count: min(reader.remaining, writer.remaining))
                    try writer.write(bytes)
                    try s.queues[index].addUsed(head: chain.head, length: writer.bytesWritten)
                } catch {
                    s.errors.append(error)
                }
            }
            s.queues[index].notifyGuestIfNeeded()
        }
    }

    func reset() {
        state.withLock {
            $0.queues = []
            $0.interrupt = nil
            $0.resets += 1
        }
    }
}
