// `startup-bench [--runs N] [--console] LGUEST run ... --trace-boot`: how long lguest takes from
// exec to the first KVM_RUN, over N runs after one to warm the page cache. With --console, also
// to the first byte the guest prints (for a guest that prints at once, or a restored one).
//
// The parent reads CLOCK_MONOTONIC just before posix_spawn; lguest, run with --trace-boot,
// prints the same clock at each step of its start-up. The difference is the start-up as the
// user sees it: exec, dynamic linking, the Swift runtime, argument parsing, reading the kernel
// and initrd, building the VM and its devices, and starting the vCPU thread.
#if canImport(Glibc)
import Glibc
#endif

func monotonic() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// One run: each traced step's name and its milliseconds since just before the spawn.
struct Sample { var steps: [(String, Double)] }

/// Runs lguest once; returns the milliseconds from just before spawn to each traced step.
func measureOnce(_ arguments: [String], console: Bool) -> Sample? {
    var pipeEnds: [Int32] = [0, 0], outEnds: [Int32] = [0, 0]
    guard pipe(&pipeEnds) == 0, pipe(&outEnds) == 0 else { return nil }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    if console { posix_spawn_file_actions_adddup2(&actions, outEnds[1], 1) }
    else { posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0) }
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
    posix_spawn_file_actions_addclose(&actions, pipeEnds[0])
    posix_spawn_file_actions_addclose(&actions, outEnds[0])
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let start = monotonic()
    let status = posix_spawn(&pid, arguments[0], &actions, nil, argv, environ)
    posix_spawn_file_actions_destroy(&actions)
    close(pipeEnds[1])
    close(outEnds[1])
    defer { close(pipeEnds[0]); close(outEnds[0]) }
    guard status == 0 else { return nil }
    var text = ""
    var buffer = [UInt8](repeating: 0, count: 4096)
    var firstOutput: Double? = console ? nil : 0
    var errorsOpen = true
    while !text.contains("first KVM_RUN") || firstOutput == nil {
        var fds = [pollfd(fd: errorsOpen ? pipeEnds[0] : -1, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: firstOutput == nil ? outEnds[0] : -1, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, 2, 10_000) > 0 else { break }
        if fds[1].revents != 0 {
            if read(outEnds[0], &buffer, buffer.count) <= 0 { break }
            firstOutput = Double(monotonic() - start) / 1_000_000
        }
        if fds[0].revents != 0 {
            let n = read(pipeEnds[0], &buffer, buffer.count)
            if n <= 0 { errorsOpen = false; if firstOutput != nil { break } else { continue } }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
    }
    kill(pid, SIGKILL)
    var wstatus: Int32 = 0
    waitpid(pid, &wstatus, 0)
    var steps: [(String, Double)] = []
    for line in text.split(separator: "\n") where line.contains("trace: ") {
        // The step's name: what comes before its time, or before a comma and a detail (a path).
        guard let name = line.split(separator: "trace: ").last?.split(separator: " at ").first?.split(separator: ", ").first,
              let ns = line.split(separator: "(monotonic ").last?.split(separator: " ").first,
              let value = UInt64(ns) else { continue }
        steps.append((String(name), Double(Int64(value) - Int64(start)) / 1_000_000))
    }
    if console, let firstOutput { steps.append(("first console byte", firstOutput)) }
    guard steps.contains(where: { $0.0 == "first KVM_RUN" }), !console || firstOutput != nil else { return nil }
    return Sample(steps: steps)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var runs = 30
if arguments.first == "--runs", arguments.count > 1, let n = Int(arguments[1]) { runs = n; arguments.removeFirst(2) }
let console = arguments.first == "--console"
if console { arguments.removeFirst() }
guard !arguments.isEmpty else {
    print("usage: startup-bench [--runs N] [--console] LGUEST run --kernel ... --trace-boot")
    exit(64)
}
_ = measureOnce(arguments, console: console) // warm the page cache
var samples: [Sample] = []
for _ in 0..<runs { if let s = measureOnce(arguments, console: console) { samples.append(s) } }
guard let first = samples.first else { print("no run reached the first KVM_RUN"); exit(1) }
func pad(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
func format(_ v: Double) -> String {
    let hundredths = Int((v * 100).rounded())
    return "\(hundredths / 100)." + (hundredths % 100 < 10 ? "0" : "") + "\(hundredths % 100)"
}
// Each step's time since exec, and the median time it took since the step before: where each
// millisecond goes.
print("step                              min ms   median ms   p90 ms   median step ms   (\(samples.count) runs)")
var previous: [Double] = samples.map { _ in 0 }
for (index, step) in first.steps.enumerated() {
    let values = samples.compactMap { $0.steps.count > index ? $0.steps[index].1 : nil }.sorted()
    let deltas = samples.indices.compactMap { run -> Double? in
        guard samples[run].steps.count > index else { return nil }
        defer { previous[run] = samples[run].steps[index].1 }
        return samples[run].steps[index].1 - previous[run]
    }.sorted()
    let name = step.0 + String(repeating: " ", count: max(0, 30 - step.0.count))
    print("\(name)  \(pad(format(values[0]), 7))  \(pad(format(values[values.count / 2]), 10))  \(pad(format(values[values.count * 9 / 10]), 7))  \(pad(format(deltas[deltas.count / 2]), 15))")
}
