/// LZ4's legacy frame, the format Linux compresses a bzImage's payload with under
/// `CONFIG_KERNEL_LZ4` (Debian's cloud kernels): the magic `0x184C2102`, then blocks, each a
/// little-endian 32-bit compressed size and an LZ4 block that expands to at most 8 MiB on its
/// own (no block refers back into another). Kbuild appends the expanded size as 4 more bytes.
///
/// An LZ4 block is a run of sequences: a token (literal count in its high nibble, match length
/// less 4 in its low one, 15 meaning "more bytes follow, each adding up to 255"), the literals,
/// then a 16-bit little-endian distance back into what was already produced and the match.
/// The last sequence of a block has literals only.
///
/// The input is hostile until proven otherwise: every count, distance and length is checked
/// against the input left and the room left, with arithmetic that cannot overflow, and a bad
/// stream is an error, never a trap or a write outside `output`.
public enum LZ4Legacy {
    public static let magic: UInt32 = 0x184C_2102
    /// The largest a block may expand to.
    public static let blockSize = 8 << 20

    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        case notLZ4
        /// The stream ended inside a block, or a block inside a sequence.
        case truncated(at: Int)
        /// A match reaching back before the start of its block (or a distance of 0).
        case badDistance(at: Int)
        /// The output would be larger than the room given (or than a block may be).
        case tooLarge(at: Int)
        /// The size Kbuild appended is not what came out.
        case sizeMismatch(trailer: UInt32, produced: Int)

        public var description: String {
            switch self {
            case .notLZ4: "not an LZ4 legacy stream"
            case let .truncated(at): "LZ4 stream truncated at byte \(at)"
            case let .badDistance(at): "LZ4 match distance out of range at byte \(at)"
            case let .tooLarge(at): "LZ4 output too large at byte \(at)"
            case let .sizeMismatch(trailer, produced): "LZ4 stream says \(trailer) bytes but expands to \(produced)"
            }
        }
    }

    /// Whether `input` starts like a legacy frame.
    public static func isLZ4(_ input: UnsafeRawBufferPointer) -> Bool {
        ImageBytes(input).u32(0) == magic
    }

    /// The size the stream says it expands to (Kbuild's trailer), if it has one.
    public static func expandedSize(_ input: UnsafeRawBufferPointer) -> Int? {
        guard input.count >= 8, isLZ4(input) else { return nil }
        return ImageBytes(input).u32(UInt64(input.count - 4)).map(Int.init)
    }

    /// Expands `input` (magic, blocks, and Kbuild's size trailer) into `output`, which must be
    /// exactly as large as the trailer says; returns the bytes written.
    public static func decompress(_ input: UnsafeRawBufferPointer,
                                  into output: UnsafeMutableRawBufferPointer) throws(Failure) -> Int {
        let bytes = ImageBytes(input)
        guard input.count >= 8, isLZ4(input) else { throw .notLZ4 }
        let end = input.count - 4
        guard let trailer = bytes.u32(UInt64(end)) else { throw .truncated(at: end) }
        var cursor = 4
        var produced = 0
        while cursor < end {
            guard end - cursor >= 4, let size = bytes.u32(UInt64(cursor)) else { throw .truncated(at: cursor) }
            cursor += 4
            // Legacy frames may be concatenated: a second magic starts the next one.
            if size == magic { continue }
            guard Int(size) <= end - cursor else { throw .truncated(at: cursor) }
            let room = min(output.count - produced, blockSize)
            let block = UnsafeRawBufferPointer(rebasing: input[cursor ..< cursor + Int(size)])
            let target = UnsafeMutableRawBufferPointer(rebasing: output[produced ..< produced + room])
            produced += try decompressBlock(block, into: target, base: cursor)
            cursor += Int(size)
        }
        guard Int(trailer) == produced else { throw .sizeMismatch(trailer: trailer, produced: produced) }
        return produced
    }

    /// One block into `output` (at most its size); returns the bytes written. `base` is where the
    /// block starts in the stream, for error messages.
    static func decompressBlock(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                                base: Int) throws(Failure) -> Int {
        guard let source = input.baseAddress, let target = output.baseAddress else {
            if input.isEmpty { return 0 }
            throw .tooLarge(at: base)
        }
        let inputEnd = input.count, outputEnd = output.count
        var i = 0, o = 0

        // A length that continues in extra bytes (each adding up to 255) after a nibble of 15.
        func length(_ nibble: Int) throws(Failure) -> Int {
            var total = nibble
            guard nibble == 15 else { return total }
            while true {
                guard i < inputEnd else { throw .truncated(at: base + i) }
                let more = Int(source.load(fromByteOffset: i, as: UInt8.self))
                i += 1
                total += more
                // Beyond what any output could hold: a hostile run of 255s, cut short.
                guard total <= outputEnd else { throw .tooLarge(at: base + i) }
                if more != 255 { return total }
            }
        }

        while i < inputEnd {
            let token = Int(source.load(fromByteOffset: i, as: UInt8.self))
            i += 1
            let literals = try length(token >> 4)
            guard literals <= inputEnd - i else { throw .truncated(at: base + i) }
            guard literals <= outputEnd - o else { throw .tooLarge(at: base + i) }
            // Safe: both ranges were checked just above.
            (target + o).copyMemory(from: source + i, byteCount: literals)
            i += literals
            o += literals
            // The last sequence ends with its literals.
            if i == inputEnd { break }
            guard inputEnd - i >= 2 else { throw .truncated(at: base + i) }
            let distance = Int(source.load(fromByteOffset: i, as: UInt8.self))
                | Int(source.load(fromByteOffset: i + 1, as: UInt8.self)) << 8
            i += 2
            guard distance > 0, distance <= o else { throw .badDistance(at: base + i) }
            let match = try length(token & 15) + 4
            guard match <= outputEnd - o else { throw .tooLarge(at: base + i) }
            // A distance shorter than the match repeats a pattern of `distance` bytes. Each copy
            // below takes from `distance` back of the match's start as much as has been written
            // since (a whole number of patterns): d, 2d, 4d... bytes, never overlapping what it
            // writes. A distance as long as the match is one copy.
            let source = UnsafeRawPointer(target + o - distance)
            var copied = 0
            while copied < match {
                let step = min(copied + distance, match - copied)
                (target + o + copied).copyMemory(from: source, byteCount: step)
                copied += step
            }
            o += match
        }
        return o
    }
}
