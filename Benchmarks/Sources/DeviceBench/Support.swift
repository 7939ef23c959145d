import Foundation
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A failed benchmark step: set-up, a device answer that is wrong, or a peer that would not run.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Seconds on the monotonic clock.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// xorshift64*: cheap, uniform enough for picking blocks, and the same sequence every run.
struct Xorshift {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
    mutating func next(below bound: UInt64) -> UInt64 { next() % bound }
}

/// An interrupt line that only counts.
final class CountingLine: InterruptLine, @unchecked Sendable {
    // @unchecked: incremented from the one benchmark thread only.
    var count = 0
    func trigger() { count += 1 }
}

/// Runs `arguments[0]` (found on PATH) with the rest as arguments; returns its standard
/// output, or throws with its standard error if it fails. Plain posix_spawn and waitpid, on
/// the calling thread (the net benchmark relies on that: the child must start in the calling
/// thread's network namespace).
func run(_ arguments: [String]) throws -> String {
    var outPipe: [Int32] = [-1, -1]
    var errPipe: [Int32] = [-1, -1]
    guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw BenchError("pipe: \(String(cString: strerror(errno)))") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
    for fd in outPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ)
    close(outPipe[1])
    close(errPipe[1])
    defer {
        close(outPipe[0])
        close(errPipe[0])
    }
    guard spawned == 0 else { throw BenchError("cannot run \(arguments[0]): \(String(cString: strerror(spawned)))") }
    // Drain both pipes in turn until both reach end of file (fio writes little to stderr).
    var output: [UInt8] = []
    var errors: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    var open = [true, true]
    while open[0] || open[1] {
        var fds = [pollfd(fd: outPipe[0], events: open[0] ? Int16(POLLIN) : 0, revents: 0),
                   pollfd(fd: errPipe[0], events: open[1] ? Int16(POLLIN) : 0, revents: 0)]
        guard poll(&fds, 2, -1) >= 0 || errno == EINTR else { break }
        for i in 0 ..< 2 where open[i] && fds[i].revents != 0 {
            let n = chunk.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
            if n > 0 {
                if i == 0 { output += chunk[0 ..< n] } else { errors += chunk[0 ..< n] }
            } else if n == 0 || errno != EINTR {
                open[i] = false
            }
        }
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    // WIFEXITED && WEXITSTATUS == 0
    guard status & 0x7F == 0, (status >> 8) & 0xFF == 0 else {
        throw BenchError("\(arguments.joined(separator: " ")) failed: \(String(decoding: errors, as: UTF8.self))")
    }
    return String(decoding: output, as: UTF8.self)
}

/// A plain text table with right-aligned numbers.
struct Table {
    var header: [String]
    var rows: [[String]] = []

    func render() -> String {
        let widths = header.indices.map { column in
            ([header[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column == 0 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
    }
}

func format(_ value: Double, decimals: Int = 0) -> String { String(format: "%.\(decimals)f", value) }
func percent(_ ratio: Double) -> String { String(format: "%.0f%%", ratio * 100) }
