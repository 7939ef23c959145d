import Foundation
import HostSystem
import TestSupport
import Testing

/// `PUT /vsock` through a real client: the socket is bound at once (a host program can connect
/// before the guest starts), a second PUT replaces the first, and bad settings are refused with
/// Firecracker's 400 and a fault message, the server serving on.
@Suite(.enabled(if: kvmUsable && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs /dev/kvm and curl"))
struct VsockApiTests {
    @Test func putVsockBindsAtOnceAndAppearsInTheConfiguration() throws {
        let kernel = try Tool.temporaryFile(printsForever, name: "forever.elf")
        let directory = try Tool.temporaryDirectory()
        let lguest = try ApiProcess()
        let first = directory + "/first.sock", second = directory + "/v.sock"
        #expect(try lguest.request("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "\#(first)"}"#).status == 204)
        #expect(UnixSocket.isListening(first), "PUT /vsock binds its socket before the guest starts")
        // Firecracker's deprecated vsock_id and a path segment are taken: Deprecation: true.
        let again = try lguest.request("PUT", "/vsock/vsock0", #"{"vsock_id": "vsock0", "guest_cid": 52, "uds_path": "\#(second)"}"#)
        #expect(again.status == 204 && again.headers.contains("Deprecation: true"), "\(again)")
        #expect(!FileManager.default.fileExists(atPath: first), "the replaced socket is removed")
        #expect(UnixSocket.isListening(second))

        let low = try lguest.request("PUT", "/vsock", #"{"guest_cid": 2, "uds_path": "\#(second)x"}"#)
        #expect(low.status == 400 && low.body.contains("CID 2"), "\(low)")
        let unknown = try lguest.request("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "\#(second)", "cid": 4}"#)
        #expect(unknown.status == 400 && unknown.body.contains("unknown field `cid`"), "\(unknown)")
        let nowhere = try lguest.request("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "/no-such-dir-xyz/v.sock"}"#)
        #expect(nowhere.status == 400 && nowhere.body.contains("directory does not exist"), "\(nowhere)")

        let config = try lguest.request("GET", "/vm/config").body
        #expect(config.contains(#""vsock":{"guest_cid":52,"uds_path":"\#(second)"}"#), "\(config)")
        #expect(try lguest.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#).status == 204)
        #expect(try lguest.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        #expect(wait { lguest.consoleText.count > 100 }, "the guest never ran: \(lguest.consoleText.prefix(300))")
        #expect(UnixSocket.isListening(second), "the device took over the socket PUT /vsock bound")
        let late = try lguest.request("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "\#(directory)/late.sock"}"#)
        #expect(late.body == #"{"fault_message":"The requested operation is not supported after starting the microVM."}"#)
        // A host program connecting while no driver runs in this tiny guest is closed, not hung.
        if case let .success(socket) = UnixSocket.connect(to: second) {
            let line = Array("CONNECT 52\n".utf8)
            _ = line.withUnsafeBytes { UnixSocket.send(socket.raw, $0) }
            var byte: UInt8 = 0
            var p = pollfd(fd: socket.raw, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 5000)
            #expect(read(socket.raw, &byte, 1) == 0, "the socket should close: nobody in the guest can answer")
        } else {
            Issue.record("cannot connect to \(second)")
        }
    }

    @Test func theConfigurationFileTakesAVsock() throws {
        let kernel = try Tool.temporaryFile(printsForever, name: "forever.elf")
        let directory = try Tool.temporaryDirectory()
        let file = directory + "/config.json"
        try Data(#"{"boot-source": {"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}, "drives": [], "vsock": {"guest_cid": 3, "uds_path": "\#(directory)/v.sock"}}"#.utf8)
            .write(to: URL(fileURLWithPath: file))
        let lguest = try ApiProcess(["--config-file", file])
        #expect(wait { lguest.consoleText.count > 100 }, "the guest never ran: \(lguest.consoleText.prefix(300))")
        #expect(UnixSocket.isListening(directory + "/v.sock"))
        #expect(try lguest.request("GET", "/vm/config").body.contains(#""vsock":{"guest_cid":3,"#))
    }
}
