import GuestMemory
import Virtio
import VirtioTesting

/// An interrupt line nobody listens to: the guest below polls InterruptStatus instead.
final class SilentLine: InterruptLine {
    func trigger() {}
}

/// A virtio device on the virtio-mmio transport, and a guest that does whatever the fuzz input
/// says. The input is:
///
/// ```
/// u8    queue size: 1 << (n % 5), 1 to 16 entries, every queue the same
/// u64   feature mask: the driver acks what the device offers & mask, plus VERSION_1
/// u16   n, then n bytes: guest memory from address 0 (the rings, see `Rings`, then buffers)
/// ops   until the input ends, each an opcode byte and its operands (`Operation`)
/// ```
///
/// The guest first initializes the device the way Linux does (so the fuzzer does not have to
/// find the status sequence), then plays the operations, then kicks every queue once.
/// Everything a real guest can do is reachable from here: any ring or buffer contents, kicks
/// of any queue number, register writes of any width at any offset (including reset, queue
/// reconfiguration and config space), and re-initialization.
public final class HostileGuest {
    public static let memorySize: UInt64 = 0x10000

    public let memory: GuestMemory
    public let transport: MMIOTransport
    public let queueSize: UInt16
    public let queueCount: Int
    let driver: MockDriver
    let features: UInt64

    public enum Operation: UInt8, CaseIterable {
        /// u32 queue: a QueueNotify write (the queue number is not checked by the guest).
        case kick
        /// u16 address, u8 n, n bytes: the guest writes its memory.
        case poke
        /// u16 offset (`windowOffset`), u8 width (1 + n % 8 bytes, as KVM reports them), that
        /// many bytes: an MMIO write, through the entry the vCPU loop uses.
        case writeRegister
        /// u16 offset, u8 width: an MMIO read.
        case readRegister
        /// The harness's own event (a packet from the host, a key on the console): `hook`.
        case host
        /// Reset and initialize again, same features and rings.
        case reinitialize
        /// Read InterruptStatus and acknowledge it, as Linux's interrupt handler does.
        case acknowledgeInterrupt
        /// Kick every queue.
        case kickAll
    }

    /// Reads the header and the memory image from `input` and initializes `device`.
    public init(device: any VirtioDevice, input: inout FuzzInput) throws(GuestMemoryError) {
        memory = try GuestMemory(size: Self.memorySize)
        queueSize = UInt16(1) << (input.byte() % 5)
        let mask = input.le(UInt64.self)
        let image = input.take(Int(input.le(UInt16.self)))
        try memory.write(image, at: GuestAddress(0))

        transport = MMIOTransport(device: device, memory: memory, interrupt: SilentLine())
        driver = MockDriver(transport: transport)
        queueCount = device.queueMaxSizes.count
        features = transport.deviceFeatures & (mask | VirtioFeature.version1)
        initialize()
    }

    func initialize() {
        let queues = (0 ..< queueCount).map { (size: queueSize, layout: Rings.layout(queue: $0, size: queueSize)) }
        // A refusal here is one of the outcomes being fuzzed, not a harness failure.
        _ = try? driver.initialize(features: features, queues: queues)
    }

    /// Plays the operations in the rest of `input`, then kicks every queue. `hook` handles
    /// `.host` and may read its operands from `input`.
    public func play(_ input: inout FuzzInput, hook: (inout FuzzInput) -> Void = { _ in }) {
        while !input.isAtEnd {
            let operation = Operation(rawValue: input.byte() % UInt8(Operation.allCases.count))!
            switch operation {
            case .kick:
                driver.kick(input.le(UInt32.self))
            case .poke:
                let address = GuestAddress(UInt64(input.le(UInt16.self)))
                let bytes = input.take(Int(input.byte()))
                // The guest owns its memory; only the part past the end is cut off.
                let room = Int(Self.memorySize - address.rawValue)
                try? memory.write(bytes.prefix(room), at: address)
            case .writeRegister:
                let offset = Self.windowOffset(input.le(UInt16.self))
                let data = input.take(1 + Int(input.byte() % 8))
                // Safe: the buffer is `data`'s own storage, alive for the call, as the vCPU's exit buffer would be.
                data.withUnsafeBytes { transport.write(offset: offset, data: $0) }
            case .readRegister:
                let offset = Self.windowOffset(input.le(UInt16.self))
                var data = [UInt8](repeating: 0, count: 1 + Int(input.byte() % 8))
                // Safe: as above; the transport fills exactly `data.count` bytes.
                data.withUnsafeMutableBytes { transport.read(offset: offset, into: $0) }
            case .host:
                hook(&input)
            case .reinitialize:
                initialize()
            case .acknowledgeInterrupt:
                driver.acknowledgeInterrupt()
            case .kickAll:
                kickAll()
            }
        }
        kickAll()
    }

    /// Mostly the registers and config space (the first 0x200 bytes); with the top bit set,
    /// anywhere in the page Firmware reserves for the window.
    static func windowOffset(_ raw: UInt16) -> UInt64 {
        raw & 0x8000 != 0 ? UInt64(raw & 0xFFF) : UInt64(raw % 0x200)
    }

    func kickAll() {
        for queue in 0 ..< queueCount { driver.kick(UInt32(queue)) }
    }

    // MARK: - Seeds

    /// A seed: the header for `queueSize` and every offered feature, the memory image `build`
    /// leaves behind (rings laid out by mock driver queues, one per device queue), then `operations`.
    public static func seed(queues: Int, queueSize: UInt16 = 8, featureMask: UInt64 = .max,
                            dataAreaSize dataSize: UInt64 = 0x800, operations: [UInt8] = [],
                            build: ([MockDriverQueue]) throws -> Void) -> [UInt8] {
        do {
            let memory = try GuestMemory(size: memorySize)
            let dataStart = Rings.end(queues: queues, size: queueSize)
            let mocks = try (0 ..< queues).map { index in
                try MockDriverQueue(memory: memory, size: queueSize, layout: Rings.layout(queue: index, size: queueSize),
                                    dataArea: dataStart + UInt64(index) * dataSize, dataAreaSize: dataSize)
            }
            try build(mocks)
            let image = Rings.image(of: memory)
            var seed = FuzzInputBuilder()
            seed.byte(UInt8(queueSize.trailingZeroBitCount))
            seed.le(featureMask)
            seed.le(UInt16(image.count))
            seed.append(image)
            seed.append(operations)
            return seed.bytes
        } catch {
            fatalError("seed could not be built: \(error)")
        }
    }
}
