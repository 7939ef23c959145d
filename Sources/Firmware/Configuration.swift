import GuestMemory

/// One virtio-mmio register window, as the DSDT announces it.
public struct VirtioMMIOWindow: Sendable, Hashable {
    /// Guest-physical base of the register window. `Memory32Fixed` can only describe windows
    /// below 4 GiB.
    public var base: GuestAddress
    /// Window size in bytes; one page per device, like Firecracker.
    public var size: UInt64
    /// The device's interrupt line, one of `PlatformInterrupts.virtio`.
    public var gsi: UInt32

    public init(base: GuestAddress, size: UInt64 = 0x1000, gsi: UInt32) {
        self.base = base
        self.size = size
        self.gsi = gsi
    }
}

/// What the ACPI tables should describe.
public struct AcpiConfiguration: Sendable, Hashable {
    /// The most vCPUs we can describe: Local APIC (xAPIC) entries carry an 8-bit APIC id,
    /// and id 0xFF is the broadcast address.
    public static let maximumCPUs = 255
    /// The most virtio-mmio devices: one edge-triggered, exclusive interrupt line each.
    public static let maximumVirtioDevices = PlatformInterrupts.virtio.count

    /// Number of vCPUs. vCPU *i* has APIC id *i* and ACPI processor UID *i*.
    public var cpus: Int
    /// virtio-mmio windows, in the order their devices should be named (V000, V001, ...).
    public var virtioMMIO: [VirtioMMIOWindow]
    /// Describe COM1 (`\_SB_.COM1`).
    public var serial: Bool
    /// Describe the i8042 keyboard controller (`\_SB_.PS2_`), and say so in the FADT.
    public var keyboardController: Bool
    /// Describe the pvpanic device (`\_SB_.PEVT`).
    public var pvpanic: Bool
    /// Whether the VMM emulates the CMOS RTC at ports 0x70/0x71. When it does not, the FADT
    /// says "CMOS RTC not present" and Linux does not register its rtc_cmos device.
    public var cmosRTC: Bool

    public init(cpus: Int, virtioMMIO: [VirtioMMIOWindow] = [], serial: Bool = true,
                keyboardController: Bool = true, pvpanic: Bool = true, cmosRTC: Bool = false) {
        self.cpus = cpus
        self.virtioMMIO = virtioMMIO
        self.serial = serial
        self.keyboardController = keyboardController
        self.pvpanic = pvpanic
        self.cmosRTC = cmosRTC
    }

    /// Checks everything the tables depend on; the first problem found is thrown.
    public func validate() throws(AcpiError) {
        guard (1...Self.maximumCPUs).contains(cpus) else { throw .cpuCount(cpus) }
        guard virtioMMIO.count <= Self.maximumVirtioDevices else {
            throw .tooManyVirtioDevices(count: virtioMMIO.count, maximum: Self.maximumVirtioDevices)
        }
        var gsisInUse: Set<UInt32> = []
        for (index, window) in virtioMMIO.enumerated() {
            guard PlatformInterrupts.virtio.contains(window.gsi) else {
                throw .gsiOutOfRange(device: index, gsi: window.gsi)
            }
            guard gsisInUse.insert(window.gsi).inserted else {
                throw .gsiInUse(device: index, gsi: window.gsi)
            }
            guard window.size > 0, window.size <= UInt64(UInt32.max) else {
                throw .badWindowSize(device: index, size: window.size)
            }
            guard let end = window.base.adding(window.size), end.rawValue <= 1 << 32 else {
                throw .windowAbove4GiB(device: index, base: window.base, size: window.size)
            }
            for (other, earlier) in virtioMMIO[..<index].enumerated()
            where window.base < earlier.base + earlier.size && earlier.base < end {
                throw .windowsOverlap(device: index, other: other)
            }
        }
    }
}

/// Why the ACPI tables could not be built or written. Each message fits on one line and
/// names what to change.
public enum AcpiError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not between 1 and `AcpiConfiguration.maximumCPUs`.
    case cpuCount(Int)
    case tooManyVirtioDevices(count: Int, maximum: Int)
    /// A virtio device's interrupt is outside `PlatformInterrupts.virtio`.
    case gsiOutOfRange(device: Int, gsi: UInt32)
    /// Two virtio devices share an interrupt line; ours are edge-triggered and exclusive.
    case gsiInUse(device: Int, gsi: UInt32)
    case badWindowSize(device: Int, size: UInt64)
    case windowAbove4GiB(device: Int, base: GuestAddress, size: UInt64)
    case windowsOverlap(device: Int, other: Int)
    /// The RSDP must be 16-byte aligned.
    case misalignedBase(GuestAddress)
    /// The tables need `needed` bytes from `base`, past `limit`.
    case doesNotFit(needed: UInt64, base: GuestAddress, limit: GuestAddress)
    /// Guest memory refused the write.
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case let .cpuCount(count):
            return "cannot describe \(count) vCPUs in the MADT: choose 1 to \(AcpiConfiguration.maximumCPUs)"
        case let .tooManyVirtioDevices(count, maximum):
            return "\(count) virtio-mmio devices requested, but only \(maximum) interrupt lines are free for them"
        case let .gsiOutOfRange(device, gsi):
            let range = PlatformInterrupts.virtio
            return "virtio-mmio device \(device) uses interrupt \(gsi); use one of \(range.lowerBound)...\(range.upperBound)"
        case let .gsiInUse(device, gsi):
            return "virtio-mmio device \(device) uses interrupt \(gsi), which another device already has"
        case let .badWindowSize(device, size):
            return "virtio-mmio device \(device) has a window of \(size) bytes; it must be 1 byte to 4 GiB"
        case let .windowAbove4GiB(device, base, size):
            return "virtio-mmio device \(device) at \(base)+\(size) must lie below 4 GiB to be described"
        case let .windowsOverlap(device, other):
            return "virtio-mmio devices \(other) and \(device) have overlapping register windows"
        case let .misalignedBase(base):
            return "ACPI tables cannot start at \(base): the RSDP needs a 16-byte-aligned address"
        case let .doesNotFit(needed, base, limit):
            return "ACPI tables need \(needed) bytes from \(base) but must end by \(limit): describe fewer devices"
        case let .memory(error):
            return "cannot write the ACPI tables: \(error)"
        }
    }
}
