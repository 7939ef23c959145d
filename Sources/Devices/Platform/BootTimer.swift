import Synchronization

/// The boot timer (port `PlatformPorts.bootTimer`): a guest writes a byte, the VMM notes the
/// time. It exists to measure boots, from lguest's start to the guest's first userspace
/// instruction; Firecracker has the same idea on an MMIO address.
///
/// The device only counts and forwards: the Launcher owns the clock and decides how a mark is
/// reported. A guest that writes in a loop gets its first `reportLimit` marks reported and the
/// rest counted, so it cannot flood the host's standard error.
public final class BootTimer: BusDevice {
    /// How many marks are reported; later ones are only counted.
    public static let reportLimit = 16

    private let marks = Atomic<Int>(0)
    private let report: @Sendable (UInt8) -> Void

    /// `report` runs on the vCPU thread that wrote the port, with the byte it wrote.
    public init(report: @escaping @Sendable (UInt8) -> Void) {
        self.report = report
    }

    /// Marks the guest has made, reported or not.
    public var markCount: Int { marks.load(ordering: .relaxed) }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        for i in data.indices { data[i] = 0 }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard offset == 0, let value = data.first else { return }
        let seen = marks.wrappingAdd(1, ordering: .relaxed).oldValue
        if seen < Self.reportLimit { report(value) }
    }
}
