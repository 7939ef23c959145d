#if canImport(Glibc)
import Glibc
#endif

/// Hand-made seeds. Each harness builds its own from the project's own pieces (the mock driver
/// lays out valid chains, the boot tests' shapes give valid kernel headers), so the seeds
/// follow the input format when it changes. `Scripts/fuzz.sh seeds` writes them into the
/// corpus: with `LGUEST_FUZZ_WRITE_SEEDS=DIR` set, a harness writes `DIR/seed-<name>` for
/// each and exits before fuzzing.
public enum Seeds {
    /// Called from `LLVMFuzzerInitialize`.
    public static func writeIfAsked(_ make: () -> [(name: String, bytes: [UInt8])]) {
        guard let directory = getenv("LGUEST_FUZZ_WRITE_SEEDS").map({ String(cString: $0) }) else { return }
        for seed in make() {
            let path = "\(directory)/seed-\(seed.name)"
            guard let file = fopen(path, "wb") else {
                print("cannot write \(path)")
                exit(1)
            }
            // Safe: `seed.bytes` is alive for the call and holds `count` bytes.
            let written = seed.bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
            fclose(file)
            guard written == seed.bytes.count else {
                print("short write to \(path)")
                exit(1)
            }
        }
        exit(0)
    }
}
