package import NIOCore
import NIOHPACK
import NIOHTTP2
package import NIOPosix
import NIOSSL
import Synchronization
import TailgateWire

// OTLP/gRPC to the real collector, written directly on SwiftNIO's HTTP/2 handler, as the receiver is
// (`OTLPGRPCServer.swift`). An export is one unary call: HEADERS, one length-prefixed message, and an answer of HEADERS,
// DATA and trailers (or trailers alone). A general gRPC client added, per call, async sequences, tasks and state
// machines around those few frames, and compressed at zlib's default level, which it does not let a caller choose:
// in a profile of the proxy at 20,000 spans/s, the gzip of forwarded batches was 15 % of the CPU (zlib level 6). Here
// the message is compressed by libdeflate at `forwarder.compression_level` (default 1: 4.3 times zlib level 6's speed
// on OTLP batches, to 5.5 : 1 instead of 5.8 : 1), on the sending task's thread, not on the connection's event loop.
//
// - HTTP/2 (framing, HPACK, SETTINGS, flow control of what is sent, PING replies) comes from NIOHTTP2, TLS from NIOSSL,
//   name resolution and connecting from NIOPosix's `ClientBootstrap` (every address of a name is tried, happy-eyeballs
//   style; a name is resolved again on every new connection, so a collector that moves is followed).
// - One connection at a time, on one event loop; every call of this client runs there, with no lock. A call that
//   finds no connection starts one. When connecting fails, calls fail at once (retryable, as gRPC's `waitForReady:
//   false` does) until the reconnect backoff has passed: the forwarder retries them with its own backoff.
// - A connection that says GOAWAY, or closes, takes no new calls: the next call opens a new one. Its calls in flight
//   that the server did not take fail retryable (UNAVAILABLE), as do those of a connection that closes.
// - Each call carries `grpc-timeout` and is cancelled (RST_STREAM) when its deadline passes (DEADLINE_EXCEEDED).
// - A non-200 answer without `grpc-status` is mapped to a status as gRPC's HTTP mapping says (429, 502, 503, 504:
//   UNAVAILABLE).

/// gRPC status codes (the ones classified are named).
package enum GRPCCode: Int, Sendable {
    case ok = 0, cancelled = 1, unknown = 2, invalidArgument = 3, deadlineExceeded = 4, notFound = 5, alreadyExists = 6
    case permissionDenied = 7, resourceExhausted = 8, failedPrecondition = 9, aborted = 10, outOfRange = 11
    case unimplemented = 12, `internal` = 13, unavailable = 14, dataLoss = 15, unauthenticated = 16

    package var name: String {
        switch self {
        case .ok: "ok"
        case .cancelled: "cancelled"
        case .unknown: "unknown"
        case .invalidArgument: "invalid argument"
        case .deadlineExceeded: "deadline exceeded"
        case .notFound: "not found"
        case .alreadyExists: "already exists"
        case .permissionDenied: "permission denied"
        case .resourceExhausted: "resource exhausted"
        case .failedPrecondition: "failed precondition"
        case .aborted: "aborted"
        case .outOfRange: "out of range"
        case .unimplemented: "unimplemented"
        case .internal: "internal"
        case .unavailable: "unavailable"
        case .dataLoss: "data loss"
        case .unauthenticated: "unauthenticated"
        }
    }

    /// The status of an HTTP answer that carries no `grpc-status` (gRPC's "HTTP to gRPC status code mapping").
    static func forHTTP(_ status: Int) -> GRPCCode {
        switch status {
        case 400: .internal
        case 401: .unauthenticated
        case 403: .permissionDenied
        case 404: .unimplemented
        case 429, 502, 503, 504: .unavailable
        default: .unknown
        }
    }

    /// The status of a stream reset by the server (gRPC's "HTTP/2 RST_STREAM error code mapping").
    static func forReset(_ code: HTTP2ErrorCode) -> GRPCCode {
        switch code {
        case .refusedStream: .unavailable
        case .cancel: .cancelled
        case .enhanceYourCalm: .resourceExhausted
        case .inadequateSecurity: .permissionDenied
        default: .internal
        }
    }
}

