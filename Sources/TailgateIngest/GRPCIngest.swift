import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOPosix
import TailgateGRPCCodec
import TailgateWire

/// `opentelemetry.proto.collector.trace.v1.TraceService/Export` (and, with a `relay`, the metrics and logs
/// services' `Export`), handled on raw bytes. Every signal gets the same authentication, size limit and in-flight
/// budget; metrics and logs are handed to the relay as they are.
struct TraceServiceExport: RegistrableRPCService {
    static let method = MethodDescriptor(
        fullyQualifiedService: "opentelemetry.proto.collector.trace.v1.TraceService", method: "Export")

    let handler: any TraceIngestHandler
    var relay: (any SignalIngestHandler)? = nil
    let maxRequestBytes: Int
    let budget: InflightBudget?
    let authenticator: Authenticator?

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let handler = self.handler
        let limit = maxRequestBytes
        let budget = self.budget
        let authenticator = self.authenticator
        let relay = self.relay
        let signals: [IngestSignal] = relay == nil ? [.traces] : IngestSignal.allCases
        for signal in signals {
        router.registerHandler(
            forMethod: MethodDescriptor(fullyQualifiedService: signal.grpcService, method: "Export"),
            deserializer: RawDeserializer(), serializer: RawSerializer()
        ) { streamRequest, _ in
            if let authenticator {
                var values = streamRequest.metadata[stringValues: "authorization"].makeIterator()
                let authorization = values.next()
                guard authenticator.accepts(authorization: authorization) else {
                    handler.refused(transport: .grpc, reason: .unauthenticated)
                    throw RPCError(code: .unauthenticated, message: "missing or invalid bearer token")
                }
            }
            let request = try await ServerRequest(stream: streamRequest)
            guard request.message.bytes.count <= limit else {
                handler.refused(transport: .grpc, reason: .tooLarge)
                throw RPCError(
                    code: .resourceExhausted,
                    message: "request of \(request.message.bytes.count) bytes exceeds the limit of \(limit) bytes after decompression")
            }
            // The transport has read the message already; the budget still bounds how many are processed at once.
            let size = request.message.bytes.count
            if let budget {
                guard budget.tryAcquire(size) else {
                    handler.refused(transport: .grpc, reason: .inflightLimit)
                    let message = "too many request bytes in flight (limit \(budget.limit)); retry later"
                    var metadata = Metadata()
                    metadata.addBinary(OTLPResponse.status(code: RPCError.Code.resourceExhausted.rawValue, message: message, retryAfterSeconds: 1),
                                       forKey: "grpc-status-details-bin")
                    throw RPCError(code: .resourceExhausted, message: message, metadata: metadata)
                }
            }
            defer { if let budget { budget.release(size) } }
            let result: IngestResult
            let passed = handler.passThrough { name in request.metadata[stringValues: name].first(where: { _ in true }) }
            if signal != .traces, let relay {
                result = relay.relay(request.message.bytes, signal: signal, json: false, transport: .grpc, headers: passed)
            } else if !passed.isEmpty {
                result = request.message.bytes.withUnsafeBytes { handler.ingest($0, transport: .grpc, headers: passed) }
            } else {
                result = request.message.bytes.withUnsafeBytes { handler.ingest($0, transport: .grpc) }
            }
            switch result {
            case .accepted:
                return StreamingServerResponse(single: ServerResponse(message: RawBytes(bytes: [])))
            case .partiallyAccepted(let rejected, let message):
                let body = OTLPResponse.exportResponse(rejectedSpans: rejected, message: message)
                return StreamingServerResponse(single: ServerResponse(message: RawBytes(bytes: body)))
            case .invalid(let message):
                throw RPCError(code: .invalidArgument, message: message)
            case .overloaded(let seconds, let message):
                var metadata = Metadata()
                let details = OTLPResponse.status(
                    code: RPCError.Code.unavailable.rawValue, message: message, retryAfterSeconds: seconds)
                metadata.addBinary(details, forKey: "grpc-status-details-bin")
                throw RPCError(code: .unavailable, message: message, metadata: metadata)
            }
        }
        }
    }
}

/// `grpc.health.v1.Health/Check` on raw bytes: SERVING while `serving()` says so, NOT_SERVING otherwise (starting,
/// draining at shutdown). The service name in the request is not checked: every service on the port shares the
/// answer. `Watch` is not offered (UNIMPLEMENTED, as grpc-health-probe and Kubernetes use `Check`).
struct HealthService: RegistrableRPCService {
    static let check = MethodDescriptor(fullyQualifiedService: "grpc.health.v1.Health", method: "Check")
    let serving: @Sendable () -> Bool

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let serving = self.serving
        router.registerHandler(forMethod: Self.check, deserializer: RawDeserializer(), serializer: RawSerializer()) { streamRequest, _ in
            _ = try await ServerRequest(stream: streamRequest)
            // HealthCheckResponse { ServingStatus status = 1; } with SERVING = 1, NOT_SERVING = 2.
            let status: UInt8 = serving() ? 1 : 2
            return StreamingServerResponse(single: ServerResponse(message: RawBytes(bytes: [0x08, status])))
        }
    }
}

