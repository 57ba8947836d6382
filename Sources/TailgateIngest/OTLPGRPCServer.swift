import NIOCore
import NIOExtras
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
import TailgateWire

// The OTLP/gRPC receiver, written directly on SwiftNIO's HTTP/2 handler: every export call is unary and small, and a
// general gRPC server (a child channel, an async task and several state machines per call, and a hop from the event
// loop to the concurrency pool and back) cost more than the work the call carries. Here a call is handled on the
// event loop that read its bytes, from the HEADERS frame to the trailers, with no per-call channel or task:
//
// - HTTP/2 comes from NIOHTTP2 (framing, HPACK, stream state, SETTINGS, PING replies, DoS limits);
//   connection lifetime (idle, maximum age with a grace period, keepalive pings, graceful close with two GOAWAYs)
//   from NIOHTTP2's `NIOHTTP2ServerConnectionManagementHandler`; TLS from NIOSSL; stopping the listener and quiescing
//   every connection from NIOExtras' `ServerQuiescingHelper`.
// - gRPC on top is small for unary calls: a length-prefixed message (`grpc-encoding` gzip or deflate when its flag
//   says so), an answer of HEADERS + DATA + trailers, or trailers only for an error (`grpc-status`,
//   percent-encoded `grpc-message`, base64 `grpc-status-details-bin`).
// - Flow control: streams are given a window larger than the largest message the receiver takes, so a call never
//   waits for a stream WINDOW_UPDATE; the connection window (`connectionWindow`) is handed back as DATA is read, which
//   bounds the bytes a connection can have in flight.

/// The calls the gRPC receiver answers and how (everything but the transport).
struct GRPCRoutes: Sendable {
    let handler: any TraceIngestHandler
    let relay: (any SignalIngestHandler)?
    /// Largest message, after decompression (RESOURCE_EXHAUSTED beyond).
    let maxRequestBytes: Int
    /// Largest message as sent (compressed or not): beyond it the call is answered at once, without reading on.
    let maxWireBytes: Int
    let budget: InflightBudget?
    let authenticator: Authenticator?
    let serving: @Sendable () -> Bool
    /// Lowercased names of headers passed through to the downstream.
    let passThrough: [String]
    /// Open connections allowed; one more is closed at once (counted as refused, `connection_limit`).
    var maxConnections = Int.max

    enum Method: Equatable {
        case export(IngestSignal)
        case healthCheck
    }

    func method(_ path: String) -> Method? {
        switch path {
        case "/opentelemetry.proto.collector.trace.v1.TraceService/Export": .export(.traces)
        case "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": relay == nil ? nil : .export(.metrics)
        case "/opentelemetry.proto.collector.logs.v1.LogsService/Export": relay == nil ? nil : .export(.logs)
        case "/grpc.health.v1.Health/Check": .healthCheck
        default: nil
        }
    }
}

/// gRPC status codes the receiver answers with.
enum GRPCStatusCode: Int {
    case ok = 0
    case invalidArgument = 3
    case resourceExhausted = 8
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case unauthenticated = 16
}

