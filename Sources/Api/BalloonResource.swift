import Devices
import FoundationEssentials
import Launcher

// Firecracker's balloon endpoints: `PUT /balloon` before boot; `PATCH /balloon`,
// `GET/PATCH /balloon/statistics` after; `GET /balloon` at any time. Refusals carry
// Firecracker's words (`Balloon config error: …`).

extension ApiFailure {
    static let noBalloon = ApiFailure.fault("Balloon config error: No balloon device found.")
    static let balloonTooLarge = ApiFailure.fault("Balloon config error: Amount of pages requested is too large.")
    static let statisticsDisabled = ApiFailure.fault("Balloon config error: Statistics for the balloon device are not enabled")
    static let statisticsStateChange = ApiFailure.fault("Balloon config error: Cannot enable/disable the statistics after boot.")
}

extension Resources {
    /// `PUT /balloon`: replaces any earlier one. The target may not exceed the guest's memory;
    /// free page hinting is not implemented, so it is accepted only off.
    public mutating func setBalloon(_ balloon: Balloon) throws(ApiFailure) {
        if balloon.free_page_hinting == true {
            throw .fault("Balloon config error: free page hinting is not supported by lguest (free page reporting is).")
        }
        guard UInt64(balloon.amount_mib) <= UInt64(max(machine.mem_size_mib, 0)) else { throw .balloonTooLarge }
        self.balloon = balloon
    }

    /// The device's configuration for the Launcher.
    var balloonConfiguration: BalloonConfiguration? {
        balloon.map {
            BalloonConfiguration(amountMiB: $0.amount_mib, deflateOnOOM: $0.deflate_on_oom,
                                 statisticsIntervalSeconds: $0.stats_polling_interval_s ?? 0,
                                 freePageReporting: $0.free_page_reporting == true)
        }
    }
}

extension Controller {
    /// `GET /balloon`: what was put, with the target as it stands now.
    func balloonConfig() throws(ApiFailure) -> ApiResponse {
        guard let balloon = currentResources.balloon else { throw .noBalloon }
        return .json(BalloonDocument(balloon: balloon))
    }

    /// `PATCH /balloon` on a running VM: a new target, which the guest hears at once.
    func patchBalloon(_ update: BalloonUpdate) throws(ApiFailure) -> ApiResponse {
        guard currentResources.balloon != nil else { throw .noBalloon }
        guard let running = machine?.runningMachineForControl else { throw .fault("The microVM is not running.") }
        do throws(LaunchError) { try running.setBalloonTarget(mib: update.amount_mib) } catch {
            if case .balloon(.tooLarge) = error { throw .balloonTooLarge }
            throw .fault("Balloon config error: \(error.description)")
        }
        resources.withLock { $0.balloon?.amount_mib = update.amount_mib }
        return .noContent
    }

    /// `GET /balloon/statistics`: Firecracker's target and actual sizes, and each statistic the
    /// guest last sent.
    func balloonStatistics() throws(ApiFailure) -> ApiResponse {
        guard let balloon = currentResources.balloon else { throw .noBalloon }
        guard (balloon.stats_polling_interval_s ?? 0) > 0 else { throw .statisticsDisabled }
        guard let status = machine?.runningMachineForControl?.balloonStatus else { throw .fault("The microVM is not running.") }
        return .json(BalloonStatsDocument(status: status))
    }

    /// `PATCH /balloon/statistics`: a new polling interval; statistics can be neither turned on
    /// nor off after boot.
    func patchBalloonStatistics(_ update: BalloonStatsUpdate) throws(ApiFailure) -> ApiResponse {
        guard let balloon = currentResources.balloon else { throw .noBalloon }
        guard ((balloon.stats_polling_interval_s ?? 0) == 0) == (update.stats_polling_interval_s == 0) else {
            throw .statisticsStateChange
        }
        guard let running = machine?.runningMachineForControl else { throw .fault("The microVM is not running.") }
        do throws(LaunchError) { try running.setBalloonStatisticsInterval(seconds: update.stats_polling_interval_s) } catch {
            if case .balloon(.statisticsStateChange) = error { throw .statisticsStateChange }
            throw .fault("Balloon config error: \(error.description)")
        }
        resources.withLock { $0.balloon?.stats_polling_interval_s = update.stats_polling_interval_s }
        return .noContent
    }
}

/// A balloon as `GET /balloon` and `GET /vm/config` write it: every field, with defaults.
struct BalloonDocument: Encodable {
    let balloon: Balloon
    enum Key: String, CodingKey {
        case amount_mib, deflate_on_oom, stats_polling_interval_s, free_page_hinting, free_page_reporting
    }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(balloon.amount_mib, forKey: .amount_mib)
        try c.encode(balloon.deflate_on_oom, forKey: .deflate_on_oom)
        try c.encode(balloon.stats_polling_interval_s ?? 0, forKey: .stats_polling_interval_s)
        try c.encode(balloon.free_page_hinting ?? false, forKey: .free_page_hinting)
        try c.encode(balloon.free_page_reporting ?? false, forKey: .free_page_reporting)
    }
}

/// `GET /balloon/statistics`: the four sizes always, each guest statistic only once it was sent.
struct BalloonStatsDocument: Encodable {
    let status: BalloonStatus
    struct Key: CodingKey {
        let stringValue: String
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(status.targetPages, forKey: Key("target_pages"))
        try c.encode(status.actualPages, forKey: Key("actual_pages"))
        try c.encode(status.targetMiB, forKey: Key("target_mib"))
        try c.encode(status.actualMiB, forKey: Key("actual_mib"))
        for stat in BalloonStat.allCases {
            if let value = status.guestStatistics[stat] { try c.encode(value, forKey: Key(stat.name)) }
        }
    }
}
