import Foundation
import Testing

/// Ring fields and descriptors are memory the guest writes while the device reads it. A plain
/// load may be repeated by the compiler (and find a different value the second time), so the
/// queue reads them only through `loadAcquire16`/`loadRelaxed16`/`loadRelaxed64`, the way
/// rust-vmm's virtio-queue uses atomics. This keeps plain `memory.read` out of those files.
@Suite struct RingAccessTests {
    static let virtio = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Sources/Virtio")

    @Test(arguments: ["Queue.swift", "DescriptorChain.swift"])
    func ringFieldsAreReadWithAtomicLoads(file: String) throws {
        let source = try String(contentsOf: Self.virtio.appendingPathComponent(file), encoding: .utf8)
        let plain = source.components(separatedBy: "\n").enumerated()
            .filter { $0.element.contains("memory.read(") && !$0.element.trimmingCharacters(in: .whitespaces).hasPrefix("//") }
            .map { "\(file):\($0.offset + 1): \($0.element.trimmingCharacters(in: .whitespaces))" }
        #expect(plain.isEmpty, "plain loads of guest-written ring memory:\n\(plain.joined(separator: "\n"))")
    }
}
