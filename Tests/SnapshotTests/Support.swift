import Snapshot

/// The error `body` throws, or nil if it returns.
func refusal<T>(_ body: () throws(SnapshotError) -> T) -> SnapshotError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

/// Which case of `SnapshotError`, without its message.
enum Kind: Equatable {
    case notASnapshot, version, truncated, checksum, malformed, incompatible, file
}

extension SnapshotError {
    var kind: Kind {
        switch self {
        case .notASnapshot: .notASnapshot
        case .version: .version
        case .truncated: .truncated
        case .checksum: .checksum
        case .malformed: .malformed
        case .incompatible: .incompatible
        case .file: .file
        }
    }
}
