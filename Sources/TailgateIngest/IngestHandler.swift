import TailgateWire

/// The transport a request arrived on (a metric label).
package enum IngestTransport: String, Sendable {
    case grpc
    case http
}

/// What the pipeline did with one export request.
package enum IngestResult: Sendable, Equatable {
    /// Every span accepted.
    case accepted
    /// Some spans were rejected (invalid IDs); the client must not retry.
    case partiallyAccepted(rejectedSpans: Int64, message: String)
    /// The request is malformed: INVALID_ARGUMENT / HTTP 400. Not retryable.
    case invalid(String)
    /// Temporarily unable to take more: UNAVAILABLE / HTTP 503 with Retry-After. Retryable.
    case overloaded(retryAfterSeconds: Int, message: String)
}

/// Receives the protobuf bytes of each `ExportTraceServiceRequest`, whatever transport and encoding it came in.
package protocol TraceIngestHandler: Sendable {
    /// Called on an I/O thread; must not block.
    func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult
    /// A request refused before it reached `ingest` (too large, bad encoding or content type, malformed JSON).
    func refused(transport: IngestTransport, reason: RefusalReason)
    /// Lowercased names of request headers the handler passes through to the downstream (e.g. `x-scope-orgid`);
    /// when any is present on a request, `ingest(_:transport:headers:)` is called with them.
    var passThroughHeaders: [String] { get }
    /// `ingest` with the request's pass-through headers (name as configured, value).
    func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport, headers: [(String, String)]) -> IngestResult
}

extension TraceIngestHandler {
    package var passThroughHeaders: [String] { [] }
    package func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport, headers: [(String, String)]) -> IngestResult {
        ingest(body, transport: transport)
    }

    /// The pass-through headers of a request, given a lookup of a header's value by lowercased name.
    package func passThrough(_ value: (String) -> String?) -> [(String, String)] {
        passThroughHeaders.compactMap { name in value(name).map { (name, $0) } }
    }
}

/// Why a request was refused before its spans were read.
package enum RefusalReason: String, Sendable, CaseIterable {
    case tooLarge = "too_large"
    case badEncoding = "bad_encoding"
    case badContentType = "bad_content_type"
    case malformedJSON = "malformed_json"
    case notFound = "not_found"
    /// Over `IngestLimits.maxInflightBytes`: answered before the body is read, with a retry delay.
    case inflightLimit = "inflight_limit"
    /// Over `IngestLimits.maxConnections`: the connection was closed at once.
    case connectionLimit = "connection_limit"
    /// The request head or body did not arrive in time (`read_header_timeout`, `read_body_timeout`).
    case timeout
    /// No valid bearer token (`auth.bearer_tokens`): gRPC UNAUTHENTICATED / HTTP 401.
    case unauthenticated
}

/// Encodings of the OTLP response messages.
package enum OTLPResponse {
    /// `ExportTraceServiceResponse`: empty on full success, with `partial_success` otherwise.
    package static func exportResponse(rejectedSpans: Int64 = 0, message: String = "") -> [UInt8] {
        guard rejectedSpans != 0 || !message.isEmpty else { return [] }
        var w = ProtoWriter()
        w.appendMessageField(1) { p in
            if rejectedSpans != 0 { p.appendVarintField(1, UInt64(bitPattern: rejectedSpans)) }
            if !message.isEmpty { p.appendStringField(2, message) }
        }
        return w.bytes
    }

    package static func exportResponseJSON(rejectedSpans: Int64 = 0, message: String = "") -> String {
        guard rejectedSpans != 0 || !message.isEmpty else { return "{}" }
        return #"{"partialSuccess":{"rejectedSpans":"\#(rejectedSpans)","errorMessage":\#(jsonString(message))}}"#
    }

    /// `google.rpc.Status` with a gRPC code and message, optionally carrying a `google.rpc.RetryInfo`.
    package static func status(code: Int, message: String, retryAfterSeconds: Int? = nil) -> [UInt8] {
        var w = ProtoWriter()
        if code != 0 { w.appendVarintField(1, UInt64(code)) }
        if !message.isEmpty { w.appendStringField(2, message) }
        if let retryAfterSeconds {
            // details: Any { type_url, value: RetryInfo { retry_delay: Duration { seconds } } }
            w.appendMessageField(3) { any in
                any.appendStringField(1, "type.googleapis.com/google.rpc.RetryInfo")
                any.appendMessageField(2) { info in
                    info.appendMessageField(1) { d in d.appendVarintField(1, UInt64(retryAfterSeconds)) }
                }
            }
        }
        return w.bytes
    }

    package static func statusJSON(code: Int, message: String) -> String {
        #"{"code":\#(code),"message":\#(jsonString(message))}"#
    }
}

/// A JSON string literal.
package func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case let c where c.value < 0x20:
            out += "\\u" + String(repeating: "0", count: 4 - String(c.value, radix: 16).count) + String(c.value, radix: 16)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// The OTLP signals the receivers take. Traces go to the sampling pipeline (`TraceIngestHandler`); metrics and logs
/// are relayed unchanged (`SignalIngestHandler`).
package enum IngestSignal: String, Sendable, CaseIterable {
    case traces
    case metrics
    case logs

    /// `POST` path on the OTLP/HTTP receiver.
    package var httpPath: String { "/v1/\(rawValue)" }

    /// The gRPC service whose `Export` method takes this signal.
    package var grpcService: String {
        switch self {
        case .traces: "opentelemetry.proto.collector.trace.v1.TraceService"
        case .metrics: "opentelemetry.proto.collector.metrics.v1.MetricsService"
        case .logs: "opentelemetry.proto.collector.logs.v1.LogsService"
        }
    }
}

/// Receives metrics and logs export requests (after authentication, size limits and decompression) to relay them
/// unchanged. Answers `.accepted`, or `.overloaded` when its queue is full (the client retries), or `.invalid`.
package protocol SignalIngestHandler: Sendable {
    /// Called on an I/O or route thread; must not block. `json`: the body is OTLP/JSON (HTTP only). `headers`: the
    /// request's pass-through headers (see `TraceIngestHandler.passThroughHeaders`).
    func relay(_ body: [UInt8], signal: IngestSignal, json: Bool, transport: IngestTransport, headers: [(String, String)]) -> IngestResult
    /// Whether OTLP/JSON bodies can be relayed (only to an OTLP/HTTP downstream); otherwise they are answered 415.
    var acceptsJSON: Bool { get }
}

extension SignalIngestHandler {
    /// Without pass-through headers.
    package func relay(_ body: [UInt8], signal: IngestSignal, json: Bool, transport: IngestTransport) -> IngestResult {
        relay(body, signal: signal, json: json, transport: transport, headers: [])
    }
}
