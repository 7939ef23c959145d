import Boot
import CKVM
import GuestMemory
import KVM
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
import HostSystem
#endif

/// Tiny hand-assembled guests on this machine's own /dev/kvm: port I/O, MMIO, HLT and a triple
/// fault, entered through the same loader and entry path as a real kernel.
@Suite(.enabled(if: access("/dev/kvm", R_OK | W_OK) == 0, "no usable /dev/kvm on this host: KVM smoke tests skipped"))
struct KVMSmokeTests {
    /// A VM with 4 MiB of RAM and the tiny guest `code` loaded and ready at its entry point.
    /// `irqchip: false` leaves out the in-kernel APIC, so HLT exits to us.
    func boot(_ code: [UInt8], irqchip: Bool = true) throws -> (VirtualMachine, VCPU, GuestMemory) {
        let system = try KVMSystem()
        let vm = try system.createVM()
        if irqchip { try vm.createPlatform() }
        let memory = try GuestMemory(size: 4 << 20)
        try vm.map(memory)
        let entry = try loadKernel(image: TinyGuest.elf(code), initrd: nil, commandLine: "", rsdp: nil, into: memory)
        let vcpu = try vm.createVCPU(id: 0)
        try vcpu.setCPUID(try system.supportedCPUID().forVCPU(id: 0, count: 1))
        try vcpu.resetFPU()
        if irqchip { try vcpu.configureLocalInterruptPins() }
        try vcpu.enter(entry)
        return (vm, vcpu, memory)
    }

    /// Runs until an exit other than `interrupted`, at most `limit` exits.
    func nextExit(_ vcpu: VCPU) throws -> VCPUExit {
        for _ in 0..<1000 {
            let exit = try vcpu.run()
            if case .interrupted = exit { continue }
            return exit
        }
        Issue.record("the guest never exited")
        throw SystemCallError("KVM_RUN", errno: ETIMEDOUT)
    }

    @Test func apiVersionAndCapabilities() throws {
        let system = try KVMSystem()
        #expect(system.checkExtension(KVM_CAP_IRQFD) > 0)
        #expect(try system.vcpuMapSize() >= 4096)
        let cpuid = try system.supportedCPUID()
        #expect(cpuid.entries.count > 4)
        // The hypervisor leaves are there for paravirtual guests.
        #expect(cpuid.entry(function: 0x4000_0000) != nil)
        let mine = cpuid.forVCPU(id: 3, count: 4)
        #expect(mine.entry(function: 1).map { $0.ebx >> 24 } == 3)
        #expect(mine.entry(function: 1).map { $0.ecx & (1 << 31) != 0 } == true)
    }

    struct UnexpectedExit: Error, CustomStringConvertible {
        let expected: String, got: String
        init(expected: String, got: VCPUExit) { self.expected = expected; self.got = "\(got)" }
        var description: String { "expected \(expected), got \(got)" }
    }

    func nextPortIO(_ vcpu: VCPU) throws -> PortAccess {
        let exit = try nextExit(vcpu)
        guard case let .portIO(access) = exit else { throw UnexpectedExit(expected: "port I/O", got: exit) }
        return access
    }

    func nextMMIO(_ vcpu: VCPU) throws -> MMIOAccess {
        let exit = try nextExit(vcpu)
        guard case let .mmio(access) = exit else { throw UnexpectedExit(expected: "MMIO", got: exit) }
        return access
    }

    @Test func portIOBothWays() throws {
        let code = TinyGuest.print("Hi")
            + TinyGuest.movDX(0x1234) + TinyGuest.inEAXDX   // eax = what we answer
            + TinyGuest.movDX(0x1235) + TinyGuest.outDXEAX  // ... and it echoes it back
            + TinyGuest.spin
        let (_, vcpu, _) = try boot(code)
        var printed: [UInt8] = []
        for _ in 0..<2 {
            let io = try nextPortIO(vcpu)
            #expect(io.port == 0x3F8 && io.isWrite && io.size == 1)
            printed += io.data
        }
        #expect(String(decoding: printed, as: UTF8.self) == "Hi")
        let input = try nextPortIO(vcpu)
        #expect(input.port == 0x1234 && !input.isWrite && input.size == 4)
        input.data.storeBytes(of: UInt32(0xCAFE_BABE).littleEndian, as: UInt32.self)
        let echo = try nextPortIO(vcpu)
        #expect(echo.port == 0x1235 && echo.isWrite)
        #expect(echo.data.loadUnaligned(as: UInt32.self) == 0xCAFE_BABE)
    }

    @Test func mmioBothWays() throws {
        let window: UInt32 = 0xD000_0000 // not RAM: every access exits
        let code = TinyGuest.movEBX(window) + TinyGuest.movEAX(0x1122_3344) + TinyGuest.storeEAXAtRBX
            + TinyGuest.loadEAXFromRBXPlus8 + TinyGuest.movDX(0x1235) + TinyGuest.outDXEAX + TinyGuest.spin
        let (_, vcpu, _) = try boot(code)
        let store = try nextMMIO(vcpu)
        #expect(store.address == UInt64(window) && store.isWrite && store.length == 4)
        #expect(store.data.loadUnaligned(as: UInt32.self) == 0x1122_3344)
        let load = try nextMMIO(vcpu)
        #expect(load.address == UInt64(window) + 8 && !load.isWrite && load.length == 4)
        load.data.storeBytes(of: UInt32(0x5566_7788).littleEndian, as: UInt32.self)
        let echo = try nextPortIO(vcpu)
        #expect(echo.data.loadUnaligned(as: UInt32.self) == 0x5566_7788)
    }

    @Test func haltExitsWithoutAnInKernelAPIC() throws {
        let (_, vcpu, _) = try boot(TinyGuest.hlt + TinyGuest.spin, irqchip: false)
        let exit = try nextExit(vcpu)
        guard case .halt = exit else { throw UnexpectedExit(expected: "HLT", got: exit) }
    }

    @Test func tripleFaultIsAShutdownExit() throws {
        let (_, vcpu, _) = try boot(TinyGuest.ud2 + TinyGuest.spin)
        let exit = try nextExit(vcpu)
        guard case .shutdown = exit else { throw UnexpectedExit(expected: "shutdown", got: exit) }
    }

    @Test func immediateExitInterruptsRun() throws {
        let (_, vcpu, _) = try boot(TinyGuest.spin)
        vcpu.requestExit()
        guard case .interrupted = try vcpu.run() else { Issue.record("expected an interrupted run"); return }
    }
}
