import LguestCommands

/// The `lguest` executable: the commands themselves live in `LguestCommands`.
@main
enum Entry {
    static func main() { Lguest.main() }
}
