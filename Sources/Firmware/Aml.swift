// A small AML writer.
//
// AML (ACPI Machine Language, ACPI 6.5 chapter 20) is the bytecode inside the DSDT. A guest's
// ACPI interpreter walks it to learn which devices exist, where their registers are and which
// interrupt each one raises. We only ever *declare* things — named objects, devices, a method
// that returns a constant — so the writer is a tree of small value types, each of which knows
// its own bytes. No result builders, no cleverness: what you read is what gets emitted.

/// Something that can be written out as AML.
public protocol AMLEncodable: Sendable {
    /// Appends this object's AML encoding to `bytes`.
    func encode(into bytes: inout [UInt8])
}

extension AMLEncodable {
    /// This object's AML encoding on its own.
    public var amlBytes: [UInt8] {
        var bytes: [UInt8] = []
        encode(into: &bytes)
        return bytes
    }
}

/// Namespace for the AML building blocks.
public enum AML {
    // Opcodes we emit (ACPI 6.5 §20.3, "AML Byte Stream Byte Values").
    static let zeroOp: UInt8 = 0x00
    static let oneOp: UInt8 = 0x01
    static let nameOp: UInt8 = 0x08
    static let bytePrefix: UInt8 = 0x0A
    static let wordPrefix: UInt8 = 0x0B
    static let dwordPrefix: UInt8 = 0x0C
    static let stringPrefix: UInt8 = 0x0D
    static let qwordPrefix: UInt8 = 0x0E
    static let scopeOp: UInt8 = 0x10
    static let bufferOp: UInt8 = 0x11
    static let packageOp: UInt8 = 0x12
    static let methodOp: UInt8 = 0x14
    static let dualNamePrefix: UInt8 = 0x2E
    static let multiNamePrefix: UInt8 = 0x2F
    static let extOpPrefix: UInt8 = 0x5B
    static let deviceOp: UInt8 = 0x82 // after extOpPrefix
    static let rootChar: UInt8 = 0x5C // '\'
    static let returnOp: UInt8 = 0xA4

    // MARK: - PkgLength

    /// The PkgLength encoding for an object whose contents after the PkgLength are
    /// `bodyCount` bytes long.
    ///
    /// The encoded length counts *itself*, which is what makes it fiddly: a body of 62 bytes
    /// needs one length byte (62 + 1 = 63 fits in the 6 bits a one-byte PkgLength has), but a
    /// body of 63 bytes would make 64 and needs a second byte, so it encodes 65. With more than
    /// one byte, the lead byte holds the follow-byte count in bits 7:6 and the low nibble of the
    /// length in bits 3:0; each following byte carries the next 8 bits.
    public static func packageLength(bodyCount: Int) -> [UInt8] {
        precondition(bodyCount >= 0, "negative AML body length")
        if bodyCount + 1 < 1 << 6 {
            return [UInt8(bodyCount + 1)]
        }
        for byteCount in 2...4 {
            let total = bodyCount + byteCount
            // 4 bits in the lead byte plus 8 in each follow byte.
            guard total < 1 << (4 + 8 * (byteCount - 1)) else { continue }
            var encoded = [UInt8((byteCount - 1) << 6 | (total & 0x0F))]
            for index in 0..<(byteCount - 1) {
                encoded.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * index)))
            }
            return encoded
        }
        // A PkgLength holds 28 bits (a nibble in the lead byte, three follow bytes): 256 MiB
        // of AML. The firmware area is 128 KiB, so getting here is a bug in the VMM.
        preconditionFailure("AML object of \(bodyCount) bytes is too large for a PkgLength")
    }

    /// Appends `PkgLength body` to `bytes`.
    static func appendPackage(_ body: [UInt8], to bytes: inout [UInt8]) {
        bytes += packageLength(bodyCount: body.count)
        bytes += body
    }

    /// The concatenated encodings of `objects`.
    static func encodeList(_ objects: [any AMLEncodable]) -> [UInt8] {
        var bytes: [UInt8] = []
        for object in objects { object.encode(into: &bytes) }
        return bytes
    }
}

// MARK: - Names

extension AML {
    /// A path in the ACPI namespace: `_HID`, `COM1`, `\_SB_`, `\_SB_.V000`.
    ///
    /// Each segment is a 4-character NameSeg (a leading letter or `_`, then letters, digits or
    /// `_`; shorter names are padded with `_`, so `GED` becomes `GED_`). A leading `\` anchors
    /// the path at the namespace root; otherwise it is relative to the enclosing scope.
    /// Names are chosen by the VMM, never by a guest, so an invalid one is a programming error
    /// and traps; `init?(validating:)` is the non-trapping form.
    public struct NameString: AMLEncodable, Hashable, ExpressibleByStringLiteral {
        public let isRooted: Bool
        /// Each segment exactly four ASCII bytes.
        public let segments: [[UInt8]]

