/// The virtio-vsock wire format (virtio 1.2 §5.10 "Socket Device", `linux/virtio_vsock.h`).
///
/// Every packet on the rx and tx queues starts with a 44-byte little-endian header:
/// `src_cid` le64 @0, `dst_cid` le64 @8, `src_port` le32 @16, `dst_port` le32 @20, `len` le32
/// @24, `type` le16 @28, `op` le16 @30, `flags` le32 @32, `buf_alloc` le32 @36, `fwd_cnt`
/// le32 @40; `len` payload bytes follow (only for RW).
public struct VsockHeader: Equatable, Sendable {
    public static let size = 44

    public var sourceCID: UInt64
    public var destinationCID: UInt64
    public var sourcePort: UInt32
    public var destinationPort: UInt32
    public var length: UInt32
    public var type: UInt16
    public var op: UInt16
    public var flags: UInt32
    /// The sender's receive buffer for this connection, in bytes.
    public var bufferAllocation: UInt32
    /// How many bytes of this connection the sender has consumed (handed to its application).
    public var forwardCount: UInt32

    public init(sourceCID: UInt64, destinationCID: UInt64, sourcePort: UInt32, destinationPort: UInt32,
                length: UInt32 = 0, type: UInt16 = VsockType.stream, op: UInt16, flags: UInt32 = 0,
                bufferAllocation: UInt32 = 0, forwardCount: UInt32 = 0) {
        self.sourceCID = sourceCID
        self.destinationCID = destinationCID
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.length = length
        self.type = type
        self.op = op
        self.flags = flags
        self.bufferAllocation = bufferAllocation
        self.forwardCount = forwardCount
    }

    /// Decodes the first 44 bytes of `bytes` (which must hold at least that many).
    public init(decoding bytes: some RandomAccessCollection<UInt8>) {
        precondition(bytes.count >= Self.size)
        func le(_ offset: Int, _ count: Int) -> UInt64 {
            var value: UInt64 = 0
            for i in 0 ..< count {
                value |= UInt64(bytes[bytes.index(bytes.startIndex, offsetBy: offset + i)]) << (8 * i)
            }
            return value
        }
        sourceCID = le(0, 8)
        destinationCID = le(8, 8)
        sourcePort = UInt32(le(16, 4))
        destinationPort = UInt32(le(20, 4))
        length = UInt32(le(24, 4))
        type = UInt16(le(28, 2))
        op = UInt16(le(30, 2))
        flags = UInt32(le(32, 4))
        bufferAllocation = UInt32(le(36, 4))
        forwardCount = UInt32(le(40, 4))
    }

    /// The 44 bytes on the wire.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.size)
        func put<T: FixedWidthInteger>(_ value: T) {
            for i in 0 ..< MemoryLayout<T>.size { out.append(UInt8(truncatingIfNeeded: value >> (8 * i))) }
        }
        put(sourceCID); put(destinationCID); put(sourcePort); put(destinationPort); put(length)
        put(type); put(op); put(flags); put(bufferAllocation); put(forwardCount)
        return out
    }
}

/// `op` values.
public enum VsockOp {
    public static let request: UInt16 = 1
    public static let response: UInt16 = 2
    public static let reset: UInt16 = 3
    public static let shutdown: UInt16 = 4
    public static let readWrite: UInt16 = 5
    public static let creditUpdate: UInt16 = 6
    public static let creditRequest: UInt16 = 7
}

/// `type` values: only stream sockets are served.
public enum VsockType {
    public static let stream: UInt16 = 1
    public static let seqpacket: UInt16 = 2
}

/// SHUTDOWN's `flags`: the sender will receive no more (`receive`), send no more (`send`).
public enum VsockShutdown {
    public static let receive: UInt32 = 1
    public static let send: UInt32 = 2
    public static let both: UInt32 = 3
}

/// Well-known CIDs.
public enum VsockCID {
    /// The host: where a guest connects to reach a host program.
    public static let host: UInt64 = 2
    /// The lowest CID a guest may have (0 hypervisor, 1 local, 2 host).
    public static let firstGuest: UInt64 = 3
    /// Linux reserves U32_MAX (VMADDR_CID_ANY); CIDs are 32-bit in the socket API.
    public static let lastGuest: UInt64 = 0xFFFF_FFFE
}

/// One end of a connection: which host port talks to which guest port.
struct VsockConnectionKey: Hashable, Sendable {
    /// The host's port: the guest's `dst_port` when it connected, or the port picked for a
    /// host program's `CONNECT`.
    let hostPort: UInt32
    let guestPort: UInt32
}
