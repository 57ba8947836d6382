import TailgateWire
import Foundation
import TailgateConfig

/// The outcome of one attempt to deliver an export request.
package enum SendOutcome: Sendable, Equatable {
    case delivered
    /// Accepted, but the downstream rejected some spans (OTLP `partial_success`): they are counted as dropped.
    case partial(rejected: Int, message: String)
    /// Worth retrying (UNAVAILABLE, 503, connection refused, …), optionally after a delay the server asked for.
    case retryable(reason: String, retryAfter: Duration?)
    /// The downstream finds the request's content invalid (INVALID_ARGUMENT, HTTP 400): the batch is bisected so
    /// that only the offending spans are dropped (counted).
    case invalid(reason: String)
    /// The request is larger than the downstream accepts (HTTP 413, RESOURCE_EXHAUSTED about the message size):
    /// split and resent, never retried as is.
    case tooLarge(reason: String)
    /// Not worth retrying and not about the content (UNAUTHENTICATED, 404, …): the spans are dropped and counted.
    case permanent(reason: String)
}

/// Where kept traces go: the real collector, over OTLP.
package protocol Downstream: Sendable {
    /// Human-readable target, for logs.
    var target: String { get }
    /// Runs the downstream's connections until `close()`; returns when closed.
    func run() async throws
    /// Sends one encoded (uncompressed) `ExportTraceServiceRequest`.
    func send(_ request: [UInt8]) async -> SendOutcome
    /// Sends one encoded (uncompressed) export request of `signal` (the matching gRPC method or HTTP path), as it
    /// is: metrics and logs are relayed byte for byte. `json`: the bytes are OTLP/JSON (HTTP downstreams forward
    /// them with `Content-Type: application/json`; others refuse them, see `acceptsJSON`).
    func send(_ request: [UInt8], signal: OTLPSignal, json: Bool) async -> SendOutcome
    /// Like `send(_:signal:json:)`, with headers passed through from the agent's request (e.g. the tenant).
    func send(_ request: [UInt8], signal: OTLPSignal, json: Bool, headers: [(String, String)]) async -> SendOutcome
    /// Whether `send(_:signal:json:)` takes OTLP/JSON bodies as they are (only OTLP/HTTP downstreams do).
    var acceptsJSON: Bool { get }
    /// Stops the connections; `run()` returns.
    func close()
}

extension Downstream {
    /// Downstreams that know only traces: every other signal is refused (permanent, counted by the caller).
    package func send(_ request: [UInt8], signal: OTLPSignal, json: Bool) async -> SendOutcome {
        guard signal == .traces, !json else { return .permanent(reason: "unsupported: \(target) does not take \(signal.rawValue)") }
        return await send(request)
    }

    package var acceptsJSON: Bool { false }

    /// Downstreams without headers (a file) ignore them.
    package func send(_ request: [UInt8], signal: OTLPSignal, json: Bool, headers: [(String, String)]) async -> SendOutcome {
        await send(request, signal: signal, json: json)
    }
}

/// OTLP export responses (`Export*ServiceResponse`): field 1 `partial_success` { 1: rejected count, 2: message }.
enum ExportResponse {
    /// The rejected count and message of a protobuf response's `partial_success`; nil when none was rejected.
    static func partialSuccess(_ bytes: [UInt8]) -> (rejected: Int, message: String)? {
        bytes.withUnsafeBytes { raw -> (Int, String)? in
            var reader = ProtoReader(raw)
            while let (field, wt) = try? reader.readTag() {
                guard field == 1 && wt == .lengthDelimited, let r = try? reader.readLengthDelimited() else {
                    guard (try? reader.skip(wt)) != nil else { return nil }
                    continue
                }
                var inner = ProtoReader(raw, range: r)
                var rejected: Int64 = 0
                var message = ""
                while let (f, w) = try? inner.readTag() {
                    if f == 1 && w == .varint, let v = try? inner.readVarint() { rejected = Int64(bitPattern: v) }
                    else if f == 2 && w == .lengthDelimited, let m = try? inner.readLengthDelimited() { message = inner.string(m) }
                    else if (try? inner.skip(w)) == nil { return nil }
                }
                return rejected > 0 || !message.isEmpty ? (Int(clamping: max(0, rejected)), message) : nil
            }
            return nil
        }
    }
}