/// The OTLP/gRPC receiver (default port 4317). gzip is accepted; the size limit applies after decompression.
///
/// The limit is enforced here, so that an oversize request gets RESOURCE_EXHAUSTED (not retryable by OTLP clients).
/// The transport's own limit is set higher (twice the limit, at least 64 MiB) because grpc-swift-nio-transport
/// resets the stream (clients see CANCELLED, which they retry) when its limit is hit; only requests beyond that
/// outer bound still get the reset.
public final class GRPCIngestServer: Sendable {
    private let server: GRPCServer<HTTP2ServerTransport.Posix>
    private let transport: HTTP2ServerTransport.Posix
    /// `HOST:PORT` as configured, for messages.
    public let address: String

    public convenience init(host: String, port: Int, maxRequestBytes: Int, handler: any TraceIngestHandler) {
        var limits = IngestLimits()
        limits.maxRequestBytes = maxRequestBytes
        self.init(host: host, port: port, limits: limits, budget: nil, handler: handler, serving: { true })
    }

    /// Streams per connection, keepalive, idle and age limits come from `limits` (no per-listener connection cap:
    /// grpc-swift-nio-transport has no hook for one; `maxConcurrentStreams` × the request limit bounds a connection).
    public convenience init(host: String, port: Int, limits: IngestLimits, budget: InflightBudget?, handler: any TraceIngestHandler,
                            authenticator: Authenticator? = nil, serving: @escaping @Sendable () -> Bool) {
        self.init(host: host, port: port, limits: limits, budget: budget, handler: handler, authenticator: authenticator,
                  relay: nil, tls: nil, serving: serving)
    }

    /// With `relay`, metrics and logs (`MetricsService/Export`, `LogsService/Export`) are taken too; with `tls`, the
    /// listener speaks TLS only (mTLS with a client CA), its certificate reloaded by `tls.reloader`.
    public init(host: String, port: Int, limits: IngestLimits, budget: InflightBudget?, handler: any TraceIngestHandler,
                authenticator: Authenticator? = nil, relay: (any SignalIngestHandler)?, tls: IngestTLSContext?,
                serving: @escaping @Sendable () -> Bool) {
        let maxRequestBytes = limits.maxRequestBytes
        address = "\(host.contains(":") ? "[\(host)]" : host):\(port)"
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.compression.enabledAlgorithms = .all
        config.rpc.maxRequestPayloadSize = max(2 * maxRequestBytes, 64 << 20)
        config.http2.maxConcurrentStreams = limits.grpcMaxConcurrentStreams
        config.connection.maxIdleTime = limits.connectionIdleTimeout
        config.connection.maxAge = limits.maxConnectionAge
        config.connection.maxGraceTime = .seconds(30)
        config.connection.keepalive.time = limits.grpcKeepaliveTime
        config.connection.keepalive.timeout = .seconds(20)
        // Export requests are 0.1–4 MB: with HTTP/2's default 64 KiB window a client stalls for a WINDOW_UPDATE
        // round trip every 64 KiB, and 16 KiB frames mean many frames per request.
        config.http2.targetWindowSize = 16 << 20
        config.http2.maxFrameSize = 1 << 20
        transport = HTTP2ServerTransport.Posix(
            address: .ipv4OrIPv6(host: host, port: port), transportSecurity: tls?.grpcSecurity ?? .plaintext, config: config)
        server = GRPCServer(transport: transport, services: [TraceServiceExport(handler: handler, relay: relay, maxRequestBytes: maxRequestBytes, budget: budget, authenticator: authenticator),
                                                       HealthService(serving: serving)])
    }

    /// Runs until `beginGracefulShutdown()` and the in-flight calls finished.
    public func serve() async throws {
        try await server.serve()
    }

    /// Stops accepting new connections and calls; lets in-flight calls finish.
    public func beginGracefulShutdown() {
        server.beginGracefulShutdown()
    }

    /// Waits until the listener is bound (call while `serve()` runs); throws, naming the address, when it cannot bind.
    public func waitUntilListening() async throws {
        do {
            _ = try await transport.listeningAddress
        } catch {
            throw GRPCBindError(address: address, underlying: error)
        }
    }

    /// The bound port (useful with port 0), once listening.
    public var listeningPort: Int? {
        get async {
            guard let address = try? await transport.listeningAddress else { return nil }
            if let v4 = address.ipv4 { return v4.port }
            if let v6 = address.ipv6 { return v6.port }
            return nil
        }
    }
}

extension GRPCNIOTransportCore.SocketAddress {
    /// An IPv4 address for dotted quads and `localhost`, IPv6 otherwise.
    static func ipv4OrIPv6(host: String, port: Int) -> Self {
        if host.contains(":") { return .ipv6(host: host, port: port) }
        return .ipv4(host: host == "localhost" ? "127.0.0.1" : host, port: port)
    }
}

/// The gRPC listener could not bind.
public struct GRPCBindError: Error, CustomStringConvertible {
    public var address: String
    public var underlying: any Error
    public var description: String { "cannot listen on \(address): \(underlying)" }
    public init(address: String, underlying: any Error) {
        self.address = address
        self.underlying = underlying
    }
}
