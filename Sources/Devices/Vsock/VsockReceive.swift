import GuestMemory
import HostSystem
import Virtio
#if canImport(Glibc)
import Glibc
#endif

// The rx queue: packets for the guest, one per chain the guest posted. Resets for packets that
// had no connection go first; then the connections take turns, each giving one packet — a
// control packet it owes (REQUEST, RESPONSE, SHUTDOWN, CREDIT_UPDATE) or up to a buffer of bytes
// read from its host socket straight into guest memory — before going to the back of the line.
// So a connection with a fast host program cannot starve the others, and one whose guest side
// does not read (no credit) simply has nothing to send.

extension VsockDevice {
    func fillReceiveQueue(_ s: inout State) {
        guard s.active, s.queues.indices.contains(Self.receiveQueue), s.queues[Self.receiveQueue].isEnabled else { return }
        var delivered = false
        while !s.resets.isEmpty || !s.ready.isEmpty {
            guard let chain = nextReceiveChain(&s) else { break }
            let length: UInt32?
            if !s.resets.isEmpty {
                length = write(s.resets.removeFirst(), payload: 0, into: chain, &s)
            } else if let key = nextReadyConnection(&s) {
                length = send(key, into: chain, &s)
            } else {
                length = nil
            }
            guard let length else {
                s.parkedChain = chain
                continue
            }
            do throws(VirtqueueError) { try s.queues[Self.receiveQueue].addUsed(head: chain.head, length: length) }
            catch { s.statistics.rxMalformedBuffers += 1 }
            delivered = true
        }
        if delivered { s.queues[Self.receiveQueue].notifyGuestIfNeeded() }
    }

    /// The chain parked earlier, or the next usable one from the ring; nil when the guest has
    /// posted none (it kicks the rx queue when it does).
    private func nextReceiveChain(_ s: inout State) -> DescriptorChain? {
        if let chain = s.parkedChain {
            s.parkedChain = nil
            return chain
        }
        while true {
            do throws(VirtqueueError) {
                guard let chain = try s.queues[Self.receiveQueue].popAvailable() else { return nil }
                guard chain.readableCount == 0, chain.writableLength >= VsockHeader.size else {
                    s.statistics.rxMalformedBuffers += 1
                    try s.queues[Self.receiveQueue].addUsed(head: chain.head, length: 0)
                    continue
                }
                return chain
            } catch {
                s.statistics.rxMalformedBuffers += 1
                if error.isStructural { return nil }
            }
        }
    }

    /// The next connection in line that still has something for the guest.
    private func nextReadyConnection(_ s: inout State) -> VsockConnectionKey? {
        while !s.ready.isEmpty {
            let key = s.ready.removeFirst()
            s.readySet.remove(key)
            if s.connections[key]?.hasWorkForGuest == true { return key }
        }
        return nil
    }

    /// One packet from connection `key` into `chain`; returns the used length, or nil if it had
    /// nothing after all (its socket was empty), leaving the chain unused.
    private func send(_ key: VsockConnectionKey, into chain: DescriptorChain, _ s: inout State) -> UInt32? {
        guard var connection = s.connections[key] else { return nil }
        defer { s.markReady(key) }
        let op: UInt16
        var flags: UInt32 = 0
        if connection.pending.contains(.request) {
            connection.pending.remove(.request)
            op = VsockOp.request
        } else if connection.pending.contains(.response) {
            connection.pending.remove(.response)
            op = VsockOp.response
        } else if connection.canSendData {
            return sendData(key, into: chain, &s)
        } else if connection.pending.contains(.shutdownSend) {
            connection.pending.remove(.shutdownSend)
            op = VsockOp.shutdown
            flags = VsockShutdown.send
        } else if connection.pending.contains(.creditUpdate) {
            op = VsockOp.creditUpdate
        } else {
            return nil
        }
        connection.pending.remove(.creditUpdate) // every packet carries our credit
        let header = connection.header(op: op, guestCID: guestCID, flags: flags)
        s.connections[key] = connection
        return write(header, payload: 0, into: chain, &s)
    }

    /// Reads up to the guest's credit (and the chain's room) from the host socket into the
    /// chain, after its header.
    private func sendData(_ key: VsockConnectionKey, into chain: DescriptorChain, _ s: inout State) -> UInt32? {
        guard var connection = s.connections[key] else { return nil }
        var writer = chain.writer()
        do throws(VirtqueueError) { try writer.advance(by: VsockHeader.size) } catch { return nil }
        let room = min(writer.remaining, Int(connection.peerCredit), Int(Self.maximumPayload))
        guard room > 0 else {
            // A header-only chain cannot carry data; hand it back empty rather than spin on it.
            s.statistics.rxMalformedBuffers += 1
            return 0
        }
        let segments = writer.segments(maxBytes: room)
        let result = GuestIOVectors.with(segments, in: chain.memory) { vectors in
            retryingInterrupts { readv(connection.socket.raw, vectors.baseAddress, Int32(vectors.count)) }
        }
        guard let (count, error) = result else { return nil }
        if count > 0 {
            connection.sent &+= UInt32(count)
            connection.pending.remove(.creditUpdate)
            let header = connection.header(op: VsockOp.readWrite, guestCID: guestCID, length: UInt32(count))
            s.connections[key] = connection
            s.statistics.rxBytes += UInt64(count)
            return write(header, payload: count, into: chain, &s)
        }
        if count == 0 {
            // End of file: the host program will send no more. The guest hears SHUTDOWN(send).
            connection.hostDoneSending = true
            connection.hostReadable = false
            connection.pending.insert(.shutdownSend)
            s.connections[key] = connection
            s.setInterest(key, connection.interest & ~DescriptorEvents.readable, device: self)
            return nil
        }
        if error == EAGAIN {
            connection.hostReadable = false
            s.connections[key] = connection
            s.setInterest(key, connection.interest | DescriptorEvents.readable, device: self)
            return nil
        }
        s.statistics.hostErrors += 1
        s.reset(key, guestCID: guestCID)
        return nil
    }

    /// Writes `header` at the front of `chain` (whose payload, if any, is already after it).
    private func write(_ header: VsockHeader, payload: Int, into chain: DescriptorChain, _ s: inout State) -> UInt32? {
        var writer = chain.writer()
        do throws(VirtqueueError) { try writer.write(header.bytes) } catch { return nil }
        s.statistics.rxPackets += 1
        return UInt32(VsockHeader.size + payload)
    }
}
