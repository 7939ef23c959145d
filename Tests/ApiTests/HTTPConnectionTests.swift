import Foundation
import Testing

/// What lguest's API socket does with bytes that are not an HTTP/1.1 request.
struct HTTPConnectionTests {
    @Test func bytesThatAreNotHTTPAreAnswered400AndTheConnectionIsClosed() throws {
        let lguest = try LiveLguest(id: "http")
        defer { lguest.stop() }
        for garbage in ["HELLO\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n"] {
            let started = Date()
            let answer = try #require(lguest.exchange(garbage, seconds: 5))
            #expect(answer.text.hasPrefix("HTTP/1.1 400"), "\(garbage.debugDescription): \(answer.text)")
            #expect(answer.closed, "the connection stayed open after the 400 for \(garbage.debugDescription)")
            #expect(Date().timeIntervalSince(started) < 4)
        }
        // Well-formed requests on other connections are still served.
        #expect(lguest.get("/version")?.body == #"{"firecracker_version":"1.17.0-dev"}"#)
        #expect(lguest.isRunning)
    }
}
