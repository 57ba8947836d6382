package import Logging
import NIOConcurrencyHelpers
package import NIOCore
package import NIOHTTP1
import NIOPosix
package import NIOSSL

/// A request as the HTTP server hands it to a route: head and complete body.
package struct HTTPRequest: Sendable {
    package var head: HTTPRequestHead
    package var body: ByteBuffer
}

/// A complete response.
package struct HTTPResponse: Sendable {
    package var status: HTTPResponseStatus
    package var headers: HTTPHeaders
    package var body: [UInt8]

    package init(status: HTTPResponseStatus, contentType: String? = nil, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        if let contentType { self.headers.replaceOrAdd(name: "Content-Type", value: contentType) }
        self.body = body
    }

    package init(status: HTTPResponseStatus, text: String) {
        self.init(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
    }
}

/// A small HTTP/1.1 server on SwiftNIO: it buffers each request body up to `maxBodyBytes` and hands
/// complete requests to `route` on the server's own thread pool (so one server's heavy requests never delay
/// another's, e.g. `/metrics`). Bodies over the limit are answered with 413 and the connection is closed.
///
/// Hostile clients are bounded: a connection cap, a deadline for the request head (slow-loris) and for the body,
/// an idle timeout between keep-alive requests, and an optional shared budget of in-flight body bytes checked
/// against `Content-Length` before the body is read.
package final class HTTPServer: Sendable {
    package typealias Route = @Sendable (HTTPRequest) -> HTTPResponse
    /// Builds the answer to a request whose body is over the limit (the body is not read).
    package typealias TooLarge = @Sendable (HTTPRequestHead, _ limit: Int) -> HTTPResponse
    /// Builds the answer to a request refused for a reason other than size (in-flight budget, timeout).
    package typealias Refused = @Sendable (HTTPRequestHead?, Refusal) -> HTTPResponse?

    /// Why the server refused a connection or request on its own, before a route saw it (body size aside, which has
    /// `TooLarge`).
    package enum Refusal: Sendable, Equatable, CaseIterable {
        /// The declared or received body did not fit `Options.budget`: answered before the body is read.
        case inflightLimit
        /// Over `Options.maxConnections`: the connection was closed at once (no request head).
        case connectionLimit
        /// The request head or body did not arrive in time (`readHeaderTimeout`, `readBodyTimeout`).
        case timeout
    }

    /// Connection and request bounds (the OTLP receiver's come from `IngestLimits`, in TailgateIngest).
    package struct Options: Sendable {
        package var maxBodyBytes: Int
        package var maxConnections: Int = 1024
        package var readHeaderTimeout: Duration = .seconds(10)
        package var readBodyTimeout: Duration = .seconds(60)
        package var idleTimeout: Duration = .seconds(120)
        /// Shared bound on in-flight body bytes; nil for none.
        package var budget: (any HTTPBodyBudget)? = nil
        /// Threads running routes. Default 2.
        package var threads: Int = 2
        /// Requests for which this answers true (e.g. OTLP/JSON, which costs far more CPU per byte than protobuf)
        /// run on a separate one-thread pool, so that they can delay only each other. Default: none.
        package var isHeavy: (@Sendable (HTTPRequestHead) -> Bool)? = nil
        /// TLS: every connection starts with a handshake under this context (whose certificate callback may hand
        /// out a reloaded certificate to new connections); nil for plaintext.
        package var tls: NIOSSLContext? = nil

        package init(maxBodyBytes: Int) {
            self.maxBodyBytes = maxBodyBytes
        }

        /// The pool a request runs on.
        func pool(for head: HTTPRequestHead, _ pools: HTTPServer.Pools) -> NIOThreadPool {
            if let isHeavy, isHeavy(head) { return pools.heavy }
            return pools.normal
        }
    }

    private let host: String
    private let port: Int
    private let options: Options
    private let route: Route
    private let tooLarge: TooLarge
    private let refused: Refused
    private let group: any EventLoopGroup
    struct Pools: Sendable {
        var normal: NIOThreadPool
        var heavy: NIOThreadPool
    }

    private let pools: Pools
    private let logger: Logger
    private let state = NIOLockedValueBox<State>(State())

    private struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var closing = false
    }

    package convenience init(
        host: String, port: Int, maxBodyBytes: Int, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        tooLarge: @escaping TooLarge = { _, limit in
            HTTPResponse(status: .payloadTooLarge, text: "request body exceeds the limit of \(limit) bytes\n")
        },
        route: @escaping Route
    ) {
        self.init(host: host, port: port, options: Options(maxBodyBytes: maxBodyBytes), logger: logger, group: group,
                  tooLarge: tooLarge, route: route)
    }

    package init(
        host: String, port: Int, options: Options, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        tooLarge: @escaping TooLarge = { _, limit in
            HTTPResponse(status: .payloadTooLarge, text: "request body exceeds the limit of \(limit) bytes\n")
        },
        refused: @escaping Refused = { _, _ in nil },
        route: @escaping Route
    ) {
        self.tooLarge = tooLarge
        self.refused = refused
        self.host = host
        self.port = port
        self.options = options
        self.route = route
        self.group = group
        self.logger = logger
        pools = Pools(normal: NIOThreadPool(numberOfThreads: max(1, options.threads)), heavy: NIOThreadPool(numberOfThreads: 1))
    }

    /// Binds and starts accepting; returns the bound port.
    @discardableResult
    package func start() async throws -> Int {
        let options = self.options
        let route = self.route
        let tooLarge = self.tooLarge
        let refused = self.refused
        let logger = self.logger
        let pools = self.pools
        pools.normal.start()
        if options.isHeavy != nil { pools.heavy.start() }
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [weak self] channel in
                guard let self, self.track(channel) else {
                    _ = refused(nil, .connectionLimit)
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    // The handshake falls under the request head's deadline (armed when the HTTP handler is added).
                    if let tls = options.tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPRequestHandler(options: options, pools: pools, route: route, tooLarge: tooLarge, refused: refused, logger: logger))
                }
            }
            .bind(host: host, port: port)
            .get()
        } catch {
            await shutdownPools()
            throw HTTPServerBindError(address: "\(host.contains(":") ? "[\(host)]" : host):\(port)", underlying: error)
        }
        state.withLockedValue { $0.listener = channel }
        return channel.localAddress?.port ?? port
    }

    /// Registers a new connection; false when the server is closing or at its connection cap.
    private func track(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let maxConnections = options.maxConnections
        let admitted = state.withLockedValue { state -> Bool in
            guard !state.closing, state.connections.count < maxConnections else { return false }
            state.connections[id] = channel
            return true
        }
        guard admitted else { return false }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.state.withLockedValue { $0.connections.removeValue(forKey: id) }
        }
        return true
    }

    /// Open connections.
    package var connectionCount: Int { state.withLockedValue { $0.connections.count } }

    /// Stops accepting, then closes open connections once their current request is answered; connections still
    /// open at `deadline` (a client holding a request open) are cut.
    package func stop(deadline: ContinuousClock.Instant = .now + .seconds(10)) async {
        let (listener, connections) = state.withLockedValue { state in
            state.closing = true
            return (state.listener, Array(state.connections.values))
        }
        try? await listener?.close()
        for connection in connections {
            // Ask the handler to close after the response in progress (if any).
            connection.pipeline.fireUserInboundEventTriggered(HTTPRequestHandler.CloseWhenIdle())
        }
        // Connections leave the table as they close; poll it (futures are not cancellable) until the deadline.
        while state.withLockedValue({ !$0.connections.isEmpty }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        let open = state.withLockedValue { Array($0.connections.values) }
        if !open.isEmpty {
            logger.warning("closing connections still open at the shutdown deadline", metadata: ["connections": "\(open.count)", "port": "\(port)"])
            for connection in open { try? await connection.close() }
        }
        await shutdownPools()
    }

    private func shutdownPools() async {
        try? await pools.normal.shutdownGracefully()
        if options.isHeavy != nil { try? await pools.heavy.shutdownGracefully() }
    }
}

