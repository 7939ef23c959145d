import Snapshot

// A snapshot of the UART: the registers the driver programmed, whether a transmit-empty
// interrupt is owed, and the input the guest has not read yet (at most `inputLimit` bytes).
extension Serial {
    public func saveState(to writer: inout StateWriter) {
        let s = state.withLock { $0 }
        writer.u8(s.interruptEnable)
        writer.u8(s.lineControl)
        writer.u8(s.modemControl)
        writer.u8(s.scratch)
        writer.u16(s.divisor)
        writer.bool(s.fifoEnabled)
        writer.bool(s.transmitEmptyPending)
        writer.data(s.input[s.inputStart...])
    }

    /// Puts back what `saveState` wrote. An interrupt the UART had raised is not raised again:
    /// it is in the saved interrupt controllers' state.
    public func restoreState(from reader: inout StateReader) throws(SnapshotError) {
        var s = State()
        s.interruptEnable = try reader.u8()
        s.lineControl = try reader.u8()
        s.modemControl = try reader.u8()
        s.scratch = try reader.u8()
        s.divisor = try reader.u16()
        s.fifoEnabled = try reader.bool()
        s.transmitEmptyPending = try reader.bool()
        s.input = try reader.data(limit: Self.inputLimit)
        // Bits the registers cannot hold (a guest's writes are masked to these) mean the state
        // is not one a UART was in.
        guard s.interruptEnable & ~0x0F == 0, s.modemControl & ~0x1F == 0 else {
            throw .malformed("UART registers IER 0x\(String(s.interruptEnable, radix: 16)), MCR 0x\(String(s.modemControl, radix: 16))")
        }
        let restored = s
        state.withLock { old in
            let kept = old.statistics
            old = restored
            old.statistics = kept
        }
    }
}
