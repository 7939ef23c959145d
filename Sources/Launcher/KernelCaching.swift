import Boot
import GuestMemory
import KernelCache
#if canImport(Glibc)
import Glibc
#endif

/// Where the Launcher meets the kernel cache: which directory the configuration names, what
/// `--trace-boot` says about it, and how an entry's segments are mapped into guest memory.
enum KernelCaching {
    /// The cached uncompressed kernel for the bzImage `kernel`, if the configuration allows a
    /// cache and the kernel is one we expand; nil to boot the bzImage as it is.
    static func uncompressed(_ kernel: LoadedFile, configuration: VMConfiguration) -> CachedKernel? {
        guard let directory = directory(for: configuration) else { return nil }
        let (cached, outcome) = KernelCache(directory: directory).kernel(for: kernel.bytes)
        if configuration.traceBoot {
            switch outcome {
            case let .found(path): printError(BootClock.line("trace: kernel from the cache, \(path)"))
            case let .built(path): printError(BootClock.line("trace: kernel expanded into the cache, \(path)"))
            case .notExpandable: printError(BootClock.line("trace: kernel boots as it is (no LZ4 payload to expand)"))
            case let .unavailable(why): printError(BootClock.line("trace: kernel boots as it is: \(why)"))
            }
        }
        return cached
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
