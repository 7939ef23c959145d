import FuzzSupport
import GuestMemory
import Virtio
import VirtioTesting

/// The split virtqueue on its own, as a device uses it: the guest's memory holds the rings,
/// descriptor tables (direct and indirect) and buffers; the device pops chains, reads and
/// writes them through `ChainReader`/`ChainWriter` in pieces of any size, and publishes used
/// elements, while the guest keeps rewriting its memory in between. The input is:
///
/// ```
/// u8    queue size: 1 << (n % 9), 1 to 256 entries
/// u8    bit 0: EVENT_IDX negotiated; bit 1: indirect descriptors negotiated
/// u16   n, then n bytes: guest memory from address 0 (rings at `Rings.layout(queue: 0, …)`)
/// ops   until the input ends (`Operation`), then every chain left is served
/// ```
enum ChainHarness {
    static let memorySize: UInt64 = 0x10000

    enum Operation: UInt8, CaseIterable {
        /// Pop one chain and serve it with the steps that follow (u8 count, then steps).
        case pop
        /// u16 head, u32 length: `addUsed` with any head and length, as a confused device might.
        case addUsed
        /// u16 address, u8 n, n bytes: the guest writes its memory.
        case poke
        case needsNotification
        case disableNotifications
        case enableNotifications
        /// Pop and serve everything, copying whole buffers.
        case drain
    }

    static func run(_ input: inout FuzzInput) {
        guard let memory = try? GuestMemory(size: memorySize) else { return }
        let size = UInt16(1) << (input.byte() % 9)
        let flags = input.byte()
        let image = input.take(Int(input.le(UInt16.self)))
        guard (try? memory.write(image, at: GuestAddress(0))) != nil,
              var queue = try? Queue(memory: memory, size: size, layout: Rings.layout(queue: 0, size: size),
                                     eventIndex: flags & 1 != 0, indirectDescriptors: flags & 2 != 0)
        else { return }

        while !input.isAtEnd {
            switch Operation(rawValue: input.byte() % UInt8(Operation.allCases.count))! {
            case .pop:
                let chain: DescriptorChain?
                do { chain = try queue.popAvailable() } catch { continue }
                guard let chain else { continue }
                let length = serve(chain, steps: &input)
                _ = try? queue.addUsed(head: chain.head, length: length)
            case .addUsed:
                _ = try? queue.addUsed(head: input.le(UInt16.self), length: input.le(UInt32.self))
            case .poke:
                let address = GuestAddress(UInt64(input.le(UInt16.self)))
                let bytes = input.take(Int(input.byte()))
                try? memory.write(bytes.prefix(Int(memorySize - address.rawValue)), at: address)
            case .needsNotification:
                _ = queue.needsNotification()
            case .disableNotifications:
                queue.disableNotifications()
            case .enableNotifications:
                _ = queue.enableNotifications()
            case .drain:
                drain(&queue)
            }
        }
        drain(&queue)
    }

    /// Reads and writes `chain` the way the steps in `input` say; returns the bytes written.
    static func serve(_ chain: DescriptorChain, steps input: inout FuzzInput) -> UInt32 {
        var reader = chain.reader()
        var writer = chain.writer()
        for _ in 0 ..< input.byte() % 8 {
            let step = input.byte()
            let count = Int(input.le(UInt16.self))
            switch step % 10 {
            case 0: _ = try? reader.read(count: count)
            case 1: _ = try? reader.readLE(UInt32.self)
            case 2: _ = try? reader.readLE(UInt64.self)
            case 3: try? reader.skip(count)
            case 4:
                var buffer = [UInt8](repeating: 0, count: count)
                // Safe: the buffer outlives the call and has `count` bytes.
                buffer.withUnsafeMutableBytes { _ = try? reader.read(into: $0) }
            case 5: try? writer.write(input.take(count % 64))
            case 6: try? writer.writeLE(UInt16(truncatingIfNeeded: count))
            case 7: try? writer.writeZeros(count: count)
            case 8:
                for segment in writer.segments(maxBytes: count) {
                    try? chain.memory.zero(at: segment.address, length: UInt64(segment.length))
                }
                try? writer.advance(by: count)
            default:
                _ = reader.segments(maxBytes: count)
                try? writer.advance(by: count)
            }
        }
        return writer.bytesWritten
    }

    /// Serves every published chain: all readable bytes read, all writable bytes written.
    static func drain(_ queue: inout Queue) {
        for _ in 0 ... Int(queue.size) {
            do {
                guard let chain = try queue.popAvailable() else { break }
                var reader = chain.reader()
                _ = try? reader.read(count: reader.remaining)
                var writer = chain.writer()
                let bytes = [UInt8](repeating: 0xA5, count: writer.remaining)
                // Safe: `bytes` outlives the call.
                bytes.withUnsafeBytes { _ = try? writer.write(bytes: $0) }
                try queue.addUsed(head: chain.head, length: writer.bytesWritten)
            } catch {
                if error.isStructural { break }
            }
        }
        _ = queue.needsNotification()
    }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        func seed(size: UInt16 = 8, flags: UInt8 = 3, operations: [UInt8] = [],
                  _ build: (MockDriverQueue) throws -> Void) -> [UInt8] {
            do {
                let memory = try GuestMemory(size: memorySize)
                let mock = try MockDriverQueue(memory: memory, size: size, layout: Rings.layout(queue: 0, size: size),
                                               dataArea: Rings.end(queues: 1, size: size), dataAreaSize: 0x1000)
                try build(mock)
                let image = Rings.image(of: memory)
                var seed = FuzzInputBuilder()
                seed.byte(UInt8(size.trailingZeroBitCount))
                seed.byte(flags)
                seed.le(UInt16(image.count))
                seed.append(image)
                seed.append(operations)
                return seed.bytes
            } catch {
                fatalError("seed could not be built: \(error)")
            }
        }
        let steps: [UInt8] = [Operation.pop.rawValue, 3, 0, 5, 0, 5, 4, 0, 7, 9, 0]
        return [
            ("chain", seed { try $0.addChain(readable: [[1, 2, 3, 4], [5, 6]], writable: [8, 8]) }),
            ("indirect", seed { try $0.addChain(readable: [[1, 2, 3, 4]], writable: [16], indirect: true) }),
            ("steps", seed(operations: steps) { try $0.addChain(readable: [[1, 2, 3, 4, 5, 6, 7, 8]], writable: [4, 4]) }),
            ("loop", seed {
                // Two descriptors pointing at each other.
                try $0.writeDescriptor(0, RawDescriptor(address: 0x800, length: 4, flags: .next, next: 1))
                try $0.writeDescriptor(1, RawDescriptor(address: 0x800, length: 4, flags: .next, next: 0))
                try $0.pushAvail(head: 0)
                try $0.publish()
            }),
            ("event-index", seed(size: 4, flags: 1, operations: [Operation.enableNotifications.rawValue, Operation.drain.rawValue]) {
                try $0.addChain(writable: [32])
                try $0.addChain(readable: [[9]])
            }),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(ChainHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    ChainHarness.run(&input)
    return 0
}

@_cdecl("fuzz_chain_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