/// The end of one call: its status and message, and the response message when it succeeded.
package struct GRPCCallResult: Sendable {
    package var code: GRPCCode
    package var message: String
    package var response: [UInt8] = []
}

/// OTLP/gRPC to the real collector (see the comment at the top of GRPCDownstream.swift).
package final class GRPCDownstream: Downstream {
    package let target: String
    let connections: GRPCConnectionPool
    /// gzip level of requests, nil for none.
    let gzipLevel: Int32?

    /// `reconnectBackoff` bounds how long the client waits before dialling a downstream that refused again: it follows
    /// the forwarder's retry backoff, so a collector that is back is used again within `max`.
    /// `resolver`: the name resolution to use instead of the system's (tests). Throws when the TLS files cannot be
    /// loaded.
    package init(host: String, port: Int, gzip: Bool, compressionLevel: Int = 1, timeout: Duration,
                 reconnectBackoff: (initial: Duration, max: Duration) = (.milliseconds(100), .seconds(5)),
                 headers: [String: String] = [:], tls: DownstreamTLS? = nil,
                 resolver: (@Sendable (any EventLoop) -> any Resolver & Sendable)? = nil) throws {
        target = "\(tls == nil ? "grpc" : "grpcs")://\(formatHost(host)):\(port)"
        gzipLevel = gzip ? Int32(clamping: compressionLevel) : nil  // Gzip.compress bounds it
        var sslContext: NIOSSLContext? = nil
        var authority = port == 443 && tls != nil ? formatHost(host) : "\(formatHost(host)):\(port)"
        var serverHostname: String? = nil
        if let tls {
            var configuration = try HTTPDownstream.tlsConfiguration(tls)
            configuration.applicationProtocols = ["h2"]
            sslContext = try NIOSSLContext(configuration: configuration)
            // The certificate must name `server_name` when given (it is also sent as SNI and :authority), else the
            // host; SNI takes names only, so a literal IP address is checked against the certificate's IP addresses.
            if let name = tls.serverName { authority = name }
            let name = tls.serverName ?? host
            serverHostname = isIPLiteral(name) ? nil : name
        }
        var fixed: [(String, String)] = [
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "tailgate"),
            ("grpc-accept-encoding", "gzip"),
        ]
        if gzip { fixed.append(("grpc-encoding", "gzip")) }
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { fixed.append((name.lowercased(), value)) }
        connections = GRPCConnectionPool(
            eventLoop: MultiThreadedEventLoopGroup.singleton.any(), host: host, port: port, authority: authority,
            scheme: tls == nil ? "http" : "https", sslContext: sslContext, serverHostname: serverHostname, headers: fixed,
            timeout: timeout, backoff: reconnectBackoff, resolver: resolver)
    }

    package func run() async throws {
        await connections.waitUntilClosed()
    }

    package func close() {
        connections.close()
    }

    package func send(_ request: [UInt8]) async -> SendOutcome {
        await send(request, signal: .traces, json: false)
    }

    package func send(_ request: [UInt8], signal: OTLPSignal, json: Bool) async -> SendOutcome {
        await send(request, signal: signal, json: json, headers: [])
    }

    package func send(_ request: [UInt8], signal: OTLPSignal, json: Bool, headers: [(String, String)]) async -> SendOutcome {
        guard !json else { return .permanent(reason: "unsupported: OTLP/JSON cannot be sent over gRPC") }
        // Compressed and framed here, on the caller's thread, not on the connection's event loop.
        let payload = request.withUnsafeBytes { raw in gzipLevel.map { Gzip.compress(raw, level: $0) } ?? request }
        var message = ByteBuffer()
        message.reserveCapacity(5 + payload.count)
        message.writeInteger(UInt8(gzipLevel == nil ? 0 : 1))
        message.writeInteger(UInt32(payload.count))
        message.writeBytes(payload)
        let result = await connections.call(path: "/\(signal.grpcService)/Export", message: message,
                                            headers: headers.map { ($0.0.lowercased(), $0.1) })
        switch result.code {
        case .ok:
            if let (rejected, text) = ExportResponse.partialSuccess(result.response) {
                return .partial(rejected: rejected, message: text)
            }
            return .delivered
        default:
            return Self.classify(result.code, result.message)
        }
    }

    /// OTLP's retryable codes (RESOURCE_EXHAUSTED counts as retryable: a collector under pressure says so, unless
    /// it is about the message size, which is answered by splitting).
    static func classify(_ code: GRPCCode, _ message: String) -> SendOutcome {
        let reason = "\(code.name): \(message)"
        switch code {
        case .resourceExhausted where isAboutSize(message):
            return .tooLarge(reason: reason)
        case .invalidArgument:
            return .invalid(reason: reason)
        case .cancelled, .deadlineExceeded, .aborted, .outOfRange, .unavailable, .dataLoss, .resourceExhausted:
            return .retryable(reason: reason, retryAfter: nil)
        default:
            return .permanent(reason: reason)
        }
    }

    /// gRPC implementations word a message-size refusal as "Received message larger than max (N vs. M)",
    /// "message too large", "exceeds the maximum …".
    static func isAboutSize(_ message: String) -> Bool {
        let m = message.lowercased()
        return m.contains("larger than") || m.contains("too large") || m.contains("exceeds") || m.contains("message length")
    }
}

