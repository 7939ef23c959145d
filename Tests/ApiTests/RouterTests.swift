import Api
import Foundation
import LguestKit
import Testing

/// Each request and refusal of Firecracker's API, through the controller that the HTTP server
/// hands requests to (the live tests, through a real client, are in LiveApiTests).
struct RouterTests {
    let controller = Controller(id: "router-test", sandbox: false,
                                console: ConsoleConnection(output: ConsoleHandler { _ in }))

    func send(_ method: String, _ path: String, _ body: String = "") -> (Int, String) {
        let response = controller.handle(ApiRequest(method: method, path: path, body: Array(body.utf8)))
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    func fault(_ method: String, _ path: String, _ body: String = "") -> String? {
        let (status, text) = send(method, path, body)
        guard status == 400, let data = text.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              object.count == 1, let message = object["fault_message"] as? String else { return nil }
        return message
    }

    static let kernel: String = {
        let path = NSTemporaryDirectory() + "router-kernel-\(getpid())"
        FileManager.default.createFile(atPath: path, contents: Data([0x7F]))
        return path
    }()

    @Test func instanceInformationAndVersion() {
        let (status, body) = send("GET", "/")
        #expect(status == 200)
        #expect(body == #"{"app_name":"Firecracker","id":"router-test","state":"Not started","vmm_version":"1.17.0-dev"}"#)
        #expect(send("GET", "/version") == (200, #"{"firecracker_version":"1.17.0-dev"}"#))
    }

    @Test func machineConfigDefaultsAndRoundTrip() {
        #expect(send("GET", "/machine-config") == (200, #"{"huge_pages":"None","mem_size_mib":128,"smt":false,"track_dirty_pages":false,"vcpu_count":1}"#))
        #expect(send("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 256}"#) == (204, ""))
        #expect(send("GET", "/machine-config").1.contains(#""mem_size_mib":256"#))
        #expect(send("PATCH", "/machine-config", #"{"vcpu_count": 4}"#) == (204, ""))
        #expect(send("GET", "/machine-config").1.contains(#""vcpu_count":4"#))
    }

    @Test func bodiesThatAreNotJSONOrHaveWrongTypesOrUnknownFields() {
        #expect(fault("PUT", "/machine-config", "not json")?.hasPrefix("An error occurred when deserializing the json body of a request: ") == true)
        #expect(fault("PUT", "/machine-config", #"{"vcpu_count": "two", "mem_size_mib": 128}"#)
                == "An error occurred when deserializing the json body of a request: invalid type for `vcpu_count`: expected a number.")
        #expect(fault("PUT", "/machine-config", #"{"mem_size_mib": 128}"#)
                == "An error occurred when deserializing the json body of a request: missing field `vcpu_count`.")
        #expect(fault("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128, "foo": 1}"#)?
                .contains("unknown field `foo`, expected one of `vcpu_count`") == true)
        #expect(fault("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/dev/null", "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "nope": 2}}}"#)?
                .contains("unknown field `nope`") == true)
        #expect(fault("PUT", "/machine-config", "[1, 2]")?.contains("invalid type") == true)
    }

    @Test func genericRefusals() {
        #expect(fault("POST", "/actions", #"{"action_type": "InstanceStart"}"#) == "Invalid request method and/or path: POST /actions.")
        #expect(fault("GET", "/nothing-here") == "Invalid request method and/or path: GET /nothing-here.")
        #expect(fault("GET", "/", "{}") == "GET request cannot have a body.")
        #expect(fault("PUT", "/boot-source") == "Empty PUT request.")
        #expect(fault("PATCH", "/vm") == "Empty PATCH request.")
        #expect(fault("PUT", "/drives/", #"{"drive_id": "", "is_root_device": false}"#) == "The ID cannot be empty.")
        #expect(fault("PUT", "/drives/bad-id", #"{"drive_id": "bad-id", "is_root_device": false}"#)
                == "API Resource IDs can only contain alphanumeric characters and underscores.")
        #expect(fault("PUT", "/drives/a", #"{"drive_id": "b", "is_root_device": false, "path_on_host": "/dev/null"}"#)
                == "The id from the path does not match the id from the body!")
        #expect(fault("PUT", "/network-interfaces/a", #"{"iface_id": "b", "host_dev_name": "tap0"}"#)
                == "The id from the path [a] does not match the id from the body [b]!")
        #expect(fault("PUT", "/vsock", #"{"guest_cid": 2, "uds_path": "/tmp/v.sock"}"#)?.contains("CID 2 is out of range") == true)
        #expect(fault("PUT", "/vsock", #"{"guest_cid": 3}"#)?.contains("missing field `uds_path`") == true)
        #expect(fault("PUT", "/mmds", #"{"a": "b"}"#)?.contains("not supported by lguest yet") == true)
        #expect(fault("PUT", "/snapshot/create", #"{"snapshot_path": "a", "mem_file_path": "b"}"#)
                == "The requested operation is not supported before starting the microVM.")
        #expect(fault("PUT", "/snapshot/create", #"{"snapshot_path": "a"}"#)?.contains("missing field `mem_file_path`") == true)
    }

    @Test func preBootRules() {
        #expect(fault("PATCH", "/vm", #"{"state": "Paused"}"#) == "The requested operation is not supported before starting the microVM.")
        #expect(fault("PATCH", "/vm", #"{"state": "Sleeping"}"#)?.contains("unknown variant `Sleeping`") == true)
        #expect(fault("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#) == "The requested operation is not supported before starting the microVM.")
        #expect(fault("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#) == "The requested operation is not supported before starting the microVM.")
        #expect(fault("PUT", "/actions", #"{"action_type": "Reboot"}"#)?.contains("unknown variant `Reboot`") == true)
        #expect(fault("PUT", "/actions", #"{"action_type": "InstanceStart"}"#) == "Cannot start microvm without kernel configuration.")
        #expect(fault("PATCH", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": "/dev/null"}"#)
                == "The requested operation is not supported before starting the microVM.")
    }

    @Test func filesAreOpenedWhenPut() {
        #expect(fault("PUT", "/boot-source", #"{"kernel_image_path": "/no/such/kernel"}"#)
                == "The kernel file cannot be opened: No such file or directory (os error 2)")
        #expect(fault("PUT", "/boot-source", #"{"kernel_image_path": "\#(Self.kernel)", "initrd_path": "/no/such/initrd"}"#)
                == "The initrd file cannot be opened: No such file or directory (os error 2)")
        #expect(send("PUT", "/boot-source", #"{"kernel_image_path": "\#(Self.kernel)", "boot_args": "console=ttyS0"}"#) == (204, ""))
        #expect(fault("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/no/such/disk"}"#)
                == "Unable to create the block device: /no/such/disk: No such file or directory (os error 2)")
    }

    @Test func oneRootDriveAndTheKernelCommandLine() throws {
        #expect(send("PUT", "/boot-source", #"{"kernel_image_path": "\#(Self.kernel)"}"#) == (204, ""))
        #expect(send("PUT", "/drives/scratch", #"{"drive_id": "scratch", "is_root_device": false, "path_on_host": "/dev/null"}"#) == (204, ""))
        #expect(send("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "is_read_only": true, "path_on_host": "/dev/zero"}"#) == (204, ""))
        #expect(fault("PUT", "/drives/other", #"{"drive_id": "other", "is_root_device": true, "path_on_host": "/dev/null"}"#) == "A root block device already exists!")
        let configuration = try controller.currentResources.configuration(sandbox: false)
        #expect(configuration.commandLine == Resources.defaultBootArgs + " root=/dev/vda ro")
        #expect(configuration.disks.map(\.path) == ["/dev/zero", "/dev/null"], "the root drive is the guest's first disk")
        #expect(configuration.memoryMiB == 128 && configuration.cpus == 1, "memory \(configuration.memoryMiB) cpus \(configuration.cpus)")
        #expect(send("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "partuuid": "0eaa91a0-01", "path_on_host": "/dev/zero"}"#) == (204, ""))
        #expect(try controller.currentResources.configuration(sandbox: false).commandLine.hasSuffix(" root=PARTUUID=0eaa91a0-01 rw"))
    }

    @Test func networkInterfaces() {
        #expect(send("PUT", "/network-interfaces/eth0", #"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02"}"#) == (204, ""))
        #expect(fault("PUT", "/network-interfaces/eth1", #"{"iface_id": "eth1", "host_dev_name": "tap1", "guest_mac": "06:00:ac:10:00:02"}"#)
                == "The MAC address is already in use: 06:00:ac:10:00:02")
        #expect(fault("PUT", "/network-interfaces/eth1", #"{"iface_id": "eth1", "host_dev_name": "tap1", "guest_mac": "zz"}"#)?
                .hasPrefix("Could not create the network device: ") == true)
        #expect(send("GET", "/vm/config").1.contains(#""host_dev_name":"tap0""#))
    }

    /// The document Firecracker's own test (`test_get_full_config`) expects, for the resources
    /// lguest has: every section present, `null` where nothing was configured, defaults filled in.
    @Test func vmConfigIsFirecrackersWholeDocument() throws {
        #expect(send("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 256}"#) == (204, ""))
        #expect(send("PUT", "/boot-source", #"{"kernel_image_path": "\#(Self.kernel)", "boot_args": ""}"#) == (204, ""))
        #expect(send("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "is_read_only": true, "path_on_host": "/dev/null"}"#) == (204, ""))
        #expect(send("PUT", "/network-interfaces/1", #"{"iface_id": "1", "host_dev_name": "tap1", "guest_mac": "06:00:00:00:00:01", "tx_rate_limiter": {"bandwidth": {"size": 1000000, "refill_time": 100}}}"#) == (204, ""))
        let (status, body) = send("GET", "/vm/config")
        #expect(status == 200)
        let actual = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? NSDictionary
        let expected: NSDictionary = [
            "machine-config": ["vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": false, "huge_pages": "None"],
            "cpu-config": NSNull(),
            "boot-source": ["boot_args": "", "kernel_image_path": Self.kernel, "initrd_path": NSNull()],
            "drives": [["drive_id": "rootfs", "partuuid": NSNull(), "is_root_device": true, "cache_type": "Unsafe",
                        "is_read_only": true, "path_on_host": "/dev/null", "rate_limiter": NSNull(), "io_engine": "Sync", "socket": NSNull()]],
            "pmem": [], "balloon": NSNull(), "vsock": NSNull(), "memory-hotplug": NSNull(),
            "network-interfaces": [["iface_id": "1", "host_dev_name": "tap1", "guest_mac": "06:00:00:00:00:01", "mtu": NSNull(),
                                    "rx_rate_limiter": NSNull(),
                                    "tx_rate_limiter": ["bandwidth": ["size": 1000000, "refill_time": 100, "one_time_burst": NSNull()], "ops": NSNull()]]],
            "logger": NSNull(), "metrics": NSNull(), "mmds-config": NSNull(), "entropy": NSNull(),
        ]
        #expect(actual == expected, "\(body)")
    }

    @Test func rateLimitersReachTheDevicesConfiguration() throws {
        #expect(send("PUT", "/boot-source", #"{"kernel_image_path": "\#(Self.kernel)"}"#) == (204, ""))
        #expect(send("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/dev/null", "rate_limiter": {"bandwidth": {"size": 10485760, "refill_time": 1000, "one_time_burst": 4096}, "ops": {"size": 100, "refill_time": 1000}}}"#) == (204, ""))
        #expect(send("PUT", "/network-interfaces/eth0", #"{"iface_id": "eth0", "host_dev_name": "tap0", "rx_rate_limiter": {"bandwidth": {"size": 2500000, "refill_time": 1000}}}"#) == (204, ""))
        let configuration = try controller.currentResources.configuration(sandbox: false)
        let disk = try #require(configuration.disks.first)
        #expect(disk.rateLimit.bandwidth == .init(size: 10485760, refillTime: 1000, oneTimeBurst: 4096))
        #expect(disk.rateLimit.operations == .init(size: 100, refillTime: 1000))
        let network = try #require(configuration.networks.first)
        #expect(network.receiveLimit.bandwidth == .init(size: 2500000, refillTime: 1000))
        #expect(network.transmitLimit == .unlimited)
        #expect(fault("PUT", "/entropy", #"{"rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#)?.contains("not supported") == true)
    }

    @Test func metricsOnceAndLoggerLevels() {
        #expect(send("PUT", "/metrics", #"{"metrics_path": "/tmp/m"}"#) == (204, ""))
        #expect(fault("PUT", "/metrics", #"{"metrics_path": "/tmp/m"}"#) == "Reinitialization of metrics not allowed.")
        #expect(send("PUT", "/logger", #"{"level": "Warning"}"#) == (204, ""))
        #expect(fault("PUT", "/logger", #"{"level": "Loud"}"#)?.contains("unknown variant `Loud`") == true)
    }

    @Test func machineConfigRefusals() {
        #expect(fault("PUT", "/machine-config", #"{"vcpu_count": 0, "mem_size_mib": 128}"#)?.hasPrefix("The vCPU number is invalid!") == true)
        #expect(fault("PUT", "/machine-config", #"{"vcpu_count": 33, "mem_size_mib": 128}"#)?.hasPrefix("The vCPU number is invalid!") == true)
        #expect(fault("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 0}"#)
                == "The memory size (MiB) is either 0, or not a multiple of the configured page size.")
        #expect(fault("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "1G"}"#)?.contains("unknown variant `1G`") == true)
        #expect(fault("PATCH", "/machine-config", "{}") == "Empty PATCH request.")
        let response = controller.handle(ApiRequest(method: "PUT", path: "/machine-config", body: Array(#"{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2"}"#.utf8)))
        #expect(response.status == 400 && response.deprecated, "cpu_template is deprecated, and lguest has no templates")
    }
}
