import GuestMemory
import Virtio
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// One request as the device understood it from its chain.
struct BlockRequest {
    var type: UInt32
    var sector: UInt64
    /// Device-readable bytes after the 16-byte header (the data of a write or a discard).
    var readableData: Int
    /// Device-writable bytes before the status byte (the data of a read or GET_ID).
    var writableData: Int
}

/// How a request ended, and what it did on the way, for the status byte and the counters.
struct BlockCompletion {
    var status: UInt8
    var failure: BlockRequestErrorKind?
    /// Bytes written into the guest's data buffers (the used length is this plus the status).
    var dataWritten = 0
    var bytesFromImage = 0
    var bytesToImage = 0
    var syncs = 0
    var hostErrno: Int32?

    static var ok: BlockCompletion { BlockCompletion(status: BlockStatus.ok) }

    static func fail(_ kind: BlockRequestErrorKind, errno: Int32? = nil) -> BlockCompletion {
        BlockCompletion(status: kind == .unsupported ? BlockStatus.unsupported : BlockStatus.ioError,
                        failure: kind, hostErrno: errno)
    }

    mutating func fail(_ kind: BlockRequestErrorKind, errno: Int32? = nil) {
        status = BlockStatus.ioError
        failure = kind
        hostErrno = errno
    }
}

extension BlockDevice {
    /// Size of the request header: `le32 type, le32 reserved, le64 sector`.
    static let headerSize = 16
    /// Size of one discard/write-zeroes segment: `le64 sector, le32 num_sectors, le32 flags`.
    static let segmentSize = 16
    /// The write-zeroes flag that allows deallocating the range.
    static let unmapFlag: UInt32 = 1
    /// Buffers per `preadv`/`pwritev` (well under IOV_MAX, 1024).
    static let iovecBatch = 64

    /// Serves one request and returns its used length: the bytes written into the chain's
    /// device-writable buffers, status byte included, or 0 for a chain with no room to answer.
    ///
    /// `expecting` is the type a batch sorted the request by (a read or a write, which a disk
    /// worker may serve). The header is read again here, and the guest may have changed it
    /// since: a request whose type is no longer that one fails, so a worker never serves a
    /// flush, a discard or anything else its filter does not allow.
    func serve(_ chain: DescriptorChain, state: inout Serving, expecting: UInt32? = nil) -> UInt32 {
        guard chain.readableLength >= UInt32(Self.headerSize), chain.writableLength >= 1 else {
            record(nil, .fail(.malformedRequest))
            return 0
        }
        var reader = chain.reader()
        let request: BlockRequest
        do throws(VirtqueueError) {
            // `le32 type, le32 reserved, le64 sector`; `reserved` (once `ioprio`) is a hint we
            // do not use. Copied out once, whatever way the driver split it.
            var header = (UInt64(0), UInt64(0))
            // Safe: the tuple is 16 bytes, exactly what the read fills.
            try withUnsafeMutableBytes(of: &header) { (bytes) throws(VirtqueueError) in try reader.read(into: bytes) }
            request = BlockRequest(type: UInt32(truncatingIfNeeded: UInt64(littleEndian: header.0)),
                                   sector: UInt64(littleEndian: header.1),
                                   readableData: Int(chain.readableLength) - Self.headerSize,
                                   writableData: Int(chain.writableLength) - 1)
        } catch {
            // The chain's buffers were checked when it was walked; this does not happen.
            record(nil, .fail(.malformedRequest))
            return 0
        }

        let completion = expecting.map { $0 != request.type } == true
            ? .fail(.malformedRequest)
            : execute(request, chain: chain, reader: reader, state: &state)

        // The status byte is the last device-writable byte, wherever the data ended: the last
        // byte of the last non-empty writable buffer (there is one: writableLength ≥ 1).
        guard let last = chain.writable.last(where: { $0.length > 0 }),
              (try? chain.memory.write(completion.status, at: last.address + UInt64(last.length - 1))) != nil
        else {
            record(request.type, .fail(.malformedRequest))
            return 0
        }
        record(request.type, completion)
        return UInt32(completion.dataWritten + 1)
    }

