import CKVM
import HostSystem

extension VCPU {
    /// Model-specific registers as a PC's firmware leaves them: syscall and sysenter entry
    /// points cleared, fast strings on, MTRRs enabled with write-back as the default type
    /// (without it Linux turns PAT off and maps everything uncached in its eyes).
    public static let bootMSRs: [(index: UInt32, value: UInt64)] = [
        (0x174, 0), (0x175, 0), (0x176, 0),   // IA32_SYSENTER_CS / ESP / EIP
        (0xC000_0081, 0),                     // STAR
        (0xC000_0082, 0),                     // LSTAR
        (0xC000_0083, 0),                     // CSTAR
        (0xC000_0084, 0),                     // SFMASK
        (0xC000_0102, 0),                     // KERNEL_GS_BASE
        (0x10, 0),                            // IA32_TSC
        (0x1A0, 1),                           // IA32_MISC_ENABLE: fast-string enable
        (0x2FF, 0x806),                       // IA32_MTRR_DEF_TYPE: enabled, default write-back
    ]

    /// Everything a vCPU needs before its first instruction, except where that instruction is:
    /// CPUID, MSRs, the FPU and the local APIC's interrupt pins.
    public func configure(cpuid: CPUIDTable) throws(SystemCallError) {
        try setCPUID(cpuid)
        try setMSRs(Self.bootMSRs)
        try resetFPU()
        try configureLocalInterruptPins()
    }
}
