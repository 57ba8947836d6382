#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import TailgateWire

/// OTLP/HTTP (protobuf) to the real collector: `POST` to `http://HOST:PORT/v1/traces`, keep-alive connections
/// reused across requests, retryable statuses 429/502/503/504 with `Retry-After` honoured. With `tls`, every
/// connection starts with a TLS handshake (NIOSSL; `https://`); metrics and logs go to the paths next to the traces
/// path (`/v1/metrics`, `/v1/logs`).
public final class HTTPDownstream: Downstream {
    public let target: String
    private let host: String
    private let port: Int
    private let path: String
    private let gzip: Bool
    private let timeout: Duration
    private let group: any EventLoopGroup
    /// One context for every connection (nil: plaintext); the name verified and sent as SNI.
    private let sslContext: NIOSSLContext?
    private let serverName: String?
    private let idle = NIOLockedValueBox<[any Channel]>([])
    private let closed = NIOLockedValueBox(false)
    private let closedSignal: EventLoopPromise<Void>

    /// Extra headers sent with every request (API keys, `X-Scope-OrgID`).
    private let extraHeaders: [(String, String)]

    public convenience init(host: String, port: Int, path: String, gzip: Bool, timeout: Duration,
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, headers: [String: String] = [:]) {
        self.init(host: host, port: port, path: path, gzip: gzip, timeout: timeout, group: group, headers: headers,
                  sslContext: nil, serverName: nil)
    }

    /// Over TLS (`https://`); throws when the CA, certificate or key cannot be loaded.
    public convenience init(host: String, port: Int, path: String, gzip: Bool, timeout: Duration,
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, headers: [String: String] = [:],
                            tls: DownstreamTLS) throws {
        let context = try NIOSSLContext(configuration: Self.tlsConfiguration(tls))
        // SNI takes names only; a literal IP address is verified against the certificate's IP addresses.
        let name = tls.serverName ?? host
        let isLiteral = name.contains(":") || name.split(separator: ".").allSatisfy({ UInt8($0) != nil })
        self.init(host: host, port: port, path: path, gzip: gzip, timeout: timeout, group: group, headers: headers,
                  sslContext: context, serverName: isLiteral ? nil : name)
    }

    private init(host: String, port: Int, path: String, gzip: Bool, timeout: Duration, group: any EventLoopGroup,
                 headers: [String: String], sslContext: NIOSSLContext?, serverName: String?) {
        self.sslContext = sslContext
        self.serverName = serverName
        extraHeaders = headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        self.host = host
        self.port = port
        self.path = path
        self.gzip = gzip
        self.timeout = timeout
        self.group = group
        target = "\(sslContext == nil ? "http" : "https")://\(formatHost(host)):\(port)\(path)"
        closedSignal = group.next().makePromise()
    }

    public func run() async throws {
        try await closedSignal.futureResult.get()
    }

    public func close() {
        let wasClosed = closed.withLockedValue { c -> Bool in defer { c = true }; return c }
        guard !wasClosed else { return }
        let channels = idle.withLockedValue { c -> [any Channel] in defer { c = [] }; return c }
        for channel in channels { channel.close(promise: nil) }
        closedSignal.succeed()
    }

    /// The client side of `DownstreamTLS` as NIOSSL configuration.
    static func tlsConfiguration(_ tls: DownstreamTLS) throws -> TLSConfiguration {
        var config = TLSConfiguration.makeClientConfiguration()
        if let ca = tls.caFile { config.trustRoots = .file(ca) }
        if let cert = tls.certFile, let key = tls.keyFile {
            config.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
            config.privateKey = .file(key)
        }
        if tls.insecureSkipVerify { config.certificateVerification = .none }
        config.applicationProtocols = ["http/1.1"]
        return config
    }

    public var acceptsJSON: Bool { true }

    public func send(_ request: [UInt8]) async -> SendOutcome {
        await send(request, signal: .traces, json: false)
    }