/// A bound on the request-body bytes being read or answered at once, possibly shared with other servers (the OTLP
/// receivers share `InflightBudget`, in TailgateIngest). The server takes a request's `Content-Length` before reading
/// its body (a chunked body as it arrives) and gives it back once the request is answered or abandoned.
package protocol HTTPBodyBudget: Sendable {
    /// Takes `bytes`, or answers false when they do not fit (nothing taken).
    func tryAcquire(_ bytes: Int) -> Bool
    /// Gives back bytes taken by `tryAcquire`.
    func release(_ bytes: Int)
}

/// A listener could not bind.
package struct HTTPServerBindError: Error, CustomStringConvertible {
    package var address: String
    package var underlying: any Error
    package var description: String { "cannot listen on \(address): \(underlying)" }
}

final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    struct CloseWhenIdle {}

    private let options: HTTPServer.Options
    private let pools: HTTPServer.Pools
    private let route: HTTPServer.Route
    private let tooLarge: HTTPServer.TooLarge
    private let refused: HTTPServer.Refused
    private let logger: Logger
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var discarding = false
    private var closeWhenIdle = false
    /// A request is being answered.
    private var busy = false
    /// Bytes taken from the in-flight budget for the current request.
    private var reserved = 0
    /// Requests answered on this connection (the first request head gets `readHeaderTimeout`, later ones the idle
    /// timeout between keep-alive requests).
    private var answered = 0
    private var timer: Scheduled<Void>?

    init(options: HTTPServer.Options, pools: HTTPServer.Pools, route: @escaping HTTPServer.Route,
         tooLarge: @escaping HTTPServer.TooLarge, refused: @escaping HTTPServer.Refused, logger: Logger) {
        self.options = options
        self.pools = pools
        self.route = route
        self.tooLarge = tooLarge
        self.refused = refused
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        arm(context: context, options.readHeaderTimeout, waitingForHead: true)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        releaseBudget()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        releaseBudget()
        context.fireChannelInactive()
    }

    /// Closes the connection unless the phase it guards ends first.
    private func arm(context: ChannelHandlerContext, _ after: Duration, waitingForHead: Bool) {
        timer?.cancel()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(clamping: after.nanoseconds))) {
            let (handler, context) = bound.value
            handler.timer = nil
            if waitingForHead || handler.head == nil {
                if handler.answered == 0 { _ = handler.refused(nil, .timeout) }
                context.close(promise: nil)
            } else if let head = handler.head {
                _ = handler.refused(head, .timeout)
                handler.discarding = true
                handler.body = nil
                handler.releaseBudget()
                handler.write(context: context, head: head,
                              response: HTTPResponse(status: .requestTimeout, text: "request body not received within \(handler.options.readBodyTimeout)\n"),
                              close: true)
            }
        }
    }

    private func releaseBudget() {
        if reserved > 0 {
            options.budget?.release(reserved)
            reserved = 0
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            discarding = false
            arm(context: context, options.readBodyTimeout, waitingForHead: false)
            let length = head.headers.first(name: "content-length").flatMap(Int.init)
            if let length, length > options.maxBodyBytes {
                tooLarge(context: context, head: head)
                return
            }
            // Admission: a declared body that does not fit the in-flight budget is refused before it is read.
            if let length, length > 0, let budget = options.budget {
                guard budget.tryAcquire(length) else {
                    refuse(context: context, head: head)
                    return
                }
                reserved = length
            }
            // Room for the declared body up front (it is read in chunks, and growing the buffer copies what came so
            // far each time), but no more than 4 MiB before the bytes arrive: a declared length is only a promise.
            body = context.channel.allocator.buffer(capacity: min(length ?? 0, 4 << 20))
        case .body(var chunk):
            guard !discarding, let head else { return }
            let size = (body?.readableBytes ?? 0) + chunk.readableBytes
            if size > options.maxBodyBytes {
                tooLarge(context: context, head: head)
                return
            }
            // A body without Content-Length (chunked) takes from the budget as it arrives.
            if size > reserved, let budget = options.budget {
                guard budget.tryAcquire(size - reserved) else {
                    refuse(context: context, head: head)
                    return
                }
                reserved = size
            }
            body?.writeBuffer(&chunk)
        case .end:
            guard !discarding, let head, let body else { return }
            timer?.cancel()
            timer = nil
            self.head = nil
            self.body = nil
            // Routes run on the server's thread pool, so a large request (say, a 16 MiB JSON body) never stalls the
            // event loop and the other connections it serves. HTTP/1.1 pipelining is held back by NIO until the
            // answer is written.
            busy = true
            let request = HTTPRequest(head: head, body: body)
            let route = self.route
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            options.pool(for: head, pools).runIfActive(eventLoop: context.eventLoop) { route(request) }.whenComplete { result in
                let (handler, context) = bound.value
                handler.busy = false
                handler.releaseBudget()
                handler.answered += 1
                let response = (try? result.get()) ?? HTTPResponse(status: .serviceUnavailable, text: "shutting down\n")
                let close = !head.isKeepAlive || handler.closeWhenIdle
                handler.write(context: context, head: head, response: response, close: close)
                if !close { handler.arm(context: context, handler.options.idleTimeout, waitingForHead: true) }
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
        releaseBudget()
        let reply = self.tooLarge(head, options.maxBodyBytes)
        // The rest of the body will not be read: answer and close.
        write(context: context, head: head, response: reply, close: true)
    }

    /// Over the in-flight budget: 429 with Retry-After, without reading the body; the connection is closed.
    private func refuse(context: ChannelHandlerContext, head: HTTPRequestHead) {
        discarding = true
        body = nil
        releaseBudget()
        var reply = refused(head, .inflightLimit)
            ?? HTTPResponse(status: .tooManyRequests, text: "too many request bytes in flight; retry later\n")
        if !reply.headers.contains(name: "Retry-After") { reply.headers.add(name: "Retry-After", value: "1") }
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
        if close {
            // The channel (Sendable) closes once the last part is written.
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("HTTP connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

extension Duration {
    /// Whole nanoseconds, saturating.
    var nanoseconds: Int64 {
        let (s, atto) = components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? (s < 0 ? .min : .max) : ns &+ atto / 1_000_000_000
    }
}
