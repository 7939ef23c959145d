import Devices

/// Where a guest's console leads on the host: the output every console prints to, and the
/// descriptor typed input comes from (read by the I/O thread), if any.
public struct ConsoleConnection: Sendable {
    public var output: any ByteSink
    /// Read when readable; end of file stops reading. Never closed by the machine.
    public var input: CInt?
    /// Ctrl-A x in the input stops the VM (`StopReason.userQuit`), Ctrl-A Ctrl-A sends one
    /// Ctrl-A: for a person at a terminal.
    public var escapeQuits: Bool

    public init(output: any ByteSink, input: CInt? = nil, escapeQuits: Bool = false) {
        self.output = output
        self.input = input
        self.escapeQuits = escapeQuits
    }
}

/// Turns keys read from the host into bytes for the guest, watching for the escape sequence.
struct EscapeFilter {
    static let escape: UInt8 = 0x01 // Ctrl-A
    private var sawEscape = false

    enum Action: Equatable { case send([UInt8]), quit }

    mutating func filter(_ input: some Sequence<UInt8>) -> Action {
        var out: [UInt8] = []
        for byte in input {
            if sawEscape {
                sawEscape = false
                switch byte {
                case UInt8(ascii: "x"), UInt8(ascii: "X"): return .quit
                case Self.escape: out.append(Self.escape)
                default: out.append(Self.escape); out.append(byte)
                }
            } else if byte == Self.escape {
                sawEscape = true
            } else {
                out.append(byte)
            }
        }
        return .send(out)
    }
}