/// Whether `host` is an IPv4 or IPv6 literal.
func isIPLiteral(_ host: String) -> Bool {
    if host.contains(":") { return true }
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts.allSatisfy { UInt8($0) != nil }
}

/// The client's connection and its calls, all on one event loop (`eventLoop`): nothing here is touched elsewhere.
final class GRPCConnectionPool: @unchecked Sendable {
    let eventLoop: any EventLoop
    let host: String
    let port: Int
    let authority: String
    let scheme: String
    let sslContext: NIOSSLContext?
    let serverHostname: String?
    /// Sent with every call, after the pseudo-headers (content type, encodings, the configured headers).
    let headers: [(String, String)]
    let timeout: Duration
    let backoff: (initial: Duration, max: Duration)
    let resolver: (@Sendable (any EventLoop) -> any Resolver & Sendable)?
    /// Whether `close()` was called, and who waits for it (`run()`).
    private let lifecycle = Mutex<(closed: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    private enum State {
        case idle
        case connecting([PendingCall])
        case connected(GRPCClientConnection)
        /// Connecting failed: calls fail at once until `until`.
        case waiting(until: NIODeadline, reason: String)
        case closed
    }

    struct PendingCall {
        var path: String
        var message: ByteBuffer
        var headers: [(String, String)]
        var promise: EventLoopPromise<GRPCCallResult>
    }

    private var state = State.idle
    private var nextBackoff: Duration

    init(eventLoop: any EventLoop, host: String, port: Int, authority: String, scheme: String, sslContext: NIOSSLContext?,
         serverHostname: String?, headers: [(String, String)], timeout: Duration,
         backoff: (initial: Duration, max: Duration), resolver: (@Sendable (any EventLoop) -> any Resolver & Sendable)?) {
        self.eventLoop = eventLoop
        self.host = host
        self.port = port
        self.authority = authority
        self.scheme = scheme
        self.sslContext = sslContext
        self.serverHostname = serverHostname
        self.headers = headers
        self.timeout = timeout
        self.backoff = backoff
        self.resolver = resolver
        nextBackoff = backoff.initial
    }

    /// Returns once `close()` has been called.
    func waitUntilClosed() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resume = lifecycle.withLock { state -> Bool in
                if state.closed { return true }
                state.waiters.append(continuation)
                return false
            }
            if resume { continuation.resume() }
        }
    }

    /// Runs one call to its end (never throws: failures are statuses).
    func call(path: String, message: ByteBuffer, headers: [(String, String)]) async -> GRPCCallResult {
        let promise = eventLoop.makePromise(of: GRPCCallResult.self)
        eventLoop.execute {
            self.start(PendingCall(path: path, message: message, headers: headers, promise: promise))
        }
        return (try? await promise.futureResult.get()) ?? GRPCCallResult(code: .unavailable, message: "call failed")
    }

    func close() {
        let waiters = lifecycle.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.closed = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
        eventLoop.execute {
            let previous = self.state
            self.state = .closed
            switch previous {
            case .connecting(let pending):
                for call in pending { call.promise.succeed(GRPCCallResult(code: .unavailable, message: "client closed")) }
            case .connected(let connection):
                connection.closeWhenIdle()
            case .idle, .waiting, .closed:
                break
            }
        }
    }

    private func start(_ call: PendingCall) {
        eventLoop.assertInEventLoop()
        switch state {
        case .closed:
            call.promise.succeed(GRPCCallResult(code: .unavailable, message: "client closed"))
        case .connecting(var pending):
            pending.append(call)
            state = .connecting(pending)
        case .connected(let connection) where connection.takesCalls:
            connection.start(call, timeout: timeout)
        case .waiting(let until, let reason) where NIODeadline.now() < until:
            call.promise.succeed(GRPCCallResult(code: .unavailable, message: reason))
        case .idle, .connected, .waiting:
            state = .connecting([call])
            connect()
        }
    }

    private func connect() {
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.nanoseconds(Int64(min(timeout.nanosecondsClamped, 10_000_000_000))))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [sslContext, serverHostname] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: sslContext, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(NIOHTTP2Handler(
                        mode: .client,
                        initialSettings: [
                            HTTP2Setting(parameter: .enablePush, value: 0),
                            HTTP2Setting(parameter: .maxConcurrentStreams, value: 256),
                            HTTP2Setting(parameter: .initialWindowSize, value: GRPCClientConnection.streamWindow),
                            HTTP2Setting(parameter: .maxFrameSize, value: 1 << 20),
                        ]))
                }
            }
        if let resolver { bootstrap = bootstrap.resolver(resolver(eventLoop)) }
        bootstrap.connect(host: host, port: port).whenComplete { result in
            self.connected(result)
        }
    }

    private func connected(_ result: Result<any Channel, any Error>) {
        guard case .connecting(let pending) = state else {
            // Closed while connecting.
            if case .success(let channel) = result { channel.close(promise: nil) }
            return
        }
        switch result {
        case .success(let channel):
            let connection = GRPCClientConnection(channel: channel, authority: authority, scheme: scheme, headers: headers) {
                [weak self] connection in
                // The connection went away or said GOAWAY: the next call opens another.
                guard let self, case .connected(let current) = self.state, current === connection else { return }
                self.state = .idle
            }
            do {
                try channel.pipeline.syncOperations.addHandler(connection)
            } catch {
                channel.close(promise: nil)
                failConnecting(pending, "\(error)")
                return
            }
            nextBackoff = backoff.initial
            state = .connected(connection)
            for call in pending { connection.start(call, timeout: timeout) }
        case .failure(let error):
            failConnecting(pending, "connecting to \(host):\(port) failed: \(error)")
        }
    }

    private func failConnecting(_ pending: [PendingCall], _ reason: String) {
        let wait = nextBackoff
        nextBackoff = min(backoff.max, nextBackoff * 1.6)
        state = .waiting(until: .now() + .nanoseconds(Int64(wait.nanosecondsClamped)), reason: reason)
        for call in pending { call.promise.succeed(GRPCCallResult(code: .unavailable, message: reason)) }
    }
}

