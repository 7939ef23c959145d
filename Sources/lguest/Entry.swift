import HostSystem
import Launcher
import LguestCommands
#if canImport(Glibc)
import Glibc
#endif

/// The `lguest` executable: the commands themselves live in `LguestCommands`.
///
/// A usage error is one line, like every other refusal, with the way to the full usage:
/// `lguest: Missing expected argument '--kernel <FILE>' (lguest --help lists the options)`,
/// exit status 64. `--help` and `--version` print as usual.
@main
enum Entry {
    static func main() {
        let all = processArguments
        let arguments = Array(all.dropFirst())
        if (all.first ?? "").split(separator: "/").last == "jailer" { runFirecrackerJailer(arguments) }
        if FirecrackerOptions.applies(programName: all.first ?? "lguest", arguments: arguments) {
            runFirecracker(arguments)
        }
        do {
            var command = try Lguest.parseAsRoot(arguments)
            try command.run()
        } catch {
            let code = Lguest.exitCode(for: error)
            guard code != .success else { Lguest.exit(withError: error) }
            let message = Lguest.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            printError("lguest: \(message) (lguest --help lists the options)")
            exit(code.rawValue)
        }
    }
}
