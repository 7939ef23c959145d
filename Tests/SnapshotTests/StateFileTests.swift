import Snapshot
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The state file's envelope: magic, version, length, checksum. Every way a file can be wrong
/// is refused before one field of the payload is looked at.
@Suite struct StateFileTests {
    /// A payload with some structure, as a machine's would have.
    static let payload: [UInt8] = {
        var w = StateWriter()
        w.section("CONF") { $0.string("vmlinuz"); $0.u64(256); $0.u32(2) }
        w.section("NOTE") { $0.data((0 ..< 200).map { UInt8($0) }) }
        return w.bytes
    }()

    @Test("CRC-64/XZ gives its check value for \"123456789\"")
    func crcCheckValue() {
        #expect(CRC64.checksum(Array("123456789".utf8)) == 0x995D_C9BB_DF19_39FA)
        // The empty input: all-ones in, all-ones out, so zero.
        #expect(CRC64.checksum([UInt8]()) == 0)
    }

    @Test("the file is magic, version, reserved, length, payload, checksum")
    func layout() throws {
        let file = StateFile.encode(payload: Self.payload)
        #expect(file.count == 24 + Self.payload.count + 8)
        #expect(Array(file[0 ..< 8]) == Array("LGUESTSN".utf8))
        var header = StateReader(Array(file[8 ..< 24]))
        #expect(try header.u32() == StateFile.formatVersion)
        #expect(try header.u32() == 0)
        #expect(try header.u64() == UInt64(Self.payload.count))
        #expect(Array(file[24 ..< 24 + Self.payload.count]) == Self.payload)
        var trailer = StateReader(Array(file.suffix(8)))
        #expect(try trailer.u64() == CRC64.checksum(file.dropLast(8)))
    }

    @Test("encode then decode gives the payload back, for empty and large payloads too")
    func roundTrip() throws {
        for payload in [Self.payload, [], [0], [UInt8](repeating: 0xFF, count: 100_000)] {
            #expect(try StateFile.decode(StateFile.encode(payload: payload)) == payload)
        }
    }

    @Test("a file without the magic is not a snapshot")
    func wrongMagic() {
        var file = StateFile.encode(payload: Self.payload)
        file[0] = UInt8(ascii: "l")
        #expect(throws: SnapshotError.notASnapshot) { try StateFile.decode(file) }
        #expect(throws: SnapshotError.notASnapshot) { try StateFile.decode(Array("#!/bin/sh\necho hello\n".utf8)) }
        #expect(throws: SnapshotError.notASnapshot) { try StateFile.decode([]) }
    }

    @Test("a file of another format version is refused as such, whatever its checksum")
    func otherVersion() {
        for version: UInt32 in [0, 2, StateFile.formatVersion + 1, .max] {
            // A well-formed file of that version, its checksum right.
            var w = StateWriter()
            w.u32(version); w.u32(0); w.u64(UInt64(Self.payload.count))
            var file = StateFile.magic + w.bytes + Self.payload
            var trailer = StateWriter()
            trailer.u64(CRC64.checksum(file))
            file += trailer.bytes
            #expect(throws: SnapshotError.version(found: version, expected: StateFile.formatVersion)) {
                try StateFile.decode(file)
            }
        }
    }

    @Test("every truncation, from no bytes to all but the last, is refused")
    func everyTruncation() {
        let file = StateFile.encode(payload: Self.payload)
        for length in 0 ..< file.count {
            let error = refusal { () throws(SnapshotError) in try StateFile.decode(Array(file.prefix(length))) }
            // Shorter than the magic, the magic cannot match; from the magic on, the header or
            // the length says the file ends early.
            let expected: Kind = length < 8 ? .notASnapshot : .truncated
            #expect(error?.kind == expected, "a file cut to \(length) bytes: \(String(describing: error))")
        }
        #expect(refusal { () throws(SnapshotError) in try StateFile.decode(file) } == nil)
    }

    @Test("each single bit flipped anywhere in the file is refused, and says where it landed")
    func everyBitFlip() {
        let file = StateFile.encode(payload: Self.payload)
        let payloadEnd = 24 + Self.payload.count
        for index in file.indices {
            for bit in 0 ..< 8 {
                var flipped = file
                flipped[index] ^= 1 << bit
                let error = refusal { () throws(SnapshotError) in try StateFile.decode(flipped) }
                let expected: Set<Kind> = switch index {
                case 0 ..< 8: [.notASnapshot]
                case 8 ..< 12: [.version]
                case 12 ..< 16: [.malformed]               // reserved bits
                case 16 ..< 24: [.truncated, .malformed]   // the length: too long, or bytes left over
                default: [.checksum]                       // the payload or the checksum itself
                }
                #expect(error.map { expected.contains($0.kind) } == true,
                        "bit \(bit) of byte \(index) (payload ends at \(payloadEnd)): \(String(describing: error))")
            }
        }
    }

    @Test("bytes after the checksum are refused")
    func trailingBytes() {
        let file = StateFile.encode(payload: Self.payload)
        for extra in [[UInt8](repeating: 0, count: 1), [0, 0, 0, 0, 0, 0, 0, 0], Array(file)] {
            let error = refusal { () throws(SnapshotError) in try StateFile.decode(file + extra) }
            #expect(error?.kind == .malformed, "\(extra.count) bytes more: \(String(describing: error))")
        }
    }

    @Test("a header whose length is absurd is refused without allocating it")
    func absurdLength() {
        for length: UInt64 in [.max, .max - 7, 1 << 63, UInt64(Int.max), 1 << 40] {
            var w = StateWriter()
            w.u32(StateFile.formatVersion); w.u32(0); w.u64(length)
            let file = StateFile.magic + w.bytes + [UInt8](repeating: 0, count: 8)
            #expect(refusal { () throws(SnapshotError) in try StateFile.decode(file) }?.kind == .truncated)
        }
    }
}

