#if canImport(Glibc)
import Glibc
#endif

/// One shared directory: the host directory, the tag the guest mounts it by
/// (`mount -t virtiofs TAG /mnt`), and whether the guest may change it.
public struct FsShareConfiguration: Sendable, Hashable {
    public var path: String
    public var tag: String
    public var readOnly: Bool
    /// Open nodes (each an O_PATH descriptor) and open files the guest may hold at once;
    /// `nil` takes a share of the process's descriptor limit (`FsDevice.descriptorBudget`).
    public var maxNodes: Int?
    public var maxHandles: Int?

    /// The tag field in the device's configuration space is 36 bytes.
    public static let maxTagBytes = 36

    public init(path: String, tag: String, readOnly: Bool = false, maxNodes: Int? = nil, maxHandles: Int? = nil) {
        self.path = path
        self.tag = tag
        self.readOnly = readOnly
        self.maxNodes = maxNodes
        self.maxHandles = maxHandles
    }

    /// The checks that need nothing but the value: a tag of 1 to 36 bytes without NUL, a path.
    public func validate() throws(FsError) {
        guard !tag.isEmpty else { throw .emptyTag(path: path) }
        guard tag.utf8.count <= Self.maxTagBytes else { throw .tagTooLong(tag) }
        guard !tag.utf8.contains(0), !path.utf8.contains(0) else { throw .nulByte(path: path) }
        guard !path.isEmpty else { throw .notFound(path: path) }
    }
}

/// Why a shared directory cannot be served. Each prints as one line; the launcher exits with
/// status 2 before the guest runs.
public enum FsError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(path: String)
    case notDirectory(path: String)
    case permissionDenied(path: String)
    case emptyTag(path: String)
    case tagTooLong(String)
    case duplicateTag(String)
    case nulByte(path: String)
    /// /proc/self/fd cannot be opened: files are reopened from their O_PATH descriptors there.
    case noProc(errno: Int32)
    case system(path: String, errno: Int32)

    public var description: String {
        switch self {
        case let .notFound(path): return "shared directory \(path) does not exist"
        case let .notDirectory(path): return "shared directory \(path) is not a directory"
        case let .permissionDenied(path): return "cannot open shared directory \(path): permission denied"
        case let .emptyTag(path): return "shared directory \(path) has no tag: give it as \(path),tag=NAME"
        case let .tagTooLong(tag): return "share tag \"\(tag)\" is longer than \(FsShareConfiguration.maxTagBytes) bytes"
        case let .duplicateTag(tag): return "share tag \"\(tag)\" is used twice"
        case let .nulByte(path): return "shared directory \(path): the path or tag contains a NUL byte"
        case let .noProc(errno): return "cannot share a directory without /proc/self/fd: \(String(cString: strerror(errno)))"
        case let .system(path, errno): return "cannot open shared directory \(path): \(String(cString: strerror(errno)))"
        }
    }
}
