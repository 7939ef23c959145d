import Boot
import GuestMemory
import KernelCache
#if canImport(Glibc)
import Glibc
#endif

/// The kernel a machine boots: an entry of the kernel cache (an uncompressed kernel to map), or
/// the file's own bytes, read into memory.
enum KernelSource {
    case cached(CachedKernel)
    case file(LoadedFile)

    /// Looks the kernel up in the cache the configuration names: by the file's identity first
    /// (a kernel booted before is not even read), then by its content, expanding it if need be.
    /// A kernel that cannot be read is an error here, as it always was; a cache that cannot be
    /// used is not.
    init(configuration: VMConfiguration) throws(LaunchError) {
        let path = configuration.kernelPath
        guard let directory = KernelCaching.directory(for: configuration) else {
            self = .file(try LoadedFile(path: path, what: "kernel"))
            return
        }
        let cache = KernelCache(directory: directory)
        let before = FileIdentity(path: path)
        if let before, let (kernel, entry) = cache.lookup(before) {
            KernelCaching.trace(.found(path: entry), configuration)
            self = .cached(kernel)
            return
        }
        let file = try LoadedFile(path: path, what: "kernel")
        // Linked under its identity only if the file did not change while it was read.
        let after = FileIdentity(path: path)
        let (kernel, outcome) = cache.kernel(for: file.bytes, identity: before == after ? before : nil)
        KernelCaching.trace(outcome, configuration)
        self = kernel.map { .cached($0) } ?? .file(file)
    }
}

/// Where the Launcher meets the kernel cache: which directory the configuration names, what
/// `--trace-boot` says about it, and how an entry's segments are mapped into guest memory.
enum KernelCaching {
    static func trace(_ outcome: KernelCache.Outcome, _ configuration: VMConfiguration) {
        guard configuration.traceBoot else { return }
        switch outcome {
        case let .found(path): printError(BootClock.line("trace: kernel from the cache, \(path)"))
        case let .built(path): printError(BootClock.line("trace: kernel expanded into the cache, \(path)"))
        case .notExpandable: printError(BootClock.line("trace: kernel boots as it is (not a bzImage with an LZ4 payload)"))
        case let .unavailable(why): printError(BootClock.line("trace: kernel boots as it is: \(why)"))
        }
    }

    static func directory(for configuration: VMConfiguration) -> String? {
        switch configuration.kernelCache {
        case .off: return nil
        case .user:
            var environment: [String: String] = [:]
            for name in ["XDG_CACHE_HOME", "HOME"] {
                if let value = getenv(name) { environment[name] = String(cString: value) }
            }
            return KernelCache.userDirectory(environment: environment)
        case .besideKernel:
            let path = configuration.kernelPath
            guard let slash = path.lastIndex(of: "/") else { return "." }
            return slash == path.startIndex ? "/" : String(path[..<slash])
        case let .directory(path): return path
        }
    }

    /// Maps a segment of `kernel`'s vmlinux from its file where it can (page-aligned on both
    /// sides); the loader copies it otherwise.
    static func mapper(_ kernel: CachedKernel, into memory: GuestMemory) -> SegmentMapper {
        { offset, length, address in
            let (fileOffset, overflow) = offset.addingReportingOverflow(kernel.dataOffset)
            guard !overflow, length > 0 else { return false }
            do {
                try memory.mapPrivately(file: kernel.descriptor, offset: fileOffset, length: length, at: address)
                return true
            } catch {
                return false
            }
        }
    }
}
