import Foundation
import Testing
import GuestMemory
@testable import Boot

/// The real thing: a Debian cloud kernel, if there is one on this machine.
///
/// Looked for in `$LGUEST_TEST_KERNEL`, then where the kernel package was unpacked during
/// design (`/tmp/kpkg/x/boot/`), then in the lab's cache (`Lab/lab.sh setup` puts it in
/// `$LGUEST_LAB_CACHE`, by default `~/.cache/lguest-lab`, as `kernel/<version>/boot/vmlinuz-*`).
/// Without one these tests are skipped, not failed: they check our reading of a real header,
/// which the synthetic images cannot.
enum DebianKernel {
    static let path: String? = {
        let environment = ProcessInfo.processInfo.environment
        let files = FileManager.default
        var candidates: [String] = []
        if let explicit = environment["LGUEST_TEST_KERNEL"] { candidates.append(explicit) }
        candidates.append("/tmp/kpkg/x/boot/vmlinuz-6.1.0-56-cloud-amd64")
        let cache = environment["LGUEST_LAB_CACHE"]
            ?? files.homeDirectoryForCurrentUser.appendingPathComponent(".cache/lguest-lab").path
        let versions = (try? files.contentsOfDirectory(atPath: cache + "/kernel")) ?? []
        for directory in ["boot"] + versions.sorted().map({ $0 + "/boot" }) {
            let boot = cache + "/kernel/" + directory
            let names = (try? files.contentsOfDirectory(atPath: boot)) ?? []
            candidates += names.filter { $0.hasPrefix("vmlinuz-") }.sorted().map { boot + "/" + $0 }
        }
        return candidates.first { files.isReadableFile(atPath: $0) }
    }()

    /// Whether the kernel found is the exact build whose header values are written down below.
    static var isKnownBuild: Bool { path?.hasSuffix("vmlinuz-6.1.0-56-cloud-amd64") == true }

    static func image() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: try #require(path))))
    }

    static let lz4 = ["/usr/bin/lz4", "/bin/lz4"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// The ELF vmlinux inside the bzImage: its payload (at payload_offset into the
    /// protected-mode part, payload_length bytes) is LZ4 for this build; `lz4 -d` unpacks it
    /// once the kernel's trailer (the unpacked size, 4 bytes) is cut off.
    static func vmlinux() throws -> [UInt8] {
        let image = try image()
        let header = try SetupHeader(image: image)
        func u32(_ offset: Int) -> Int { (0..<4).reduce(0) { $0 | Int(image[offset + $1]) << (8 * $1) } }
        let start = header.protectedModeOffset + u32(0x248)
        let payload = Data(image[start..<(start + u32(0x24C) - 4)])
        try #require(payload.starts(with: [0x02, 0x21, 0x4C, 0x18]), "payload is not LZ4")

        let input = FileManager.default.temporaryDirectory.appendingPathComponent("lguest-boot-test-\(getpid()).lz4")
        try payload.write(to: input)
        defer { try? FileManager.default.removeItem(at: input) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(lz4))
        process.arguments = ["-d", "-c", input.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0)
        return [UInt8](data)
    }
}

@Suite(.enabled(if: DebianKernel.path != nil,
                "no Debian kernel here: set LGUEST_TEST_KERNEL or run Lab/lab.sh setup"))
struct DebianKernelTests {
    @Test(.enabled(if: DebianKernel.isKnownBuild, "header values below are those of vmlinuz-6.1.0-56-cloud-amd64"))
    func headerValues() throws {
        let header = try SetupHeader(image: try DebianKernel.image())
        #expect(header.version == 0x020F)
        #expect(header.setupSectors == 39)
        #expect(header.protectedModeOffset == 0x5000)
        #expect(header.headerEnd == 0x26C)
        #expect(header.loadFlags == 0x01)
        #expect(header.xloadFlags == 0x7F)
        #expect(header.initSize == 0x337_8000)
        #expect(header.kernelAlignment == 0x20_0000)
        #expect(header.relocatable)
        #expect(header.commandLineSize == 0x7FF)
        #expect(header.initrdAddressMax == GuestAddress(0x7FFF_FFFF))
        #expect(header.preferredAddress == 0x100_0000)
        #expect(header.systemSize == 0xD_8220)
        #expect(header.runtimeStart == GuestAddress(0x100_0000))
    }

    @Test func loadsInto256MiB() throws {
        let image = try DebianKernel.image()
        let header = try SetupHeader(image: image)
        let memory = try GuestMemory(size: 256 * mib)
        let initrd = [UInt8](repeating: 0x42, count: Int(mib) + 123)
        let entry = try loadKernel(image: image, initrd: initrd,
                                   commandLine: "console=ttyS0 earlyprintk=serial reboot=k panic=1",
                                   rsdp: GuestAddress(0xE0000), into: memory)
        #expect(entry.mode == .long64)
        #expect(entry.instructionPointer == GuestAddress(0x10_0200))

        // The protected-mode kernel at 1 MiB: check its first and last pages.
        let offset = header.protectedModeOffset
        #expect(try memory.readBytes(at: 0x10_0000, count: 4096) == Array(image[offset..<(offset + 4096)]))
        let last = image.count - 4096
        #expect(try memory.readBytes(at: GuestAddress(0x10_0000 + UInt64(last - offset)), count: 4096)
            == Array(image[last...]))

        // The header as the decompressor will read it.
        #expect(try memory.u32(0x7000 + 0x260) == header.initSize)
        #expect(try memory.u32(0x7000 + 0x230) == header.kernelAlignment)
        #expect(try memory.u16(0x7000 + 0x206) == header.version)
        #expect(try memory.u8(0x7000 + 0x1F1) == header.setupSectorsField)
        // Initrd at the top of the 256 MiB, page-aligned.
        #expect(try memory.u32(0x7218) == UInt32((256 * mib - mib - 123) & ~0xFFF))
        #expect(try memory.u32(0x721C) == UInt32(mib + 123))
    }

    @Test(.enabled(if: DebianKernel.isKnownBuild && DebianKernel.lz4 != nil, "needs lz4 to unpack the vmlinux"))
    func itsVmlinuxTakesThePVHEntry() throws {
        let vmlinux = try DebianKernel.vmlinux()
        let memory = try GuestMemory(size: 256 * mib)
        let entry = try loadKernel(image: vmlinux, initrd: [1, 2, 3], commandLine: "console=ttyS0",
                                   rsdp: GuestAddress(0xE0000), into: memory)
        #expect(entry.mode == .protected32)
        #expect(entry.instructionPointer == GuestAddress(0x100_0850))
        #expect(entry.bootInfoAddress == GuestAddress(0x6000))
        #expect(try memory.u32(0x6000) == 0x336E_C578)
        // The first PT_LOAD (file offset 0x200000) is at 16 MiB.
        #expect(try memory.readBytes(at: 0x100_0000, count: 4096) == Array(vmlinux[0x20_0000..<0x20_1000]))
        // The initrd is above the kernel's last segment (0x304e000 + 0xdb2000).
        #expect(try memory.u64(0x6040) >= 0x3E0_0000)
    }

    @Test func refusesTooLittleMemory() throws {
        let memory = try GuestMemory(size: 64 * mib)
        let error = bootError {
            _ = try loadKernel(image: try DebianKernel.image(), initrd: nil, commandLine: "", rsdp: nil, into: memory)
        }
        guard case .kernelDoesNotFit = error else {
            Issue.record("expected kernelDoesNotFit, got \(String(describing: error))")
            return
        }
    }
}