/// Writing and reading state files on disk: whoever reads the path sees the old file or the
/// whole new one, and only a regular file is ever replaced.
@Suite struct AtomicFileTests {
    /// A fresh directory under /tmp, removed with what is in it when `body` returns.
    func withDirectory(_ body: (String) throws -> Void) throws {
        var template = Array("/tmp/lguest-snapshot-tests-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        try #require(made != nil)
        let directory = String(cString: made!)
        defer {
            for name in entries(directory) { unlink(directory + "/" + name) }
            rmdir(directory)
        }
        try body(directory)
    }

    func entries(_ directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    func contents(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            bytes += buffer.prefix(n)
        }
        return bytes
    }

    func put(_ bytes: [UInt8], at path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(fd >= 0)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    @Test("a state file written over a regular file replaces it whole, and reads back")
    func replacesARegularFile() throws {
        try withDirectory { directory in
            let path = directory + "/vm.state"
            put(Array("an older file, longer than the new one will be ................".utf8), at: path)
            try StateFile.write(payload: StateFileTests.payload, path: path)
            #expect(contents(path) == StateFile.encode(payload: StateFileTests.payload))
            #expect(try StateFile.read(path: path) == StateFileTests.payload)
            // Again over itself.
            try StateFile.write(payload: [1, 2, 3], path: path)
            #expect(try StateFile.read(path: path) == [1, 2, 3])
            #expect(entries(directory) == ["vm.state"])
        }
    }

    @Test("a write that fails part-way leaves the old file and no partial file")
    func failedWriteLeavesTheOldFile() throws {
        try withDirectory { directory in
            let path = directory + "/vm.state"
            put([9, 9, 9], at: path)
            let error = refusal { () throws(SnapshotError) in
                try AtomicFile.replace(path) { fd throws(SnapshotError) in
                    _ = [UInt8](repeating: 1, count: 100).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    throw .file(path: path, "the disk is full")
                }
            }
            #expect(error == .file(path: path, "the disk is full"))
            #expect(contents(path) == [9, 9, 9])
            #expect(entries(directory) == ["vm.state"])
        }
    }

    @Test("a path that is a directory, a device or a symbolic link is never replaced")
    func refusesWhatIsNotARegularFile() throws {
        try withDirectory { directory in
            let subdirectory = directory + "/a-directory"
            try #require(mkdir(subdirectory, 0o755) == 0)
            let target = directory + "/target"
            put([7], at: target)
            let link = directory + "/link"
            try #require(symlink(target, link) == 0)

            for path in [subdirectory, link, "/dev/null"] {
                let error = refusal { () throws(SnapshotError) in try StateFile.write(payload: [1], path: path) }
                #expect(error == .file(path: path, "exists and is not a regular file"))
            }
            var info = stat()
            #expect(stat(subdirectory, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR)
            #expect(lstat(link, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK)
            #expect(contents(target) == [7])
            #expect(stat("/dev/null", &info) == 0 && info.st_mode & S_IFMT == S_IFCHR)
            #expect(entries(directory) == ["a-directory", "link", "target"])
            #expect(entries(subdirectory).isEmpty)
            #expect(!entries("/dev").contains { $0.hasPrefix("null.partial-") })
        }
    }

    @Test("reading a state file that is missing, a directory, a device, or corrupt is refused")
    func readRefusals() throws {
        try withDirectory { directory in
            #expect(refusal { () throws(SnapshotError) in try StateFile.read(path: directory + "/missing") }?.kind == .file)
            #expect(refusal { () throws(SnapshotError) in try StateFile.read(path: directory) }?.kind == .file)
            #expect(refusal { () throws(SnapshotError) in try StateFile.read(path: "/dev/zero") }?.kind == .file)
            let path = directory + "/vm.state"
            var file = StateFile.encode(payload: StateFileTests.payload)
            file[30] ^= 0x10
            put(file, at: path)
            #expect(refusal { () throws(SnapshotError) in try StateFile.read(path: path) } == .checksum)
            put(Array(file.prefix(20)), at: path)
            #expect(refusal { () throws(SnapshotError) in try StateFile.read(path: path) }?.kind == .truncated)
        }
    }
}
