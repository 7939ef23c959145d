import GuestMemory
import Virtio
import VirtioTesting

/// Where the harnesses put a guest's rings: packed one after another from guest address 0,
/// as tight as the alignment rules allow, so that a short input covers all of them.
public enum Rings {
    /// Queue `index`'s rings when every queue has `size` entries: descriptor table, then the
    /// available ring, then the used ring (4-aligned), each queue starting 16-aligned.
    public static func layout(queue index: Int, size: UInt16) -> QueueLayout {
        let base = UInt64(index) * stride(size: size)
        let avail = base + QueueLayout.descriptorTableSize(queueSize: size)
        let used = alignUp(avail + QueueLayout.driverAreaSize(queueSize: size), 4)
        return QueueLayout(descriptorTable: GuestAddress(base), driverArea: GuestAddress(avail),
                           deviceArea: GuestAddress(used))
    }

    /// The first byte past `queues` queues' rings: where seeds put their buffers.
    public static func end(queues: Int, size: UInt16) -> GuestAddress {
        GuestAddress(UInt64(queues) * stride(size: size))
    }

    static func stride(size: UInt16) -> UInt64 {
        let tables = QueueLayout.descriptorTableSize(queueSize: size) + QueueLayout.driverAreaSize(queueSize: size)
        return alignUp(alignUp(tables, 4) + QueueLayout.deviceAreaSize(queueSize: size), 16)
    }

    static func alignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64 {
        (value + alignment - 1) / alignment * alignment
    }

    /// The first `memory` bytes up to the last non-zero one: a memory image for a seed.
    public static func image(of memory: GuestMemory, upTo limit: Int = 0x10000) -> [UInt8] {
        let bytes = (try? memory.readBytes(at: GuestAddress(0), count: min(limit, Int(memory.totalSize)))) ?? []
        guard let last = bytes.lastIndex(where: { $0 != 0 }) else { return [] }
        return Array(bytes[...last])
    }
}
