// swift-tools-version: 6.2
//
// libFuzzer harnesses for everything a guest or a user can feed bytes to. A package of its
// own, so that `swift build` and `swift test` in the main package never build them; build and
// run them with Scripts/fuzz.sh (Fuzz/README.md explains the flags).
import PackageDescription

/// One executable per harness, each in Sources/<name>; Fuzz/README.md lists what each feeds.
let harnesses = [
    // The split virtqueue on its own: rings, descriptor chains, indirect tables, used ring.
    "fuzz-chain",
    // Each virtio device behind the virtio-mmio transport, driven as a hostile guest would.
    "fuzz-block", "fuzz-net", "fuzz-console", "fuzz-rng", "fuzz-vsock", "fuzz-fs",
    // The bzImage and ELF loaders.
    "fuzz-kernel",
    // The platform devices on the port I/O bus: UART, i8042, pvpanic, ACPI power.
    "fuzz-platform",
    // The `lguest` command line, and the option values it parses.
    "fuzz-cli", "fuzz-options",
    // Firecracker's API: routing, strict JSON, the controller's rules, requests in sequence.
    "fuzz-api",
    // A snapshot's state file: its envelope, every section, the platform devices' and a
    // virtio-mmio transport's saved state.
    "fuzz-snapshot",
]

let package = Package(
    name: "lguest-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "lguest", path: ".."),
    ],
    targets: [
        // What the harnesses share: an input cursor, and a virtio device on the virtio-mmio
        // transport played by a hostile guest.
        .target(name: "FuzzSupport", dependencies: [
            .product(name: "LguestParsers", package: "lguest"),
        ]),
    ] + harnesses.map { name in
        .executableTarget(name: name, dependencies: ["FuzzSupport"], path: "Sources/\(name)")
    }
)
