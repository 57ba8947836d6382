import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A request as the HTTP server hands it to a route: head and complete body.
public struct HTTPRequest: Sendable {
    public var head: HTTPRequestHead
    public var body: ByteBuffer
}

/// A complete response.
public struct HTTPResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: HTTPResponseStatus, contentType: String? = nil, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        if let contentType { self.headers.replaceOrAdd(name: "Content-Type", value: contentType) }
        self.body = body
    }

    public init(status: HTTPResponseStatus, text: String) {
        self.init(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
    }
}

/// A small HTTP/1.1 server on SwiftNIO: it buffers each request body up to `maxBodyBytes` and hands
/// complete requests to `route` on NIO's thread pool.
/// Bodies over the limit are answered with 413 and the connection is closed.
public final class HTTPServer: Sendable {
    public typealias Route = @Sendable (HTTPRequest) -> HTTPResponse
    /// Builds the answer to a request whose body is over the limit (the body is not read).
    public typealias TooLarge = @Sendable (HTTPRequestHead, _ limit: Int) -> HTTPResponse

    private let host: String
    private let port: Int
    private let maxBodyBytes: Int
    private let route: Route
    private let tooLarge: TooLarge
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = NIOLockedValueBox<State>(State())

    private struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var closing = false
    }

    public init(
        host: String, port: Int, maxBodyBytes: Int, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        tooLarge: @escaping TooLarge = { _, limit in
            HTTPResponse(status: .payloadTooLarge, text: "request body exceeds the limit of \(limit) bytes\n")
        },
        route: @escaping Route
    ) {
        self.tooLarge = tooLarge
        self.host = host
        self.port = port
        self.maxBodyBytes = maxBodyBytes
        self.route = route
        self.group = group
        self.logger = logger
    }

    /// Binds and starts accepting; returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        let maxBodyBytes = self.maxBodyBytes
        let route = self.route
        let tooLarge = self.tooLarge
        let logger = self.logger
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [weak self] channel in
                self?.track(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPRequestHandler(maxBodyBytes: maxBodyBytes, route: route, tooLarge: tooLarge, logger: logger))
                }
            }
            .bind(host: host, port: port)
            .get()
        state.withLockedValue { $0.listener = channel }
        return channel.localAddress?.port ?? port
    }

    private func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let closing = state.withLockedValue { state -> Bool in
            if !state.closing { state.connections[id] = channel }
            return state.closing
        }
        if closing {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.state.withLockedValue { $0.connections.removeValue(forKey: id) }
        }
    }

    /// Stops accepting, then closes open connections once their current request is answered.
    public func stop() async {
        let (listener, connections) = state.withLockedValue { state in
            state.closing = true
            return (state.listener, Array(state.connections.values))
        }
        try? await listener?.close()
        for connection in connections {
            // Ask the handler to close after the response in progress (if any).
            connection.pipeline.fireUserInboundEventTriggered(HTTPRequestHandler.CloseWhenIdle())
        }
        for connection in connections {
            try? await connection.closeFuture.get()
        }
    }
}

final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    struct CloseWhenIdle {}

    private let maxBodyBytes: Int
    private let route: HTTPServer.Route
    private let tooLarge: HTTPServer.TooLarge
    private let logger: Logger
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var discarding = false
    private var closeWhenIdle = false
    /// A request is being answered.
    private var busy = false

    init(maxBodyBytes: Int, route: @escaping HTTPServer.Route, tooLarge: @escaping HTTPServer.TooLarge, logger: Logger) {
        self.maxBodyBytes = maxBodyBytes
        self.route = route
        self.tooLarge = tooLarge
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            discarding = false
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                tooLarge(context: context, head: head)
                return
            }
            body = context.channel.allocator.buffer(capacity: 0)
        case .body(var chunk):
            guard !discarding, let head else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBodyBytes {
                tooLarge(context: context, head: head)
                return
            }
            body?.writeBuffer(&chunk)
        case .end:
            guard !discarding, let head, let body else { return }
            self.head = nil
            self.body = nil
            // Routes run on a thread pool, so a large request (say, a 16 MiB JSON body) never stalls the event loop
            // and the other connections it serves. HTTP/1.1 pipelining is held back by NIO until the answer is written.
            busy = true
            let request = HTTPRequest(head: head, body: body)
            let route = self.route
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) { route(request) }.whenComplete { result in
                let (handler, context) = bound.value
                handler.busy = false
                let response = (try? result.get()) ?? HTTPResponse(status: .serviceUnavailable, text: "shutting down\n")
                handler.write(context: context, head: head, response: response, close: !head.isKeepAlive || handler.closeWhenIdle)
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is CloseWhenIdle {
            closeWhenIdle = true
            if head == nil && !busy { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func tooLarge(context: ChannelHandlerContext, head: HTTPRequestHead) {
        discarding = true
        body = nil
        let reply = self.tooLarge(head, maxBodyBytes)
        // The rest of the body will not be read: answer and close.
        write(context: context, head: head, response: reply, close: true)
    }

    private func write(context: ChannelHandlerContext, head: HTTPRequestHead, response: HTTPResponse, close: Bool) {
        var headers = response.headers
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        if close { headers.replaceOrAdd(name: "Connection", value: "close") }
        let responseHead = HTTPResponseHead(version: head.version, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlushPromise(wrapOutboundOut(.end(nil)))
        if close {
            done.futureResult.whenComplete { _ in context.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("HTTP connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

extension ChannelHandlerContext {
    fileprivate func writeAndFlushPromise(_ data: NIOAny) -> EventLoopPromise<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        writeAndFlush(data, promise: promise)
        return promise
    }
}
