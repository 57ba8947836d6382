import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TailgateWire

/// OTLP/HTTP (protobuf) to the real collector: `POST` to `http://HOST:PORT/v1/traces`, keep-alive connections
/// reused across requests, retryable statuses 429/502/503/504 with `Retry-After` honoured.
public final class HTTPDownstream: Downstream {
    public let target: String
    private let host: String
    private let port: Int
    private let path: String
    private let gzip: Bool
    private let timeout: Duration
    private let group: any EventLoopGroup
    private let idle = NIOLockedValueBox<[any Channel]>([])
    private let closed = NIOLockedValueBox(false)
    private let closedSignal: EventLoopPromise<Void>

    public init(host: String, port: Int, path: String, gzip: Bool, timeout: Duration,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.path = path
        self.gzip = gzip
        self.timeout = timeout
        self.group = group
        target = "http://\(formatHost(host)):\(port)\(path)"
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

    public func send(_ request: [UInt8]) async -> SendOutcome {
        let channel: any Channel
        do {
            channel = try await checkout()
        } catch {
            return .retryable(reason: "cannot connect to \(target): \(error)", retryAfter: nil)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(formatHost(host)):\(port)")
        headers.add(name: "Content-Type", value: "application/x-protobuf")
        headers.add(name: "User-Agent", value: "tailgate")
        let body = gzip ? Gzip.compress(request) : request
        if gzip { headers.add(name: "Content-Encoding", value: "gzip") }
        headers.add(name: "Content-Length", value: String(body.count))
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
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
        default:
            return .permanent(reason: "HTTP \(code)")
        }
    }

    private func checkout() async throws -> any Channel {
        while let channel = idle.withLockedValue({ $0.popLast() }) {
            if channel.isActive { return channel }
        }
        return try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
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
            var retryAfter: Duration? = nil
            if let value = head.headers.first(name: "retry-after"), let seconds = Int(value.trimmingCharacters(in: .whitespaces)) {
                retryAfter = .seconds(seconds)
            }
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
