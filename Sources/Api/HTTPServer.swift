import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Firecracker's API on a Unix socket: HTTP/1.1 with keep-alive, carried by swift-nio, each
/// request handed to the VMM thread (`VMMQueue`) and answered from there. The event loop never
/// waits on the VM, so a slow request cannot block another connection, and never a vCPU.
public final class ApiServer: Sendable {
    public let socketPath: String
    let maxPayload: Int
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel

    /// Binds and listens at `socketPath`; refuses a path that already exists, as Firecracker
    /// does. `handle` runs each request (on the VMM thread, by way of `queue`).
    public init(socketPath: String, maxPayload: Int, queue: VMMQueue, controller: Controller, log: Logger = Logger(label: "lguest")) throws(ApiStartError) {
        var info = stat()
        if lstat(socketPath, &info) == 0 {
            throw ApiStartError("Failed to open the API socket at: \(socketPath). Check that it is not already used.")
        }
        self.socketPath = socketPath
        self.maxPayload = maxPayload
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 16)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(RequestHandler(maxPayload: maxPayload, queue: queue, controller: controller, log: log))
                }
            }
        do { channel = try bootstrap.bind(unixDomainSocketPath: socketPath).wait() }
        catch {
            try? group.syncShutdownGracefully()
            throw ApiStartError("Failed to open the API socket at: \(socketPath): \(error)")
        }
    }

    /// Stops serving, and removes the socket file.
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

    init(maxPayload: Int, queue: VMMQueue, controller: Controller, log: Logger) {
        self.log = log
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
            queue.submit { promise.succeed(controller.handle(request)) }
            let keepAlive = head.isKeepAlive
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            promise.futureResult.whenSuccess { response in
                let (handler, context) = bound.value
                handler.respond(context: context, response, keepAlive: keepAlive)
            }
        }
    }

    /// Bytes that are not HTTP/1.1: swift-nio's error handler has answered 400 with
    /// `Connection: close` and passes the error on, for the pipeline to close the connection.
    /// Without this it stayed open, the client waiting for the end of a response already given.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func respond(context: ChannelHandlerContext, _ response: ApiResponse, keepAlive: Bool) {
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
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
