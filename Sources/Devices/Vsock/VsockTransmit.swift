import GuestMemory
import HostSystem
import Virtio
#if canImport(Glibc)
import Glibc
#endif

// The tx queue: packets from the guest. Each chain is a 44-byte header, split across
// descriptors however the driver liked, and for RW `len` payload bytes. Every chain is
// completed with length 0; a packet that breaks a rule is dropped and counted, or answered
// with a reset when it names a connection.

extension VsockDevice {
    func processTransmit(_ s: inout State) {
        guard s.queues.indices.contains(Self.transmitQueue), s.queues[Self.transmitQueue].isEnabled else { return }
        // The guest's kicks are off while the ring is drained (what it adds meanwhile is found
        // anyway), and on again once it is empty; a packet that slipped in before that is
        // handled too.
        s.queues[Self.transmitQueue].disableNotifications()
        while true {
            let chain: DescriptorChain
            do throws(VirtqueueError) {
                guard let next = try s.queues[Self.transmitQueue].popAvailable() else {
                    if s.queues[Self.transmitQueue].enableNotifications() {
                        s.queues[Self.transmitQueue].disableNotifications()
                        continue
                    }
                    break
                }
                chain = next
            } catch {
                s.statistics.malformed += 1
                if error.isStructural { break } else { continue }
            }
            handlePacket(chain, &s)
            do throws(VirtqueueError) { try s.queues[Self.transmitQueue].addUsed(head: chain.head, length: 0) }
            catch { s.statistics.malformed += 1 }
        }
        s.queues[Self.transmitQueue].notifyGuestIfNeeded()
        // Answers (RESPONSE, RST, credit) go out at once.
        fillReceiveQueue(&s)
    }

    private func handlePacket(_ chain: DescriptorChain, _ s: inout State) {
        var reader = chain.reader()
        let header: VsockHeader
        do throws(VirtqueueError) { header = VsockHeader(decoding: try reader.read(count: VsockHeader.size)) }
        catch { s.statistics.malformed += 1; return }
        guard header.length <= reader.remaining, chain.writableLength == 0,
              header.sourceCID == guestCID, header.destinationCID == VsockCID.host else {
            s.statistics.malformed += 1
            return
        }
        s.statistics.txPackets += 1
        guard header.type == VsockType.stream else {
            s.statistics.protocolErrors += 1
            s.queueReset(answering: header, guestCID: guestCID)
            return
        }
        let key = VsockConnectionKey(hostPort: header.destinationPort, guestPort: header.sourcePort)
        if header.op == VsockOp.request { return connect(key, header: header, &s) }
        guard var connection = s.connections[key] else {
            // Nothing to reset for a reset; anything else learns there is no such connection.
            if header.op != VsockOp.reset { s.statistics.protocolErrors += 1 }
            s.queueReset(answering: header, guestCID: guestCID)
            return
        }
        if header.op == VsockOp.reset { return s.remove(key) }
        guard !connection.isImpossibleCredit(header) else {
            s.statistics.protocolErrors += 1
            return s.reset(key, guestCID: guestCID)
        }
        connection.updatePeerCredit(from: header)
        s.connections[key] = connection
        switch header.op {
        case VsockOp.response:
            accepted(key, &s)
        case VsockOp.readWrite:
            receive(key, header: header, reader: &reader, &s)
        case VsockOp.shutdown:
            shutdown(key, flags: header.flags, &s)
        case VsockOp.creditUpdate:
            break // the new credit is taken above
        case VsockOp.creditRequest:
            s.connections[key]?.pending.insert(.creditUpdate)
        default:
            s.statistics.protocolErrors += 1
            return s.reset(key, guestCID: guestCID)
        }
        s.markReady(key)
    }

    /// REQUEST: the guest connects to the host's port `key.hostPort`, which is the host
    /// program listening on `uds_PORT`.
    private func connect(_ key: VsockConnectionKey, header: VsockHeader, _ s: inout State) {
        guard s.connections[key] == nil, s.connections.count + s.connects.count < Self.maximumConnections else {
            s.statistics.protocolErrors += 1
            return s.queueReset(answering: header, guestCID: guestCID)
        }
        switch UnixSocket.connect(to: listener.path + "_\(key.hostPort)") {
        case let .success(socket):
            var connection = VsockConnection(key: key, socket: socket, state: .established)
            connection.updatePeerCredit(from: header)
            connection.pending.insert(.response)
            s.connections[key] = connection
            s.bySocket[socket.raw] = key
            s.statistics.connectionsAdded += 1
            s.setInterest(key, DescriptorEvents.readable, device: self)
            s.markReady(key)
        case .failure:
            // Nobody listens there (or its queue is full): the guest's connect is refused.
            s.queueReset(answering: header, guestCID: guestCID)
        }
    }

