import Foundation
import Synchronization
import Testing
@testable import Devices
import Virtio
import VirtioTesting

/// Serving a batch of reads and writes on several threads (`BlockWorkers`): every request
/// once, side by side, answered in the guest's order, a FLUSH after the writes before it.
@Suite struct BlockWorkerTests {
    /// Starts `workers`' threads and waits until they are ready; `stop` ends and joins them.
    final class Running: @unchecked Sendable {
        let workers: BlockWorkers
        private let finished = DispatchSemaphore(value: 0)

        init(_ workers: BlockWorkers) {
            self.workers = workers
            for _ in 0 ..< workers.count {
                let thread = Thread { [workers, finished] in
                    workers.serveBatches()
                    finished.signal()
                }
                thread.start()
            }
            // `run` wakes only the workers already in their loop; wait for all of them.
            let deadline = Date().addingTimeInterval(10)
            while workers.readyCount < workers.count, Date() < deadline { usleep(1000) }
        }

        func stop() -> Bool {
            workers.stop()
            for _ in 0 ..< workers.count where finished.wait(timeout: .now() + 10) == .timedOut { return false }
            return true
        }
    }

    @Test("a batch runs every index exactly once, on more than one thread at a time")
    func everyIndexOnceAndSideBySide() throws {
        let running = Running(BlockWorkers(count: 3))
        #expect(running.workers.readyCount == 3)
        for round in 0 ..< 20 {
            let calls = Mutex([Int](repeating: 0, count: 64))
            let inside = Atomic(0)
            let most = Atomic(0)
            running.workers.run(64) { index in
                let now = inside.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue
                _ = most.max(now, ordering: .sequentiallyConsistent)
                // Long enough for the woken workers to take requests of their own.
                usleep(500)
                inside.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                calls.withLock { $0[index] += 1 }
            }
            #expect(calls.withLock { $0 } == [Int](repeating: 1, count: 64), "round \(round)")
            #expect(inside.load(ordering: .sequentiallyConsistent) == 0, "run returned with a call still running")
            #expect(most.load(ordering: .sequentiallyConsistent) >= 2, "round \(round): one thread did all the work")
        }
        #expect(running.stop())
    }

    @Test("a batch of one runs on the calling thread; with no workers, every batch does")
    func smallBatchesStayOnTheCaller() throws {
        let running = Running(BlockWorkers(count: 2))
        let caller = pthread_self()
        var others = 0
        running.workers.run(1) { _ in if pthread_equal(pthread_self(), caller) == 0 { others += 1 } }
        #expect(others == 0)
        #expect(running.stop())

        let none = BlockWorkers(count: 0)
        var seen: [Int] = []
        none.run(5) { index in
            #expect(pthread_equal(pthread_self(), caller) != 0)
            seen.append(index)
        }
        #expect(seen == [0, 1, 2, 3, 4])
        #expect(BlockWorkers(count: 1000).count == BlockWorkers.maxCount)
    }

    @Test("thirty-two writes, a flush and thirty-two reads in one kick: answered in order, the reads see the writes")
    func aMixedBatchKeepsItsOrder() throws {
        let rig = try BlockRig(sectors: 128)
        let running = Running(rig.device.workers)
        defer { _ = running.stop() }
        for round in 0 ..< 3 {
            rig.queue.resetDataArea()
            var heads: [UInt16] = []
            var reads: [MockChain] = []
            for request in 0 ..< 32 {
                let data = blockPattern(1024, seed: round * 100 + request)
                let chain = try rig.queue.addChain(
                    readable: [blockHeader(BlockRequestType.write, sector: UInt64(request * 2)), data], writable: [1])
                heads.append(chain.head)
            }
            heads.append(try rig.queue.addChain(readable: [blockHeader(BlockRequestType.flush)], writable: [1]).head)
            for request in 0 ..< 32 {
                let chain = try rig.queue.addChain(
                    readable: [blockHeader(BlockRequestType.read, sector: UInt64(request * 2))], writable: [1024, 1])
                heads.append(chain.head)
                reads.append(chain)
            }
            rig.driver.kick(0)
            let used = try rig.queue.drainUsed()
            #expect(used.map { UInt16($0.id) } == heads, "round \(round): answers out of the guest's order")
            for (request, chain) in reads.enumerated() {
                let bytes = try rig.queue.read(chain.writable[0])
                #expect(bytes == blockPattern(1024, seed: round * 100 + request), "round \(round), read \(request)")
                #expect(try rig.queue.read(chain.writable[1]) == [BlockStatus.ok])
            }
            let file = try rig.image.bytes()
            for request in 0 ..< 32 {
                #expect(Array(file[request * 1024 ..< (request + 1) * 1024]) == blockPattern(1024, seed: round * 100 + request))
            }
        }
        let statistics = rig.device.statistics
        #expect(statistics.writes == 96 && statistics.reads == 96 && statistics.flushes == 3 && statistics.syncs == 3)
    }

    @Test("a request whose header changed after the batch sorted it fails, and is not served as its new type")
    func aHeaderChangedAfterSortingFails() throws {
        let rig = try BlockRig(sectors: 64)
        var queue = try rig.queue.makeQueue(maxSize: BlockDevice.queueSize)
        let before = try rig.image.bytes()
        // Sorted as a write; by the time a worker reads the header it says DISCARD (which
        // would call fallocate, outside a worker's filter) or FLUSH.
        for type in [BlockRequestType.discard, BlockRequestType.flush, BlockRequestType.read] {
            let chain = try rig.queue.addChain(readable: [blockHeader(type), blockSegment(sector: 0, sectors: 8)], writable: [1])
            let popped = try #require(try queue.popAvailable())
            let used = rig.device.serving.withLock { serving in
                rig.device.serve(popped, state: &serving, expecting: BlockRequestType.write)
            }
            #expect(used == 1)
            #expect(try rig.queue.read(chain.writable[0]) == [BlockStatus.ioError], "type \(type)")
        }
        #expect(try rig.image.bytes() == before)
        let statistics = rig.device.statistics
        #expect(statistics.discards == 1 && statistics.flushes == 1 && statistics.syncs == 0)
        #expect(statistics[.malformedRequest] == 3)
    }
}
