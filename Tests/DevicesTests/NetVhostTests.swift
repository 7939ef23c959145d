import Foundation
import Testing
@testable import Devices
#if canImport(Glibc)
import Glibc
#endif

/// `--net tap=NAME,vhost=on`: what the option accepts and refuses, and how a host without
/// `/dev/vhost-net` is told. The kernel's data path itself is proven in the lab
/// (`NetLabTests.vhostDataPath`), where the lab host has the module.
@Suite struct NetVhostTests {
    @Test func vhostOptionParses() throws {
        #expect(try NetConfiguration(option: "tap=tap0,vhost=on") == NetConfiguration(tap: .existing("tap0"), vhost: true))
        #expect(try NetConfiguration(option: "tap=tap0,vhost=off").vhost == false)
        #expect(try NetConfiguration(option: "tap=tap0").vhost == false)
        #expect(throws: NetConfigurationError("invalid network option 'tap=a,vhost=yes': vhost= takes on or off")) {
            try NetConfiguration(option: "tap=a,vhost=yes")
        }
        #expect(throws: NetConfigurationError("invalid network option 'tap=a,vhost=on,vhost=off': vhost= given twice")) {
            try NetConfiguration(option: "tap=a,vhost=on,vhost=off")
        }
        // Frames never pass through lguest: there is nothing to rate limit.
        for limited in ["tap=a,vhost=on,rx-bw=1M/100", "tap=a,tx-ops=10/100,vhost=on"] {
            #expect(throws: NetConfigurationError.self, "\(limited)") { try NetConfiguration(option: limited) }
        }
        #expect(try NetConfiguration(option: "tap=a,vhost=off,rx-bw=1M/100").receiveLimit != .unlimited)
    }

    @Test func vhostErrorsAreOneLineAndSayWhatToFix() {
        #expect(VhostError.unavailable(errno: ENOENT).description
            == "cannot open /dev/vhost-net: no such file or directory (load the vhost_net module: modprobe vhost_net)")
        #expect(VhostError.unavailable(errno: EACCES).description.contains("read and write access"))
        #expect(VhostError.failed("VHOST_SET_MEM_TABLE", errno: EINVAL).description == "vhost-net VHOST_SET_MEM_TABLE: invalid argument")
        for error in [VhostError.unavailable(errno: EIO), .failed("x", errno: EPERM), .badLayout("queue 0 is not enabled")] {
            #expect(!error.description.contains("\n"))
        }
    }

    @Test("opening vhost-net: a host without it gets the one-line error; a host with it, a device that offers what the kernel does")
    func openingVhost() throws {
        guard access("/dev/vhost-net", F_OK) == 0 else {
            #expect(throws: VhostError.unavailable(errno: ENOENT)) { try VhostNet(queues: 2) }
            return
        }
        let vhost = try VhostNet(queues: 2)
        #expect(vhost.calls.count == 2)
        #expect(vhost.features & VhostNet.vhostOnlyFeatures == 0)
        let device = NetDevice(endpoint: try NetSocketEndpoint(), vhost: vhost)
        #expect(device.vhost === vhost)
        #expect((device.offeredFeatures & VirtioNetFeature.mergeableRxBuffers != 0)
            == (vhost.features & VirtioNetFeature.mergeableRxBuffers != 0))
    }
}
