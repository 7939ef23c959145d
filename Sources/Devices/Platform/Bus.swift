import Synchronization

/// A device that answers loads and stores in a window of I/O ports or guest-physical addresses.
///
/// `offset` is relative to the start of the device's window. Reads fill all of `data`; a device
/// that does not decode an offset leaves the bytes as the bus preset them (all ones, like a
/// real PC bus with nothing on it).
public protocol BusDevice: AnyObject, Sendable {
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt64, from data: UnsafeRawBufferPointer)
}

/// An address space (the I/O ports, or MMIO) carved into device windows.
///
/// Windows are fixed before the guest runs, so lookups need no lock.
public final class Bus: Sendable {
    public struct Window: Sendable {
        public let base: UInt64
        public let length: UInt64
        public let device: any BusDevice
    }

    public enum Error: Swift.Error, CustomStringConvertible {
        case overlap(base: UInt64, length: UInt64)
        public var description: String {
            switch self {
            case let .overlap(base, length):
                return "device window 0x\(String(base, radix: 16))+\(length) overlaps another device"
            }
        }
    }

    private let windows: [Window]

    public init(_ windows: [Window]) throws(Error) {
        let sorted = windows.sorted { $0.base < $1.base }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.base + a.length > b.base {
            throw .overlap(base: b.base, length: b.length)
        }
        self.windows = sorted
    }

    public static func window(_ base: UInt64, _ length: UInt64, _ device: any BusDevice) -> Window {
        Window(base: base, length: length, device: device)
    }

    /// The window containing `[address, address + size)`, and the offset of `address` in it.
    func find(_ address: UInt64, size: Int) -> (Window, UInt64)? {
        // Binary search for the last window starting at or below `address`.
        var low = 0, high = windows.count
        while low < high {
            let mid = (low + high) / 2
            if windows[mid].base <= address { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return nil }
        let window = windows[low - 1]
        let offset = address - window.base
        guard offset < window.length, UInt64(size) <= window.length - offset else { return nil }
        return (window, offset)
    }

    /// Dispatches a read; returns false (leaving `data` all ones) if no device claims it.
    @discardableResult
    public func read(_ address: UInt64, into data: UnsafeMutableRawBufferPointer) -> Bool {
        for i in data.indices { data[i] = 0xFF }
        guard let (window, offset) = find(address, size: data.count) else { return false }
        window.device.read(offset: offset, into: data)
        return true
    }

    /// Dispatches a write; returns false (dropping it) if no device claims it.
    @discardableResult
    public func write(_ address: UInt64, from data: UnsafeRawBufferPointer) -> Bool {
        guard let (window, offset) = find(address, size: data.count) else { return false }
        window.device.write(offset: offset, from: data)
        return true
    }
}