/// The OTLP signals. Traces are sampled; metrics and logs are relayed unchanged to the same downstream.
package enum OTLPSignal: String, Sendable, CaseIterable {
    case traces
    case metrics
    case logs

    /// The gRPC service whose `Export` method takes this signal.
    package var grpcService: String {
        switch self {
        case .traces: "opentelemetry.proto.collector.trace.v1.TraceService"
        case .metrics: "opentelemetry.proto.collector.metrics.v1.MetricsService"
        case .logs: "opentelemetry.proto.collector.logs.v1.LogsService"
        }
    }

    /// The OTLP/HTTP path of this signal next to a downstream's traces path: the last segment is replaced
    /// (`/v1/traces` → `/v1/metrics`, `/otlp/v1/traces` → `/otlp/v1/metrics`).
    package func httpPath(tracesPath: String) -> String {
        guard self != .traces else { return tracesPath }
        guard let slash = tracesPath.lastIndex(of: "/") else { return "/v1/\(rawValue)" }
        return String(tracesPath[..<slash]) + "/" + rawValue
    }
}

/// TLS towards the downstream (`grpcs://`, `https://`): the system's roots unless `caFile` is given, a client
/// certificate for mTLS, the name the certificate must carry, and — only when asked for — no verification at all.
package struct DownstreamTLS: Sendable, Equatable {
    /// PEM file of the CA certificates to trust instead of the system's roots.
    package var caFile: String? = nil
    /// Client certificate chain (PEM) presented to the downstream (mTLS); needs `keyFile`.
    package var certFile: String? = nil
    /// The client certificate's private key (PEM).
    package var keyFile: String? = nil
    /// The name to send (SNI, gRPC `:authority`) and verify instead of the address's host.
    package var serverName: String? = nil
    /// Accept any certificate: testing only, logged at warning on every start.
    package var insecureSkipVerify = false

    package init() {}
}

/// How a client for a downstream address is set up (what `DownstreamAddress.makeDownstream` needs besides the address).
package struct DownstreamOptions: Sendable {
    /// Compress requests with gzip.
    package var gzip: Bool
    /// gzip level, 1 (fastest) to 9 (smallest), for gRPC downstreams and HTTP ones alike.
    package var compressionLevel = 1
    /// Per-request timeout.
    package var timeout: Duration
    /// How long a gRPC connection waits before redialling a downstream that went away (see `GRPCDownstream`).
    package var reconnectBackoff: (initial: Duration, max: Duration) = (.milliseconds(100), .seconds(5))
    /// Headers sent with every request (gRPC metadata or HTTP headers; a file ignores them).
    package var headers: [String: String] = [:]
    /// TLS for `grpcs://` and `https://` (nil: the system's roots); ignored by the other kinds.
    package var tls: DownstreamTLS? = nil

    package init(gzip: Bool, timeout: Duration, reconnectBackoff: (initial: Duration, max: Duration) = (.milliseconds(100), .seconds(5)),
                headers: [String: String] = [:], tls: DownstreamTLS? = nil) {
        self.gzip = gzip
        self.timeout = timeout
        self.reconnectBackoff = reconnectBackoff
        self.headers = headers
        self.tls = tls
    }
}

/// Observes every client `DownstreamAddress.makeDownstream` builds (tests check that serve and the load tester both
/// build their clients there).
package enum DownstreamFactoryObserver {
    @TaskLocal package static var built: (@Sendable (DownstreamAddress, any Downstream) -> Void)? = nil
}

