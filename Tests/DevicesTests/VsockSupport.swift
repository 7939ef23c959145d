import Foundation
import GuestMemory
import HostSystem
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting

struct VsockTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A vsock device behind a real virtio-mmio transport, driven by the mock driver as Linux's
/// virtio_vsock would; its host side in a scratch directory.
final class VsockRig {
    static let cid: UInt64 = 3
    static let bufferSize: UInt32 = 4096 + UInt32(VsockHeader.size)
    let directory: String
    let path: String
    let memory: GuestMemory
    let device: VsockDevice
    let watcher = PollWatcher()
    let transport: MMIOTransport
    let driver: MockDriver
    let rx: MockDriverQueue
    let tx: MockDriverQueue
    let events: MockDriverQueue
    /// The rx buffers, reposted by address; `outstanding` are with the device.
    private var pool: [GuestAddress] = []
    private var outstanding: [UInt16: GuestAddress] = [:]

    init(rxBuffers: Int = 32) throws {
        directory = NSTemporaryDirectory() + "lguest-vsock-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/v.sock"
        memory = try GuestMemory(size: 0x80_0000)
        device = try VsockDevice(configuration: VsockConfiguration(guestCID: Self.cid, udsPath: path))
        device.start(watcher: watcher)
        transport = MMIOTransport(device: device, memory: memory, interrupt: NetInterruptCounter())
        driver = MockDriver(transport: transport)
        rx = try MockDriverQueue(memory: memory, size: 128, base: 0x1_0000, dataAreaSize: 0x20_0000)
        tx = try MockDriverQueue(memory: memory, size: 128, base: 0x30_0000, dataAreaSize: 0x20_0000)
        events = try MockDriverQueue(memory: memory, size: 8, base: 0x60_0000, dataAreaSize: 0x1000)
        try driver.initialize(queues: [rx, tx, events])
        for _ in 0 ..< rxBuffers { pool.append(try rx.allocate(UInt64(Self.bufferSize))) }
        try postReceiveBuffers()
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Gives the device every rx buffer it does not hold, and kicks the rx queue.
    func postReceiveBuffers() throws {
        for address in pool where !outstanding.values.contains(address) {
            let head = try rx.addRawChain([RawDescriptor(address: address, length: Self.bufferSize, flags: .write)])
            outstanding[head] = address
        }
        driver.kick(UInt32(VsockDevice.receiveQueue))
    }

    /// A packet from the guest: `header`'s bytes (cut into `split` pieces) and the payload.
    func send(_ header: VsockHeader, payload: [UInt8] = [], split: [Int] = []) throws {
        var pieces: [[UInt8]] = []
        var bytes = header.bytes
        for cut in split where cut < bytes.count {
            pieces.append(Array(bytes.prefix(cut)))
            bytes.removeFirst(cut)
        }
        pieces.append(bytes)
        if !payload.isEmpty { pieces.append(payload) }
        try sendRaw(pieces)
    }

    /// Raw readable pieces on the tx queue (and writable ones, which a packet must not have).
    func sendRaw(_ pieces: [[UInt8]], writable: [UInt32] = []) throws {
        try tx.addChain(readable: pieces, writable: writable)
        driver.kick(UInt32(VsockDevice.transmitQueue))
        let used = try tx.drainUsed()
        guard used.count == 1, used[0].length == 0 else { throw VsockTestError("tx used: \(used)") }
        tx.resetDataArea()
    }

    /// A header from the guest's port `guestPort` to the host's `hostPort`.
    func guest(_ op: UInt16, from guestPort: UInt32, to hostPort: UInt32, length: UInt32 = 0,
               flags: UInt32 = 0, bufferAllocation: UInt32 = 256 * 1024, forwardCount: UInt32 = 0) -> VsockHeader {
        VsockHeader(sourceCID: Self.cid, destinationCID: VsockCID.host, sourcePort: guestPort, destinationPort: hostPort,
                    length: length, op: op, flags: flags, bufferAllocation: bufferAllocation, forwardCount: forwardCount)
    }

    /// The packets the device has put on the rx queue since the last call (buffers reposted).
    func received(repost: Bool = true) throws -> [(header: VsockHeader, payload: [UInt8])] {
        var packets: [(VsockHeader, [UInt8])] = []
        while let used = try rx.popUsed() {
            guard let address = outstanding.removeValue(forKey: UInt16(used.id)) else { throw VsockTestError("unknown rx head \(used.id)") }
            let bytes = try memory.readBytes(at: address, count: Int(used.length))
            guard bytes.count >= VsockHeader.size else { throw VsockTestError("rx packet of \(bytes.count) bytes") }
            let header = VsockHeader(decoding: bytes)
            guard Int(header.length) == bytes.count - VsockHeader.size else { throw VsockTestError("len \(header.length) in a \(bytes.count)-byte packet") }
            packets.append((header, Array(bytes.dropFirst(VsockHeader.size))))
        }
        if repost { try postReceiveBuffers() }
        return packets
    }

    /// Pumps the host side, then collects what reached the guest.
    func exchange() throws -> [(header: VsockHeader, payload: [UInt8])] {
        watcher.settle()
        return try received()
    }

    /// A host program listening for guest connections to `port`.
    func hostListener(port: UInt32) throws -> UnixListener { try UnixListener(path: path + "_\(port)") }

    /// A host program connecting to the device's socket and sending `line`.
    func hostConnect(line: String) throws -> OwnedDescriptor {
        guard case let .success(socket) = UnixSocket.connect(to: path) else { throw VsockTestError("connect \(path)") }
        try hostWrite(socket, Array(line.utf8))
        return socket
    }
}

/// Writes all of `bytes` to a non-blocking socket, waiting for room.
func hostWrite(_ socket: OwnedDescriptor, _ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { send(socket.raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n > 0 { offset += n; continue }
        guard errno == EAGAIN else { throw VsockTestError("send: \(String(cString: strerror(errno)))") }
        var p = pollfd(fd: socket.raw, events: Int16(POLLOUT), revents: 0)
        _ = poll(&p, 1, 100)
    }
}

/// Everything readable on `socket` now (after waiting up to `timeout` ms for the first byte);
/// `eof` when the peer closed.
func hostRead(_ socket: OwnedDescriptor, timeout: Int32 = 200) -> (bytes: [UInt8], eof: Bool) {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    var p = pollfd(fd: socket.raw, events: Int16(POLLIN), revents: 0)
    _ = poll(&p, 1, timeout)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(socket.raw, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n > 0 { out += buffer[0 ..< n]; continue }
        // A socket closed with our bytes unread resets rather than ends: closed either way.
        return (out, n == 0 || errno == ECONNRESET)
    }
}

/// Accepts the connection a guest's REQUEST made on `listener`.
func hostAccept(_ listener: UnixListener) throws -> OwnedDescriptor {
    var p = pollfd(fd: listener.descriptor.raw, events: Int16(POLLIN), revents: 0)
    _ = poll(&p, 1, 1000)
    guard let socket = listener.accept() else { throw VsockTestError("nothing to accept") }
    return socket
}

/// Recognisable bytes.
func vsockPattern(_ count: Int, seed: Int = 0) -> [UInt8] {
    (0 ..< count).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ ($0 >> 8) &+ seed) }
}
