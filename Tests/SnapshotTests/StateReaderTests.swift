import Snapshot
import Testing

/// The encoding every section of a state file is written in: little-endian integers,
/// length-prefixed data, tagged sections. A reader never trusts a count or a length.
@Suite struct StateReaderTests {
    @Test("every integer width is written little-endian and read back")
    func integersAreLittleEndian() throws {
        var w = StateWriter()
        w.u8(0xAB)
        w.u16(0x1234)
        w.u32(0x89AB_CDEF)
        w.u64(0x0102_0304_0506_0708)
        w.bool(true)
        w.bool(false)
        #expect(w.bytes == [
            0xAB,
            0x34, 0x12,
            0xEF, 0xCD, 0xAB, 0x89,
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
            1, 0,
        ])
        var r = StateReader(w.bytes)
        #expect(try r.u8() == 0xAB)
        #expect(try r.u16() == 0x1234)
        #expect(try r.u32() == 0x89AB_CDEF)
        #expect(try r.u64() == 0x0102_0304_0506_0708)
        #expect(try r.bool() == true)
        #expect(try r.bool() == false)
        #expect(r.isAtEnd)
        #expect(r.remaining == 0)
    }

    @Test("the extremes of each width survive")
    func extremes() throws {
        var w = StateWriter()
        for value in [UInt16.min, .max] { w.u16(value) }
        for value in [UInt32.min, .max] { w.u32(value) }
        for value in [UInt64.min, .max, 1 << 63] { w.u64(value) }
        var r = StateReader(w.bytes)
        #expect(try [r.u16(), r.u16()] == [0, .max])
        #expect(try [r.u32(), r.u32()] == [0, .max])
        #expect(try [r.u64(), r.u64(), r.u64()] == [0, .max, 1 << 63])
    }

    @Test("a yes/no byte other than 0 or 1 is refused")
    func boolOtherThanZeroOrOne() {
        for byte: UInt8 in [2, 0x80, 0xFF] {
            var r = StateReader([byte])
            #expect(refusal { () throws(SnapshotError) in try r.bool() }?.kind == .malformed)
        }
    }

    @Test("data and strings: a count, then the bytes; at most their limit")
    func dataAndStringLimits() throws {
        var w = StateWriter()
        w.data([1, 2, 3, 4, 5])
        w.string("héllo")
        w.optionalString(nil)
        w.optionalString("x")
        w.data([])
        #expect(Array(w.bytes.prefix(4)) == [5, 0, 0, 0])

        var r = StateReader(w.bytes)
        #expect(try r.data(limit: 5) == [1, 2, 3, 4, 5])
        #expect(try r.string(limit: 6) == "héllo")
        #expect(try r.optionalString() == nil)
        #expect(try r.optionalString() == "x")
        #expect(try r.data(limit: 0) == [])
        #expect(r.isAtEnd)

        // One byte over the limit: refused, however many bytes follow.
        var over = StateReader(w.bytes)
        #expect(throws: SnapshotError.malformed("state: 5 bytes where at most 4 belong")) { try over.data(limit: 4) }
        var long = StateWriter()
        long.string(String(repeating: "a", count: 4097))
        var longReader = StateReader(long.bytes)
        #expect(throws: SnapshotError.self) { try longReader.string() }
        var fits = StateReader(long.bytes)
        #expect(try fits.string(limit: 4097).count == 4097)
    }

    @Test("a string that is not UTF-8 is refused")
    func stringNotUTF8() {
        var w = StateWriter()
        w.data([0x61, 0xC3, 0x28]) // an invalid two-byte sequence
        var r = StateReader(w.bytes)
        #expect(throws: SnapshotError.malformed("state: a string that is not UTF-8")) { try r.string() }
    }

    @Test("a count that promises more bytes than are left is truncated, not a crash")
    func dataCountPastTheEnd() {
        for count: UInt32 in [1, 16, 0x7FFF_FFFF, .max] {
            var w = StateWriter()
            w.u32(count)
            var r = StateReader(w.bytes, context: "the test")
            #expect(throws: SnapshotError.truncated("the test ends early")) { try r.data(limit: Int.max) }
        }
    }

    @Test("a count over its limit is refused; at the limit it is taken")
    func countLimit() throws {
        for (value, limit) in [(UInt32(255), 254), (.max, 254), (65, 64), (1, 0)] {
            var w = StateWriter()
            w.u32(value)
            var r = StateReader(w.bytes)
            #expect(throws: SnapshotError.malformed("\(value) vCPUs where at most \(limit) belong")) {
                try r.count(limit: limit, of: "vCPUs")
            }
        }
        var w = StateWriter()
        w.u32(254)
        var r = StateReader(w.bytes)
        #expect(try r.count(limit: 254, of: "vCPUs") == 254)
    }

    @Test("reading past the end of the bytes is .truncated, for every width")
    func pastTheEnd() throws {
        let bytes: [UInt8] = [1, 2, 3]
        var r = StateReader(bytes, context: "three bytes")
        #expect(throws: SnapshotError.truncated("three bytes ends early")) { try r.u32() }
        #expect(throws: SnapshotError.truncated("three bytes ends early")) { try r.u64() }
        // A failed read consumes nothing.
        #expect(r.remaining == 3)
        #expect(try r.u16() == 0x0201)
        #expect(throws: SnapshotError.truncated("three bytes ends early")) { try r.u16() }
        #expect(try r.u8() == 3)
        #expect(throws: SnapshotError.truncated("three bytes ends early")) { try r.u8() }
        #expect(throws: SnapshotError.truncated("three bytes ends early")) { try r.bool() }
        var empty = StateReader([])
        #expect(throws: SnapshotError.self) { try empty.data() }
        #expect(throws: SnapshotError.self) { try empty.string() }
        #expect(throws: SnapshotError.self) { try empty.optionalString() }
        #expect(throws: SnapshotError.self) { try empty.count(limit: 1, of: "things") }
    }

    @Test("a section round trips, and its reader stops at the section's end")
    func sectionRoundTrip() throws {
        var w = StateWriter()
        w.section("ABCD") { $0.u32(7); $0.string("seven") }
        w.section("EFGH") { $0.u8(9) }
        // tag, length, body
        #expect(Array(w.bytes.prefix(8)) == Array("ABCD".utf8) + [13, 0, 0, 0])

        var r = StateReader(w.bytes)
        let first = try r.section("ABCD") { (s: inout StateReader) throws(SnapshotError) -> String in
            #expect(try s.u32() == 7)
            let text = try s.string()
            // The inner reader sees only this section's bytes.
            #expect(s.isAtEnd)
            #expect(throws: SnapshotError.truncated("section ABCD ends early")) { try s.u8() }
            return text
        }
        #expect(first == "seven")
        #expect(try r.sectionBody("EFGH") == [9])
        #expect(r.isAtEnd)
    }

    @Test("a section whose body is not read whole is refused")
    func sectionNotConsumedWhole() {
        var w = StateWriter()
        w.section("ABCD") { $0.u32(1); $0.u8(2) }
        var r = StateReader(w.bytes)
        #expect(throws: SnapshotError.malformed("section ABCD has 1 bytes nobody reads")) {
            try r.section("ABCD") { (s: inout StateReader) throws(SnapshotError) in _ = try s.u32() }
        }
    }

    @Test("a section with another tag than the one expected is refused")
    func wrongSectionTag() {
        var w = StateWriter()
        w.section("KVMV") { $0.u8(0) }
        var r = StateReader(w.bytes)
        #expect(throws: SnapshotError.malformed("section CONF expected, \"KVMV\" found")) {
            try r.sectionBody("CONF")
        }
        // A tag that is not even text is named, not trusted.
        var garbage = StateReader([0xFF, 0xFE, 0x00, 0x01, 0, 0, 0, 0])
        #expect(throws: SnapshotError.self) { try garbage.sectionBody("CONF") }
    }

    @Test("a section whose length runs past the end is truncated")
    func sectionLengthPastTheEnd() {
        for length: UInt32 in [1, 100, .max] {
            var w = StateWriter()
            w.u8(UInt8(ascii: "A")); w.u8(UInt8(ascii: "B")); w.u8(UInt8(ascii: "C")); w.u8(UInt8(ascii: "D"))
            w.u32(length)
            var r = StateReader(w.bytes, context: "the state")
            #expect(throws: SnapshotError.truncated("the state ends early")) { try r.sectionBody("ABCD") }
        }
        // A tag cut short.
        var short = StateReader(Array("AB".utf8))
        #expect(throws: SnapshotError.self) { try short.sectionBody("ABCD") }
    }

    @Test("nested sections are bounded by their parent")
    func nestedSectionCannotReachOutside() {
        // An inner section that claims more than its parent holds, though the whole buffer has it.
        var inner = StateWriter()
        inner.section("INNR") { $0.data([UInt8](repeating: 7, count: 8)) }
        var w = StateWriter()
        let innerBytes = inner.bytes
        w.section("OUTR") { o in
            o.u8(UInt8(ascii: "I")); o.u8(UInt8(ascii: "N")); o.u8(UInt8(ascii: "N")); o.u8(UInt8(ascii: "R"))
            o.u32(UInt32(innerBytes.count)) // longer than what is left of OUTR
        }
        w.data(innerBytes)
        var r = StateReader(w.bytes)
        #expect(throws: SnapshotError.truncated("section OUTR ends early")) {
            try r.section("OUTR") { (o: inout StateReader) throws(SnapshotError) in _ = try o.sectionBody("INNR") }
        }
    }

    @Test("a kernel structure saved raw is read back only into one of the same size")
    func rawOfTheWrongSize() throws {
        struct Pair { var a: UInt32; var b: UInt64 }
        var w = StateWriter()
        w.raw(Pair(a: 0xDEAD_BEEF, b: 0x1122_3344_5566_7788))
        var r = StateReader(w.bytes)
        let pair = try r.raw(Pair.self, zero: Pair(a: 0, b: 0))
        #expect(pair.a == 0xDEAD_BEEF && pair.b == 0x1122_3344_5566_7788)

        for size in [0, 3, 4, 15, 17, MemoryLayout<Pair>.size - 1, MemoryLayout<Pair>.size + 1] {
            var w = StateWriter()
            w.data([UInt8](repeating: 0xAA, count: size))
            var r = StateReader(w.bytes)
            #expect(refusal { () throws(SnapshotError) in try r.raw(Pair.self, zero: Pair(a: 0, b: 0)) }?.kind == .malformed,
                    "a raw field of \(size) bytes")
        }
        // A raw field whose count runs past the end.
        var cut = StateWriter()
        cut.u32(UInt32(MemoryLayout<Pair>.size))
        cut.u32(0)
        var cutReader = StateReader(cut.bytes)
        #expect(throws: SnapshotError.self) { try cutReader.raw(Pair.self, zero: Pair(a: 0, b: 0)) }
    }
}