/// One HTTP/2 connection's calls, as the last handler of its pipeline, on its event loop.
final class GRPCClientConnection: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// The receive window of each stream and of the connection: answers are small, so it is never in the way.
    static let streamWindow = 1 << 20
    /// Largest answer message read (an export response is a few bytes; a partial success names a count and a text).
    static let maxResponseBytes = 4 << 20

    private struct Call {
        var promise: EventLoopPromise<GRPCCallResult>
        var timer: Scheduled<Void>?
        var started: NIODeadline
        var status: Int? = nil
        var encoding: String? = nil
        var body = ByteBuffer()
    }

    let channel: any Channel
    let authority: String
    let scheme: String
    let headers: [(String, String)]
    private let gone: (GRPCClientConnection) -> Void
    private var context: ChannelHandlerContext?
    private var calls: [HTTP2StreamID: Call] = [:]
    private var nextStreamID = 1
    private var draining = false
    private var closing = false
    private var unreturned = 0
    /// Why the connection failed, for the calls it ends.
    private var failure: String? = nil
    /// When a frame was last read.
    private var lastRead = NIODeadline.now()
    /// Whether HTTP/2 has started (its preface sent): calls before that wait in `queued`.
    private var active = false
    private var queued: [(GRPCConnectionPool.PendingCall, Duration)] = []

    init(channel: any Channel, authority: String, scheme: String, headers: [(String, String)],
         gone: @escaping (GRPCClientConnection) -> Void) {
        self.channel = channel
        self.authority = authority
        self.scheme = scheme
        self.headers = headers
        self.gone = gone
    }

    /// Whether a new call may start here (not draining after a GOAWAY, not closed, stream IDs left).
    var takesCalls: Bool { context != nil && !draining && !closing && nextStreamID < Int(Int32.max) - 2 }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // The connect future completes before the channel's activation has gone down the pipeline, and HTTP/2 sends
        // its preface on activation: calls start once that is done, on the next turn of the event loop.
        context.eventLoop.assumeIsolated().execute { self.activate() }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        activate()
    }

    private func activate() {
        guard !active, let context, context.channel.isActive else { return }
        active = true
        context.write(wrapOutboundOut(HTTP2Frame(
            streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: Self.streamWindow - 65_535))), promise: nil)
        let waiting = queued
        queued = []
        for (call, timeout) in waiting { start(call, timeout: timeout) }
        context.flush()
    }

    func start(_ call: GRPCConnectionPool.PendingCall, timeout: Duration) {
        guard let context, takesCalls else {
            call.promise.succeed(GRPCCallResult(code: .unavailable, message: "connection closed"))
            return
        }
        guard active else {
            queued.append((call, timeout))
            return
        }
        let id = HTTP2StreamID(nextStreamID)
        nextStreamID += 2
        var fields = HPACKHeaders()
        fields.reserveCapacity(8 + headers.count + call.headers.count)
        fields.add(name: ":method", value: "POST")
        fields.add(name: ":scheme", value: scheme)
        fields.add(name: ":path", value: call.path)
        fields.add(name: ":authority", value: authority)
        let millis = max(1, Int64(timeout.nanosecondsClamped / 1_000_000))
        fields.add(name: "grpc-timeout", value: millis < 100_000_000 ? "\(millis)m" : "\(min(99_999_999, millis / 1000))S")
        for (name, value) in headers where !call.headers.contains(where: { $0.0 == name }) {
            fields.add(name: name, value: value)
        }
        for (name, value) in call.headers { fields.add(name: name, value: value) }
        let timer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(millis * 1_000_000)) { [weak self] () -> Void in
            self?.expire(id)
        }
        calls[id] = Call(promise: call.promise, timer: timer, started: .now())
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: fields)))), promise: nil)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(call.message), endStream: true)))),
                      promise: written)
        context.flush()
        written.futureResult.assumeIsolated().whenFailure { [weak self] error in
            self?.end(id, GRPCCallResult(code: .unavailable, message: "sending failed: \(error)"))
        }
    }

    /// No new calls; the connection closes once its calls have ended.
    func closeWhenIdle() {
        closing = true
        if calls.isEmpty && queued.isEmpty { context?.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        lastRead = .now()
        switch frame.payload {
        case .headers(let payload):
            guard var call = calls[frame.streamID] else { return }
            if call.status == nil {
                call.status = payload.headers.first(name: ":status").flatMap { Int($0) } ?? 0
                call.encoding = payload.headers.first(name: "grpc-encoding")
                calls[frame.streamID] = call
            }
            // Trailers, or trailers only (an answer of headers that ends the stream).
            if payload.endStream { finish(frame.streamID, trailers: payload.headers) }
        case .data(let payload):
            guard case .byteBuffer(var bytes) = payload.data else { return }
            unreturned += bytes.readableBytes
            if unreturned >= Self.streamWindow / 2 {
                context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: unreturned))),
                              promise: nil)
                unreturned = 0
            }
            if var call = calls[frame.streamID] {
                if call.body.readableBytes + bytes.readableBytes > Self.maxResponseBytes + 5 {
                    end(frame.streamID, GRPCCallResult(code: .resourceExhausted, message: "response larger than \(Self.maxResponseBytes) bytes"))
                    context.write(wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .rstStream(.cancel))), promise: nil)
                    return
                }
                call.body.writeBuffer(&bytes)
                calls[frame.streamID] = call
                if payload.endStream {
                    end(frame.streamID, GRPCCallResult(code: .internal, message: "the answer ended without trailers"))
                }
            }
        case .rstStream(let code):
            end(frame.streamID, GRPCCallResult(code: GRPCCode.forReset(code), message: "stream reset by the server: \(code)"))
        case .goAway(let lastStreamID, let code, _):
            draining = true
            gone(self)
            // Calls the server did not take may be retried at once, elsewhere.
            for id in calls.keys where id > lastStreamID {
                end(id, GRPCCallResult(code: .unavailable, message: "the server closed the connection (GOAWAY \(code))"))
            }
            if calls.isEmpty { context.close(promise: nil) }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        draining = true
        gone(self)
        let reason = failure.map { "connection closed: \($0)" } ?? "connection closed"
        for id in Array(calls.keys) { end(id, GRPCCallResult(code: .unavailable, message: reason)) }
        for (call, _) in queued { call.promise.succeed(GRPCCallResult(code: .unavailable, message: reason)) }
        queued = []
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A stream-level error belongs to its call; anything else ends the connection (and so its calls).
        if let streamError = error as? NIOHTTP2Errors.StreamClosed {
            end(streamError.streamID, GRPCCallResult(code: .unavailable, message: "\(error)"))
            return
        }
        if failure == nil { failure = "\(error)" }
        context.close(promise: nil)
    }

    private func expire(_ id: HTTP2StreamID) {
        guard let call = calls[id] else { return }
        end(id, GRPCCallResult(code: .deadlineExceeded, message: "no answer within the timeout"))
        context?.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
        // Not a byte read since the call started: the connection may be dead without having said so (a peer gone, a
        // middlebox that dropped it). Its other calls fail retryable and the next call connects afresh.
        if lastRead < call.started {
            failure = "nothing read from the downstream for longer than the timeout"
            context?.close(promise: nil)
        }
    }

    /// The call's status from its trailers (or its HTTP status), and its message.
    private func finish(_ id: HTTP2StreamID, trailers: HPACKHeaders) {
        guard var call = calls[id] else { return }
        let message = trailers.first(name: "grpc-message").map(Self.percentDecoded) ?? ""
        guard let text = trailers.first(name: "grpc-status"), let raw = Int(text) else {
            let http = call.status ?? 0
            end(id, GRPCCallResult(code: http == 200 ? .internal : GRPCCode.forHTTP(http),
                                   message: http == 200 ? "no grpc-status in the trailers" : "HTTP status \(http)"))
            return
        }
        let code = GRPCCode(rawValue: raw) ?? .unknown
        guard code == .ok else {
            end(id, GRPCCallResult(code: code, message: message))
            return
        }
        // The answer: one length-prefixed message (possibly none, possibly compressed).
        var response: [UInt8] = []
        if call.body.readableBytes >= 5, let flag = call.body.readInteger(as: UInt8.self),
           let length = call.body.readInteger(as: UInt32.self), let bytes = call.body.readBytes(length: Int(length)) {
            if flag & 1 == 1 {
                guard call.encoding == "gzip" || call.encoding == "deflate",
                      let inflated = bytes.withUnsafeBytes({ try? Gzip.decompress($0, limit: Self.maxResponseBytes) }) else {
                    end(id, GRPCCallResult(code: .internal, message: "cannot decompress the answer (\(call.encoding ?? "no encoding"))"))
                    return
                }
                response = inflated
            } else {
                response = bytes
            }
        }
        end(id, GRPCCallResult(code: .ok, message: message, response: response))
    }

    private func end(_ id: HTTP2StreamID, _ result: GRPCCallResult) {
        guard let call = calls.removeValue(forKey: id) else { return }
        call.timer?.cancel()
        call.promise.succeed(result)
        if calls.isEmpty && (closing || (draining && context != nil)) { context?.close(promise: nil) }
    }

    /// `grpc-message`: `%XX` sequences are bytes of UTF-8.
    static func percentDecoded(_ text: String) -> String {
        guard text.contains("%") else { return text }
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count,
               let v = UInt8(String(decoding: bytes[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
