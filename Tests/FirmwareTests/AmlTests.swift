import Testing
@testable import Firmware

/// Decodes a PkgLength at the start of `bytes`: (encoded length, bytes the PkgLength used).
func decodePackageLength(_ bytes: ArraySlice<UInt8>) -> (length: Int, size: Int) {
    let lead = Int(bytes[bytes.startIndex])
    let follow = lead >> 6
    if follow == 0 { return (lead & 0x3F, 1) }
    var length = lead & 0x0F
    for index in 0..<follow {
        length |= Int(bytes[bytes.startIndex + 1 + index]) << (4 + 8 * index)
    }
    return (length, 1 + follow)
}

@Suite("PkgLength")
struct PackageLengthTests {
    @Test("boundaries: 1 byte up to 63, 2 up to 4095, 3 up to 2^20-1, then 4",
          arguments: [
              (0, [0x01]),
              (62, [0x3F]),                       // 62 + 1 = 63: the last one-byte length
              (63, [0x41, 0x04]),                 // 63 + 1 = 64 does not fit; 63 + 2 = 65
              (64, [0x42, 0x04]),
              (4093, [0x4F, 0xFF]),               // 4093 + 2 = 4095: the last two-byte length
              (4094, [0x81, 0x00, 0x01]),         // 4094 + 2 = 4096 does not fit; 4094 + 3 = 4097
              (1_048_572, [0x8F, 0xFF, 0xFF]),    // + 3 = 2^20 - 1
              (1_048_573, [0xC1, 0x00, 0x00, 0x01]), // + 4 = 2^20 + 1
          ] as [(Int, [UInt8])])
    func boundaries(body: Int, expected: [UInt8]) {
        #expect(AML.packageLength(bodyCount: body) == expected)
    }

    @Test("the encoded length always counts itself and the body")
    func selfCounting() {
        for body in [0, 1, 61, 62, 63, 64, 65, 4092, 4093, 4094, 4095, 70_000, (1 << 20) - 4, (1 << 20) - 3] {
            let encoded = AML.packageLength(bodyCount: body)
            let (length, size) = decodePackageLength(encoded[...])
            #expect(size == encoded.count)
            #expect(length == body + encoded.count, "body \(body)")
        }
    }

    @Test("a Scope whose contents cross the one-byte limit gets a two-byte PkgLength")
    func nestedScope() {
        for count in 1...20 {
            let scope = AML.Scope("\\_SB_", (0..<count).map { AML.Name(AML.NameString("N\($0 % 10)"), $0) })
            let bytes = scope.amlBytes
            #expect(bytes[0] == 0x10)
            let (length, _) = decodePackageLength(bytes[1...])
            #expect(length == bytes.count - 1, "PkgLength must cover everything after ScopeOp")
        }
    }
}

@Suite("AML encoding")
struct AmlEncodingTests {
    @Test("integers take the shortest prefix",
          arguments: [
              (0, [0x00]),
              (1, [0x01]),
              (2, [0x0A, 0x02]),
              (0xFF, [0x0A, 0xFF]),
              (0x100, [0x0B, 0x00, 0x01]),
              (0xFFFF, [0x0B, 0xFF, 0xFF]),
              (0x1_0000, [0x0C, 0x00, 0x00, 0x01, 0x00]),
              (0xFFFF_FFFF, [0x0C, 0xFF, 0xFF, 0xFF, 0xFF]),
              (0x1_0000_0000, [0x0E, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]),
          ] as [(UInt64, [UInt8])])
    func integers(value: UInt64, expected: [UInt8]) {
        #expect(AML.Integer(value).amlBytes == expected)
    }

    @Test("EisaId packs three letters and four hex digits, byte-swapped")
    func eisaId() {
        #expect(AML.EisaId("PNP0501").value == 0x0105_D041)
        #expect(AML.EisaId("PNP0501").amlBytes == [0x0C, 0x41, 0xD0, 0x05, 0x01])
        #expect(AML.EisaId("PNP0303").value == 0x0303_D041)
        #expect(AML.EisaId("PNP0A03").value == 0x030A_D041)
        #expect(AML.EisaId(validating: "pnp0501") == nil)
        #expect(AML.EisaId(validating: "PNP050G") == nil)
        #expect(AML.EisaId(validating: "PNP050") == nil)
    }

