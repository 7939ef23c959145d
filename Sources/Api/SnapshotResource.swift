import FoundationEssentials
import LguestKit
import Snapshot

// Firecracker's snapshot endpoints. `PUT /snapshot/create` saves a paused VM: its memory and
// a state file, with the API's resources kept in the state file (so that the process that
// loads it answers `GET /vm/config` and `PATCH /drives/{id}` as this one did).
// `PUT /snapshot/load`, in a process that has configured nothing that boots, continues it:
// paused, or running with `resume_vm`; TAP devices and the vsock socket may be replaced.

public struct SnapshotCreateParams: Codable, Equatable, Sendable {
    public var snapshot_path: String
    public var mem_file_path: String
    /// `Full` (the default) or `Diff`, which lguest does not take.
    public var snapshot_type: String?
}

public struct MemoryBackend: Codable, Equatable, Sendable {
    /// `File` (the memory file, mapped) or `Uffd` (a page-fault handler process), which
    /// lguest does not take.
    public var backend_type: String
    public var backend_path: String
}

public struct NetworkOverride: Codable, Equatable, Sendable {
    public var iface_id: String
    public var host_dev_name: String
}

public struct VsockOverride: Codable, Equatable, Sendable {
    public var uds_path: String
}

public struct SnapshotLoadParams: Codable, Equatable, Sendable {
    public var snapshot_path: String
    public var mem_backend: MemoryBackend?
    /// Deprecated by Firecracker for `mem_backend`.
    public var mem_file_path: String?
    public var track_dirty_pages: Bool?
    /// Deprecated by Firecracker for `track_dirty_pages`.
    public var enable_diff_snapshots: Bool?
    public var resume_vm: Bool?
    public var network_overrides: [NetworkOverride]?
    public var vsock_override: VsockOverride?
    /// Whether kvmclock makes up for the wall-clock time since the snapshot. lguest does
    /// unless told `false`; Firecracker does only when told `true`.
    public var clock_realtime: Bool?
    public var huge_pages: String?
}

extension Shape {
    static let snapshotCreate = Shape(fields: ["snapshot_path", "mem_file_path", "snapshot_type"])
    static let snapshotLoad = Shape(fields: ["snapshot_path", "mem_backend", "mem_file_path", "track_dirty_pages",
                                             "enable_diff_snapshots", "resume_vm", "network_overrides", "vsock_override",
                                             "clock_realtime", "huge_pages"],
                                    nested: ["mem_backend": Shape(fields: ["backend_type", "backend_path"]),
                                             "network_overrides": Shape(fields: ["iface_id", "host_dev_name"]),
                                             "vsock_override": Shape(fields: ["uds_path"])])
}

extension Controller {
    /// `PUT /snapshot/create`: only on a paused VM.
    func createSnapshot(_ params: SnapshotCreateParams) throws(ApiFailure) -> ApiResponse {
        guard let machine else { throw .beforeStart }
        switch params.snapshot_type ?? "Full" {
        case "Full": break
        case "Diff": throw .fault("Create snapshot error: diff snapshots are not supported by lguest; take a Full snapshot.")
        case let other: throw .deserialize("unknown variant `\(other)`, expected `Full` or `Diff`")
        }
        guard machine.state == .paused else { throw .fault("Create snapshot error: the microVM must be paused first (PATCH /vm {\"state\": \"Paused\"}).") }
        do throws(LaunchError) {
            try machine.snapshot(statePath: params.snapshot_path, memoryPath: params.mem_file_path,
                                 notes: VmConfigDocument.json(currentResources))
        } catch { throw .fault("Create snapshot error: \(error.description)") }
        return .noContent
    }

    /// `PUT /snapshot/load`: only in a process where nothing that boots was configured.
    func loadSnapshot(_ params: SnapshotLoadParams) throws(ApiFailure) -> ApiResponse {
        guard !started else { throw .afterStart }
        guard !currentResources.configuresBoot else {
            throw .fault("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
        }
        let memoryPath: String
        switch (params.mem_backend, params.mem_file_path) {
        case (nil, nil): throw .fault("missing field: either `mem_backend` or `mem_file_path` is required")
        case (.some, .some): throw .fault("too many fields: either `mem_backend` or `mem_file_path` exclusively is required")
        case let (backend?, nil):
            switch backend.backend_type {
            case "File": memoryPath = backend.backend_path
            case "Uffd": throw .fault("Load snapshot error: a Uffd memory backend is not supported by lguest; use File.")
            case let other: throw .deserialize("unknown variant `\(other)`, expected `File` or `Uffd`")
            }
        case let (nil, path?): memoryPath = path
        }
        switch params.huge_pages ?? "Snapshot" {
        case "Snapshot", "None", "Transparent": break
        case "2M": throw .fault("Load snapshot error: 2M huge pages need a Uffd memory backend, which lguest does not support.")
        case let other: throw .deserialize("unknown variant `\(other)`, expected one of `Snapshot`, `None`, `Transparent`, `2M`")
        }

        let saved: SavedMachine
        do throws(SnapshotError) { saved = try SavedMachine(statePath: params.snapshot_path) }
        catch { throw .fault("Load snapshot error: \(error.description)") }
        var resources = Resources()
        if let notes = try? JSONDecoder().decode(FullVmConfiguration.self, from: Data(saved.notes)) {
            resources.restore(from: notes)
        }
        var configuration = saved.configuration
        configuration.sandbox = sandbox
        for override in params.network_overrides ?? [] {
            guard let index = resources.networks.firstIndex(where: { $0.iface_id == override.iface_id }),
                  configuration.networks.indices.contains(index) else {
                throw .fault("Load snapshot error: invalid network interface ID in the overrides: \(override.iface_id).")
            }
            configuration.networks[index].tap = .existing(override.host_dev_name)
            resources.networks[index].host_dev_name = override.host_dev_name
        }
        if let override = params.vsock_override {
            guard configuration.vsock != nil else { throw .fault("Load snapshot error: the snapshot has no vsock device to override.") }
            configuration.vsock?.udsPath = override.uds_path
            resources.vsock?.uds_path = override.uds_path
        }
        var console = self.console
        if let output = serialOutputForStart { console.output = output }
        let vm = VirtualMachine(restoring: saved, memoryPath: memoryPath, configuration: configuration,
                                advanceClock: params.clock_realtime ?? true, console: console)
        do throws(LaunchError) { try vm.start(paused: params.resume_vm != true) }
        catch { throw .fault("Load snapshot error: \(error.description)") }
        replaceResources(resources)
        adopt(vm)
        return .noContent
    }
}

extension Resources {
    /// Whether anything that only a booting VM takes was configured: a snapshot load is refused
    /// then, as Firecracker refuses it.
    var configuresBoot: Bool {
        bootSource != nil || machine != MachineConfig.default || !drives.isEmpty || !networks.isEmpty
            || entropy != nil || vsock != nil || balloon != nil
    }

    /// The resources a snapshot kept (its `GET /vm/config` document), taken as they were: their
    /// files were checked when they were first put.
    mutating func restore(from document: FullVmConfiguration) {
        bootSource = document.bootSource
        machine = document.machineConfig ?? machine
        drives = document.drives ?? []
        networks = document.networkInterfaces ?? []
        entropy = document.entropy
        vsock = document.vsock
        balloon = document.balloon
    }
}
