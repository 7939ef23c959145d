#if canImport(Glibc)
import Glibc
#endif

/// `device-bench block [--seconds N] [--size-mib N] [--dir PATH] [--only TEXT] [--no-async]`
/// `device-bench net [--seconds N] [--batch N]`
let usage = """
    usage: device-bench block [--seconds N] [--warm-up N] [--size-mib N] [--dir PATH] [--only TEXT] [--no-async] [--device-only]
           device-bench net [--seconds N] [--batch N] [--only TEXT] [--device-only]
    """

func value(_ arguments: inout ArraySlice<String>, _ flag: String) throws -> String {
    guard let next = arguments.popFirst() else { throw BenchError("\(flag) needs a value\n\(usage)") }
    return next
}

func number(_ arguments: inout ArraySlice<String>, _ flag: String) throws -> Double {
    let text = try value(&arguments, flag)
    guard let number = Double(text), number > 0 else { throw BenchError("\(flag): not a positive number: \(text)") }
    return number
}

do {
    var arguments = CommandLine.arguments.dropFirst()
    switch arguments.popFirst() {
    case "block":
        var options = BlockBench.Options()
        while let flag = arguments.popFirst() {
            switch flag {
            case "--seconds": options.seconds = try number(&arguments, flag)
            case "--warm-up": options.warmUp = try number(&arguments, flag)
            case "--size-mib": options.sizeMiB = Int(try number(&arguments, flag))
            case "--dir": options.directory = try value(&arguments, flag)
            case "--only": options.only = try value(&arguments, flag)
            case "--no-async": options.asyncPeers = false
            case "--device-only": options.devicesOnly = true
            default: throw BenchError("unknown option \(flag)\n\(usage)")
            }
        }
        try BlockBench.main(options)
    case "net":
        var options = NetBench.Options()
        while let flag = arguments.popFirst() {
            switch flag {
            case "--seconds": options.seconds = try number(&arguments, flag)
            case "--batch": options.batch = Int(try number(&arguments, flag))
            case "--device-only": options.deviceOnly = true
            case "--only": options.only = try value(&arguments, flag)
            default: throw BenchError("unknown option \(flag)\n\(usage)")
            }
        }
        try NetBench.main(options)
    default:
        print(usage)
        exit(2)
    }
} catch {
    print("device-bench: \(error)")
    exit(1)
}
