import Foundation
import HostSystem
import KVM
import Testing
import TestSupport


@Suite struct EventFDTests {
    /// A blocking read that a signal interrupts is retried: the count that arrives afterwards
    /// is read, not lost as a spurious 0.
    @Test func drainRetriesAfterASignal() throws {
        let restore = installInterruptingSignal(SIGUSR2)
        defer { restore() }
        let event = try EventFD(nonBlocking: false)
        let me = pthread_self()
        let poker = Thread {
            usleep(100_000)
            pthread_kill(me, SIGUSR2)
            usleep(100_000)
            event.signal()
        }
        poker.start()
        #expect(event.drain() == 1)
    }
}
