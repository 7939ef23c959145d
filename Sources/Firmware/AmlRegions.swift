// The few AML operations that *do* something: an I/O-port operation region, a one-byte field
// in it, and a method that stores its argument there. lguest uses them for one thing, `\_TTS`
// (see `Dsdt.swift`): a port write the VMM hears when the guest announces a shutdown.

extension AML {
    static let storeOp: UInt8 = 0x70
    static let arg0Op: UInt8 = 0x68
    static let opRegionOp: UInt8 = 0x80 // after extOpPrefix
    static let fieldOp: UInt8 = 0x81 // after extOpPrefix
    /// RegionSpace keyword for I/O ports.
    static let systemIO: UInt8 = 0x01
    /// FieldFlags: AccessType ByteAcc (1), LockRule NoLock, UpdateRule Preserve.
    static let byteAccessNoLockPreserve: UInt8 = 0x01

    /// `OperationRegion(name, SystemIO, port, length)`: `length` I/O ports from `port`.
    public struct SystemIORegion: AMLEncodable {
        public let name: NameString
        public let port: UInt16
        public let length: UInt8
        public init(_ name: NameString, port: UInt16, length: UInt8) {
            self.name = name
            self.port = port
            self.length = length
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes += [AML.extOpPrefix, AML.opRegionOp]
            name.encode(into: &bytes)
            bytes.append(AML.systemIO)
            port.encode(into: &bytes)
            length.encode(into: &bytes)
        }
    }

    /// `Field(region, ByteAcc, NoLock, Preserve) { name, 8 }`: one byte at the region's start.
    public struct ByteField: AMLEncodable {
        public let region: NameString
        public let name: NameString
        public init(in region: NameString, _ name: NameString) {
            precondition(name.segments.count == 1 && !name.isRooted, "a field unit is one NameSeg")
            self.region = region
            self.name = name
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes += [AML.extOpPrefix, AML.fieldOp]
            // FieldList: NamedField = NameSeg, then its width in bits in PkgLength form, which
            // for a width under 64 is that one byte.
            let body = region.amlBytes + [AML.byteAccessNoLockPreserve] + name.segments[0] + [8]
            AML.appendPackage(body, to: &bytes)
        }
    }

    /// `ArgN` inside a method.
    public struct Argument: AMLEncodable {
        public let index: Int
        public init(_ index: Int) {
            precondition((0...6).contains(index), "AML has Arg0 to Arg6")
            self.index = index
        }
        public func encode(into bytes: inout [UInt8]) { bytes.append(AML.arg0Op + UInt8(index)) }
    }

    /// `Store(source, target)`, the ASL `target = source`.
    public struct Store: AMLEncodable {
        public let source: any AMLEncodable
        public let target: NameString
        public init(_ source: any AMLEncodable, into target: NameString) {
            self.source = source
            self.target = target
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(AML.storeOp)
            source.encode(into: &bytes)
            target.encode(into: &bytes)
        }
    }
}
