import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Sandbox
import Launcher
#if canImport(Glibc)
import Glibc
#endif

/// Firecracker's API on a Unix socket: HTTP/1.1 with keep-alive, carried by swift-nio, each
/// request handed to the VMM thread (`VMMQueue`) and answered from there. The event loop never
/// waits on the VM, so a slow request cannot block another connection, and never a vCPU.
public final class ApiServer: Sendable {
    public let socketPath: String
    /// Requests handed to the VMM thread whose answers are not yet written.
    let pending = PendingResponses()
    let maxPayload: Int
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel

    /// Binds and listens at `socketPath`; refuses a path that already exists, as Firecracker
    /// does. `handle` runs each request (on the VMM thread, by way of `queue`).
    /// With `sandboxed`, the event loop's thread confines itself once the socket listens:
    /// no capabilities, no new privileges, and the API thread's filter (docs/Sandbox.md).
    public init(socketPath: String, maxPayload: Int, queue: VMMQueue, controller: Controller,
                log: Logger = Logger(label: "lguest"), sandboxed: Bool = false) throws(ApiStartError) {
        var info = stat()
        if lstat(socketPath, &info) == 0 {
            throw ApiStartError("Failed to open the API socket at: \(socketPath). Check that it is not already used.")
        }
        self.socketPath = socketPath
        self.maxPayload = maxPayload
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let pending = self.pending
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 16)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: false).flatMap {
                    channel.pipeline.addHandler(RequestHandler(maxPayload: maxPayload, queue: queue, controller: controller, log: log, pending: pending))
                }
            }
        do { channel = try bootstrap.bind(unixDomainSocketPath: socketPath).wait() }
        catch {
            try? group.syncShutdownGracefully()
            throw ApiStartError("Failed to open the API socket at: \(socketPath): \(error)")
        }
        guard sandboxed else { return }
        let process = getpid()
        let failure: String?
        do {
            failure = try channel.eventLoop.submit { () -> String? in
                do throws(SandboxError) {
                    try Privileges.forbidNewPrivileges()
                    try Privileges.dropCapabilities()
                    try ThreadSandbox.api(process: process).install()
                    return nil
                } catch { return error.description }
            }.wait()
        } catch { failure = "the API thread did not answer: \(error)" }
        if let failure {
            close()
            throw ApiStartError("cannot confine the API thread: \(failure)")
        }
    }

    /// Waits (up to `seconds`) until every answer the VMM thread has given is written: for a
    /// process about to exit, so that the request that stopped the VM still gets its 204.
    public func waitForPendingResponses(seconds: Double = 1) {
        var left = Int(seconds * 1000)
        while pending.count.load(ordering: .acquiring) > 0, left > 0 { usleep(1000); left -= 1 }
    }

    /// Removes the socket file, so that clients see the VMM has gone: what a process does just
    /// before it exits (a sandboxed event loop could not close its channel; exiting does).
    public func removeSocketFile() { unlink(socketPath) }

    /// Stops serving, and removes the socket file. Not for a sandboxed server, whose event
    /// loop may not make the calls closing needs.
    public func close() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
        unlink(socketPath)
    }
}

public struct ApiStartError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// One connection: gathers a request (refusing bodies past the limit), has it handled, and
/// writes Firecracker's response: no reason phrase, `Server: Firecracker API`, keep-alive.
final class RequestHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: used only on its channel's event loop.
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let maxPayload: Int
    let queue: VMMQueue
    let controller: Controller
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge: Int?

    let log: Logger
    let pending: PendingResponses

    init(maxPayload: Int, queue: VMMQueue, controller: Controller, log: Logger, pending: PendingResponses) {
        self.log = log
        self.pending = pending
        self.maxPayload = maxPayload
        self.queue = queue
        self.controller = controller
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(request):
            head = request
            body = []
            tooLarge = nil
            if let length = request.headers.first(name: "content-length").flatMap(Int.init), length > maxPayload {
                tooLarge = length
            } else if request.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: .continue))), promise: nil)
            }
        case var .body(buffer):
            guard tooLarge == nil else { return }
            if body.count + buffer.readableBytes > maxPayload { tooLarge = body.count + buffer.readableBytes; body = []; return }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head else { return }
            self.head = nil
            if let size = tooLarge {
                let failure = ApiFailure.fault("Request payload with size \(size) is larger than the limit of \(maxPayload) allowed by server.")
                respond(context: context, ApiResponse.failure(failure), keepAlive: false)
                return
            }
            let request = ApiRequest(method: head.method.rawValue, path: head.uri, body: body)
            let verb = request.method.prefix(1) + request.method.dropFirst().lowercased()
            log.info("The API server received a \(verb) request on \"\(request.path)\" with body \"\(String(decoding: body, as: UTF8.self))\".")
            let controller = controller
            let loop = context.eventLoop
            let promise = loop.makePromise(of: ApiResponse.self)
            pending.count.add(1, ordering: .acquiringAndReleasing)
            let log = self.log
            queue.submit {
                var started = timespec(), ended = timespec()
                clock_gettime(CLOCK_MONOTONIC, &started)
                let response = controller.handle(request)
                if let warning = response.deprecationWarning { log.warning("\(warning)") }
                clock_gettime(CLOCK_MONOTONIC, &ended)
                let micros = (ended.tv_sec - started.tv_sec) * 1_000_000 + (ended.tv_nsec - started.tv_nsec) / 1000
                log.debug("Total previous API call duration: \(micros) us.")
                promise.succeed(response)
            }
            let keepAlive = head.isKeepAlive
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            let pending = self.pending
            promise.futureResult.whenSuccess { response in
                let (handler, context) = bound.value
                handler.respond(context: context, response, keepAlive: keepAlive) {
                    pending.count.subtract(1, ordering: .acquiringAndReleasing)
                }
            }
        }
    }

    /// A request NIO's parser could not read (an unknown method, a malformed head): a 400 with
    /// a fault message, then the connection closes, since its framing is lost.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else { context.close(promise: nil); return }
        let failure = ApiFailure.fault("Invalid HTTP request: \(error). Firecracker's API takes GET, PUT, PATCH and DELETE.")
        head = nil
        respond(context: context, ApiResponse.failure(failure), keepAlive: false)
    }

    private func respond(context: ChannelHandlerContext, _ response: ApiResponse, keepAlive: Bool,
                         written: @escaping @Sendable () -> Void = {}) {
        var headers = HTTPHeaders([("Server", "Firecracker API"), ("Connection", keepAlive ? "keep-alive" : "close")])
        if response.deprecated { headers.add(name: "Deprecation", value: "true") }
        if !response.body.isEmpty {
            headers.add(name: "Content-Type", value: "application/json")
        }
        headers.add(name: "Content-Length", value: String(response.body.count))
        let status = HTTPResponseStatus.custom(code: UInt(response.status), reasonPhrase: "")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        done.whenComplete { _ in written() }
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// How many answers are on their way back to clients.
final class PendingResponses: Sendable {
    let count = Atomic<Int>(0)
}
