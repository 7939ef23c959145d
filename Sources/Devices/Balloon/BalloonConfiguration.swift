/// A virtio-balloon device as the user describes it, in Firecracker's terms: how much of the
/// guest's memory the balloon should hold, whether the guest may take it back when it runs out,
/// how often the guest's memory statistics are refreshed (0: never, and no statistics queue),
/// and whether the guest reports its free pages so that the host can take them.
public struct BalloonConfiguration: Equatable, Sendable {
    /// The balloon's target size in MiB (`amount_mib`).
    public var amountMiB: UInt32
    /// `deflate_on_oom`: the guest deflates the balloon itself when it is out of memory.
    public var deflateOnOOM: Bool
    /// `stats_polling_interval_s`: seconds between statistics requests; 0 turns statistics off.
    public var statisticsIntervalSeconds: UInt16
    /// `free_page_reporting`: the guest reports free pages, which the host discards.
    public var freePageReporting: Bool

    public init(amountMiB: UInt32, deflateOnOOM: Bool = false, statisticsIntervalSeconds: UInt16 = 0,
                freePageReporting: Bool = false) {
        self.amountMiB = amountMiB
        self.deflateOnOOM = deflateOnOOM
        self.statisticsIntervalSeconds = statisticsIntervalSeconds
        self.freePageReporting = freePageReporting
    }

    /// Whether the statistics queue exists (it cannot be added or taken away later).
    public var statisticsEnabled: Bool { statisticsIntervalSeconds > 0 }

    /// The target in the device's 4 KiB pages.
    public var targetPages: UInt32 { Self.pages(mib: amountMiB) }

    /// 256 pages of 4 KiB to the MiB; past 2³² pages (16 TiB) the device cannot count.
    static func pages(mib: UInt32) -> UInt32 { UInt32(truncatingIfNeeded: min(UInt64(mib) << 8, UInt64(UInt32.max))) }

    /// The `--balloon` option:
    /// `amount_mib=N[,deflate_on_oom][,stats_polling_interval_s=S][,free_page_reporting]`.
    public init(option: String) throws(BalloonError) {
        var amount: UInt32?
        var deflate = false, reporting = false
        var interval: UInt16 = 0
        var seen = Set<String>()
        for item in option.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(pair[0]), value = pair.count == 2 ? String(pair[1]) : nil
            guard seen.insert(key).inserted else { throw .option(option, "\(key) given twice") }
            switch (key, value) {
            case ("amount_mib", let value?):
                guard let number = UInt32(value) else { throw .option(option, "amount_mib=\(value) is not a number of MiB up to \(UInt32.max)") }
                amount = number
            case ("stats_polling_interval_s", let value?):
                guard let number = UInt16(value) else { throw .option(option, "stats_polling_interval_s=\(value) is not a number of seconds up to \(UInt16.max)") }
                interval = number
            case ("deflate_on_oom", nil), ("deflate_on_oom", "true"): deflate = true
            case ("deflate_on_oom", "false"): deflate = false
            case ("free_page_reporting", nil), ("free_page_reporting", "true"): reporting = true
            case ("free_page_reporting", "false"): reporting = false
            case ("amount_mib", nil), ("stats_polling_interval_s", nil):
                throw .option(option, "\(key) needs a value: \(key)=N")
            case ("deflate_on_oom", _), ("free_page_reporting", _):
                throw .option(option, "\(key) takes no value (or true/false)")
            default:
                throw .option(option, "unknown key '\(key)' (known: amount_mib=, deflate_on_oom, stats_polling_interval_s=, free_page_reporting)")
            }
        }
        guard let amount else { throw .option(option, "amount_mib=N is required") }
        self.init(amountMiB: amount, deflateOnOOM: deflate, statisticsIntervalSeconds: interval,
                  freePageReporting: reporting)
    }

    /// The check that needs the guest's memory size: the balloon cannot be larger than RAM.
    public func validate(memoryMiB: UInt64) throws(BalloonError) {
        guard UInt64(amountMiB) <= memoryMiB else { throw .tooLarge(amountMiB: amountMiB, memoryMiB: memoryMiB) }
    }
}

