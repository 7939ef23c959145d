import Foundation
@testable import Launcher
import Synchronization
import TestSupport
import Testing

/// What the host does to lguest rather than the guest: a failing event loop.
@Suite struct HostFailureTests {
    final class Finished: Sendable { let done = Atomic<Bool>(false) }

    /// An epoll_wait that fails for good (here its descriptor is gone: EBADF) ends the loop
    /// with the reason, instead of retrying it forever at full speed.
    @Test func anEventLoopWhoseWaitFailsStops() throws {
        let loop = try EventLoop()
        close(loop.epoll)
        let finished = Finished()
        let thread = Thread {
            _ = loop.run()
            finished.done.store(true, ordering: .releasing)
        }
        thread.start()
        let deadline = Date().addingTimeInterval(2)
        while !finished.done.load(ordering: .acquiring), Date() < deadline { usleep(1000) }
        let stopped = finished.done.load(ordering: .acquiring)
        #expect(stopped, "the event loop is still retrying a failed epoll_wait")
    }
}
