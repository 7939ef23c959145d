/// Why a snapshot could not be written, read or used. Each is one line for the user: a state
/// file is input like any other, and a bad one is refused before KVM is touched (exit 2).
public enum SnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file does not start with the state file's magic.
    case notASnapshot
    /// A state file of another format version.
    case version(found: UInt32, expected: UInt32)
    /// Shorter than its header says, or a field runs past the end of its section.
    case truncated(String)
    /// The bytes do not match their checksum.
    case checksum
    /// A field has a value lguest cannot use: a count too large, an unknown kind, a size that
    /// does not match the structure it should fill.
    case malformed(String)
    /// The snapshot cannot be used on this host or with this configuration (a CPU without the
    /// features the guest was given, a device that cannot be saved).
    case incompatible(String)
    /// Reading or writing a file failed.
    case file(path: String, String)

    public var description: String {
        switch self {
        case .notASnapshot: return "not an lguest snapshot state file"
        case let .version(found, expected):
            return "a snapshot of format version \(found); this lguest reads version \(expected)"
        case let .truncated(what): return "the snapshot is truncated (\(what))"
        case .checksum: return "the snapshot's checksum does not match its contents: the file is corrupt"
        case let .malformed(what): return "the snapshot is malformed: \(what)"
        case let .incompatible(what): return "the snapshot cannot be restored here: \(what)"
        case let .file(path, why): return "\(path): \(why)"
        }
    }
}