    public func send(_ request: [UInt8], signal: OTLPSignal, json: Bool) async -> SendOutcome {
        let channel: any Channel
        do {
            channel = try await checkout()
        } catch {
            return .retryable(reason: "cannot connect to \(target): \(error)", retryAfter: nil)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(formatHost(host)):\(port)")
        headers.add(name: "Content-Type", value: json ? "application/json" : "application/x-protobuf")
        headers.add(name: "User-Agent", value: "tailgate")
        for (name, value) in extraHeaders { headers.replaceOrAdd(name: name, value: value) }
        let body = gzip ? Gzip.compress(request) : request
        if gzip { headers.add(name: "Content-Encoding", value: "gzip") }
        headers.add(name: "Content-Length", value: String(body.count))
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: signal.httpPath(tracesPath: path), headers: headers)
        let promise = channel.eventLoop.makePromise(of: HTTPClientExchange.Response.self)
        let timeoutTask = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.nanosecondsClamped))) {
            promise.fail(ChannelError.connectTimeout(.nanoseconds(0)))
            channel.close(promise: nil)
        }
        channel.writeAndFlush(HTTPClientExchange.Request(head: head, body: body, promise: promise), promise: nil)
        do {
            let response = try await promise.futureResult.get()
            timeoutTask.cancel()
            if response.keepAlive && channel.isActive && !closed.withLockedValue({ $0 }) {
                idle.withLockedValue { $0.append(channel) }
            } else {
                channel.close(promise: nil)
            }
            return Self.classify(response)
        } catch {
            timeoutTask.cancel()
            channel.close(promise: nil)
            return .retryable(reason: "request to \(target) failed: \(error)", retryAfter: nil)
        }
    }

    static func classify(_ response: HTTPClientExchange.Response) -> SendOutcome {
        let code = response.status.code
        switch code {
        case 200..<300:
            return .delivered
        case 429, 502, 503, 504:
            return .retryable(reason: "HTTP \(code)", retryAfter: response.retryAfter)
        case 413:
            return .tooLarge(reason: "HTTP 413")
        case 400:
            return .invalid(reason: "HTTP 400")
        default:
            return .permanent(reason: "HTTP \(code)")
        }
    }

    private func checkout() async throws -> any Channel {
        while let channel = idle.withLockedValue({ $0.popLast() }) {
            if channel.isActive { return channel }
        }
        let sslContext = self.sslContext, serverName = self.serverName
        return try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPClientExchange())
                }
            }
            .connect(host: host, port: port)
            .get()
    }
}

extension Duration {
    var nanosecondsClamped: UInt64 {
        let (s, atto) = components
        guard s >= 0 else { return 0 }
        return UInt64(min(s, 1_000_000)) * 1_000_000_000 + UInt64(atto / 1_000_000_000)
    }
}

/// One request, one response, on a keep-alive HTTP/1.1 connection.
final class HTTPClientExchange: ChannelDuplexHandler {
    struct Request {
        var head: HTTPRequestHead
        var body: [UInt8]
        var promise: EventLoopPromise<Response>
    }

    struct Response {
        var status: HTTPResponseStatus
        var keepAlive: Bool
        var retryAfter: Duration?
    }

    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Request
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: EventLoopPromise<Response>?
    private var response: Response?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        pending = request.promise
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: request.body.count)
        buffer.writeBytes(request.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            let retryAfter = head.headers.first(name: "retry-after").flatMap { RetryAfter.parse($0, now: wallClockSeconds()) }
            response = Response(status: head.status, keepAlive: head.isKeepAlive, retryAfter: retryAfter)
        case .body:
            break
        case .end:
            if let response, let pending {
                self.pending = nil
                self.response = nil
                pending.succeed(response)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending?.fail(ChannelError.ioOnClosedChannel)
        pending = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        pending?.fail(error)
        pending = nil
        context.close(promise: nil)
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). Negative or past values mean "now"; values that
/// do not parse are ignored (the forwarder's own backoff applies).
enum RetryAfter {
    static func parse(_ value: String, now: Int64) -> Duration? {
        let text = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int64(text) { return .seconds(max(0, seconds)) }
        guard let date = httpDate(text) else { return nil }
        return .seconds(max(0, date - now))
    }

    /// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers must send, as Unix seconds.
    static func httpDate(_ text: String) -> Int64? {
        let parts = text.split(separator: " ")
        guard parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT",
              let day = Int64(parts[1]), let year = Int64(parts[3]) else { return nil }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        guard let monthIndex = months.firstIndex(of: String(parts[2])) else { return nil }
        let hms = parts[4].split(separator: ":").compactMap { Int64($0) }
        guard hms.count == 3, (1...31).contains(day), hms[0] < 24, hms[1] < 60, hms[2] < 61 else { return nil }
        // Days from the civil date (Howard Hinnant's algorithm).
        let m = Int64(monthIndex + 1)
        let y = m <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
    }
}

/// Unix time in seconds.
func wallClockSeconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec)
}
