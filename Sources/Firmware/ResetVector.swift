import GuestMemory

/// What a kernel finds when it jumps to the BIOS's reset entry at F000:FFF0 (physical
/// 0xFFFF0): a few real-mode instructions that write the ACPI reset register, so the VMM hears
/// the restart.
///
/// lguest has no BIOS, but Linux still goes there to restart. On a hardware-reduced ACPI
/// platform without `reboot=`, Linux picks the EFI method (`reboot_init`: `efi_reboot_required()`
/// is true when the FADT says hardware-reduced); with no EFI, `efi_reboot` returns at once and
/// `native_machine_emergency_restart` falls through to `BOOT_BIOS`: `machine_real_restart`
/// drops to real mode and jumps to F000:FFF0. `reboot=b` goes there directly, and `reboot=e`
/// like the default. Before this code existed, the guest ran the zeros it found there for ever.
public enum ResetVector {
    /// Physical address of the reset entry point, F000:FFF0.
    public static let address: GuestAddress = 0xF_FFF0

    /// Sixteen bytes of 16-bit code, ending at 1 MiB:
    ///
    ///     cli
    ///     mov  al, resetValue
    ///     mov  dx, reset            ; the FADT's RESET_REG
    ///     out  dx, al               ; the VMM stops the VM: a reboot
    ///   1: hlt                      ; never resumed; if it were, stay put
    ///     jmp  1b
    public static var code: [UInt8] {
        let port = PlatformPorts.reset
        var bytes: [UInt8] = [
            0xFA,                                               // cli
            0xB0, PlatformPorts.resetValue,                     // mov al, imm8
            0xBA, UInt8(port & 0xFF), UInt8(port >> 8),         // mov dx, imm16
            0xEE,                                               // out dx, al
            0xF4,                                               // hlt
            0xEB, 0xFD,                                         // jmp short to the hlt
        ]
        bytes += [UInt8](repeating: 0xF4, count: 16 - bytes.count) // hlt padding to 1 MiB
        return bytes
    }

    /// Writes `code` at `address`.
    public static func write(into memory: GuestMemory) throws(AcpiError) {
        do { try memory.write(code, at: address) } catch { throw .memory(error) }
    }
}
