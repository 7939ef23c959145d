import Foundation
import GuestMemory
import Testing
import TestSupport
@testable import Boot
@testable import KernelCache

/// The kernel cache (KernelCache): a bzImage whose payload is LZ4 is expanded once into an entry
/// named by its content, found again next time, and rebuilt whenever the entry does not match.
@Suite struct KernelCacheTests {
    /// A bzImage whose LZ4 payload is a small ELF kernel with a PVH note.
    static func image(marker: UInt8 = 0x41) -> (bzImage: [UInt8], elf: [UInt8]) {
        var elf = SyntheticELF()
        elf.pageAlignedSegments = true
        elf.segments = [
            SyntheticELF.Segment(address: 0x100_0000, data: SyntheticELF.code + [marker], memorySize: 0x3000),
            SyntheticELF.Segment(address: 0x120_0000, data: [UInt8](repeating: marker, count: 5000), memorySize: 5000),
        ]
        elf.entry = 0x100_0000
        elf.pvhEntry = 0x100_0000
        var bzImage = SyntheticBzImage()
        bzImage.payload = lz4LegacyLiterals(elf.bytes)
        return (bzImage.bytes, elf.bytes)
    }

    static func scratchDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lguest-kcache-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func kernel(_ image: [UInt8], in directory: String) -> (CachedKernel?, KernelCache.Outcome) {
        image.withUnsafeBytes { KernelCache(directory: directory).kernel(for: $0) }
    }

    @Test("the content hash is XXH64: the reference implementation's values")
    func contentHashIsXXH64() {
        func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 { bytes.withUnsafeBytes { ContentHash.xxh64($0, seed: seed) } }
        let pattern = (0 ..< 1000).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        // From python-xxhash 3 (xxhash.xxh64(data, seed).intdigest()).
        #expect(hash([]) == 0xEF46_DB37_51D8_E999)
        #expect(hash(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
        #expect(hash(pattern) == 0x5F23_5FA0_33F1_A3FB)
        #expect(hash(pattern, seed: 0x6C67_7565_7374) == 0xDC75_852A_DB79_4660)
        #expect(hash(Array(pattern[..<37])) == 0xE32E_F638_02F5_A3FD)
    }