/// One HTTP/2 connection's gRPC calls, on its event loop.
final class GRPCConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    enum Encoding {
        case identity, gzip, deflate
    }

    struct Call {
        /// Nil for a call answered from its headers (not gRPC, unknown method): only its DATA is left to discard.
        var method: GRPCRoutes.Method?
        var encoding: Encoding
        var headers: [(String, String)]
        var body: ByteBuffer?
        /// Answered already (an error before the end of the request): the rest of its DATA is read and discarded.
        var answered = false
    }

    let routes: GRPCRoutes
    /// The connection-level receive window kept open (bytes).
    let connectionWindow: Int
    private var calls: [HTTP2StreamID: Call] = [:]
    /// DATA bytes read since the connection window was last handed back.
    private var unreturned = 0
    private var needsFlush = false

    init(routes: GRPCRoutes, connectionWindow: Int) {
        self.routes = routes
        self.connectionWindow = connectionWindow
    }

    func channelActive(context: ChannelHandlerContext) {
        // The connection window starts at HTTP/2's 65,535 bytes; open it to the target at once.
        if connectionWindow > 65_535 {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: connectionWindow - 65_535))), promise: nil)
            context.flush()
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            if calls[frame.streamID] == nil {
                begin(context, frame.streamID, headers.headers, endStream: headers.endStream)
            } else if headers.endStream {
                // Trailers from the client end its side of the call.
                finish(context, frame.streamID)
            }
        case .data(let payload):
            guard case .byteBuffer(var bytes) = payload.data else { return }
            returnWindow(context, bytes.readableBytes + (payload.paddingBytes ?? 0))
            let id = frame.streamID
            guard var call = calls[id] else { return }
            if !call.answered {
                let total = (call.body?.readableBytes ?? 0) + bytes.readableBytes
                if total > routes.maxWireBytes + 5 {
                    call.body = nil
                    call.answered = true
                    calls[id] = call
                    routes.handler.refused(transport: .grpc, reason: .tooLarge)
                    fail(context, id, .resourceExhausted,
                         "request of more than \(routes.maxWireBytes) bytes exceeds the limit of \(routes.maxRequestBytes) bytes")
                } else if call.body == nil {
                    // Usually the whole message is one DATA frame: kept as it was read, not copied.
                    call.body = bytes
                    calls[id] = call
                } else {
                    calls[id] = nil  // no second reference while the buffer is appended to
                    call.body!.writeBuffer(&bytes)
                    calls[id] = call
                }
            }
            if payload.endStream { finish(context, id) }
        case .rstStream:
            calls[frame.streamID] = nil
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent { calls[closed.streamID] = nil }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A protocol error (or a TLS failure): NIOHTTP2 has answered with GOAWAY where it could; the connection goes.
        context.close(promise: nil)
    }

    private func returnWindow(_ context: ChannelHandlerContext, _ bytes: Int) {
        unreturned += bytes
        if unreturned >= connectionWindow / 4 {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: unreturned))), promise: nil)
            unreturned = 0
            needsFlush = true
        }
    }

    // MARK: Calls

    private func begin(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ headers: HPACKHeaders, endStream: Bool) {
        let path = headers.first(name: ":path") ?? ""
        guard headers.first(name: ":method") == "POST",
              let contentType = headers.first(name: "content-type"), contentType.hasPrefix("application/grpc")
        else {
            // Not gRPC: an HTTP answer (the gRPC spec's 415 for a wrong content type).
            calls[id] = Call(method: nil, encoding: .identity, headers: [], answered: true)
            var response = HPACKHeaders()
            response.add(name: ":status", value: "415")
            response.add(name: "content-type", value: "text/plain")
            write(context, id, .headers(.init(headers: response, endStream: true)))
            if endStream { calls[id] = nil }
            return
        }
        guard let method = routes.method(path) else {
            calls[id] = Call(method: nil, encoding: .identity, headers: [], answered: true)
            fail(context, id, .unimplemented, "method \(path) is not implemented")
            if endStream { calls[id] = nil }
            return
        }
        var call = Call(method: method, encoding: .identity, headers: [])
        if case .export = method, let authenticator = routes.authenticator,
           !authenticator.accepts(authorization: headers.first(name: "authorization")) {
            routes.handler.refused(transport: .grpc, reason: .unauthenticated)
            call.answered = true
            calls[id] = call
            fail(context, id, .unauthenticated, "missing or invalid bearer token")
            if endStream { calls[id] = nil }
            return
        }
        switch headers.first(name: "grpc-encoding") {
        case nil, "identity": call.encoding = .identity
        case "gzip": call.encoding = .gzip
        case "deflate": call.encoding = .deflate
        case let other?:
            routes.handler.refused(transport: .grpc, reason: .badEncoding)
            call.answered = true
            calls[id] = call
            fail(context, id, .unimplemented, "compression \(other) is not supported (identity, deflate, gzip are)")
            if endStream { calls[id] = nil }
            return
        }
        if case .export = method {
            for name in routes.passThrough {
                if let value = headers.first(name: name) { call.headers.append((name, value)) }
            }
        }
        calls[id] = call
        if endStream { finish(context, id) }
    }

    /// The client's side of the call ended: answer it.
    private func finish(_ context: ChannelHandlerContext, _ id: HTTP2StreamID) {
        guard let call = calls.removeValue(forKey: id), !call.answered else { return }
        var body = call.body ?? ByteBuffer()
        guard let compressed = body.readInteger(as: UInt8.self), let length = body.readInteger(as: UInt32.self),
              compressed <= 1, Int(length) == body.readableBytes
        else {
            fail(context, id, .internal, "expected exactly one length-prefixed request message")
            return
        }
        if compressed == 1 {
            guard call.encoding != .identity else {
                fail(context, id, .internal, "a message is marked compressed but the call has no grpc-encoding")
                return
            }
            let limit = routes.maxRequestBytes
            let inflated = body.withUnsafeReadableBytes { bytes in
                Result { () throws(Gzip.Failure) -> [UInt8] in try Gzip.decompress(bytes, limit: limit) }
            }
            switch inflated {
            case .success(let message):
                message.withUnsafeBytes { answer(context, id, call, $0) }
            case .failure(.tooLarge):
                routes.handler.refused(transport: .grpc, reason: .tooLarge)
                fail(context, id, .resourceExhausted, "request exceeds the limit of \(limit) bytes after decompression")
            case .failure(let error):
                routes.handler.refused(transport: .grpc, reason: .badEncoding)
                fail(context, id, .internal, "cannot decompress the request: \(error)")
            }
        } else {
            guard body.readableBytes <= routes.maxRequestBytes else {
                routes.handler.refused(transport: .grpc, reason: .tooLarge)
                fail(context, id, .resourceExhausted,
                     "request of \(body.readableBytes) bytes exceeds the limit of \(routes.maxRequestBytes) bytes after decompression")
                return
            }
            body.withUnsafeReadableBytes { answer(context, id, call, $0) }
        }
    }

    private func answer(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ call: Call, _ message: UnsafeRawBufferPointer) {
        let signal: IngestSignal
        switch call.method {
        case nil:
            return  // answered from its headers already (`finish` does not get here)
        case .healthCheck?:
            // HealthCheckResponse { ServingStatus status = 1; } with SERVING = 1, NOT_SERVING = 2.
            let status: UInt8 = routes.serving() ? 1 : 2
            respond(context, id, [0x08, status])
            return
        case .export(let s)?:
            signal = s
        }
        if let budget = routes.budget {
            guard budget.tryAcquire(message.count) else {
                routes.handler.refused(transport: .grpc, reason: .inflightLimit)
                let text = "too many request bytes in flight (limit \(budget.limit)); retry later"
                fail(context, id, .resourceExhausted, text,
                     details: OTLPResponse.status(code: GRPCStatusCode.resourceExhausted.rawValue, message: text, retryAfterSeconds: 1))
                return
            }
        }
        defer { routes.budget?.release(message.count) }
        let result: IngestResult
        if signal != .traces, let relay = routes.relay {
            result = relay.relay(Array(message), signal: signal, json: false, transport: .grpc, headers: call.headers)
        } else if !call.headers.isEmpty {
            result = routes.handler.ingest(message, transport: .grpc, headers: call.headers)
        } else {
            result = routes.handler.ingest(message, transport: .grpc)
        }
        switch result {
        case .accepted:
            respond(context, id, [])
        case .partiallyAccepted(let rejected, let text):
            respond(context, id, OTLPResponse.exportResponse(rejectedSpans: rejected, message: text))
        case .invalid(let text):
            fail(context, id, .invalidArgument, text)
        case .overloaded(let seconds, let text):
            fail(context, id, .unavailable, text,
                 details: OTLPResponse.status(code: GRPCStatusCode.unavailable.rawValue, message: text, retryAfterSeconds: seconds))
        }
    }

    // MARK: Answers

    private func write(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ payload: HTTP2Frame.FramePayload) {
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: payload)), promise: nil)
        needsFlush = true
    }

    /// HEADERS, the response message, trailers with `grpc-status: 0`.
    private func respond(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ message: [UInt8]) {
        write(context, id, .headers(.init(headers: Self.responseHeaders)))
        var buffer = context.channel.allocator.buffer(capacity: 5 + message.count)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(message.count))
        buffer.writeBytes(message)
        write(context, id, .data(.init(data: .byteBuffer(buffer))))
        write(context, id, .headers(.init(headers: Self.okTrailers, endStream: true)))
    }

    /// A trailers-only answer.
    private func fail(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ code: GRPCStatusCode, _ message: String,
                      details: [UInt8]? = nil) {
        var headers = Self.responseHeaders
        headers.add(name: "grpc-status", value: String(code.rawValue))
        headers.add(name: "grpc-message", value: GRPCText.percentEncoded(message))
        if let details { headers.add(name: "grpc-status-details-bin", value: GRPCText.base64(details)) }
        write(context, id, .headers(.init(headers: headers, endStream: true)))
    }

    static let responseHeaders: HPACKHeaders = [
        ":status": "200", "content-type": "application/grpc", "grpc-accept-encoding": "identity,deflate,gzip",
    ]
    static let okTrailers: HPACKHeaders = ["grpc-status": "0"]
}

