/// An LZ4 legacy frame (what Linux's `CONFIG_KERNEL_LZ4` puts in a bzImage) holding `data` as
/// literal-only blocks, which every LZ4 decoder must take, with Kbuild's size trailer.
public func lz4LegacyLiterals(_ data: [UInt8], blockSize: Int = 8 << 20) -> [UInt8] {
    func le32(_ value: Int) -> [UInt8] { (0 ..< 4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    var out = le32(0x184C_2102)
    var start = 0
    repeat {
        let chunk = data[start ..< min(start + blockSize, data.count)]
        var block: [UInt8] = []
        if chunk.count >= 15 {
            block.append(0xF0)
            var rest = chunk.count - 15
            while rest >= 255 { block.append(255); rest -= 255 }
            block.append(UInt8(rest))
        } else {
            block.append(UInt8(chunk.count << 4))
        }
        block += chunk
        out += le32(block.count) + block
        start += chunk.count
    } while start < data.count
    return out + le32(data.count)
}

extension TinyGuest {
    /// A bzImage whose payload is `elf`, LZ4-compressed: a boot sector and four setup sectors
    /// with a setup header (protocol 2.15, 64-bit entry, relocatable), then a protected-mode
    /// part of `ud2`s whose payload_offset points at the compressed kernel. Booted as it is the
    /// guest faults at its first instruction; only expanded on the host (the kernel cache) does
    /// the ELF inside run.
    public static func bzImage(wrapping elf: [UInt8]) -> [UInt8] {
        let payload = lz4LegacyLiterals(elf)
        var image = [UInt8](repeating: 0, count: 5 * 512)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            for i in 0 ..< MemoryLayout<T>.size { image[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        var kernel = [UInt8](repeating: 0, count: 0x400)
        for i in stride(from: 0, to: kernel.count, by: 2) { kernel[i] = 0x0F; kernel[i + 1] = 0x0B }
        kernel += payload
        // Whole 16-byte paragraphs, as syssize counts them.
        kernel += [UInt8](repeating: 0, count: (16 - kernel.count % 16) % 16)
        put(UInt8(4), 0x1F1)                                // setup_sects
        put(UInt32((kernel.count + 15) / 16), 0x1F4)        // syssize
        put(UInt16(0xAA55), 0x1FE)                          // boot_flag
        put(UInt8(0xEB), 0x200); put(UInt8(0x6A), 0x201)    // jump over the header to 0x26C
        put(UInt32(0x5372_6448), 0x202)                     // "HdrS"
        put(UInt16(0x020F), 0x206)                          // version 2.15
        put(UInt8(0x01), 0x211)                             // loadflags: LOADED_HIGH
        put(UInt32(0x7FFF_FFFF), 0x22C)                     // initrd_addr_max
        put(UInt32(0x20_0000), 0x230)                       // kernel_alignment
        put(UInt8(1), 0x234)                                // relocatable_kernel
        put(UInt16(0x03), 0x236)                            // xloadflags: 64-bit entry, above 4G
        put(UInt32(0x7FF), 0x238)                           // cmdline_size
        put(UInt32(0x400), 0x248)                           // payload_offset
        put(UInt32(payload.count), 0x24C)                   // payload_length
        put(UInt64(0x100_0000), 0x258)                      // pref_address
        put(UInt32(0x40_0000), 0x260)                       // init_size
        return image + kernel
    }
}
