import Api
import Foundation
import LguestKit
import TestSupport
import Testing

/// Firecracker's balloon endpoints through the controller: what is allowed before boot, the
/// documents they answer with, and the refusals in Firecracker's words.
struct BalloonRouterTests {
    let controller = Controller(id: "balloon-test", sandbox: false,
                                console: ConsoleConnection(output: ConsoleHandler { _ in }))

    func send(_ method: String, _ path: String, _ body: String = "") -> (Int, String) {
        let response = controller.handle(ApiRequest(method: method, path: path, body: Array(body.utf8)))
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    func fault(_ method: String, _ path: String, _ body: String = "") -> String? {
        let (status, text) = send(method, path, body)
        guard status == 400, let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let message = object["fault_message"] as? String else { return nil }
        return message
    }

    static let before = "The requested operation is not supported before starting the microVM."

    @Test func putBeforeBootThenGetAndTheConfigurationDocument() throws {
        #expect(fault("GET", "/balloon") == "Balloon config error: No balloon device found.")
        #expect(send("PUT", "/balloon", #"{"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 2}"#) == (204, ""))
        #expect(send("GET", "/balloon") == (200, #"{"amount_mib":64,"deflate_on_oom":true,"free_page_hinting":false,"free_page_reporting":false,"stats_polling_interval_s":2}"#))
        // A second PUT replaces the first.
        #expect(send("PUT", "/balloon", #"{"amount_mib": 0, "deflate_on_oom": false, "free_page_reporting": true, "free_page_hinting": false}"#) == (204, ""))
        let config = try #require(try JSONSerialization.jsonObject(with: Data(send("GET", "/vm/config").1.utf8)) as? [String: Any])
        let balloon = try #require(config["balloon"] as? [String: Any])
        #expect(balloon as NSDictionary == ["amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 0,
                                            "free_page_hinting": false, "free_page_reporting": true] as NSDictionary)
        #expect(controller.currentResources.balloon?.free_page_reporting == true)
    }

    @Test func theDeviceConfigurationTheLauncherGets() throws {
        let kernel = RouterTests.kernel
        #expect(send("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)"}"#) == (204, ""))
        #expect(send("PUT", "/balloon", #"{"amount_mib": 32, "deflate_on_oom": true, "stats_polling_interval_s": 5, "free_page_reporting": true}"#) == (204, ""))
        let configuration = try controller.currentResources.configuration(sandbox: false)
        #expect(configuration.balloon == BalloonConfiguration(amountMiB: 32, deflateOnOOM: true, statisticsIntervalSeconds: 5,
                                                              freePageReporting: true))
    }

    @Test func refusalsBeforeBoot() {
        #expect(fault("PUT", "/balloon", #"{"amount_mib": 64}"#)?.contains("missing field `deflate_on_oom`") == true)
        #expect(fault("PUT", "/balloon", #"{"amount_mib": 64, "deflate_on_oom": false, "size": 1}"#)?.contains("unknown field `size`") == true)
        #expect(fault("PUT", "/balloon", #"{"amount_mib": -1, "deflate_on_oom": false}"#)?.hasPrefix("An error occurred when deserializing") == true)
        #expect(fault("PUT", "/balloon", #"{"amount_mib": 1, "deflate_on_oom": false, "stats_polling_interval_s": 65536}"#)?
                .hasPrefix("An error occurred when deserializing") == true)
        // The default machine has 128 MiB.
        #expect(fault("PUT", "/balloon", #"{"amount_mib": 129, "deflate_on_oom": false}"#) == "Balloon config error: Amount of pages requested is too large.")
        #expect(fault("PUT", "/balloon", #"{"amount_mib": 1, "deflate_on_oom": false, "free_page_hinting": true}"#)?.contains("hinting") == true)
        #expect(fault("PUT", "/balloon/extra", #"{"amount_mib": 1, "deflate_on_oom": false}"#) == "Invalid request method and/or path: PUT /balloon/extra.")
        #expect(fault("PATCH", "/balloon", #"{"amount_mib": 1}"#) == Self.before)
        #expect(fault("PATCH", "/balloon", #"{"amount_mib": 1, "deflate_on_oom": true}"#)?.contains("unknown field `deflate_on_oom`") == true)
        #expect(fault("GET", "/balloon/statistics") == Self.before)
        #expect(fault("PATCH", "/balloon/statistics", #"{"stats_polling_interval_s": 1}"#) == Self.before)
        #expect(fault("PATCH", "/balloon/hinting/start", "{}") == Self.before)
        #expect(fault("GET", "/balloon/hinting/status") == Self.before)
        #expect(fault("GET", "/balloon/other") == "Invalid request method and/or path: GET /balloon/other.")
        #expect(fault("DELETE", "/balloon", "{}") == "Invalid request method and/or path: DELETE /balloon.")
        // Nothing was stored by any of them.
        #expect(controller.currentResources.balloon == nil)
        // A machine too small for the balloon already put.
        #expect(send("PUT", "/balloon", #"{"amount_mib": 100, "deflate_on_oom": false}"#) == (204, ""))
        #expect(fault("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 64}"#)?.contains("balloon") == true)
        #expect(controller.currentResources.machine.mem_size_mib == 128)
    }

    @Test func theConfigurationFileTakesABalloon() throws {
        try controller.apply(configFile: Array(#"{"boot-source": {"kernel_image_path": "\#(RouterTests.kernel)"}, "drives": [], "balloon": {"amount_mib": 8, "deflate_on_oom": false, "stats_polling_interval_s": 1}}"#.utf8))
        #expect(controller.currentResources.balloon?.amount_mib == 8)
        #expect(throws: ApiFailure.self) {
            try controller.apply(configFile: Array(#"{"boot-source": {"kernel_image_path": "\#(RouterTests.kernel)"}, "drives": [], "balloon": {"amount_mib": 8, "deflate_on_oom": false, "nope": 1}}"#.utf8))
        }
    }
}

/// The balloon on a running VM through a real client: the target changed and read back, the
/// statistics document, and the refusals that only a started VM can give.
@Suite(.enabled(if: kvmUsable && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs /dev/kvm and curl"))
struct BalloonLiveApiTests {
    @Test func targetAndStatisticsOnARunningVM() throws {
        let kernel = try Tool.temporaryFile(printsForever, name: "forever.elf")
        let lguest = try ApiProcess()
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#).status == 204)
        #expect(try lguest.request("PUT", "/balloon", #"{"amount_mib": 16, "deflate_on_oom": true, "stats_polling_interval_s": 1}"#).status == 204)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        #expect(wait { lguest.consoleText.count > 100 }, "the guest never ran: \(lguest.consoleText.prefix(300))")

        #expect(try lguest.request("PATCH", "/balloon", #"{"amount_mib": 32}"#).status == 204)
        #expect(try lguest.request("GET", "/balloon").body.contains(#""amount_mib":32"#))
        // The tiny guest has no balloon driver: nothing inflated, no statistics from it.
        let stats = try lguest.request("GET", "/balloon/statistics")
        #expect(stats.status == 200 && stats.body == #"{"actual_mib":0,"actual_pages":0,"target_mib":32,"target_pages":8192}"#, "\(stats)")
        let big = try lguest.request("PATCH", "/balloon", #"{"amount_mib": 129}"#)
        #expect(big.body == #"{"fault_message":"Balloon config error: Amount of pages requested is too large."}"#, "\(big)")
        #expect(try lguest.request("PATCH", "/balloon/statistics", #"{"stats_polling_interval_s": 3}"#).status == 204)
        #expect(try lguest.request("GET", "/balloon").body.contains(#""stats_polling_interval_s":3"#))
        let off = try lguest.request("PATCH", "/balloon/statistics", #"{"stats_polling_interval_s": 0}"#)
        #expect(off.body == #"{"fault_message":"Balloon config error: Cannot enable/disable the statistics after boot."}"#, "\(off)")
        let late = try lguest.request("PUT", "/balloon", #"{"amount_mib": 1, "deflate_on_oom": false}"#)
        #expect(late.body == #"{"fault_message":"The requested operation is not supported after starting the microVM."}"#)
        let hinting = try lguest.request("GET", "/balloon/hinting/status")
        #expect(hinting.status == 400 && hinting.body.contains("hinting"), "\(hinting)")
        #expect(lguest.process.isRunning)
    }

    @Test func statisticsThatWereNotEnabledAreRefused() throws {
        let kernel = try Tool.temporaryFile(printsForever, name: "forever.elf")
        let lguest = try ApiProcess()
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#).status == 204)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        let none = try lguest.request("PATCH", "/balloon", #"{"amount_mib": 1}"#)
        #expect(none.body == #"{"fault_message":"Balloon config error: No balloon device found."}"#, "\(none)")
        let second = try ApiProcess()
        #expect(try second.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#).status == 204)
        #expect(try second.request("PUT", "/balloon", #"{"amount_mib": 0, "deflate_on_oom": false}"#).status == 204)
        #expect(try second.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        let stats = try second.request("GET", "/balloon/statistics")
        #expect(stats.body == #"{"fault_message":"Balloon config error: Statistics for the balloon device are not enabled"}"#, "\(stats)")
        let on = try second.request("PATCH", "/balloon/statistics", #"{"stats_polling_interval_s": 1}"#)
        #expect(on.body == #"{"fault_message":"Balloon config error: Cannot enable/disable the statistics after boot."}"#, "\(on)")
    }
}
