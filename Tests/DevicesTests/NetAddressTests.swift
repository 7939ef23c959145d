#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import Devices

@Suite struct NetAddressTests {
    @Test func macAddressesParseAndPrint() throws {
        let mac = try MACAddress("52:54:00:12:34:56")
        #expect(mac.bytes == [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        #expect(mac.description == "52:54:00:12:34:56")
        #expect(MACAddress(parsing: "02:AB:cd:0F:00:01")?.description == "02:ab:cd:0f:00:01")
        #expect(MACAddress(parsing: "52:54:00:12:34:56") == mac)
    }

    @Test(arguments: ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "52-54-00-12-34-56", "52:54:00:12:34:5",
                      "52:54:00:12:34:567", "52:54:00:12:34:zz", "52::00:12:34:56", "52:54:00:12:34:56:",
                      " 52:54:00:12:34:56", "+2:54:00:12:34:56"])
    func malformedMACAddressesAreRefused(_ text: String) {
        #expect(MACAddress(parsing: text) == nil)
        #expect(throws: NetConfigurationError.self) { try MACAddress(text) }
    }

    @Test func multicastBroadcastAndZeroMACAddressesAreRefusedWithAReason() {
        for text in ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01"] {
            #expect(MACAddress(parsing: text) == nil)
            do {
                _ = try MACAddress(text)
                Issue.record("\(text) was accepted")
            } catch {
                #expect(error.description.contains("multicast"))
                #expect(!error.description.contains("\n"))
            }
        }
        #expect(throws: NetConfigurationError.self) { try MACAddress("00:00:00:00:00:00") }
        #expect(throws: NetConfigurationError.self) { try MACAddress(bytes: [2, 0, 0, 0, 0]) }
    }

    @Test func randomMACAddressesAreLocallyAdministeredUnicast() {
        var seen = Set<MACAddress>()
        for _ in 0 ..< 50 {
            let mac = MACAddress.random()
            #expect(mac.bytes.count == 6)
            #expect(mac.bytes[0] == 0x02)
            #expect(MACAddress(parsing: mac.description) == mac)
            seen.insert(mac)
        }
        #expect(seen.count > 45)
    }

    @Test func ipv4AddressesParse() throws {
        let address = try IPv4Address("192.0.2.1")
        #expect(address.value == 0xC000_0201)
        #expect(address.octets == [192, 0, 2, 1])
        #expect(address.description == "192.0.2.1")
        #expect(IPv4Address(parsing: "0.0.0.0")?.value == 0)
        #expect(IPv4Address(parsing: "255.255.255.255")?.value == UInt32.max)
        #expect(IPv4Address(10, 1, 2, 3).description == "10.1.2.3")
    }

    @Test(arguments: ["", "192.0.2", "192.0.2.1.5", "192.0.2.256", "192.0.02.1", "192.0.2.-1", "192.0..1",
                      "a.b.c.d", "192.0.2.1 ", "+1.2.3.4", "1234.0.0.1", "0x7f.0.0.1"])
    func malformedIPv4AddressesAreRefused(_ text: String) {
        #expect(IPv4Address(parsing: text) == nil)
        #expect(throws: TapError.invalidIPv4Address(text)) { try IPv4Address(text) }
        #expect(TapError.invalidIPv4Address(text).description.hasPrefix("invalid IPv4 address '\(text)'"))
    }

    @Test func netOptionsParse() throws {
        #expect(try NetConfiguration(option: "tap=tap0") == NetConfiguration(tap: .existing("tap0")))
        #expect(try NetConfiguration(option: "tap=tap1,mac=52:54:00:00:00:01")
            == NetConfiguration(tap: .existing("tap1"), mac: MACAddress("52:54:00:00:00:01")))
        #expect(try NetConfiguration(option: "mac=52:54:00:00:00:01,tap=tap1").tap == .existing("tap1"))
        #expect(try NetConfiguration(tunnet: "192.0.2.1")
            == NetConfiguration(tap: .create(hostAddress: IPv4Address(192, 0, 2, 1))))
        #expect(throws: TapError.invalidIPv4Address("192.0.2")) { try NetConfiguration(tunnet: "192.0.2") }
        for bad in ["", "tap", "tap=", "mac=52:54:00:00:00:01", "tap=a,tap=b", "tap=a,mac=01:00:00:00:00:00",
                    "tap=a,colour=blue", "tap=a,"] {
            #expect(throws: NetConfigurationError.self, "\(bad)") { try NetConfiguration(option: bad) }
        }
    }

    @Test func tapErrorsAreOneLineAndSayWhatToFix() {
        let create = TapError.failed("cannot create TAP device lguest0", errno: EPERM)
        #expect(create.description == "cannot create TAP device lguest0: operation not permitted (needs CAP_NET_ADMIN)")
        #expect(TapError.noSuchDevice("tap9").description.hasPrefix("no TAP device named tap9"))
        #expect(TapError.busy("tap0").description.contains("busy"))
        #expect(TapError.tunUnavailable(errno: ENOENT).description.contains("modprobe tun"))
        let all: [TapError] = [create, .noSuchDevice("x"), .notATap("lo"), .busy("x"), .alreadyExists("x"),
                               .tunUnavailable(errno: EACCES), .invalidName("a/b", reason: "r"),
                               .invalidIPv4Address("1.2")]
        for error in all { #expect(!error.description.contains("\n")) }
    }

    @Test func tapNamesAreCheckedBeforeAnyIoctl() {
        #expect(throws: TapError.self) { try Tap(attachingTo: "") }
        #expect(throws: TapError.self) { try Tap(attachingTo: "a-name-that-is-far-too-long") }
        #expect(throws: TapError.self) { try Tap(attachingTo: "a/b") }
        #expect(throws: TapError.self) { try Tap(attachingTo: "a b") }
        #expect(throws: TapError.self) { try Tap(attachingTo: "tap%d") }
        #expect(throws: TapError.self) { try Tap(creating: "..") }
    }

    @Test func offloadSetsAreMadeConsistentTheWayTheKernelWantsThem() {
        #expect(TapOffloads.all.consistent == .all)
        #expect(TapOffloads([.tso4, .tso6, .tsoECN]).consistent == [])
        #expect(TapOffloads([.checksum, .tsoECN]).consistent == [.checksum])
        #expect(TapOffloads([.checksum, .tso6, .tsoECN]).consistent == [.checksum, .tso6, .tsoECN])
        #expect(TapOffloads.all.rawValue == 0x0F)
    }
}
