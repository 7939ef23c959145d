import Api
import FuzzSupport
import LguestKit

/// Firecracker's API as a client can drive it: a sequence of requests (method, path, body)
/// through the router, the strict JSON decoding and the controller's rules, on a controller of
/// its own per input. Each request is a byte for the method, a path up to a newline, and a
/// body up to a NUL. A request that would start a VM (`InstanceStart` once a kernel is set) is
/// skipped: booting is the kernel harness's business, and a started VM would outlive the input.
enum ApiHarness {
    static let methods = ["GET", "PUT", "PATCH", "DELETE", "POST", "get", ""]

    static func run(_ input: inout FuzzInput) {
        let controller = Controller(id: "fuzz", sandbox: false, console: ConsoleConnection(output: ConsoleHandler { _ in }))
        for _ in 0..<8 where !input.isAtEnd {
            let method = methods[Int(input.byte()) % methods.count]
            let path = "/" + String(decoding: input.bytes(until: 0x0A), as: UTF8.self)
            let body = input.bytes(until: 0x00)
            if controller.currentResources.bootSource != nil, String(decoding: body, as: UTF8.self).contains("InstanceStart") { continue }
            let response = controller.handle(ApiRequest(method: method, path: path, body: body))
            precondition([200, 204, 400].contains(response.status), "status \(response.status) for \(method) \(path)")
            if response.status == 400 { precondition(response.body.starts(with: Array(#"{"fault_message":""#.utf8))) }
        }
    }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        func request(_ method: Int, _ path: String, _ body: String) -> [UInt8] {
            [UInt8(method)] + Array(path.utf8) + [0x0A] + Array(body.utf8) + [0]
        }
        return [
            ("get-root", request(0, "", "")),
            ("machine-config", request(1, "machine-config", #"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#)
                + request(2, "machine-config", #"{"mem_size_mib": 512}"#) + request(0, "machine-config", "")),
            ("drive", request(1, "drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/dev/null", "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 100}}}"#)),
            ("network", request(1, "network-interfaces/eth0", #"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"}"#)),
            ("boot-source", request(1, "boot-source", #"{"kernel_image_path": "/dev/null", "boot_args": "console=ttyS0"}"#)),
            ("actions", request(1, "actions", #"{"action_type": "FlushMetrics"}"#) + request(2, "vm", #"{"state": "Paused"}"#)),
            ("logger", request(1, "logger", #"{"level": "Debug", "show_level": true}"#)),
            ("vsock", request(1, "vsock/v0", #"{"guest_cid": 3, "uds_path": "/tmp/x"}"#)),
            ("config", request(0, "vm/config", "")),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(ApiHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    ApiHarness.run(&input)
    return 0
}

@_cdecl("fuzz_api_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
