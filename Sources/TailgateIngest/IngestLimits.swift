import Synchronization
package import TailgateHTTPServer

/// What one client, or all of them together, may cost the receivers. Every field has a documented default.
package struct IngestLimits: Sendable, Equatable {
    /// Largest accepted export request, after decompression: gRPC RESOURCE_EXHAUSTED / HTTP 413. Default 16 MiB.
    package var maxRequestBytes: Int = 16 << 20
    /// Request bytes being read or processed at once, over every connection of both receivers; a request that would
    /// go over is answered at once, before its body is read, with HTTP 429 / gRPC RESOURCE_EXHAUSTED and a retry
    /// delay. Default 256 MiB.
    package var maxInflightBytes: Int = 256 << 20
    /// Open connections per listener; beyond it new connections are closed at once while existing ones are served.
    /// Default 1,024.
    package var maxConnections: Int = 1024
    /// HTTP: a new connection must deliver a complete request head within this. Default 10 s.
    package var readHeaderTimeout: Duration = .seconds(10)
    /// HTTP: a request's body must have arrived this long after its head (408, connection closed). Default 60 s.
    package var readBodyTimeout: Duration = .seconds(60)
    /// A connection with no request in progress is closed after this (HTTP keep-alive; gRPC idle). Default 2 min.
    package var connectionIdleTimeout: Duration = .seconds(120)
    /// gRPC: concurrent streams (calls) per connection. Default 64.
    package var grpcMaxConcurrentStreams: Int = 64
    /// gRPC: a keepalive ping after this long without reads, the connection closed if unanswered in 20 s. Default 2 min.
    package var grpcKeepaliveTime: Duration = .seconds(120)
    /// gRPC: connections are gracefully closed (GOAWAY, 30 s to finish calls) after this, so that load balancers
    /// can rebalance; nil never. Default 30 min.
    package var maxConnectionAge: Duration? = .seconds(1800)

    package init() {}
}

extension HTTPServer.Options {
    /// The OTLP/HTTP receiver's bounds: body size, connection cap, timeouts, and the in-flight budget it shares with
    /// the gRPC receiver.
    package init(limits: IngestLimits, budget: InflightBudget?) {
        self.init(maxBodyBytes: limits.maxRequestBytes)
        maxConnections = limits.maxConnections
        readHeaderTimeout = limits.readHeaderTimeout
        readBodyTimeout = limits.readBodyTimeout
        idleTimeout = limits.connectionIdleTimeout
        self.budget = budget
    }
}

/// The global bound on in-flight request bytes (`IngestLimits.maxInflightBytes`), shared by both receivers (the
/// HTTP server takes it as its `HTTPBodyBudget`).
package final class InflightBudget: HTTPBodyBudget {
    package let limit: Int
    private let used = Atomic<Int>(0)

    package init(limit: Int) {
        self.limit = limit
    }

    /// Takes `bytes` from the budget, or answers false when they do not fit (nothing taken). A request larger than the
    /// whole budget is admitted when nothing else is in flight, so a limit below `maxRequestBytes` never wedges.
    package func tryAcquire(_ bytes: Int) -> Bool {
        var current = used.load(ordering: .relaxed)
        while true {
            guard current == 0 || current + bytes <= limit else { return false }
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + bytes, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
    }

    package func release(_ bytes: Int) {
        used.subtract(bytes, ordering: .acquiringAndReleasing)
    }

    package var inUse: Int { used.load(ordering: .relaxed) }
}
