#if canImport(Glibc)
import Glibc
#endif

/// When things happened during a boot, measured from the moment lguest's process started.
///
/// The kernel records a process's start in clock ticks since boot (`/proc/self/stat`, field 22,
/// usually 10 ms a tick), on the same clock as `CLOCK_BOOTTIME`; so "since the process started"
/// includes exec and dynamic linking, and errs long by at most one tick. Marks also carry
/// `CLOCK_MONOTONIC`, which a parent that timed its own `exec` can subtract precisely.
public enum BootClock {
    /// CLOCK_BOOTTIME, in nanoseconds, when this process started (rounded down to a tick).
    /// Falls back to the first use of the clock if /proc is not mounted.
    public static let processStart: UInt64 = readProcessStart() ?? now(CLOCK_BOOTTIME)

    /// Milliseconds since the process started.
    public static func millisecondsSinceStart() -> Double {
        Double(now(CLOCK_BOOTTIME) &- processStart) / 1_000_000
    }

    /// A clock's current reading in nanoseconds.
    public static func now(_ clock: clockid_t) -> UInt64 {
        var time = timespec()
        clock_gettime(clock, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// One line for standard error: `lguest: WHAT at 1234.567 ms (monotonic 123456789 ns)`.
    public static func line(_ what: String) -> String {
        let monotonic = now(CLOCK_MONOTONIC)
        return "lguest: \(what) at \(formatMilliseconds(millisecondsSinceStart())) ms (monotonic \(monotonic) ns)"
    }

    /// Three decimals, without Foundation's formatter.
    static func formatMilliseconds(_ value: Double) -> String {
        let micros = Int((value * 1000).rounded())
        let fraction = String(micros % 1000)
        return "\(micros / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    /// Field 22 of /proc/self/stat, converted to nanoseconds. The command name (field 2) may
    /// hold spaces and parentheses, so the fields are counted from the last ')'.
    static func readProcessStart() -> UInt64? {
        guard let bytes = try? readWholeProcFile("/proc/self/stat"),
              let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (the state), so field 22 is fields[19].
        guard fields.count > 19, let ticks = UInt64(String(decoding: fields[19], as: UTF8.self)) else { return nil }
        let hertz = UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1))
        return ticks * (1_000_000_000 / hertz)
    }
}

/// /proc files report a size of 0, so they are read until end of file rather than by size.
func readWholeProcFile(_ path: String) throws(LaunchError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .cannotRead(path: path, what: "process status", errno: errno) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0, errno == EINTR { continue }
        guard n >= 0 else { throw .cannotRead(path: path, what: "process status", errno: errno) }
        if n == 0 { return bytes }
        bytes += chunk[0..<n]
    }
}