    private func execute(_ request: BlockRequest, chain: DescriptorChain, reader: ChainReader,
                         state: inout Serving) -> BlockCompletion {
        switch request.type {
        case BlockRequestType.read: return read(request, chain: chain)
        case BlockRequestType.write: return write(request, chain: chain, state: &state)
        case BlockRequestType.flush: return flush(state: &state)
        case BlockRequestType.getID: return getID(request, chain: chain)
        case BlockRequestType.discard, BlockRequestType.writeZeroes:
            return discardOrZero(request, reader: reader, state: &state)
        default: return .fail(.unsupported)
        }
    }

    /// The byte offset of `sector`, if `byteCount` bytes from there stay inside the disk.
    /// Checked without overflow however large the guest's numbers are.
    func byteOffset(sector: UInt64, byteCount: UInt64) -> UInt64? {
        let sectors = byteCount / UInt64(Self.sectorSize)
        let (end, overflow) = sector.addingReportingOverflow(sectors)
        guard !overflow, end <= capacity else { return nil }
        // Cannot overflow: sector ≤ capacity = file size / 512.
        return sector * UInt64(Self.sectorSize)
    }

    // MARK: - IN / OUT

    private func read(_ request: BlockRequest, chain: DescriptorChain) -> BlockCompletion {
        guard request.readableData == 0 else { return .fail(.wrongDirection) }
        guard request.writableData % Self.sectorSize == 0 else { return .fail(.badLength) }
        guard let offset = byteOffset(sector: request.sector, byteCount: UInt64(request.writableData)) else {
            return .fail(.outOfRange)
        }
        // The data is the writable part up to the status byte.
        let (moved, error) = transfer(.fromImage, buffers: chain.writable, start: 0, count: request.writableData,
                                      memory: chain.memory, offset: offset)
        var completion = BlockCompletion.ok
        completion.dataWritten = moved
        completion.bytesFromImage = moved
        if let error { completion.fail(.hostIO, errno: error.code) }
        return completion
    }

    private func write(_ request: BlockRequest, chain: DescriptorChain, state: inout Serving) -> BlockCompletion {
        // Read-only first: whatever else is wrong with it, the file is not touched.
        guard !isReadOnly else { return .fail(.readOnly) }
        guard request.writableData == 0 else { return .fail(.wrongDirection) }
        guard request.readableData % Self.sectorSize == 0 else { return .fail(.badLength) }
        guard let offset = byteOffset(sector: request.sector, byteCount: UInt64(request.readableData)) else {
            return .fail(.outOfRange)
        }
        // The data is the readable part after the header.
        let (moved, error) = transfer(.toImage, buffers: chain.readable, start: Self.headerSize,
                                      count: request.readableData, memory: chain.memory, offset: offset)
        var completion = BlockCompletion.ok
        completion.bytesToImage = moved
        if let error {
            completion.fail(.hostIO, errno: error.code)
            return completion
        }
        // Without FLUSH the driver takes a completed write to be stable: make it so.
        if state.features & BlockFeature.flush == 0 {
            completion.syncs = 1
            if let error = sync(state: &state) { completion.fail(.hostIO, errno: error.code) }
        }
        return completion
    }

    // MARK: - FLUSH

    private func flush(state: inout Serving) -> BlockCompletion {
        // A read-only disk has never been written through this descriptor: nothing to flush.
        guard !isReadOnly else { return .ok }
        // Journey 9: no lost writes. The guest's filesystem sends FLUSH just before it writes
        // the commit record that vouches for everything it wrote earlier, so "OK" here is a
        // promise that those earlier writes survive a power cut. fdatasync makes it true: the
        // host pushes our dirty pages (and the metadata needed to find them) to stable storage,
        // and only when it returns do we write OK into the status byte. Answering first would
        // be faster, and a lie that nobody notices until the machine loses power.
        var completion = BlockCompletion.ok
        completion.syncs = 1
        if let error = sync(state: &state) { completion.fail(.hostIO, errno: error.code) }
        return completion
    }

