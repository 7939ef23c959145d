// Resource descriptors: the bytes inside a `_CRS` ("current resource settings") buffer.
//
// A ResourceTemplate is an ordinary AML Buffer whose contents follow the resource data format
// of ACPI 6.5 §6.4: a run of small and large descriptors closed by an End Tag. The guest's
// ACPI core parses it to hand each driver its I/O ports, MMIO window and interrupt line.

/// One descriptor inside a `ResourceTemplate`.
public protocol ResourceDescriptor: Sendable {
    func encode(into bytes: inout [UInt8])
}

extension AML {
    /// `ResourceTemplate() { ... }`: a Buffer holding `descriptors` and an End Tag.
    public struct ResourceTemplate: AMLEncodable {
        public let descriptors: [any ResourceDescriptor]
        public init(_ descriptors: [any ResourceDescriptor]) { self.descriptors = descriptors }

        public func encode(into bytes: inout [UInt8]) {
            var contents: [UInt8] = []
            for descriptor in descriptors { descriptor.encode(into: &contents) }
            // End Tag (small item 0xF, length 1): a checksum byte of 0 means "no checksum".
            contents += [0x79, 0x00]
            AML.Buffer(contents).encode(into: &bytes)
        }
    }

    /// `IO(Decode16, minimum, maximum, alignment, length)`: a range of I/O ports
    /// (small descriptor 0x08, 7 bytes of data). We always decode all 16 address bits.
    public struct IOPort: ResourceDescriptor, Hashable {
        public let minimum: UInt16
        public let maximum: UInt16
        public let alignment: UInt8
        public let length: UInt8

        public init(minimum: UInt16, maximum: UInt16, alignment: UInt8, length: UInt8) {
            self.minimum = minimum
            self.maximum = maximum
            self.alignment = alignment
            self.length = length
        }

        /// A fixed range: `length` ports at `base`, which the guest cannot move.
        public init(base: UInt16, length: UInt8) {
            self.init(minimum: base, maximum: base, alignment: 1, length: length)
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes += [0x47, 0x01] // tag, "decodes 16 bits"
            bytes.appendLittleEndian(minimum)
            bytes.appendLittleEndian(maximum)
            bytes += [alignment, length]
        }
    }

    /// `Memory32Fixed(ReadWrite|ReadOnly, base, length)`: a fixed MMIO window below 4 GiB
    /// (large descriptor 0x86, 9 bytes of data).
    public struct Memory32Fixed: ResourceDescriptor, Hashable {
        public let writable: Bool
        public let base: UInt32
        public let length: UInt32

        public init(writable: Bool = true, base: UInt32, length: UInt32) {
            self.writable = writable
            self.base = base
            self.length = length
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(0x86)
            bytes.appendLittleEndian(UInt16(9))
            bytes.append(writable ? 1 : 0)
            bytes.appendLittleEndian(base)
            bytes.appendLittleEndian(length)
        }
    }

    /// `Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {gsi}`:
    /// the Extended Interrupt descriptor (large 0x89) with one global system interrupt.
    ///
    /// Extended rather than the small `IRQ` descriptor because it names a GSI directly (the
    /// small one stops at IRQ 15) and states trigger and polarity explicitly.
    public struct Interrupt: ResourceDescriptor, Hashable {
        public let consumer: Bool
        public let edgeTriggered: Bool
        public let activeLow: Bool
        public let shared: Bool
        public let gsi: UInt32

        public init(consumer: Bool = true, edgeTriggered: Bool, activeLow: Bool = false,
                    shared: Bool = false, gsi: UInt32) {
            self.consumer = consumer
            self.edgeTriggered = edgeTriggered
            self.activeLow = activeLow
            self.shared = shared
            self.gsi = gsi
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(0x89)
            bytes.appendLittleEndian(UInt16(6)) // flags, count, one DWord; no resource source
            var flags: UInt8 = 0
            if consumer { flags |= 1 << 0 }
            if edgeTriggered { flags |= 1 << 1 }
            if activeLow { flags |= 1 << 2 }
            if shared { flags |= 1 << 3 }
            bytes += [flags, 1]
            bytes.appendLittleEndian(gsi)
        }
    }
}
