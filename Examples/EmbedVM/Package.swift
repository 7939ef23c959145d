// swift-tools-version: 6.2
//
// A Swift program that runs a Linux guest in-process with LguestKit: the smallest complete use
// of the library. `swift run --package-path Examples/EmbedVM embed-vm KERNEL [CMDLINE]`.
import PackageDescription

let package = Package(
    name: "EmbedVM",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "lguest", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "embed-vm", dependencies: [
            .product(name: "LguestKit", package: "lguest"),
        ]),
    ]
)