extension DownstreamAddress {
    /// The one place where an address becomes a client: `tailgate serve`'s forwarder and `tailgate loadtest`'s
    /// replay connections both come here, so a new kind of downstream is a new case of `DownstreamAddress` and a
    /// new branch of this switch.
    package func makeDownstream(_ options: DownstreamOptions) throws -> any Downstream {
        let client: any Downstream
        switch self {
        case .grpc(let host, let port):
            client = try GRPCDownstream(host: host, port: port, gzip: options.gzip, compressionLevel: options.compressionLevel,
                                        timeout: options.timeout, reconnectBackoff: options.reconnectBackoff,
                                        headers: options.headers)
        case .grpcs(let host, let port):
            client = try GRPCDownstream(host: host, port: port, gzip: options.gzip, compressionLevel: options.compressionLevel,
                                        timeout: options.timeout, reconnectBackoff: options.reconnectBackoff,
                                        headers: options.headers, tls: options.tls ?? DownstreamTLS())
        case .http(let host, let port, let path):
            client = HTTPDownstream(host: host, port: port, path: path, gzip: options.gzip, timeout: options.timeout,
                                    headers: options.headers, compressionLevel: options.compressionLevel)
        case .https(let host, let port, let path):
            client = try HTTPDownstream(host: host, port: port, path: path, gzip: options.gzip, timeout: options.timeout,
                                        headers: options.headers, tls: options.tls ?? DownstreamTLS(),
                                        compressionLevel: options.compressionLevel)
        case .file(let path):
            client = try FileDownstream(path: path)
        }
        DownstreamFactoryObserver.built?(self, client)
        return client
    }
}

/// Where a `--downstream` value points.
package enum DownstreamAddress: Sendable, Equatable, CustomStringConvertible {
    case grpc(host: String, port: Int)
    case http(host: String, port: Int, path: String)
    case file(path: String)
    /// gRPC over TLS (`grpcs://HOST:PORT`).
    case grpcs(host: String, port: Int)
    /// OTLP/HTTP over TLS (`https://HOST:PORT[/path]`).
    case https(host: String, port: Int, path: String)

    /// Parses `grpc://HOST:PORT`, `grpcs://HOST:PORT`, `http://HOST:PORT[/path]`, `https://HOST:PORT[/path]`
    /// (default path `/v1/traces`) or `file:PATH`.
    package init?(_ text: String) {
        if text.hasPrefix("file:") {
            let path = String(text.dropFirst("file:".count))
            guard !path.isEmpty else { return nil }
            self = .file(path: path)
            return
        }
        guard let schemeEnd = text.range(of: "://") else { return nil }
        let scheme = String(text[..<schemeEnd.lowerBound])
        guard ["grpc", "grpcs", "http", "https"].contains(scheme) else { return nil }
        var rest = text[schemeEnd.upperBound...]
        var path = "/v1/traces"
        if let slash = rest.firstIndex(of: "/") {
            let p = String(rest[slash...])
            if p != "/" { path = p }
            rest = rest[..<slash]
        }
        guard let (host, port) = parseHostPort(String(rest)) else { return nil }
        switch scheme {
        case "grpc": self = .grpc(host: host, port: port)
        case "grpcs": self = .grpcs(host: host, port: port)
        case "http": self = .http(host: host, port: port, path: path)
        default: self = .https(host: host, port: port, path: path)
        }
    }

    /// The scheme: `grpc`, `grpcs`, `http`, `https` or `file`.
    package var scheme: String {
        switch self {
        case .grpc: "grpc"
        case .grpcs: "grpcs"
        case .http: "http"
        case .https: "https"
        case .file: "file"
        }
    }

    /// Whether the connection uses TLS.
    package var isTLS: Bool {
        switch self {
        case .grpcs, .https: true
        default: false
        }
    }

    package var description: String {
        switch self {
        case .grpc(let host, let port): "grpc://\(formatHost(host)):\(port)"
        case .grpcs(let host, let port): "grpcs://\(formatHost(host)):\(port)"
        case .http(let host, let port, let path): "http://\(formatHost(host)):\(port)\(path)"
        case .https(let host, let port, let path): "https://\(formatHost(host)):\(port)\(path)"
        case .file(let path): "file:\(path)"
        }
    }
}

func formatHost(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }
