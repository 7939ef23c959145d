import Foundation
import Testing
import TestSupport
@testable import Boot

/// Expands `stream` into exactly `size` bytes of room.
func expand(_ stream: [UInt8], size: Int) throws(LZ4Legacy.Failure) -> [UInt8] {
    var output = [UInt8](repeating: 0, count: size)
    let result: Result<Int, LZ4Legacy.Failure> = stream.withUnsafeBytes { input in
        output.withUnsafeMutableBytes { room in
            do throws(LZ4Legacy.Failure) { return .success(try LZ4Legacy.decompress(input, into: room)) }
            catch { return .failure(error) }
        }
    }
    _ = try result.get()
    return output
}

/// A legacy frame around one hand-made block, with a trailer of `size`.
func frame(_ block: [UInt8], size: Int) -> [UInt8] {
    func le32(_ value: Int) -> [UInt8] { (0 ..< 4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    return le32(Int(LZ4Legacy.magic)) + le32(block.count) + block + le32(size)
}

@Suite struct LZ4Tests {
    @Test("literal-only frames of every length class come back byte for byte", arguments: [1, 14, 15, 16, 269, 270, 271, 70_000])
    func literals(count: Int) throws {
        let data = (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let stream = lz4LegacyLiterals(data)
        #expect(stream.withUnsafeBytes { LZ4Legacy.expandedSize($0) } == count)
        #expect(try expand(stream, size: count) == data)
    }

    @Test("a frame of several blocks, each expanding on its own")
    func severalBlocks() throws {
        let data = (0 ..< (LZ4Legacy.blockSize + 5000)).map { UInt8(truncatingIfNeeded: $0 >> 3) }
        #expect(try expand(lz4LegacyLiterals(data), size: data.count) == data)
    }

    @Test("matches copy from what came before, overlapping ones repeating a pattern")
    func matches() throws {
        // "abc", then 9 bytes from 3 back: abcabcabcabc.
        #expect(try expand(frame([0x35, 0x61, 0x62, 0x63, 0x03, 0x00], size: 12), size: 12) == Array("abcabcabcabc".utf8))
        // "a", then a match of 15 + 10 + 4 = 29 from 1 back, then the literals "z".
        let long = frame([0x1F, 0x61, 0x01, 0x00, 10, 0x10, 0x7A], size: 31)
        #expect(try expand(long, size: 31) == Array(repeating: UInt8(ascii: "a"), count: 30) + [UInt8(ascii: "z")])
        // A pattern of 2 repeated over a long match (2 + 15 + 40 + 4 = 61 bytes in all), and a
        // run of one byte: the copies double until the match is done.
        let pattern = frame([0x2F, 0x61, 0x62, 0x02, 0x00, 40], size: 61)
        #expect(try expand(pattern, size: 61) == Array(String(repeating: "ab", count: 31).utf8.prefix(61)))
        let run = frame([0x1F, 0x78, 0x01, 0x00, 255, 100], size: 1 + 15 + 255 + 100 + 4)
        #expect(try expand(run, size: 375) == [UInt8](repeating: 0x78, count: 375))
        // A distance as long as the match: one straight copy.
        #expect(try expand(frame([0x40, 0x31, 0x32, 0x33, 0x34, 0x04, 0x00], size: 8), size: 8) == Array("12341234".utf8))
    }

    @Test("every malformed stream is refused with what was wrong, never a trap")
    func refusals() {
        func failure(_ stream: [UInt8], size: Int) -> LZ4Legacy.Failure? {
            do { _ = try expand(stream, size: size); return nil } catch { return error }
        }
        #expect(failure([1, 2, 3, 4, 5, 6, 7, 8], size: 8) == .notLZ4)
        // A match before anything was produced, or with distance 0.
        #expect(failure(frame([0x00, 0x01, 0x00], size: 4), size: 4) == .badDistance(at: 11))
        #expect(failure(frame([0x10, 0x61, 0x00, 0x00], size: 5), size: 5) == .badDistance(at: 12))
        // Literals running past the block.
        #expect(failure(frame([0x50, 0x61, 0x62], size: 5), size: 5) == .truncated(at: 9))
        // A block longer than the stream.
        #expect(failure([0x02, 0x21, 0x4C, 0x18, 0xFF, 0, 0, 0, 0x10, 0x61, 1, 0, 0, 0], size: 1) == .truncated(at: 8))
        // More output than the trailer promised room for.
        #expect(failure(frame([0x35, 0x61, 0x62, 0x63, 0x03, 0x00], size: 6), size: 6) == .tooLarge(at: 14))
        // Less.
        #expect(failure(frame([0x30, 0x61, 0x62, 0x63], size: 4), size: 4) == .sizeMismatch(trailer: 4, produced: 3))
        // A run of 255s that would count past any output.
        #expect(failure(frame([0xF0] + [UInt8](repeating: 255, count: 64), size: 100), size: 100) == .tooLarge(at: 10))
    }

    @Test("random blocks behind a valid magic never trap and never write past the room given")
    func randomStreams() {
        var generator = SeededGenerator(seed: 0x4C5A34)
        for _ in 0 ..< 3000 {
            let length = Int.random(in: 0 ... 64, using: &generator)
            let block = (0 ..< length).map { _ in UInt8.random(in: 0 ... 255, using: &generator) }
            let size = Int.random(in: 0 ... 300, using: &generator)
            _ = try? expand(frame(block, size: size), size: size)
        }
    }

    @Test(.enabled(if: DebianKernel.path != nil && DebianKernel.lz4 != nil, "needs a Debian kernel and lz4"))
    func expandsTheDebianKernelAsLz4Does() throws {
        let image = try DebianKernel.image()
        let header = try SetupHeader(image: image)
        let ours: [UInt8] = try image.withUnsafeBytes { bytes in
            let payload = try #require(header.payload(in: bytes))
            let size = try #require(LZ4Legacy.expandedSize(payload))
            var output = [UInt8](repeating: 0, count: size)
            _ = try output.withUnsafeMutableBytes { try LZ4Legacy.decompress(payload, into: $0) }
            return output
        }
        let theirs = try DebianKernel.vmlinux()
        #expect(ours.count >= theirs.count)
        // lz4 -d of the payload less its trailer: the ELF and the relocations after it.
        #expect(ours == theirs)
    }
}
