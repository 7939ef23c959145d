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
        // The layers a guest or a user can feed bytes to, for the fuzz harnesses in Fuzz/.
        .library(name: "LguestParsers", targets: ["GuestMemory", "Boot", "Firmware", "Virtio", "Devices", "Launcher", "LguestCommands"]),
        // The device layers on their own, for the benchmarks in Benchmarks/ (a separate
        // package, so the normal build and tests never compile them).
        .library(name: "LguestDevices", targets: ["Devices", "Virtio", "GuestMemory"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The only C: <linux/kvm.h>, ioctl numbers Swift cannot import, variadic calls.
        .target(name: "CKVM"),
        // Guest-physical addresses and bounds-checked access to guest RAM.
        .target(name: "GuestMemory", dependencies: ["CKVM"]),
        // /dev/kvm, the VM and its vCPUs (and how to enter what Boot prepared).
        .target(name: "KVM", dependencies: ["CKVM", "GuestMemory", "Boot"]),
        // Kernel image loaders: bzImage (64-bit boot protocol) and ELF vmlinux (PVH).
        .target(name: "Boot", dependencies: ["GuestMemory"]),
        // ACPI tables and the little AML writer that describes devices to the guest.
        .target(name: "Firmware", dependencies: ["GuestMemory"]),
        // Split virtqueues, the VirtioDevice protocol and the virtio-mmio transport.
        .target(name: "Virtio", dependencies: ["GuestMemory", "CKVM"]),
        // Platform devices (UART, i8042, pvpanic, ACPI power) and the virtio devices.
        .target(name: "Devices", dependencies: ["Virtio", "GuestMemory", "CKVM"]),
        // Seccomp filters built in Swift, no_new_privs and dropping capabilities.
        .target(name: "Sandbox", dependencies: ["CKVM"]),
        // A configuration value in, a running VM out.
        .target(name: "Launcher", dependencies: ["KVM", "Boot", "Firmware", "Virtio", "Devices", "GuestMemory", "Sandbox", "CKVM"]),
        // The command-line tool's commands: arguments in, a checked `VMConfiguration` out.
        .target(name: "LguestCommands", dependencies: [
            "Launcher", "Devices",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The command-line tool.
        .executableTarget(name: "lguest", dependencies: ["LguestCommands"]),

        // Tiny hand-assembled guests shared by the KVM and Launcher tests.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        // Installs one of lguest's real thread filters and makes one system call; SandboxTests
        // runs it to see which calls kill the process.
        .executableTarget(name: "SandboxProbe", dependencies: ["Launcher", "Sandbox", "CKVM"], path: "Tests/SandboxProbe"),

        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory"]),
        .testTarget(name: "BootTests", dependencies: ["Boot", "GuestMemory"]),
        .testTarget(name: "FirmwareTests", dependencies: ["Firmware", "GuestMemory"]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "GuestMemory"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "Virtio", "GuestMemory", "TestSupport"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "Boot", "GuestMemory", "CKVM", "TestSupport"]),
        .testTarget(name: "LauncherTests", dependencies: [
            "Launcher", "LguestCommands", "TestSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "Launcher", "SandboxProbe", "CKVM"]),
        .testTarget(name: "LabTests", dependencies: []),
        .testTarget(name: "DocsTests", dependencies: []),
    ]
)
