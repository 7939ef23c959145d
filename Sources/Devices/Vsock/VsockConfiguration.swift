import HostSystem

/// A virtio-vsock device as the user describes it: the guest's CID, and the Unix socket that
/// stands for the host side (Firecracker's model: host programs connect to `udsPath`, and a
/// guest connecting to the host's port P reaches the program listening on `udsPath_P`).
public struct VsockConfiguration: Equatable, Sendable {
    public var guestCID: UInt64
    public var udsPath: String
    /// The listener, when it was bound ahead of the VM (the API binds at `PUT /vsock`, as
    /// Firecracker does); otherwise the device binds `udsPath` when it is made.
    public var listener: UnixListener?

    public init(guestCID: UInt64, udsPath: String, listener: UnixListener? = nil) {
        self.guestCID = guestCID
        self.udsPath = udsPath
        self.listener = listener
    }

    public static func == (a: VsockConfiguration, b: VsockConfiguration) -> Bool {
        a.guestCID == b.guestCID && a.udsPath == b.udsPath
    }

    /// The `--vsock` option, `cid=N,uds=PATH`.
    public init(option: String) throws(VsockError) {
        var cid: UInt64?
        var path: String?
        for item in option.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2 else { throw .option(option, "expected cid=N,uds=PATH") }
            let value = String(pair[1])
            switch String(pair[0]) {
            case "cid" where cid == nil:
                guard let number = UInt64(value) else { throw .option(option, "cid=\(value) is not a number") }
                cid = number
            case "uds" where path == nil:
                path = value
            case "cid", "uds":
                throw .option(option, "\(pair[0])= given twice")
            default:
                throw .option(option, "unknown key '\(pair[0])' (known: cid, uds)")
            }
        }
        guard let cid, let path else { throw .option(option, "both cid=N and uds=PATH are required") }
        self.init(guestCID: cid, udsPath: path)
        try validate()
    }

    /// The checks that need no system call: the CID's range and the path's length.
    public func validate() throws(VsockError) {
        guard (VsockCID.firstGuest ... VsockCID.lastGuest).contains(guestCID) else {
            throw .badCID(guestCID)
        }
        do throws(UnixSocketError) { try UnixSocket.validate(path: udsPath) } catch { throw .socket(error) }
        // Guest connections to port P go to `PATH_P`: the longest port must fit too.
        let longest = udsPath + "_4294967295"
        guard longest.utf8.count <= UnixSocket.maximumPathLength else {
            throw .socket(.pathTooLong(udsPath, limit: UnixSocket.maximumPathLength - 11))
        }
    }

    /// Binds the host side's listener (unless it was bound already).
    public func bind() throws(VsockError) -> UnixListener {
        if let listener { return listener }
        try validate()
        do throws(UnixSocketError) { return try UnixListener(path: udsPath) } catch { throw .socket(error) }
    }
}

/// Why a vsock device could not be made; one line each.
public enum VsockError: Error, Equatable, Sendable, CustomStringConvertible {
    case option(String, String)
    case badCID(UInt64)
    case socket(UnixSocketError)

    public var description: String {
        switch self {
        case let .option(option, why): return "invalid vsock option '\(option)': \(why)"
        case let .badCID(cid): return "vsock: guest CID \(cid) is out of range: give \(VsockCID.firstGuest) to \(VsockCID.lastGuest) (0, 1 and 2 are reserved)"
        case let .socket(error): return "vsock: \(error)"
        }
    }
}

/// What a vsock device has done, for tests, logs and metrics.
public struct VsockStatistics: Sendable, Equatable {
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var connectionsAdded: UInt64 = 0
    public var connectionsRemoved: UInt64 = 0
    /// Connections reset by us: refused, timed out, broken by the host or by the guest.
    public var connectionsReset: UInt64 = 0
    /// TX chains dropped: too short for a header, a `len` the chain does not hold, a source
    /// that is not the guest, a destination that is not the host, a malformed chain.
    public var malformed: UInt64 = 0
    /// Packets answered with RST: an unknown type or op, no such connection, a guest sending
    /// past its credit or claiming impossible credit, a payload over 64 KiB.
    public var protocolErrors: UInt64 = 0
    /// Resets owed to the guest for connections that do not exist, dropped because too many
    /// were waiting for rx buffers.
    public var resetsDropped: UInt64 = 0
    /// RX chains too small for a header.
    public var rxMalformedBuffers: UInt64 = 0
    /// Host programs whose CONNECT line was not one.
    public var badConnectLines: UInt64 = 0
    /// Host socket reads and writes that failed.
    public var hostErrors: UInt64 = 0

    public init() {}
}