/// gRPC's text encodings of header values.
enum GRPCText {
    /// `grpc-message`: bytes outside printable ASCII, and `%`, as `%XX` of their UTF-8.
    static func percentEncoded(_ text: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
                out.append(byte)
            } else {
                out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `-bin` headers: base64 without padding.
    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            var v = UInt32(bytes[i]) << 16
            if n > 1 { v |= UInt32(bytes[i + 1]) << 8 }
            if n > 2 { v |= UInt32(bytes[i + 2]) }
            for k in 0...n { out.append(alphabet[Int((v >> (18 - 6 * UInt32(k))) & 0x3F)]) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Listener settings of the gRPC receiver (from `IngestLimits` and the request limit).
struct GRPCListenerSettings: Sendable {
    var maxConcurrentStreams: Int
    var connectionWindow = 16 << 20
    var maxFrameSize = 1 << 20
    var management: NIOHTTP2ServerConnectionManagementHandler.Configuration
}

/// Open connections of a listener.
final class ConnectionCount: Sendable {
    let open = Atomic(0)
}

/// Binds, serves and quiesces the gRPC listener.
final class GRPCListener: Sendable {
    let group: any EventLoopGroup
    let routes: GRPCRoutes
    let settings: GRPCListenerSettings
    let sslContext: NIOSSLContext?
    let quiesce: ServerQuiescingHelper
    private let state = Mutex(State())
    private let connections = ConnectionCount()
    /// Completed with the bound address, or the bind error.
    let bound: EventLoopPromise<SocketAddress>
    /// Completed when the listener and every connection are closed after `beginGracefulShutdown`.
    let closed: EventLoopPromise<Void>

    struct State {
        var shutdownRequested = false
        var serverChannel: (any Channel)? = nil
        var finished = false
    }

    init(group: any EventLoopGroup, routes: GRPCRoutes, settings: GRPCListenerSettings, sslContext: NIOSSLContext?) {
        self.group = group
        self.routes = routes
        self.settings = settings
        self.sslContext = sslContext
        quiesce = ServerQuiescingHelper(group: group)
        bound = group.any().makePromise()
        closed = group.any().makePromise()
    }

    func bind(host: String, port: Int) async throws -> any Channel {
        let routes = routes, settings = settings, sslContext = sslContext, quiesce = quiesce
        var configuration = NIOHTTP2Handler.ConnectionConfiguration()
        configuration.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: settings.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxFrameSize, value: settings.maxFrameSize),
            // Larger than any message taken: a call never waits for a stream WINDOW_UPDATE (the connection window
            // bounds what a connection has in flight).
            HTTP2Setting(parameter: .initialWindowSize, value: min(Int(Int32.max), routes.maxWireBytes + (1 << 20))),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 64 << 10),
        ]
        let connection = configuration
        let management = settings.management
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [connections] channel in
                if connections.open.add(1, ordering: .relaxed).newValue > routes.maxConnections {
                    connections.open.subtract(1, ordering: .relaxed)
                    routes.handler.refused(transport: .grpc, reason: .connectionLimit)
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in connections.open.subtract(1, ordering: .relaxed) }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let sslContext { try sync.addHandler(NIOSSLServerHandler(context: sslContext)) }
                    try sync.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection))
                    try sync.addHandler(NIOHTTP2ServerConnectionManagementHandler(eventLoop: channel.eventLoop, configuration: management))
                    try sync.addHandler(GRPCConnectionHandler(routes: routes, connectionWindow: settings.connectionWindow))
                }
            }
        do {
            let channel = try await bootstrap.bind(host: host == "localhost" ? "127.0.0.1" : host, port: port).get()
            let stopNow = state.withLock { s -> Bool in
                s.serverChannel = channel
                return s.shutdownRequested
            }
            bound.succeed(channel.localAddress!)
            if stopNow { beginGracefulShutdown() }
            return channel
        } catch {
            bound.fail(error)
            finish()
            throw error
        }
    }

    /// Stops accepting; every connection is told to go (GOAWAY) and closes once its calls are answered.
    func beginGracefulShutdown() {
        let start = state.withLock { s -> Bool in
            defer { s.shutdownRequested = true }
            return !s.shutdownRequested && s.serverChannel != nil
        }
        // Not bound yet: `bind` stops at once when it completes.
        guard start else { return }
        let quiesced = group.any().makePromise(of: Void.self)
        quiesced.futureResult.whenComplete { _ in self.finish() }
        quiesce.initiateShutdown(promise: quiesced)
    }

    /// Closes the listener at once (the drain deadline passed). Connections still open were told to quiesce; their
    /// grace timer closes them.
    func closeNow() {
        state.withLock { $0.serverChannel }?.close(promise: nil)
        finish()
    }

    private func finish() {
        let first = state.withLock { s -> Bool in
            defer { s.finished = true }
            return !s.finished
        }
        if first { closed.succeed() }
    }
}
