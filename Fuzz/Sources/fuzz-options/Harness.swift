import Devices
import FuzzSupport
import LguestCommands

/// The option values the command line hands on, each parser on its own (faster than going
/// through the argument parser every time). The first byte picks the parser; the rest is its
/// text (or, for `MACAddress(bytes:)`, its bytes).
enum OptionsHarness {
    enum Parser: UInt8, CaseIterable {
        case net          // --net tap=NAME[,mac=MAC]
        case mac          // mac=
        case tunnet       // --tunnet=IP
        case disk         // --disk PATH[,readonly]
        case macBytes     // six bytes from anywhere
        case tapName      // the NAME in tap=NAME
        case tapPattern   // a name for a TAP device lguest creates
    }

    static func run(_ input: inout FuzzInput) {
        let parser = Parser(rawValue: input.byte() % UInt8(Parser.allCases.count))!
        let bytes = input.rest()
        let text = String(decoding: bytes, as: UTF8.self)
        switch parser {
        case .net:
            if let configuration = try? NetConfiguration(option: text) { _ = configuration.mac?.description }
        case .mac:
            if let address = try? MACAddress(text) { _ = address.description }
        case .tunnet:
            if let address = try? IPv4Address(text) { _ = address.description }
            _ = try? NetConfiguration(tunnet: text)
        case .disk:
            _ = try? BlockConfiguration(diskOption: text)
        case .macBytes:
            if let address = try? MACAddress(bytes: bytes) { _ = address.description }
        case .tapName:
            _ = try? Tap.validate(text, pattern: false)
        case .tapPattern:
            _ = try? Tap.validate(text, pattern: true)
        }
    }

    static func seeds() -> [(name: String, bytes: [UInt8])] {
        func seed(_ parser: Parser, _ text: String) -> [UInt8] { [parser.rawValue] + Array(text.utf8) }
        return [
            ("net", seed(.net, "tap=lg0,mac=52:54:00:12:34:56")),
            ("mac", seed(.mac, "02:00:00:00:00:01")),
            ("tunnet", seed(.tunnet, "192.0.2.1")),
            ("disk", seed(.disk, "/var/lib/disk.img,readonly")),
            ("mac-bytes", [Parser.macBytes.rawValue, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            ("tap-name", seed(.tapName, "lguest0")),
            ("tap-pattern", seed(.tapPattern, "lg%d")),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Seeds.writeIfAsked(OptionsHarness.seeds)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    var input = FuzzInput(data: data, count: count)
    OptionsHarness.run(&input)
    return 0
}

@_cdecl("fuzz_options_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv, testOneInput)
}