    /// RESPONSE: the guest accepted a host program's CONNECT. The program hears `OK <port>`.
    private func accepted(_ key: VsockConnectionKey, _ s: inout State) {
        guard case .connecting = s.connections[key]?.state, let socket = s.connections[key]?.socket else {
            s.statistics.protocolErrors += 1
            return s.reset(key, guestCID: guestCID)
        }
        let line = Array("OK \(key.hostPort)\n".utf8)
        let sent = line.withUnsafeBytes { UnixSocket.send(socket.raw, $0) }
        guard case .success(line.count) = sent else {
            s.statistics.hostErrors += 1
            return s.reset(key, guestCID: guestCID)
        }
        s.connections[key]?.state = .established
        s.setInterest(key, DescriptorEvents.readable, device: self)
    }

    /// RW: bytes for the host program. They go straight from guest memory to the socket; what
    /// the socket does not take waits in the connection's backlog, which the guest's credit bounds.
    private func receive(_ key: VsockConnectionKey, header: VsockHeader, reader: inout ChainReader, _ s: inout State) {
        guard var connection = s.connections[key], connection.state == .established, !connection.guestDoneSending,
              header.length <= Self.maximumPayload,
              UInt64(connection.received &- connection.forwarded) + UInt64(header.length)
                <= UInt64(VsockConnection.bufferAllocation) else {
            s.statistics.protocolErrors += 1
            return s.reset(key, guestCID: guestCID)
        }
        let length = Int(header.length)
        connection.received &+= header.length
        s.statistics.txBytes += UInt64(length)
        var written = 0
        if connection.backlog.isEmpty {
            let segments = reader.segments(maxBytes: length)
            let result = GuestIOVectors.with(segments, in: reader.memory) { UnixSocket.send(connection.socket.raw, $0) }
            switch result {
            case let .success(n)?: written = n
            case .failure?, nil:
                s.statistics.hostErrors += 1
                return s.reset(key, guestCID: guestCID)
            }
        }
        connection.forwarded &+= UInt32(written)
        if written < length {
            do throws(VirtqueueError) {
                try reader.skip(written)
                let rest = try reader.read(count: length - written)
                rest.withUnsafeBytes { connection.backlog.append($0) }
            } catch {
                s.statistics.malformed += 1
                return s.reset(key, guestCID: guestCID)
            }
        }
        if connection.owesCreditUpdate { connection.pending.insert(.creditUpdate) }
        s.connections[key] = connection
        if !connection.backlog.isEmpty {
            s.setInterest(key, connection.interest | DescriptorEvents.writable, device: self)
        }
    }

    /// SHUTDOWN: the guest will receive no more, send no more, or both (its socket closed).
    private func shutdown(_ key: VsockConnectionKey, flags: UInt32, _ s: inout State) {
        guard var connection = s.connections[key] else { return }
        if flags & VsockShutdown.receive != 0 { connection.guestDoneReceiving = true }
        if flags & VsockShutdown.send != 0 { connection.guestDoneSending = true }
        s.connections[key] = connection
        if connection.guestDoneReceiving, connection.guestDoneSending {
            // Both ways done: the guest waits for our reset. Bytes still owed to the host
            // program go out first.
            if connection.backlog.isEmpty { return s.reset(key, guestCID: guestCID) }
            s.connections[key]?.state = .closing
            s.setInterest(key, DescriptorEvents.writable, device: self)
            return
        }
        shutHostWritesIfDone(key, &s)
        if connection.guestDoneReceiving, !connection.guestDoneSending {
            s.setInterest(key, connection.backlog.isEmpty ? 0 : DescriptorEvents.writable, device: self)
        }
    }

    /// Once the guest sends no more and its last bytes are out, the host program reads end of file.
    func shutHostWritesIfDone(_ key: VsockConnectionKey, _ s: inout State) {
        guard let connection = s.connections[key], connection.guestDoneSending, !connection.hostWriteShut,
              connection.backlog.isEmpty else { return }
        Glibc.shutdown(connection.socket.raw, Int32(SHUT_WR))
        s.connections[key]?.hostWriteShut = true
    }
}
