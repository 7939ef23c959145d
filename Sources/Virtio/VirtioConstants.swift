// The numbers of virtio 1.x that every part of this target agrees on: device ids, feature
// bits, status bits and descriptor flags. Names follow the spec (content.tex, split-ring.tex)
// and Linux's uapi headers (virtio_ids.h, virtio_config.h, virtio_ring.h).

/// Device type numbers (`DeviceID` in virtio-mmio), from the spec's "Device Types" chapter.
public enum VirtioDeviceID {
    public static let net: UInt32 = 1
    public static let block: UInt32 = 2
    public static let console: UInt32 = 3
    public static let rng: UInt32 = 4
    public static let balloon: UInt32 = 5
}

/// Feature bits the transport and the rings own (content.tex "Reserved Feature Bits").
public enum VirtioFeature {
    /// The driver may use indirect descriptor tables (`VIRTIO_F_RING_INDIRECT_DESC`).
    public static let ringIndirectDescriptors: UInt64 = 1 << 28
    /// `used_event` / `avail_event` notification suppression (`VIRTIO_F_RING_EVENT_IDX`).
    public static let ringEventIndex: UInt64 = 1 << 29
    /// "This is a virtio 1.x device": little-endian rings, modern layout (`VIRTIO_F_VERSION_1`).
    public static let version1: UInt64 = 1 << 32

    /// The bits a device may offer on its own: 0–23 and 50–63 are device-specific; 24–49 belong
    /// to the transport and the rings and are decided by `MMIOTransport`, not by a device.
    public static let deviceSpecificMask: UInt64 = ((1 << 24) - 1) | (~UInt64(0) << 50)
}

/// The device status register (content.tex "Device Status Field").
public struct DeviceStatus: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let acknowledge = DeviceStatus(rawValue: 1)
    public static let driver = DeviceStatus(rawValue: 2)
    public static let driverOK = DeviceStatus(rawValue: 4)
    public static let featuresOK = DeviceStatus(rawValue: 8)
    /// Set by the device after an unrecoverable error; only a reset clears it.
    public static let deviceNeedsReset = DeviceStatus(rawValue: 0x40)
    /// Set by the driver when it gave up on the device.
    public static let failed = DeviceStatus(rawValue: 0x80)

    public var description: String {
        let names: [(DeviceStatus, String)] = [
            (.acknowledge, "ACKNOWLEDGE"), (.driver, "DRIVER"), (.featuresOK, "FEATURES_OK"),
            (.driverOK, "DRIVER_OK"), (.deviceNeedsReset, "DEVICE_NEEDS_RESET"), (.failed, "FAILED"),
        ]
        let set = names.filter { contains($0.0) }.map(\.1)
        return set.isEmpty ? "0" : set.joined(separator: "|")
    }
}

/// `virtq_desc.flags`.
public struct DescriptorFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The chain continues at `next`.
    public static let next = DescriptorFlags(rawValue: 1)
    /// The buffer is device-writable (otherwise device-readable).
    public static let write = DescriptorFlags(rawValue: 2)
    /// The buffer holds a table of descriptors.
    public static let indirect = DescriptorFlags(rawValue: 4)
}

/// Flag bits of the two rings' `flags` fields.
public enum RingFlags {
    /// `avail.flags` bit 0: the driver does not want used-buffer interrupts (without EVENT_IDX).
    public static let availNoInterrupt: UInt16 = 1
    /// `used.flags` bit 0: the device does not want kicks (without EVENT_IDX).
    public static let usedNoNotify: UInt16 = 1
}