    @Test("the first boot expands the kernel into an entry named by its content; the next finds it")
    func builtThenFound() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (bzImage, elf) = Self.image()
        let (first, built) = kernel(bzImage, in: directory + "/deeper/kernels")
        guard case let .built(path) = built else { Issue.record("expected built, got \(built)"); return }
        #expect(path.hasPrefix(directory + "/deeper/kernels/") && path.hasSuffix(".vmlinux"))
        #expect(try #require(first).elf.elementsEqual(elf))
        let (second, found) = kernel(bzImage, in: directory + "/deeper/kernels")
        #expect(found == .found(path: path))
        #expect(try #require(second).elf.elementsEqual(elf))
        // One entry, no temporary file left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/deeper/kernels").count == 1)
        // Another kernel gets an entry of its own.
        let (other, outcome) = kernel(Self.image(marker: 0x42).bzImage, in: directory + "/deeper/kernels")
        guard case let .built(otherPath) = outcome else { Issue.record("expected built, got \(outcome)"); return }
        #expect(otherPath != path && other?.elf.last == 0x42)
    }

    @Test("a kernel file booted before is found by its identity without being read; a rewritten one is not")
    func lookupByIdentity() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (bzImage, elf) = Self.image()
        let file = directory + "/vmlinuz"
        try Data(bzImage).write(to: URL(fileURLWithPath: file))
        let cache = KernelCache(directory: directory + "/cache")
        let identity = try #require(FileIdentity(path: file))
        #expect(cache.lookup(identity).map { _ in 1 } == nil)
        let (_, outcome) = bzImage.withUnsafeBytes { cache.kernel(for: $0, identity: identity) }
        guard case let .built(path) = outcome else { Issue.record("got \(outcome)"); return }
        let found = try #require(cache.lookup(identity))
        #expect(found.path == path && found.0.elf.elementsEqual(elf))
        // The same bytes written again: a new change time, so a new identity, looked up by content.
        usleep(2000)
        try Data(bzImage).write(to: URL(fileURLWithPath: file))
        let rewritten = try #require(FileIdentity(path: file))
        #expect(rewritten != identity && cache.lookup(rewritten).map { _ in 1 } == nil)
        // A link that names anything but an entry of this kernel's size is not followed.
        let link = directory + "/cache/by-file/" + identity.name
        for target in ["../../vmlinuz", "0000000000000000-\(identity.size).vmlinux", "../x/" + (path as NSString).lastPathComponent] {
            unlink(link)
            #expect(symlink(target, link) == 0)
            #expect(cache.lookup(identity).map { _ in 1 } == nil, "followed \(target)")
        }
        #expect(FileIdentity(path: directory) == nil)
    }

    @Test("an entry that does not match its kernel (another header, truncated, not an ELF) is rebuilt, never used")
    func mismatchedEntriesAreRebuilt() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (bzImage, elf) = Self.image()
        guard case let .built(path) = kernel(bzImage, in: directory).1 else { Issue.record("not built"); return }
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        let damages: [(String, (inout Data) -> Void)] = [
            ("hash", { $0[24] ^= 1 }),
            ("size", { $0[16] ^= 1 }),
            ("version", { $0[8] = 9 }),
            ("magic", { $0[0] = 0 }),
            ("length", { $0.removeLast(1) }),
            ("elf", { $0[4096] = 0 }),
        ]
        for (what, damage) in damages {
            var bad = good
            damage(&bad)
            try bad.write(to: URL(fileURLWithPath: path))
            let (rebuilt, outcome) = kernel(bzImage, in: directory)
            #expect(outcome == .built(path: path), "damaged \(what)")
            #expect(rebuilt?.elf.elementsEqual(elf) == true, "damaged \(what)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == good, "damaged \(what)")
        }
    }

    @Test("kernels the cache cannot expand, and caches it cannot write, boot as they are")
    func refusals() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (bzImage, elf) = Self.image()
        #expect(kernel(elf, in: directory).1 == .notExpandable)
        #expect(kernel(SyntheticBzImage().bytes, in: directory).1 == .notExpandable)
        // A directory that cannot be made: below a regular file.
        FileManager.default.createFile(atPath: directory + "/file", contents: Data())
        let (none, unavailable) = kernel(bzImage, in: directory + "/file/kernels")
        #expect(none == nil)
        guard case let .unavailable(why) = unavailable else { Issue.record("got \(unavailable)"); return }
        #expect(why.contains(directory + "/file/kernels"))
        // A payload that does not expand: the trailer promises more than the blocks give.
        var broken = SyntheticBzImage()
        var payload = lz4LegacyLiterals(elf)
        payload[payload.count - 4] &+= 1
        broken.payload = payload
        let (nothing, failed) = kernel(broken.bytes, in: directory + "/k")
        #expect(nothing == nil)
        guard case let .unavailable(reason) = failed else { Issue.record("got \(failed)"); return }
        #expect(reason.contains("does not expand"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/k").isEmpty)
    }

    @Test("the cached kernel's segments map into guest memory privately: the guest sees them, the file never sees the guest")
    func segmentsMapIntoGuestMemory() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (bzImage, _) = Self.image()
        let (cached, outcome) = kernel(bzImage, in: directory)
        let kernel = try #require(cached)
        guard case let .built(path) = outcome else { Issue.record("got \(outcome)"); return }
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let memory = try GuestMemory(size: 64 * mib)
        var mapped: [UInt64] = []
        let entry = try loadKernel(image: kernel.elf, initrd: nil, commandLine: "quiet", rsdp: nil, into: memory) { offset, length, address in
            do {
                try memory.mapPrivately(file: kernel.descriptor, offset: offset + kernel.dataOffset, length: length, at: address)
                mapped.append(address.rawValue)
                return true
            } catch {
                return false
            }
        }
        #expect(mapped == [0x100_0000, 0x120_0000])
        #expect(entry.mode == .protected32)
        #expect(try memory.u8(0x100_0000) == SyntheticELF.code[0])
        #expect(try memory.u8(0x100_0000 + UInt64(SyntheticELF.code.count)) == 0x41)
        // The bss after the first segment, in its own page and the next, is zero; so is the
        // rest of the second segment's last page, although the file goes on past it.
        #expect(try memory.u64(0x100_0000 + 0x800) == 0 && memory.u64(0x100_0000 + 0x2000) == 0)
        #expect(try memory.u8(0x120_0000 + 4999) == 0x41 && memory.u8(0x120_0000 + 5000) == 0)
        // The guest writes its kernel's pages; the entry does not change.
        try memory.write(UInt64(0xDEAD_BEEF), at: GuestAddress(0x120_0000))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        // A page given back reads as zeros, not as the file's bytes.
        try memory.discard(at: GuestAddress(0x120_0000), length: 4096)
        #expect(try memory.u64(0x120_0000) == 0 && memory.u8(0x120_0000 + 100) == 0)
    }

    @Test("a mapping is refused unless it is page-aligned, inside RAM and inside the file")
    func mappingRefusals() throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (cached, _) = kernel(Self.image().bzImage, in: directory)
        let kernel = try #require(cached)
        let memory = try GuestMemory(size: 16 * mib)
        let fd = kernel.descriptor
        #expect(throws: GuestMemoryError.self) { try memory.mapPrivately(file: fd, offset: 100, length: 4096, at: GuestAddress(0x10_0000)) }
        #expect(throws: GuestMemoryError.self) { try memory.mapPrivately(file: fd, offset: 0, length: 4096, at: GuestAddress(0x10_0010)) }
        #expect(throws: GuestMemoryError.self) { try memory.mapPrivately(file: fd, offset: 0, length: 4096, at: GuestAddress(16 * mib)) }
        #expect(throws: GuestMemoryError.self) { try memory.mapPrivately(file: fd, offset: 0, length: 1 << 30, at: GuestAddress(0)) }
        #expect(throws: GuestMemoryError.self) { try memory.mapPrivately(file: fd, offset: 0, length: 8 * mib, at: GuestAddress(0x10_0000)) }
    }
}
