import CKVM

/// A list of CPUID leaves, as KVM_GET_SUPPORTED_CPUID returns them and KVM_SET_CPUID2 takes them.
///
/// `kvm_cpuid2` ends in a flexible array, which Swift cannot import; the entries live in a
/// Swift array here and are laid out behind an 8-byte header only for the ioctl.
public struct CPUIDTable: Sendable {
    public var entries: [kvm_cpuid_entry2]
    private var capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        entries = []
    }

    public init(entries: [kvm_cpuid_entry2]) {
        self.entries = entries
        capacity = entries.count
    }

    /// Lays out `{u32 nent; u32 padding; entries[capacity]}` and passes it to `body`, then reads
    /// back what the kernel wrote (for GET) — the count goes to `reportedCount`.
    mutating func withRawBuffer(_ body: (UnsafeMutableRawPointer) -> CInt) -> CInt {
        let stride = MemoryLayout<kvm_cpuid_entry2>.stride
        let slots = max(capacity, entries.count)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8 + slots * stride, alignment: 8)
        defer { buffer.deallocate() }
        // Safe: the buffer was just allocated with room for the header and `slots` entries.
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: 8 + slots * stride)
        buffer.storeBytes(of: UInt32(entries.isEmpty ? slots : entries.count), as: UInt32.self)
        for (index, entry) in entries.enumerated() {
            (buffer + 8 + index * stride).storeBytes(of: entry, as: kvm_cpuid_entry2.self)
        }
        let result = body(buffer)
        if result >= 0, entries.isEmpty {
            let count = min(Int(buffer.load(as: UInt32.self)), slots)
            entries = (0..<count).map { (buffer + 8 + $0 * stride).load(as: kvm_cpuid_entry2.self) }
        }
        return result
    }

    mutating func trimToReportedCount() { capacity = entries.count }

    /// Applies `body` to every entry of `function` (all sub-leaves).
    public mutating func update(function: UInt32, _ body: (inout kvm_cpuid_entry2) -> Void) {
        for index in entries.indices where entries[index].function == function {
            body(&entries[index])
        }
    }

    public func entry(function: UInt32, index: UInt32 = 0) -> kvm_cpuid_entry2? {
        entries.first { $0.function == function && $0.index == index }
    }

    /// The leaves as a given vCPU should see them: its own APIC id, the vCPU count, and the
    /// bits a VMM (not the host) decides. The hypervisor leaves 0x4000_0000+ ("KVMKVMKVM" and
    /// the paravirtual feature bits) pass through untouched: paravirtual guests look for them.
    public func forVCPU(id: Int, count: Int) -> CPUIDTable {
        var table = self
        table.update(function: 1) { leaf in
            // EBX: [31:24] initial APIC id, [23:16] logical processors per package, [15:8] CLFLUSH line / 8.
            leaf.ebx = (UInt32(id) << 24) | (UInt32(min(count, 255)) << 16) | (8 << 8) | (leaf.ebx & 0xFF)
            leaf.ecx |= 1 << 31          // hypervisor present
            leaf.ecx |= 1 << 24          // TSC-deadline timer: the in-kernel LAPIC emulates it
            leaf.ecx &= ~(UInt32(1) << 15) // PDCM: no perf capabilities MSR
            if count > 1 { leaf.edx |= 1 << 28 } // HTT: more than one logical processor
        }
        // Extended topology: each sub-leaf's EDX is this processor's x2APIC id.
        for function: UInt32 in [0xB, 0x1F] {
            table.update(function: function) { leaf in leaf.edx = UInt32(id) }
        }
        return table
    }
}
