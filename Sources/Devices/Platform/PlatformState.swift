import Snapshot

// Snapshots of the platform devices that hold state between two guest accesses: the i8042's
// output buffer, command byte and half-written command, and whether the guest announced its
// shutdown through \_TTS (which turns a later triple fault into a reboot). The pvpanic device,
// the ACPI power registers and the boot timer hold none.
extension I8042 {
    public func saveState(to writer: inout StateWriter) {
        let s = state.withLock { $0 }
        writer.data(s.output)
        writer.u8(s.commandByte)
        writer.bool(s.pendingCommand != nil)
        writer.u8(s.pendingCommand ?? 0)
    }

    public func restoreState(from reader: inout StateReader) throws(SnapshotError) {
        var s = State()
        s.output = try reader.data(limit: Self.outputLimit)
        s.commandByte = try reader.u8()
        let pending = try reader.bool()
        let command = try reader.u8()
        // Only the commands that wait for a data byte can be waiting for one.
        guard !pending || [0x60, 0xD1, 0xD2, 0xD3, 0xD4].contains(command) else {
            throw .malformed("i8042 command 0x\(String(command, radix: 16)) waiting for a data byte")
        }
        s.pendingCommand = pending ? command : nil
        let restored = s
        state.withLock { $0 = restored }
    }
}

extension PowerControl {
    public func saveState(to writer: inout StateWriter) {
        writer.bool(shutdownAnnounced)
    }

    public func restoreState(from reader: inout StateReader) throws(SnapshotError) {
        if try reader.bool() { noteShutdownAnnounced() }
    }
}
