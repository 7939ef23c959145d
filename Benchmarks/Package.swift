// swift-tools-version: 6.2
//
// Benchmarks for lguest's device paths, kept out of the main package so that its build and
// tests never compile them. See README.md for what each one measures and against what.
import PackageDescription

let package = Package(
    name: "lguest-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "lguest", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // `device-bench block|net`: the block and net back ends against fio and a raw TAP.
        .executableTarget(
            name: "device-bench",
            dependencies: [.product(name: "LguestDevices", package: "lguest")],
            path: "Sources/DeviceBench"
        ),
        // `startup-bench`: lguest's start-up, from just before exec to the first KVM_RUN.
        .executableTarget(name: "startup-bench", path: "Sources/StartupBench"),
        // The split-ring code alone, under ordo-one/benchmark (`swift package benchmark`).
        .executableTarget(
            name: "Virtqueue",
            dependencies: [
                .product(name: "LguestDevices", package: "lguest"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/Virtqueue",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
