import HostSystem
#if canImport(Glibc)
import Glibc
#endif

// The host's descriptors, called on the I/O thread: the listener where host programs connect,
// their `CONNECT <port>\n` lines, connection sockets that became readable or writable, and the
// timer for connects that waited too long.

extension VsockDevice {
    /// The longest CONNECT line taken: "CONNECT 4294967295\n" is 19 bytes.
    static let maximumConnectLine = 32

    /// Host programs are connecting to the listener: take each, and wait for its line.
    func listenerReady() {
        state.withLock { s in
            while let socket = listener.accept() {
                guard s.connections.count + s.connects.count < Self.maximumConnections else { continue }
                let fd = socket.raw
                s.connects[fd] = PendingConnect(socket: socket, deadline: clock() + Self.connectTimeoutNanoseconds)
                s.watcher?.watch(fd, events: DescriptorEvents.readable) { [weak self] _ in self?.connectLineReady(fd) }
                armTimer(&s)
            }
        }
    }

    /// Reads a host program's CONNECT line a byte at a time, so that nothing after the newline
    /// (the stream itself) is taken early.
    func connectLineReady(_ fd: CInt) {
        state.withLock { s in
            guard var pending = s.connects[fd] else { return }
            var byte: UInt8 = 0
            while pending.line.last != UInt8(ascii: "\n") {
                let (n, error) = retryingInterrupts { read(fd, &byte, 1) }
                if n < 0, error == EAGAIN {
                    s.connects[fd] = pending
                    return
                }
                guard n == 1, pending.line.count < Self.maximumConnectLine else {
                    // End of file, an error, or a line too long: the program gets its socket closed.
                    if n == 1 { s.statistics.badConnectLines += 1 }
                    return dropConnect(fd, &s)
                }
                pending.line.append(byte)
            }
            guard let port = Self.parseConnectLine(pending.line) else {
                s.statistics.badConnectLines += 1
                return dropConnect(fd, &s)
            }
            dropConnect(fd, &s)
            guard s.active else { return } // no driver to ask: the socket closes
            let key = VsockConnectionKey(hostPort: nextHostPort(guestPort: port, &s), guestPort: port)
            var connection = VsockConnection(key: key, socket: pending.socket,
                                             state: .connecting(deadline: clock() + Self.connectTimeoutNanoseconds))
            connection.pending.insert(.request)
            s.connections[key] = connection
            s.bySocket[fd] = key
            s.statistics.connectionsAdded += 1
            s.markReady(key)
            armTimer(&s)
            fillReceiveQueue(&s)
        }
    }

    /// `CONNECT <port>\n`, the keyword in any case and the port a decimal u32.
    static func parseConnectLine(_ line: [UInt8]) -> UInt32? {
        guard line.last == UInt8(ascii: "\n") else { return nil }
        let words = line.dropLast().split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
        guard words.count == 2, String(decoding: words[0], as: UTF8.self).uppercased() == "CONNECT",
              words[1].allSatisfy({ (UInt8(ascii: "0") ... UInt8(ascii: "9")).contains($0) }) else { return nil }
        return UInt32(String(decoding: words[1], as: UTF8.self))
    }

    /// Stops waiting for `fd`'s line; the socket closes unless the caller keeps it.
    private func dropConnect(_ fd: CInt, _ s: inout State) {
        s.watcher?.unwatch(fd)
        s.connects[fd] = nil
    }

    /// A port in [2³⁰, 2³¹) for a host program's connection, not in use towards `guestPort`.
    private func nextHostPort(guestPort: UInt32, _ s: inout State) -> UInt32 {
        while true {
            let port = s.nextHostPort
            s.nextHostPort = port == UInt32.max >> 1 ? Self.firstHostPort : port + 1
            if s.connections[VsockConnectionKey(hostPort: port, guestPort: guestPort)] == nil { return port }
        }
    }

    /// A connection's socket is ready: bytes to read (the rx queue takes them as the guest's
    /// credit allows), room to write the backlog, or the program went away.
    func socketReady(_ fd: CInt, events: UInt32) {
        state.withLock { s in
            guard let key = s.bySocket[fd], let before = s.connections[key] else { return }
            let hungUp = events & DescriptorEvents.hangUp != 0
            if events & (DescriptorEvents.writable | DescriptorEvents.error) != 0 || (hungUp && !before.backlog.isEmpty) {
                flushBacklog(key, &s)
            }
            guard let connection = s.connections[key] else { return scheduleFill(&s) }
            if events & DescriptorEvents.readable != 0 || hungUp {
                // Level-triggered: stop listening until the bytes are taken, or the loop spins.
                // A program that hung up is not watched again: reading finds its last bytes
                // and then end of file.
                s.connections[key]?.hostReadable = true
                s.setInterest(key, hungUp ? 0 : connection.interest & ~DescriptorEvents.readable, device: self)
                s.markReady(key)
            }
            scheduleFill(&s)
        }
    }

    /// Writes what waits for the host program; once it is all out, stops watching for room.
    private func flushBacklog(_ key: VsockConnectionKey, _ s: inout State) {
        guard var connection = s.connections[key] else { return }
        var failed = false
        connection.backlog.drain { bytes in
            switch UnixSocket.send(connection.socket.raw, bytes) {
            case let .success(n): return n
            case .failure: failed = true; return 0
            }
        }
        guard !failed else {
            s.statistics.hostErrors += 1
            return s.reset(key, guestCID: guestCID)
        }
        connection.forwarded = connection.received &- UInt32(connection.backlog.count)
        if connection.owesCreditUpdate { connection.pending.insert(.creditUpdate) }
        s.connections[key] = connection
        s.markReady(key) // a credit update, if one is owed
        guard connection.backlog.isEmpty else { return }
        if connection.state == .closing { return s.reset(key, guestCID: guestCID) }
        s.setInterest(key, connection.interest & ~DescriptorEvents.writable, device: self)
        shutHostWritesIfDone(key, &s)
        s.markReady(key)
    }

    /// Connects that waited too long: host programs that never finished their line, and
    /// REQUESTs the guest never answered (nobody listening, or no driver).
    func timerFired() {
        timer.acknowledge()
        state.withLock { s in
            let now = clock()
            for (fd, pending) in s.connects where pending.deadline <= now { dropConnect(fd, &s) }
            for (key, connection) in s.connections {
                if case let .connecting(deadline) = connection.state, deadline <= now { s.reset(key, guestCID: guestCID) }
            }
            armTimer(&s)
            fillReceiveQueue(&s)
        }
    }

    /// Sets the timer for the earliest deadline, if any.
    func armTimer(_ s: inout State) {
        guard timer.isUsable else { return }
        var earliest = s.connects.values.map(\.deadline).min()
        for connection in s.connections.values {
            if case let .connecting(deadline) = connection.state { earliest = min(earliest ?? deadline, deadline) }
        }
        guard let earliest else { return timer.disarm() }
        let now = clock()
        timer.arm(afterNanoseconds: earliest > now ? earliest - now : 1)
    }
}
