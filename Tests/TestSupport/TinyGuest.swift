/// Tiny hand-assembled x86-64 guests, wrapped in a minimal ELF so they boot through the same
/// loader and entry path as a real vmlinux: 64-bit mode, paging on, interrupts off.
///
/// They run on any /dev/kvm, including PVM, where a full Linux cannot.
public enum TinyGuest {
    /// Where the code is loaded and entered.
    public static let loadAddress: UInt64 = 0x20_0000

    /// A 64-bit little-endian ELF executable with one PT_LOAD segment holding `code`.
    public static func elf(_ code: [UInt8], at address: UInt64 = loadAddress) -> [UInt8] {
        var b: [UInt8] = []
        func u16(_ v: UInt16) { b += withUnsafeBytes(of: v.littleEndian, Array.init) }
        func u32(_ v: UInt32) { b += withUnsafeBytes(of: v.littleEndian, Array.init) }
        func u64(_ v: UInt64) { b += withUnsafeBytes(of: v.littleEndian, Array.init) }
        let headerSize: UInt64 = 64, programHeaderSize: UInt64 = 56
        let codeOffset = headerSize + programHeaderSize
        // ELF header: magic, class 64, little-endian, version 1, System V ABI.
        b += [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        u16(2)            // e_type: executable
        u16(62)           // e_machine: x86-64
        u32(1)            // e_version
        u64(address)      // e_entry
        u64(headerSize)   // e_phoff
        u64(0)            // e_shoff
        u32(0)            // e_flags
        u16(UInt16(headerSize)); u16(UInt16(programHeaderSize)); u16(1) // ehsize, phentsize, phnum
        u16(64); u16(0); u16(0)                                        // shentsize, shnum, shstrndx
        // Program header: PT_LOAD, read+execute.
        u32(1); u32(5)
        u64(codeOffset); u64(address); u64(address)
        u64(UInt64(code.count)); u64(UInt64(code.count)); u64(0x1000)
        return b + code
    }

    // A few instructions, spelled out (64-bit mode encodings).
    public static func movDX(_ port: UInt16) -> [UInt8] { [0x66, 0xBA, UInt8(port & 0xFF), UInt8(port >> 8)] }
    public static func movAL(_ value: UInt8) -> [UInt8] { [0xB0, value] }
    public static func movEAX(_ value: UInt32) -> [UInt8] { [0xB8] + withUnsafeBytes(of: value.littleEndian, Array.init) }
    public static func movEBX(_ value: UInt32) -> [UInt8] { [0xBB] + withUnsafeBytes(of: value.littleEndian, Array.init) }
    public static let outDXAL: [UInt8] = [0xEE]
    public static let outDXEAX: [UInt8] = [0xEF]
    public static let inEAXDX: [UInt8] = [0xED]
    public static let storeEAXAtRBX: [UInt8] = [0x89, 0x03]          // mov [rbx], eax
    public static let loadEAXFromRBXPlus8: [UInt8] = [0x8B, 0x43, 0x08] // mov eax, [rbx+8]
    public static let hlt: [UInt8] = [0xF4]
    public static let spin: [UInt8] = [0xEB, 0xFE]                    // jmp $
    public static let ud2: [UInt8] = [0x0F, 0x0B]

    /// Writes `text` to COM1's data register, one `out` per byte.
    public static func print(_ text: String) -> [UInt8] {
        movDX(0x3F8) + text.utf8.flatMap { movAL($0) + outDXAL }
    }

    /// Writes `value` to `port`.
    public static func out(_ port: UInt16, _ value: UInt8) -> [UInt8] {
        movDX(port) + movAL(value) + outDXAL
    }

    /// Prints a line, then powers off through the ACPI sleep control register (S5: 0x34 at 0x600).
    public static func helloThenPowerOff(_ text: String = "hello from a tiny guest\n") -> [UInt8] {
        print(text) + out(0x600, 0x34) + spin
    }

    /// Prints, then executes an undefined instruction with no IDT: #UD, then a double fault, then
    /// a triple fault.
    public static func tripleFault() -> [UInt8] { print("about to fault\n") + ud2 + spin }

    /// Writes `state` to the `\_TTS` port (0x603), as the DSDT's `\_TTS(state)` would, then
    /// triple-faults: with state 5 that is Linux's `reboot=t`.
    public static func announceThenTripleFault(state: UInt8) -> [UInt8] {
        out(0x603, state) + print("about to fault\n") + ud2 + spin
    }

    /// Tells the pvpanic device the kernel panicked.
    public static func panic() -> [UInt8] { print("panicking\n") + out(0x505, 1) + spin }

    /// Reads the 32-bit magic value of the virtio-mmio window at 0xD000_0000 and prints its
    /// four bytes on COM1 (a working transport prints "virt"), then powers off.
    public static func printVirtioMagic() -> [UInt8] {
        let shiftEAXRight8: [UInt8] = [0xC1, 0xE8, 0x08]
        let printLowByte = outDXAL + shiftEAXRight8
        return movEBX(0xD000_0000) + [0x8B, 0x03] // mov eax, [rbx]
            + movDX(0x3F8) + printLowByte + printLowByte + printLowByte + printLowByte
            + print("\n") + out(0x600, 0x34) + spin
    }

    /// Resets through the keyboard controller, like `reboot=k`.
    public static func rebootThroughKeyboardController() -> [UInt8] { out(0x64, 0xFE) + spin }
}
