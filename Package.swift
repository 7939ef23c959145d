// swift-tools-version: 6.2
//
// lguest: a Launcher for Linux guests on KVM.
//
// One target per layer; dependencies point one way, from the command-line tool down
// to the C shim. docs/Architecture.md walks through the layers.
import PackageDescription

let package = Package(
    name: "lguest",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lguest", targets: ["lguest"]),
        // lguest as a library: `VirtualMachine`, for Swift programs that run VMs in-process.
        .library(name: "LguestKit", targets: ["LguestKit"]),
        // The layers a guest or a user can feed bytes to, for the fuzz harnesses in Fuzz/.
        .library(name: "LguestParsers", targets: ["GuestMemory", "HostSystem", "Boot", "Firmware", "Snapshot", "Virtio", "VirtioTesting", "Devices", "Launcher", "LguestCommands", "Api", "LguestKit"]),
        // The device layers on their own, for the benchmarks in Benchmarks/ (a separate
        // package, so the normal build and tests never compile them).
        .library(name: "LguestDevices", targets: ["Devices", "Virtio", "VirtioTesting", "GuestMemory"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // The only C: <linux/kvm.h>, ioctl numbers Swift cannot import, variadic calls.
        .target(name: "CKVM"),
        // The host's system calls, wrapped once for every layer: owned descriptors, eventfds,
        // errors that name their call, EINTR retried.
        .target(name: "HostSystem", dependencies: ["CKVM"]),
        // Guest-physical addresses and bounds-checked access to guest RAM.
        .target(name: "GuestMemory", dependencies: ["CKVM"]),
        // A saved machine's files: the state file's encoding, format and checks (no KVM, no
        // devices: each layer writes and reads its own state through it).
        .target(name: "Snapshot", dependencies: ["HostSystem"]),
        // /dev/kvm, the VM and its vCPUs (and how to enter what Boot prepared).
        .target(name: "KVM", dependencies: ["CKVM", "HostSystem", "GuestMemory", "Boot", "Snapshot"]),
        // Kernel image loaders: bzImage (64-bit boot protocol) and ELF vmlinux (PVH).
        .target(name: "Boot", dependencies: ["GuestMemory"]),
        // Uncompressed kernels kept on disk by content hash: a bzImage expanded once, then its
        // segments mapped into guest memory at every boot.
        .target(name: "KernelCache", dependencies: ["Boot"]),
        // ACPI tables and the little AML writer that describes devices to the guest.
        .target(name: "Firmware", dependencies: ["GuestMemory"]),
        // Split virtqueues, the VirtioDevice protocol and the virtio-mmio transport.
        .target(name: "Virtio", dependencies: ["GuestMemory", "CKVM", "Snapshot"]),
        // Platform devices (UART, i8042, pvpanic, ACPI power) and the virtio devices.
        .target(name: "Devices", dependencies: ["Virtio", "GuestMemory", "HostSystem", "CKVM", "Snapshot"]),
        // Seccomp filters built in Swift, no_new_privs and dropping capabilities.
        .target(name: "Sandbox", dependencies: ["CKVM"]),
        // A configuration value in, a running VM out.
        .target(name: "Launcher", dependencies: ["KVM", "HostSystem", "Boot", "KernelCache", "Firmware", "Virtio", "Devices", "GuestMemory", "Sandbox", "CKVM", "Snapshot"]),
        // The embedding API: a `VirtualMachine` with a life cycle, over the Launcher.
        .target(name: "LguestKit", dependencies: ["Launcher", "Devices"]),
        // Firecracker's control plane: its HTTP API on a Unix socket and its configuration
        // file, over LguestKit. The routing and JSON are plain values (fuzzed); NIO carries HTTP.
        .target(name: "Api", dependencies: [
            "LguestKit", "Launcher", "Devices", "Sandbox", "HostSystem",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // `lguest jail`: a VM's own root, namespaces, cgroup and user, then lguest in them.
        .target(name: "Jailer", dependencies: ["CKVM"]),
        // The command-line tool's commands: arguments in, a checked `VMConfiguration` out.
        .target(name: "LguestCommands", dependencies: [
            "Api", "LguestKit", "Launcher", "Devices", "Jailer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The command-line tool.
        .executableTarget(name: "lguest", dependencies: ["LguestCommands", "HostSystem"]),

        // The driver's side of virtio, played by tests, fuzz harnesses and benchmarks: a mock
        // virtio-mmio driver, a driver-side view of a split queue, and an I/O thread played with
        // poll for devices that watch host descriptors. Never in the product.
        .target(name: "VirtioTesting", dependencies: ["Virtio", "GuestMemory", "Devices"], path: "Tests/VirtioTesting"),
        // Tiny hand-assembled guests shared by the KVM and Launcher tests.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        // Installs one of lguest's real thread filters and makes one system call; SandboxTests
        // runs it to see which calls kill the process.
        .executableTarget(name: "SandboxProbe", dependencies: ["Launcher", "Devices", "Sandbox", "CKVM"], path: "Tests/SandboxProbe"),

        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory"]),
        .testTarget(name: "SnapshotTests", dependencies: ["Snapshot"]),
        .testTarget(name: "BootTests", dependencies: ["Boot", "KernelCache", "GuestMemory", "TestSupport"]),
        .testTarget(name: "FirmwareTests", dependencies: ["Firmware", "GuestMemory"]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "VirtioTesting", "GuestMemory", "Snapshot"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "Virtio", "VirtioTesting", "GuestMemory", "TestSupport", "Snapshot"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "HostSystem", "Boot", "GuestMemory", "CKVM", "TestSupport"]),
        .testTarget(name: "LauncherTests", dependencies: [
            "Launcher", "LguestCommands", "TestSupport", "Snapshot", "KVM", "CKVM",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "LguestKitTests", dependencies: ["LguestKit", "Snapshot", "TestSupport"]),
        .testTarget(name: "ApiTests", dependencies: ["Api", "LguestKit", "TestSupport"]),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "Launcher", "SandboxProbe", "CKVM"]),
        .testTarget(name: "LabTests", dependencies: []),
        .testTarget(name: "DocsTests", dependencies: []),
    ]
)
