import Foundation
import Testing

/// The journey: numbered `// Journey N:` comments in the sources that, read in order, follow
/// one guest from its kernel being loaded to its first byte on the host's disk. This test
/// keeps them numbered 1...N with no gaps or repeats, and keeps docs/Journey.md in step.
/// `LGUEST_WRITE_JOURNEY=1 swift test --filter JourneyTests` rewrites the document.
@Suite struct JourneyTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    struct Stop { var number: Int; var file: String; var text: String }

    /// Every journey comment: the number, the file it is in, and its paragraph (the comment's
    /// continuation lines included).
    static func stops() throws -> [Stop] {
        var stops: [Stop] = []
        let sources = root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" || $0.pathExtension == "c" }
            .sorted { $0.path < $1.path }
        for file in files {
            let lines = try String(contentsOf: file, encoding: .utf8).components(separatedBy: "\n")
            var i = 0
            while i < lines.count {
                let line = lines[i].trimmingCharacters(in: .whitespaces)
                if line.hasPrefix("// Journey "), let colon = line.firstIndex(of: ":"),
                   let number = Int(line[line.index(line.startIndex, offsetBy: 11)..<colon]) {
                    var text = String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
                    i += 1
                    while i < lines.count {
                        let next = lines[i].trimmingCharacters(in: .whitespaces)
                        guard next.hasPrefix("//"), !next.hasPrefix("// Journey ") else { break }
                        text += " " + next.dropFirst(2).trimmingCharacters(in: .whitespaces)
                        i += 1
                    }
                    let relative = String(file.path.dropFirst(root.path.count + 1))
                    stops.append(Stop(number: number, file: relative, text: text))
                    continue
                }
                i += 1
            }
        }
        return stops.sorted { $0.number < $1.number }
    }

    static func document(_ stops: [Stop]) -> String {
        var text = """
            # The journey

            One guest's path through lguest, in the order it happens. Each stop is a comment in the
            source (`// Journey N:`); this page is generated from them, and a test keeps the two in step.
            To regenerate: `LGUEST_WRITE_JOURNEY=1 swift test --filter JourneyTests`.


            """
        for stop in stops {
            text += "## \(stop.number). `\(stop.file)`\n\n\(stop.text.prefix(1).uppercased() + stop.text.dropFirst())\n\n"
        }
        return text
    }

    @Test func numberedWithoutGapsOrRepeats() throws {
        let numbers = try Self.stops().map(\.number)
        #expect(!numbers.isEmpty)
        #expect(numbers == Array(1...max(1, numbers.count)), "journey numbers: \(numbers)")
    }

    @Test func documentIsUpToDate() throws {
        let expected = Self.document(try Self.stops())
        let path = Self.root.appendingPathComponent("docs/Journey.md")
        if ProcessInfo.processInfo.environment["LGUEST_WRITE_JOURNEY"] == "1" {
            try expected.write(to: path, atomically: true, encoding: .utf8)
        }
        let actual = try? String(contentsOf: path, encoding: .utf8)
        #expect(actual == expected, "docs/Journey.md is stale: run LGUEST_WRITE_JOURNEY=1 swift test --filter JourneyTests")
    }
}