    /// `fdatasync`, sticky on failure (see `syncFailed`).
    private func sync(state: inout Serving) -> SystemError? {
        guard !syncFailed.load(ordering: .relaxed) else { return SystemError(code: EIO) }
        if case let .failure(error) = file.fdatasync() {
            syncFailed.store(true, ordering: .relaxed)
            return error
        }
        return nil
    }

    // MARK: - GET_ID

    private func getID(_ request: BlockRequest, chain: DescriptorChain) -> BlockCompletion {
        // Linux offers exactly 20 bytes; a smaller buffer gets what fits.
        let count = min(Self.idBytes, request.writableData)
        var writer = chain.writer()
        do throws(VirtqueueError) { try writer.write(id.prefix(count)) } catch {
            return .fail(.malformedRequest)
        }
        var completion = BlockCompletion.ok
        completion.dataWritten = count
        return completion
    }

    // MARK: - DISCARD / WRITE_ZEROES

    private struct Range {
        var offset: UInt64
        var length: UInt64
        var unmap: Bool
    }

    private func discardOrZero(_ request: BlockRequest, reader: ChainReader,
                               state: inout Serving) -> BlockCompletion {
        let isDiscard = request.type == BlockRequestType.discard
        guard !isReadOnly else { return .fail(.readOnly) }
        guard state.features & (isDiscard ? BlockFeature.discard : BlockFeature.writeZeroes) != 0 else {
            return .fail(.unsupported)
        }
        guard request.writableData == 0 else { return .fail(.wrongDirection) }
        let count = request.readableData / Self.segmentSize
        let maxSegments = isDiscard ? Self.maxDiscardSegments : Self.maxWriteZeroesSegments
        let maxSectors = isDiscard ? Self.maxDiscardSectors : Self.maxWriteZeroesSectors
        guard request.readableData > 0, request.readableData % Self.segmentSize == 0,
              count <= Int(maxSegments) else { return .fail(.badSegments) }

        // Check every segment before touching the file, so a bad one changes nothing.
        var reader = reader
        var ranges: [Range] = []
        for _ in 0 ..< count {
            let sector: UInt64, sectors: UInt32, flags: UInt32
            do throws(VirtqueueError) {
                sector = try reader.readLE(UInt64.self)
                sectors = try reader.readLE(UInt32.self)
                flags = try reader.readLE(UInt32.self)
            } catch { return .fail(.badSegments) }
            // Unknown flags, or unmap on a discard, are UNSUPP (the spec's words).
            let allowed = isDiscard ? 0 : Self.unmapFlag
            guard flags & ~allowed == 0 else { return .fail(.unsupported) }
            guard sectors <= maxSectors else { return .fail(.badSegments) }
            let length = UInt64(sectors) * UInt64(Self.sectorSize)
            guard let offset = byteOffset(sector: sector, byteCount: length) else { return .fail(.outOfRange) }
            if length > 0 { ranges.append(Range(offset: offset, length: length, unmap: flags & Self.unmapFlag != 0)) }
        }

        for range in ranges {
            let error = isDiscard ? discard(range, state: &state) : zero(range, state: &state)
            if let error { return .fail(.hostIO, errno: error.code) }
        }
        // Zeroing is a write like any other: without FLUSH it must be stable when it completes.
        var completion = BlockCompletion.ok
        if !isDiscard, state.features & BlockFeature.flush == 0 {
            completion.syncs = 1
            if let error = sync(state: &state) { completion.fail(.hostIO, errno: error.code) }
        }
        return completion
    }

    private static func isUnsupported(_ error: SystemError) -> Bool {
        error.code == EOPNOTSUPP || error.code == ENOSYS
    }

    /// Deallocates the range: punches a hole in a file, `BLKDISCARD`s a block device. A
    /// discard is a hint: where the filesystem or the device cannot do it the data simply
    /// stays, and the request still succeeds.
    private func discard(_ range: Range, state: inout Serving) -> SystemError? {
        guard !state.punchHoleUnsupported else { return nil }
        let done = file.isBlockDevice
            ? file.discardBlocks(offset: range.offset, length: range.length)
            : file.fallocate(mode: FallocateMode.punchHole | FallocateMode.keepSize,
                             offset: range.offset, length: range.length)
        switch done {
        case .success: return nil
        case let .failure(error) where Self.isUnsupported(error):
            state.punchHoleUnsupported = true
            return nil
        case let .failure(error): return error
        }
    }