    @Test("name strings: padding, root, dual and multi prefixes")
    func names() {
        #expect(AML.NameString("_HID").amlBytes == Array("_HID".utf8))
        #expect(AML.NameString("GED").amlBytes == Array("GED_".utf8))
        #expect(AML.NameString("\\_SB_").amlBytes == [0x5C] + Array("_SB_".utf8))
        #expect(AML.NameString("\\_SB_.COM1").amlBytes == [0x5C, 0x2E] + Array("_SB_COM1".utf8))
        #expect(AML.NameString("_SB_.PCI0.ISA").amlBytes == [0x2F, 0x03] + Array("_SB_PCI0ISA_".utf8))
        #expect(AML.NameString("\\").amlBytes == [0x5C, 0x00])
        for bad in ["", "1ABC", "abcd", "ABCDE", "A..B", "\\_SB_.", "A-B"] {
            #expect(AML.NameString(validating: bad) == nil, "\(bad) should be refused")
        }
    }

    @Test("strings are prefixed and NUL-terminated")
    func strings() {
        #expect("QEMU0001".amlBytes == [0x0D] + Array("QEMU0001".utf8) + [0x00])
    }

    @Test("Name, Method/Return, Package, Device")
    func objects() {
        #expect(AML.Name("_UID", 0).amlBytes == [0x08] + Array("_UID".utf8) + [0x00])
        #expect(AML.Method("_STA", [AML.Return(0x0F)]).amlBytes
            == [0x14, 0x09] + Array("_STA".utf8) + [0x00, 0xA4, 0x0A, 0x0F])
        #expect(AML.Method("_EVT", argumentCount: 1, serialized: true, []).amlBytes
            == [0x14, 0x06] + Array("_EVT".utf8) + [0x09])
        #expect(AML.Package([5, 0, 0, 0]).amlBytes == [0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00])
        #expect(AML.Device("COM1", [AML.Name("_UID", 0)]).amlBytes
            == [0x5B, 0x82, 0x0B] + Array("COM1".utf8) + [0x08] + Array("_UID".utf8) + [0x00])
    }

    @Test("Buffer carries its size as an AML integer")
    func buffer() {
        #expect(AML.Buffer([1, 2, 3]).amlBytes == [0x11, 0x06, 0x0A, 0x03, 1, 2, 3])
        #expect(AML.Buffer([]).amlBytes == [0x11, 0x02, 0x00])
    }

    @Test("resource descriptors and the End Tag")
    func resources() {
        #expect(AML.IOPort(base: 0x3F8, length: 8).amlBytesForTest
            == [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08])
        #expect(AML.Memory32Fixed(writable: true, base: 0xD000_0000, length: 0x1000).amlBytesForTest
            == [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x10, 0x00, 0x00])
        #expect(AML.Interrupt(edgeTriggered: true, gsi: 4).amlBytesForTest
            == [0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00])
        #expect(AML.Interrupt(edgeTriggered: false, activeLow: true, shared: true, gsi: 0x1234).amlBytesForTest
            == [0x89, 0x06, 0x00, 0x0D, 0x01, 0x34, 0x12, 0x00, 0x00])
        let template = AML.ResourceTemplate([
            AML.IOPort(base: 0x3F8, length: 8),
            AML.Interrupt(edgeTriggered: true, gsi: 4),
        ]).amlBytes
        // Buffer: 8 + 9 + 2 (End Tag) = 19 bytes of contents, size 0x13 as a Byte integer.
        #expect(Array(template.prefix(4)) == [0x11, 0x16, 0x0A, 0x13])
        #expect(template.count == 4 + 19)
        #expect(Array(template.suffix(2)) == [0x79, 0x00])
    }
}

extension ResourceDescriptor {
    var amlBytesForTest: [UInt8] {
        var bytes: [UInt8] = []
        encode(into: &bytes)
        return bytes
    }
}
