package import NIOCore
import NIOHTTP2
import NIOPosix

/// The OTLP/gRPC receiver (default port 4317), on SwiftNIO's HTTP/2 (`OTLPGRPCServer.swift`). gzip and deflate are
/// accepted; the size limit applies after decompression (RESOURCE_EXHAUSTED beyond it, also for a message whose
/// compressed size alone passes twice the limit: it is answered without being read on).
///
/// Connections, streams per connection, keepalive, idle and age limits come from `IngestLimits`. Every connection is
/// bounded by its HTTP/2 connection window (16 MiB) plus the message being answered.
package final class GRPCIngestServer: Sendable {
    private let listener: GRPCListener
    private let host: String
    private let port: Int
    /// `HOST:PORT` as configured, for messages.
    package let address: String

    package convenience init(host: String, port: Int, maxRequestBytes: Int, handler: any TraceIngestHandler) {
        var limits = IngestLimits()
        limits.maxRequestBytes = maxRequestBytes
        self.init(host: host, port: port, limits: limits, budget: nil, handler: handler, serving: { true })
    }

    package convenience init(host: String, port: Int, limits: IngestLimits, budget: InflightBudget?, handler: any TraceIngestHandler,
                            authenticator: Authenticator? = nil, serving: @escaping @Sendable () -> Bool) {
        self.init(host: host, port: port, limits: limits, budget: budget, handler: handler, authenticator: authenticator,
                  relay: nil, tls: nil, serving: serving)
    }

    /// With `relay`, metrics and logs (`MetricsService/Export`, `LogsService/Export`) are taken too; with `tls`, the
    /// listener speaks TLS only (mTLS with a client CA), its certificate reloaded by `tls.reloader`.
    package init(host: String, port: Int, limits: IngestLimits, budget: InflightBudget?, handler: any TraceIngestHandler,
                authenticator: Authenticator? = nil, relay: (any SignalIngestHandler)?, tls: IngestTLSContext?,
                serving: @escaping @Sendable () -> Bool, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        address = "\(host.contains(":") ? "[\(host)]" : host):\(port)"
        let routes = GRPCRoutes(
            handler: handler, relay: relay, maxRequestBytes: limits.maxRequestBytes,
            maxWireBytes: max(2 * limits.maxRequestBytes, 64 << 20), budget: budget, authenticator: authenticator,
            serving: serving, passThrough: handler.passThroughHeaders, maxConnections: limits.maxConnections)
        func amount(_ d: Duration) -> TimeAmount {
            .nanoseconds(d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
        }
        let management = NIOHTTP2ServerConnectionManagementHandler.Configuration(
            maxIdleTime: amount(limits.connectionIdleTimeout),
            maxAge: limits.maxConnectionAge.map(amount),
            maxGraceTime: .seconds(30),
            keepalive: .init(pingInterval: amount(limits.grpcKeepaliveTime), ackTimeout: .seconds(20)))
        listener = GRPCListener(
            group: group, routes: routes,
            settings: GRPCListenerSettings(maxConcurrentStreams: limits.grpcMaxConcurrentStreams, management: management),
            sslContext: tls?.grpcSSLContext)
    }

    /// Runs until `beginGracefulShutdown()` and the in-flight calls finished; cancelled, it closes the listener at
    /// once.
    package func serve() async throws {
        let listener = self.listener
        try await withTaskCancellationHandler {
            _ = try await listener.bind(host: host, port: port)
            try await listener.closed.futureResult.get()
        } onCancel: {
            listener.closeNow()
        }
    }

    /// Stops accepting new connections and calls; lets in-flight calls finish.
    package func beginGracefulShutdown() {
        listener.beginGracefulShutdown()
    }

    /// Waits until the listener is bound (call while `serve()` runs); throws, naming the address, when it cannot bind.
    package func waitUntilListening() async throws {
        do {
            _ = try await listener.bound.futureResult.get()
        } catch {
            throw GRPCBindError(address: address, underlying: error)
        }
    }

    /// The bound port (useful with port 0), once listening.
    package var listeningPort: Int? {
        get async { try? await listener.bound.futureResult.get().port }
    }
}

/// The gRPC listener could not bind.
package struct GRPCBindError: Error, CustomStringConvertible {
    package var address: String
    package var underlying: any Error
    package var description: String { "cannot listen on \(address): \(underlying)" }
    package init(address: String, underlying: any Error) {
        self.address = address
        self.underlying = underlying
    }
}