    /// Makes the range read back as zeros — not a hint: after OK, reads MUST return zeros.
    /// Cheapest first: punch a hole (only if the guest allowed unmapping), else ZERO_RANGE,
    /// else (tmpfs, some network filesystems) write real zeros.
    private func zero(_ range: Range, state: inout Serving) -> SystemError? {
        if range.unmap, !state.punchHoleUnsupported {
            switch file.fallocate(mode: FallocateMode.punchHole | FallocateMode.keepSize,
                                  offset: range.offset, length: range.length) {
            case .success: return nil
            case let .failure(error) where Self.isUnsupported(error): state.punchHoleUnsupported = true
            case let .failure(error): return error
            }
        }
        if !state.zeroRangeUnsupported {
            switch file.fallocate(mode: FallocateMode.zeroRange | FallocateMode.keepSize,
                                  offset: range.offset, length: range.length) {
            case .success: return nil
            case let .failure(error) where Self.isUnsupported(error): state.zeroRangeUnsupported = true
            case let .failure(error): return error
            }
        }
        return writeZeros(range)
    }

    /// Writes `range.length` zero bytes, 1 MiB per call: sixteen iovecs over one 64 KiB buffer.
    private func writeZeros(_ range: Range) -> SystemError? {
        let chunk = 64 * 1024
        let zeros = [UInt8](repeating: 0, count: chunk)
        var done: UInt64 = 0
        while done < range.length {
            let want = min(range.length - done, UInt64(chunk * 16))
            // Safe: every iovec points into `zeros`, which outlives the call; pwritev only reads.
            let result = zeros.withUnsafeBytes { buffer -> Result<Int, SystemError> in
                var iovecs: [iovec] = []
                var left = Int(want)
                while left > 0 {
                    let take = min(left, chunk)
                    iovecs.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress), iov_len: take))
                    left -= take
                }
                // Safe: the iovec array lives for the call; each entry covers at most `chunk` bytes.
                return iovecs.withUnsafeBufferPointer { file.pwritev($0, at: range.offset + done) }
            }
            switch result {
            case let .failure(error): return error
            case .success(0): return SystemError(code: EIO)
            case let .success(count): done += UInt64(count)
            }
        }
        return nil
    }

    // MARK: - Moving bytes between the image and guest memory

    enum Direction { case fromImage, toImage }

    /// Moves `count` bytes of the guest buffers `buffers`, starting `start` bytes into them,
    /// from or to the image at byte `offset`, straight between the file and guest memory: up
    /// to `iovecBatch` buffers per system call, short transfers resumed where they stopped.
    /// Returns the bytes moved and, if it stopped early, why. The caller has checked that the
    /// buffers hold `start + count` bytes.
    func transfer(_ direction: Direction, buffers: ArraySlice<Descriptor>, start: Int, count: Int,
                  memory: GuestMemory, offset: UInt64) -> (moved: Int, error: SystemError?) {
        // Safe: the pieces and iovecs live in these temporary allocations only while the
        // system calls below run; nothing keeps them afterwards.
        withUnsafeTemporaryAllocation(of: GuestBuffer.self, capacity: Self.iovecBatch) { pieces in
            withUnsafeTemporaryAllocation(of: iovec.self, capacity: Self.iovecBatch) { storage in
                var moved = 0
                while moved < count {
                    // The next pieces, from byte `start + moved` on; empty buffers carry nothing.
                    var filled = 0
                    var skip = start + moved
                    var want = count - moved
                    for buffer in buffers where want > 0 && filled < Self.iovecBatch {
                        let length = Int(buffer.length)
                        if skip >= length {
                            skip -= length
                            continue
                        }
                        let take = min(length - skip, want)
                        // In range: skip + take ≤ length, and the walk checked the whole buffer.
                        pieces.initializeElement(at: filled, to: GuestBuffer(
                            address: buffer.address + UInt64(skip), length: UInt32(take)))
                        filled += 1
                        want -= take
                        skip = 0
                    }
                    guard filled > 0 else { return (moved, SystemError(code: EFAULT)) }
                    let position = offset + UInt64(moved)
                    let batch = UnsafeBufferPointer(rebasing: pieces[..<filled])
                    let outcome = Self.withIovecs(memory: memory, pieces: batch, index: 0, storage: storage) { iovecs in
                        switch direction {
                        case .fromImage:
                            return file.preadv(iovecs, at: position)
                        case .toImage:
                            // Journey 8: the first byte on the host's disk. The guest's filesystem decided
                            // to write a block; its virtio driver wrote a 16-byte header, pointed the
                            // descriptors at its own page-cache pages and kicked; we checked the sector
                            // against the capacity. Now pwritev hands those very guest pages to the host
                            // kernel — no bounce buffer, no copy of ours — and the bytes land in the host's
                            // page cache at sector × 512 of the image. "On disk" is a generous phrase for
                            // it: until the guest sends a flush, the bytes are exactly as durable as a
                            // writeback cache promises, which is to say not very.
                            return file.pwritev(iovecs, at: position)
                        }
                    }
                    guard let outcome else { return (moved, SystemError(code: EFAULT)) }
                    switch outcome {
                    case let .failure(error): return (moved, error)
                    // Zero bytes at a position inside the capacity: the image shrank under us.
                    case .success(0): return (moved, SystemError(code: EIO))
                    case let .success(value): moved += value
                    }
                }
                return (moved, nil)
            }
        }
    }

    /// Calls `body` with one iovec per piece of `pieces`, each pointing straight into guest
    /// memory, written into `storage` (room for `iovecBatch`).
    ///
    /// `GuestMemory.withSlice` lends a host view of guest memory only for the duration of its
    /// closure, so the views are gathered by nesting: one level per piece (at most
    /// `iovecBatch`), with `body` running at the innermost level while every view is still
    /// lent. `nil` if some piece is not guest memory (the chain walk already ruled that out).
    static func withIovecs<R>(memory: GuestMemory, pieces: UnsafeBufferPointer<GuestBuffer>, index: Int,
                              storage: UnsafeMutableBufferPointer<iovec>,
                              _ body: (UnsafeBufferPointer<iovec>) -> R) -> R? {
        guard index < pieces.count else {
            // Safe: every iovec in `storage[..<index]` points into a view an enclosing call
            // still lends.
            return body(UnsafeBufferPointer(rebasing: storage[..<index]))
        }
        let piece = pieces[index]
        do {
            return try memory.withSlice(at: piece.address, length: UInt64(piece.length)) { slice -> R? in
                // Safe: the view stays lent until this closure returns, and `body` runs inside it;
                // `index` < iovecBatch because at most that many pieces are passed.
                storage[index] = iovec(iov_base: slice.baseAddress, iov_len: slice.count)
                return withIovecs(memory: memory, pieces: pieces, index: index + 1, storage: storage, body)
            }
        } catch {
            return nil
        }
    }

    // MARK: - Counting

    func record(_ type: UInt32?, _ completion: BlockCompletion) {
        counters.withLock { counters in
            counters.requests += 1
            switch type {
            case BlockRequestType.read?: counters.reads += 1
            case BlockRequestType.write?: counters.writes += 1
            case BlockRequestType.flush?: counters.flushes += 1
            case BlockRequestType.getID?: counters.getIDs += 1
            case BlockRequestType.discard?: counters.discards += 1
            case BlockRequestType.writeZeroes?: counters.writeZeroes += 1
            default: break
            }
            counters.bytesRead += UInt64(completion.bytesFromImage)
            counters.bytesWritten += UInt64(completion.bytesToImage)
            counters.syncs += UInt64(completion.syncs)
            if let kind = completion.failure { counters.errors[kind, default: 0] += 1 }
            if let errno = completion.hostErrno { counters.lastHostErrno = errno }
        }
    }
}
