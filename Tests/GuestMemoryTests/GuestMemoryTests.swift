import Testing
@testable import GuestMemory

@Suite struct GuestAddressTests {
    @Test func checkedArithmetic() {
        #expect(GuestAddress(10).adding(5) == GuestAddress(15))
        #expect(GuestAddress(UInt64.max).adding(1) == nil)
        #expect(GuestAddress(0x1001).alignedUp(to: 0x1000) == GuestAddress(0x2000))
        #expect(GuestAddress(UInt64.max).alignedUp(to: 0x1000) == nil)
        #expect(GuestAddress(0x1fff).alignedDown(to: 0x1000) == GuestAddress(0x1000))
        #expect(GuestAddress(0x20).offset(from: GuestAddress(0x30)) == nil)
        #expect(GuestAddress(0x1000).description == "0x1000")
    }
}

@Suite struct GuestMemoryBoundsTests {
    let memory: GuestMemory
    init() throws {
        // Two regions with a hole between them, as on a machine with an MMIO gap.
        memory = try GuestMemory(layout: [(GuestAddress(0), 0x10000), (GuestAddress(0x20000), 0x1000)])
    }

    @Test func roundTripsLittleEndian() throws {
        try memory.write(UInt32(0x1122_3344), at: 0x100)
        #expect(try memory.readBytes(at: 0x100, count: 4) == [0x44, 0x33, 0x22, 0x11])
        #expect(try memory.read(UInt32.self, at: 0x100) == 0x1122_3344)
        // Misaligned access is fine.
        try memory.write(UInt64(0xdead_beef_cafe_f00d), at: 0x103)
        #expect(try memory.read(UInt64.self, at: 0x103) == 0xdead_beef_cafe_f00d)
    }

    @Test func lastByteOfEachRegionIsReachable() throws {
        try memory.write(UInt8(7), at: 0xFFFF)
        try memory.write(UInt8(8), at: 0x20FFF)
        #expect(try memory.read(UInt8.self, at: 0xFFFF) == 7)
        #expect(try memory.read(UInt8.self, at: 0x20FFF) == 8)
    }

    @Test func refusesRangesOutsideOrAcrossRegions() {
        // Straddles the end of region 0.
        #expect(throws: GuestMemoryError.outOfBounds(address: 0xFFFE, length: 4)) {
            try memory.read(UInt32.self, at: 0xFFFE)
        }
        // In the hole.
        #expect(throws: GuestMemoryError.self) { try memory.read(UInt8.self, at: 0x18000) }
        // Past everything.
        #expect(throws: GuestMemoryError.self) { try memory.write(UInt8(1), at: 0x21000) }
        // Spans both regions and the hole between them.
        #expect(throws: GuestMemoryError.self) { try memory.readBytes(at: 0xF000, count: 0x12000) }
        #expect(!memory.contains(0xFFFF, length: 2))
        #expect(memory.contains(0xFFFF, length: 1))
    }

    @Test func refusesOverflowingRanges() {
        #expect(throws: GuestMemoryError.overflow(address: GuestAddress(UInt64.max - 1), length: 4)) {
            try memory.read(UInt32.self, at: GuestAddress(UInt64.max - 1))
        }
        #expect(throws: GuestMemoryError.self) {
            try memory.readBytes(at: 0x10, count: -1)
        }
    }

    @Test func slicesAreBoundsChecked() throws {
        let n = try memory.withSlice(at: 0x200, length: 16) { (buffer: UnsafeMutableRawBufferPointer) throws(Never) -> Int in
            buffer.count
        }
        #expect(n == 16)
        #expect(throws: GuestSliceError<Never>.self) {
            try memory.withSlice(at: 0xFFF8, length: 16) { (_: UnsafeMutableRawBufferPointer) throws(Never) in }
        }
    }

    @Test func orderedAccessRefusesMisalignment() throws {
        try memory.storeRelease16(0xBEEF, at: 0x40)
        #expect(try memory.loadAcquire16(at: 0x40) == 0xBEEF)
        #expect(throws: GuestMemoryError.self) { try memory.loadAcquire16(at: 0x41) }
    }

    @Test func rejectsBadLayouts() {
        #expect(throws: GuestMemoryError.self) { try GuestMemory(layout: [(GuestAddress(0), 100)]) }
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(layout: [(GuestAddress(0), 0x2000), (GuestAddress(0x1000), 0x1000)])
        }
    }
}

@Suite struct GuestMemoryDiscardTests {
    @Test func discardedPagesReadBackAsZeroes() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 0x10_0000), (GuestAddress(0x20_0000), 0x10_0000)])
        try memory.write([UInt8](repeating: 7, count: 0x3000), at: GuestAddress(0x20_0000))
        try memory.discard(at: GuestAddress(0x20_1000), length: 0x1000)
        #expect(try memory.readBytes(at: GuestAddress(0x20_0000), count: 0x3000)
                == [UInt8](repeating: 7, count: 0x1000) + [UInt8](repeating: 0, count: 0x1000) + [UInt8](repeating: 7, count: 0x1000))
    }

    @Test func onlyWholePagesOfOneRegionAreDiscarded() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 0x10_0000), (GuestAddress(0x10_0000), 0x10_0000)])
        #expect(throws: GuestMemoryError.discardFailed(address: GuestAddress(0x10), length: 0x1000, errno: 0)) {
            try memory.discard(at: GuestAddress(0x10), length: 0x1000)
        }
        #expect(throws: GuestMemoryError.self) { try memory.discard(at: GuestAddress(0), length: 0x800) }
        // Two adjacent regions are two mappings: a range across them is refused.
        #expect(throws: GuestMemoryError.self) { try memory.discard(at: GuestAddress(0xF_F000), length: 0x2000) }
        #expect(throws: GuestMemoryError.self) { try memory.discard(at: GuestAddress(0x20_0000), length: 0x1000) }
        #expect(throws: GuestMemoryError.self) { try memory.discard(at: GuestAddress(UInt64.max - 0xFFF), length: 0x2000) }
    }
}
