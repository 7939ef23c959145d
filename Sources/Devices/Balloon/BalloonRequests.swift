import GuestMemory
import Virtio

// What each balloon queue's requests mean. Every request is the guest's word, and checked: a
// frame number outside RAM is skipped, a buffer in the wrong direction or of a length that is
// not whole entries is ignored, and each is counted; nothing the guest sends can make the host
// discard memory that is not guest RAM, or stop the device.

extension BalloonDevice {
    /// Frame numbers read per step: Linux sends at most 256 per request, and a longer buffer
    /// is read in pieces this size, so no request makes us allocate more than 1 KiB.
    static let framesPerStep = 256
    /// The largest statistics buffer read (Linux sends 16 entries of 10 bytes).
    static let maximumStatisticsBytes = 4096
    /// One statistics entry: le16 tag, le64 value, packed.
    static let statisticsEntrySize = 10

    /// Inflate: the guest gives up the pages it names. Runs of consecutive frames are given back
    /// to the host with one `discard` each.
    func inflate(_ chain: DescriptorChain, memory: GuestMemory, _ s: inout State) -> Bool {
        s.counters.inflateRequests += 1
        var run: (first: UInt64, count: UInt64)?
        func flush(_ s: inout State) {
            guard let r = run else { return }
            run = nil
            do throws(GuestMemoryError) {
                try memory.discard(at: GuestAddress(r.first << 12), length: r.count << 12)
            } catch { s.counters.discardFailures += 1 }
        }
        forEachFrame(in: chain, memory: memory, &s) { s, frame in
            s.counters.pagesInflated += 1
            if let r = run, r.first + r.count == frame,
               memory.contains(GuestAddress(r.first << 12), length: (r.count + 1) << 12) {
                run = (r.first, r.count + 1)
            } else {
                flush(&s)
                run = (frame, 1)
            }
        }
        flush(&s)
        return true
    }

    /// Deflate: the guest takes the pages back. Our memory needs nothing (they fault back in,
    /// zeroed), but the frames are checked and counted all the same.
    func deflate(_ chain: DescriptorChain, memory: GuestMemory, _ s: inout State) -> Bool {
        s.counters.deflateRequests += 1
        forEachFrame(in: chain, memory: memory, &s) { s, _ in s.counters.pagesDeflated += 1 }
        return true
    }

    /// Calls `body` with each 32-bit frame number of `chain` that names a page of guest RAM.
    /// A chain with device-writable buffers (the driver only sends) is ignored whole.
    private func forEachFrame(in chain: DescriptorChain, memory: GuestMemory, _ s: inout State,
                              _ body: (inout State, UInt64) -> Void) {
        guard chain.writableLength == 0 else { s.counters.malformed += 1; return }
        var reader = chain.reader()
        if reader.remaining % 4 != 0 { s.counters.malformed += 1 }
        while reader.remaining >= 4 {
            let count = min(reader.remaining / 4, Self.framesPerStep)
            let bytes: [UInt8]
            do throws(VirtqueueError) { bytes = try reader.read(count: count * 4) }
            catch { s.counters.malformed += 1; return }
            for i in 0 ..< count {
                let frame = UInt64(bytes[4 * i]) | UInt64(bytes[4 * i + 1]) << 8
                    | UInt64(bytes[4 * i + 2]) << 16 | UInt64(bytes[4 * i + 3]) << 24
                // A 32-bit frame number times 4 KiB cannot overflow 64 bits; RAM decides the rest.
                guard memory.contains(GuestAddress(frame << 12), length: Self.pageSize) else {
                    s.counters.invalidPages += 1
                    continue
                }
                body(&s, frame)
            }
        }
    }

    /// Free page reporting: each buffer of the chain is a range of free guest memory, which the
    /// host takes back. Linux posts them device-writable (and the device writes nothing); the
    /// chain walk has already checked that each lies in guest RAM without overflowing. Ranges
    /// that are not whole 4 KiB pages are refused.
    func report(_ chain: DescriptorChain, memory: GuestMemory, _ s: inout State) -> Bool {
        s.counters.freePageReports += 1
        guard chain.readableCount == 0 else {
            s.counters.malformed += 1
            s.counters.freePageReportFailures += 1
            return true
        }
        for buffer in chain.writable {
            do throws(GuestMemoryError) {
                try memory.discard(at: buffer.address, length: UInt64(buffer.length))
                s.counters.freePageReportedBytes += UInt64(buffer.length)
            } catch {
                s.counters.freePageReportFailures += 1
                if case .discardFailed(_, _, 0) = error { s.counters.malformed += 1 } else { s.counters.discardFailures += 1 }
            }
        }
        return true
    }

    /// The guest's statistics arrive: read them, and keep the buffer until the next poll. A
    /// buffer already held (a driver that posted two) goes back first, so none is lost.
    func receiveStatistics(_ chain: DescriptorChain, queue index: Int, _ s: inout State) -> Bool {
        if let old = s.heldStatistics {
            s.heldStatistics = nil
            do throws(VirtqueueError) { try s.queues[index].addUsed(head: old, length: 0) } catch { s.counters.malformed += 1 }
        }
        s.counters.statisticsUpdates += 1
        let length = Int(chain.readableLength)
        if chain.writableLength != 0 || length % Self.statisticsEntrySize != 0 || length > Self.maximumStatisticsBytes {
            s.counters.statisticsFailures += 1
            s.counters.malformed += 1
        } else {
            var reader = chain.reader()
            do throws(VirtqueueError) {
                let bytes = try reader.read(count: length)
                var fresh: [BalloonStat: UInt64] = [:]
                for entry in stride(from: 0, to: length, by: Self.statisticsEntrySize) {
                    let tag = UInt16(bytes[entry]) | UInt16(bytes[entry + 1]) << 8
                    var value: UInt64 = 0
                    for i in (0 ..< 8).reversed() { value = value << 8 | UInt64(bytes[entry + 2 + i]) }
                    if let stat = BalloonStat(rawValue: tag) { fresh[stat] = value }
                }
                s.guestStatistics = fresh
            } catch {
                s.counters.statisticsFailures += 1
                s.counters.malformed += 1
            }
        }
        // Kept for the next poll; without statistics (a driver that negotiated the queue when we
        // turned the interval to 0 cannot happen, but be safe) it would be held for ever, so
        // it is held only with a timer to return it.
        guard s.statisticsInterval > 0, statisticsTimer.isUsable else { return true }
        s.heldStatistics = chain.head
        if !s.timerArmed {
            statisticsTimer.arm(afterNanoseconds: UInt64(s.statisticsInterval) * 1_000_000_000)
            s.timerArmed = true
        }
        return false
    }
}
