import HostSystem

/// One stream between a guest socket and a host Unix socket, and the accounting that keeps
/// both sides from overrunning each other (virtio 1.2 §5.10.6.3 "Flow Control").
///
/// **Guest to host.** We tell the guest how much it may send: `bufferAllocation` (our buffer)
/// and `forwarded` (bytes we have written to the host socket). The guest keeps
/// `received − forwarded ≤ bufferAllocation` in flight, so what the host socket does not take at
/// once fits in `backlog`, which is bounded by the same number. A guest that sends beyond its
/// credit is reset.
///
/// **Host to guest.** The guest tells us the same two numbers in every header; we send at most
/// `peerCredit` bytes, so a guest that stops reading stops only its own connection.
struct VsockConnection {
    enum State: Equatable {
        /// A host program's CONNECT: REQUEST sent (or waiting for an rx buffer), no answer yet.
        /// Given up at `deadline` (monotonic nanoseconds).
        case connecting(deadline: UInt64)
        case established
        /// The guest closed its end while bytes were still waiting for the host socket:
        /// flush them, then close and reset.
        case closing
    }

    /// Control packets owed to the guest, sent as rx buffers come.
    struct Pending: OptionSet {
        let rawValue: UInt8
        static let request = Pending(rawValue: 1)
        static let response = Pending(rawValue: 2)
        static let creditUpdate = Pending(rawValue: 4)
        /// The host side will send no more (its program shut down or closed its socket).
        static let shutdownSend = Pending(rawValue: 8)
    }

    /// The buffer we offer the guest per connection (Firecracker's figure).
    static let bufferAllocation: UInt32 = 256 * 1024

    let key: VsockConnectionKey
    let socket: OwnedDescriptor
    var state: State
    var pending: Pending = []

    // Guest to host.
    var received: UInt32 = 0
    var forwarded: UInt32 = 0
    /// The `forwarded` the guest last heard from us.
    var advertisedForwarded: UInt32 = 0
    var backlog = ByteQueue()
    /// The guest sent SHUTDOWN with `send`: once the backlog is out, the host's socket is shut
    /// for writing.
    var guestDoneSending = false
    var hostWriteShut = false

    // Host to guest.
    var sent: UInt32 = 0
    var peerBufferAllocation: UInt32 = 0
    var peerForwarded: UInt32 = 0
    var guestDoneReceiving = false
    /// The host socket reported end of file: nothing more to read.
    var hostDoneSending = false
    /// epoll said the host socket has bytes; cleared when a read finds it empty.
    var hostReadable = false
    /// The events the I/O thread watches the socket for now.
    var interest: UInt32 = 0

    init(key: VsockConnectionKey, socket: OwnedDescriptor, state: State) {
        self.key = key
        self.socket = socket
        self.state = state
    }

    /// Bytes the guest has room for now.
    var peerCredit: UInt32 {
        let inFlight = sent &- peerForwarded
        return inFlight >= peerBufferAllocation ? 0 : peerBufferAllocation - inFlight
    }

    /// Whether `header` claims the guest consumed more than we ever sent it: credit no
    /// honest driver reports (the counters wrap, so "ahead" means less than 2³¹ ahead).
    func isImpossibleCredit(_ header: VsockHeader) -> Bool {
        let ahead = header.forwardCount &- sent
        return ahead != 0 && ahead < 1 << 31
    }

    /// Takes the guest's view of its buffer from a header it sent.
    mutating func updatePeerCredit(from header: VsockHeader) {
        peerBufferAllocation = header.bufferAllocation
        peerForwarded = header.forwardCount
    }

    /// Whether data from the host socket can go to the guest now.
    var canSendData: Bool {
        state == .established && hostReadable && !hostDoneSending && !guestDoneReceiving && peerCredit > 0
    }

    /// Whether the guest's idea of our free buffer has fallen low enough, and ours moved on far
    /// enough, that it should hear our `forwarded`. (Linux does not ask: a sender out of credit
    /// waits until it is told.)
    var owesCreditUpdate: Bool {
        let guestThinksFree = Self.bufferAllocation &- (received &- advertisedForwarded)
        return forwarded != advertisedForwarded && guestThinksFree < Self.bufferAllocation / 2
    }

    /// Whether this connection has something for the rx queue.
    var hasWorkForGuest: Bool { !pending.isEmpty || canSendData }

    /// The header of a packet from the host side of this connection, carrying our credit.
    mutating func header(op: UInt16, guestCID: UInt64, length: UInt32 = 0, flags: UInt32 = 0) -> VsockHeader {
        advertisedForwarded = forwarded
        return VsockHeader(sourceCID: VsockCID.host, destinationCID: guestCID, sourcePort: key.hostPort,
                           destinationPort: key.guestPort, length: length, op: op, flags: flags,
                           bufferAllocation: Self.bufferAllocation, forwardCount: forwarded)
    }
}

/// Bytes waiting for a socket that was full: appended at the back, taken from the front.
struct ByteQueue {
    private var storage: [UInt8] = []
    private var start = 0

    var count: Int { storage.count - start }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        storage.append(contentsOf: bytes)
    }

    /// Calls `body` with the waiting bytes; drops as many from the front as it returns.
    mutating func drain(_ body: (UnsafeRawBufferPointer) -> Int) {
        let taken = storage.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        start += min(max(taken, 0), count)
        if start == storage.count {
            storage.removeAll(keepingCapacity: false)
            start = 0
        } else if start > 64 * 1024, start > storage.count / 2 {
            storage.removeFirst(start)
            start = 0
        }
    }
}
