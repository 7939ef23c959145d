import KVM
import Synchronization

/// Notices a guest that halted for good.
///
/// `systemctl halt` (or `halt -f`) goes down like a power-off: the kernel announces it through
/// `\_TTS(5)`, stops its devices, and then, instead of writing the sleep or reset register,
/// parks every CPU in HLT with interrupts off. Nothing reaches lguest after that, and nothing
/// ever will: the machine sits there, as a PC that says "System halted" does. lguest waits too
/// (the user may want to read the console), but says so, once.
///
/// Only after an announcement, once a second while nothing has stopped the machine, the
/// watcher asks the vCPUs: each vCPU thread is kicked out of KVM_RUN and answers whether its
/// vCPU is halted (KVM_GET_MP_STATE) with interrupts off (the run page's `if_flag`), or waits
/// for a startup IPI that no running CPU is left to send. Two rounds in a row with every vCPU
/// so mean the guest halted. A running guest never pays for it.
final class HaltWatch: Sendable {
    private struct State {
        /// The round being asked, 0 before the first.
        var round = 0
        /// This round's answers, by vCPU.
        var answers: [Int: Bool] = [:]
        /// Rounds in a row in which every vCPU answered halted.
        var haltedRounds = 0
        var reported = false
    }

    let vcpuCount: Int
    private let state = Mutex(State())
    /// A lock-free "a round is open", so a vCPU's kicked exits cost one load when none is.
    private let asking = Atomic<Bool>(false)

    init(vcpuCount: Int) { self.vcpuCount = vcpuCount }

    /// On a vCPU thread, after KVM_RUN returned because it was kicked: answers the open
    /// round, if there is one and this vCPU has not answered it.
    func answerIfAsked(_ vcpu: VCPU) {
        guard asking.load(ordering: .acquiring) else { return }
        let halted: Bool
        switch try? vcpu.activityState() {
        case .halted?: halted = !vcpu.interruptsEnabled
        // A CPU waiting for startup stays so unless a running one starts it.
        case .waitingForStartup?: halted = true
        default: halted = false
        }
        state.withLock { s in
            guard s.answers[vcpu.id] == nil else { return }
            s.answers[vcpu.id] = halted
        }
    }

    /// On the watcher, once a second after the guest announced its shutdown: closes the last
    /// round and opens the next one (`kick` sends every vCPU out of KVM_RUN). Returns true
    /// once, when the guest has halted.
    func look(kick: () -> Void) -> Bool {
        let halted = state.withLock { s -> Bool in
            guard !s.reported else { return false }
            if s.round > 0 {
                let all = s.answers.count == vcpuCount && s.answers.values.allSatisfy { $0 }
                s.haltedRounds = all ? s.haltedRounds + 1 : 0
            }
            if s.haltedRounds >= 2 {
                s.reported = true
                return true
            }
            s.round += 1
            s.answers = [:]
            return false
        }
        asking.store(!halted, ordering: .releasing)
        if !halted { kick() }
        return halted
    }
}