/// Why a balloon could not be configured or changed; one line each.
public enum BalloonError: Error, Equatable, Sendable, CustomStringConvertible {
    case option(String, String)
    /// A target larger than the guest's memory.
    case tooLarge(amountMiB: UInt32, memoryMiB: UInt64)
    /// Statistics switched on or off after the device was made (the queue is fixed).
    case statisticsStateChange
    /// Statistics asked for, but the device was made without them.
    case statisticsDisabled

    public var description: String {
        switch self {
        case let .option(option, why): return "invalid balloon option '\(option)': \(why)"
        case let .tooLarge(amount, memory): return "balloon: amount_mib \(amount) is more than the guest's \(memory) MiB of memory"
        case .statisticsStateChange: return "balloon: statistics cannot be turned on or off once the VM is built"
        case .statisticsDisabled: return "balloon: statistics were not enabled (stats_polling_interval_s is 0)"
        }
    }
}

/// What a balloon device has done, for tests, logs and metrics (Firecracker's `balloon` group).
public struct BalloonStatistics: Sendable, Equatable {
    /// Inflate and deflate requests served, and the 4 KiB pages they named that were in RAM.
    public var inflateRequests: UInt64 = 0
    public var deflateRequests: UInt64 = 0
    public var pagesInflated: UInt64 = 0
    public var pagesDeflated: UInt64 = 0
    /// Statistics buffers the guest sent, and those that could not be read.
    public var statisticsUpdates: UInt64 = 0
    public var statisticsFailures: UInt64 = 0
    /// Free page reports served, the bytes they gave back, and the ranges refused.
    public var freePageReports: UInt64 = 0
    public var freePageReportedBytes: UInt64 = 0
    public var freePageReportFailures: UInt64 = 0
    /// PFNs outside guest RAM, ignored.
    public var invalidPages: UInt64 = 0
    /// Requests ignored whole or in part: buffers in the wrong direction, lengths that are not
    /// whole entries, chains the queue refused, writes to the read-only `num_pages`.
    public var malformed: UInt64 = 0
    /// `madvise` refusals (the pages stay with the guest's process).
    public var discardFailures: UInt64 = 0

    public init() {}
}

/// The guest's memory statistics (virtio's `VIRTIO_BALLOON_S_*` tags), as it last sent them.
public enum BalloonStat: UInt16, CaseIterable, Sendable {
    case swapIn = 0, swapOut, majorFaults, minorFaults, freeMemory, totalMemory, availableMemory
    case diskCaches, hugetlbAllocations, hugetlbFailures
    // Linux 6.12 added these.
    case oomKill, allocStall, asyncScan, directScan, asyncReclaim, directReclaim

    /// Firecracker's name for it in `GET /balloon/statistics`.
    public var name: String {
        switch self {
        case .swapIn: "swap_in"
        case .swapOut: "swap_out"
        case .majorFaults: "major_faults"
        case .minorFaults: "minor_faults"
        case .freeMemory: "free_memory"
        case .totalMemory: "total_memory"
        case .availableMemory: "available_memory"
        case .diskCaches: "disk_caches"
        case .hugetlbAllocations: "hugetlb_allocations"
        case .hugetlbFailures: "hugetlb_failures"
        case .oomKill: "oom_kill"
        case .allocStall: "alloc_stall"
        case .asyncScan: "async_scan"
        case .directScan: "direct_scan"
        case .asyncReclaim: "async_reclaim"
        case .directReclaim: "direct_reclaim"
        }
    }
}

/// The balloon as the host sees it at one moment: what it asked for, what the guest says it
/// holds, and the guest's last statistics.
public struct BalloonStatus: Sendable, Equatable {
    public var targetPages: UInt32
    /// The guest's `actual` (what its driver says the balloon holds), in 4 KiB pages.
    public var actualPages: UInt32
    public var deflateOnOOM: Bool
    public var statisticsIntervalSeconds: UInt16
    public var freePageReporting: Bool
    /// Each statistic the guest sent, by tag; tags lguest does not know are left out.
    public var guestStatistics: [BalloonStat: UInt64]

    public var targetMiB: UInt32 { targetPages >> 8 }
    public var actualMiB: UInt32 { actualPages >> 8 }
}
