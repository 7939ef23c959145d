import Snapshot

// A snapshot of the balloon: the target the host set (which `PATCH /balloon` may have changed
// since the configuration), what the guest reported as inflated, and the statistics interval.
// The statistics buffer the device held is taken again from the ring after a restore.
extension BalloonDevice {
    public func saveState(to writer: inout StateWriter) {
        let s = state.withLock { ($0.targetPages, $0.actualPages, $0.statisticsInterval) }
        writer.u32(s.0)
        writer.u32(s.1)
        writer.u16(s.2)
    }

    public func restoreState(from reader: inout StateReader) throws(SnapshotError) {
        let target = try reader.u32(), actual = try reader.u32(), interval = try reader.u16()
        // Statistics are on exactly when the device has their queue (`setStatisticsInterval`
        // keeps it so): an interval of 0 with the queue, or one without it, is no balloon's.
        let hasStatistics = offeredFeatures & Feature.statisticsQueue != 0
        guard (interval != 0) == hasStatistics else {
            throw .malformed("balloon statistics every \(interval) s for a balloon made \(hasStatistics ? "with" : "without") them")
        }
        state.withLock { s in
            s.targetPages = target
            s.actualPages = actual
            s.statisticsInterval = interval
        }
    }
}