        public init?(validating path: String) {
            var text = Substring(path)
            isRooted = text.first == "\\"
            if isRooted { text = text.dropFirst() }
            var segments: [[UInt8]] = []
            if !text.isEmpty {
                for part in text.split(separator: ".", omittingEmptySubsequences: false) {
                    guard let segment = NameString.segment(part) else { return nil }
                    segments.append(segment)
                }
            }
            // A bare `\` is the root itself; an empty relative name means nothing.
            guard isRooted || !segments.isEmpty, segments.count <= 255 else { return nil }
            self.segments = segments
        }

        public init(_ path: String) {
            guard let name = NameString(validating: path) else {
                preconditionFailure("\"\(path)\" is not a valid ACPI name path")
            }
            self = name
        }

        public init(stringLiteral path: String) { self.init(path) }

        private static func segment(_ text: Substring) -> [UInt8]? {
            let bytes = Array(text.utf8)
            guard (1...4).contains(bytes.count) else { return nil }
            for (index, byte) in bytes.enumerated() {
                let isUpper = (0x41...0x5A).contains(byte)
                let isDigit = (0x30...0x39).contains(byte)
                let isUnderscore = byte == 0x5F
                guard isUpper || isUnderscore || (index > 0 && isDigit) else { return nil }
            }
            return bytes + Array(repeating: 0x5F, count: 4 - bytes.count)
        }

        public func encode(into bytes: inout [UInt8]) {
            if isRooted { bytes.append(AML.rootChar) }
            switch segments.count {
            case 0: bytes.append(0x00) // NullName
            case 1: break
            case 2: bytes.append(AML.dualNamePrefix)
            default: bytes += [AML.multiNamePrefix, UInt8(segments.count)]
            }
            for segment in segments { bytes += segment }
        }
    }
}

// MARK: - Data objects

extension AML {
    /// An integer constant, in the shortest encoding that holds it: `Zero`, `One`, or a
    /// Byte/Word/DWord/QWord prefix followed by the little-endian value.
    public struct Integer: AMLEncodable, Hashable {
        public let value: UInt64
        public init(_ value: UInt64) { self.value = value }

        public func encode(into bytes: inout [UInt8]) {
            switch value {
            case 0: bytes.append(AML.zeroOp)
            case 1: bytes.append(AML.oneOp)
            case ...0xFF: bytes += [AML.bytePrefix, UInt8(value)]
            case ...0xFFFF: bytes.append(AML.wordPrefix); bytes.appendLittleEndian(UInt16(value))
            case ...0xFFFF_FFFF: bytes.append(AML.dwordPrefix); bytes.appendLittleEndian(UInt32(value))
            default: bytes.append(AML.qwordPrefix); bytes.appendLittleEndian(value)
            }
        }
    }

    /// A compressed EISA id such as `PNP0501` — how ACPI spells most legacy `_HID`s.
    ///
    /// Three upper-case letters (5 bits each, `A` = 1) and four hex digits (4 bits each) packed
    /// into 32 bits, most significant first, then stored *byte-swapped* (the EISA bus was
    /// big-endian about it) and emitted as a DWord. `PNP0501` becomes the integer 0x0105D041.
    public struct EisaId: AMLEncodable, Hashable {
        public let value: UInt32

        public init?(validating id: String) {
            let chars = Array(id.utf8)
            guard chars.count == 7 else { return nil }
            var packed: UInt32 = 0
            for letter in chars[0..<3] {
                guard (0x41...0x5A).contains(letter) else { return nil }
                packed = packed << 5 | UInt32(letter - 0x40)
            }
            for digit in chars[3..<7] {
                guard let nibble = EisaId.hexValue(digit) else { return nil }
                packed = packed << 4 | UInt32(nibble)
            }
            value = packed.byteSwapped
        }

        public init(_ id: String) {
            guard let eisa = EisaId(validating: id) else {
                preconditionFailure("\"\(id)\" is not an EISA id (three letters, four hex digits)")
            }
            self = eisa
        }

        private static func hexValue(_ char: UInt8) -> UInt8? {
            switch char {
            case 0x30...0x39: return char - 0x30
            case 0x41...0x46: return char - 0x41 + 10
            default: return nil
            }
        }

        public func encode(into bytes: inout [UInt8]) {
            // Always a DWord, even though the value might fit a shorter encoding: that is how
            // ASL compilers emit it, and how disassemblers recognise it as an EisaId.
            bytes.append(AML.dwordPrefix)
            bytes.appendLittleEndian(value)
        }
    }

    /// A `Package` of objects: `Package() { 5, 0, 0, 0 }`.
    public struct Package: AMLEncodable {
        public let elements: [any AMLEncodable]
        public init(_ elements: [any AMLEncodable]) {
            precondition(elements.count <= 255, "a Package holds at most 255 elements")
            self.elements = elements
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(AML.packageOp)
            AML.appendPackage([UInt8(elements.count)] + AML.encodeList(elements), to: &bytes)
        }
    }

    /// A `Buffer` of raw bytes. Its size is itself an AML integer inside the package.
    public struct Buffer: AMLEncodable {
        public let contents: [UInt8]
        public init(_ contents: [UInt8]) { self.contents = contents }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(AML.bufferOp)
            AML.appendPackage(AML.Integer(UInt64(contents.count)).amlBytes + contents, to: &bytes)
        }
    }
}

/// Plain integers and strings are AML data objects too, so `Name("_UID", 0)` and
/// `Name("_HID", "LNRO0005")` read the way the ASL does.
extension UInt64: AMLEncodable {
    public func encode(into bytes: inout [UInt8]) { AML.Integer(self).encode(into: &bytes) }
}

extension UInt32: AMLEncodable {
    public func encode(into bytes: inout [UInt8]) { AML.Integer(UInt64(self)).encode(into: &bytes) }
}

extension UInt16: AMLEncodable {
    public func encode(into bytes: inout [UInt8]) { AML.Integer(UInt64(self)).encode(into: &bytes) }
}

extension UInt8: AMLEncodable {
    public func encode(into bytes: inout [UInt8]) { AML.Integer(UInt64(self)).encode(into: &bytes) }
}

extension Int: AMLEncodable {
    public func encode(into bytes: inout [UInt8]) {
        precondition(self >= 0, "AML integers written by the VMM are unsigned")
        AML.Integer(UInt64(self)).encode(into: &bytes)
    }
}

extension String: AMLEncodable {
    /// `StringPrefix`, the ASCII bytes, a NUL. AML strings are 7-bit ASCII without NULs.
    public func encode(into bytes: inout [UInt8]) {
        let ascii = Array(utf8)
        precondition(ascii.allSatisfy { (0x01...0x7F).contains($0) }, "AML strings are 7-bit ASCII")
        bytes.append(AML.stringPrefix)
        bytes += ascii
        bytes.append(0x00)
    }
}

// MARK: - Named objects and scopes

extension AML {
    /// `Name(path, value)`: binds a constant object to a name.
    public struct Name: AMLEncodable {
        public let name: NameString
        public let value: any AMLEncodable
        public init(_ name: NameString, _ value: any AMLEncodable) {
            self.name = name
            self.value = value
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(AML.nameOp)
            name.encode(into: &bytes)
            value.encode(into: &bytes)
        }
    }

    /// `Scope(path) { ... }`: opens an existing namespace node (such as `\_SB_`) and puts
    /// objects inside it.
    public struct Scope: AMLEncodable {
        public let name: NameString
        public let contents: [any AMLEncodable]
        public init(_ name: NameString, _ contents: [any AMLEncodable]) {
            self.name = name
            self.contents = contents
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(AML.scopeOp)
            AML.appendPackage(name.amlBytes + AML.encodeList(contents), to: &bytes)
        }
    }

    /// `Device(path) { ... }`: a device node; its children (`_HID`, `_CRS`, ...) describe it.
    public struct Device: AMLEncodable {
        public let name: NameString
        public let contents: [any AMLEncodable]
        public init(_ name: NameString, _ contents: [any AMLEncodable]) {
            self.name = name
            self.contents = contents
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes += [AML.extOpPrefix, AML.deviceOp]
            AML.appendPackage(name.amlBytes + AML.encodeList(contents), to: &bytes)
        }
    }

    /// `Method(path, argumentCount, Serialized?) { ... }`.
    public struct Method: AMLEncodable {
        public let name: NameString
        public let argumentCount: Int
        public let serialized: Bool
        public let body: [any AMLEncodable]
        public init(_ name: NameString, argumentCount: Int = 0, serialized: Bool = false,
                    _ body: [any AMLEncodable]) {
            precondition((0...7).contains(argumentCount), "AML methods take 0 to 7 arguments")
            self.name = name
            self.argumentCount = argumentCount
            self.serialized = serialized
            self.body = body
        }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(AML.methodOp)
            // MethodFlags: bits 2:0 argument count, bit 3 serialized, bits 7:4 sync level (0).
            let flags = UInt8(argumentCount) | (serialized ? 1 << 3 : 0)
            AML.appendPackage(name.amlBytes + [flags] + AML.encodeList(body), to: &bytes)
        }
    }

    /// `Return(value)`.
    public struct Return: AMLEncodable {
        public let value: any AMLEncodable
        public init(_ value: any AMLEncodable) { self.value = value }

        public func encode(into bytes: inout [UInt8]) {
            bytes.append(AML.returnOp)
            value.encode(into: &bytes)
        }
    }
}

// MARK: - Little-endian helpers

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<(T.bitWidth / 8) {
            append(UInt8(truncatingIfNeeded: value >> (8 * index)))
        }
    }
}
