import NIOCore
package import NIOHTTP1
package import TailgateHTTPServer
import TailgateWire

/// The OTLP/HTTP receiver's route: `POST /v1/traces` with `application/x-protobuf` or `application/json`,
/// optionally `Content-Encoding: gzip`. Answers in the request's content type, as OTLP requires. With a `relay`,
/// `POST /v1/metrics` and `/v1/logs` are taken as well (same authentication and limits) and handed over unchanged
/// after decompression: protobuf as it is, JSON as it is (only when the relay can forward JSON, else 415).
package struct OTLPHTTPIngest: Sendable {
    package let handler: any TraceIngestHandler
    /// Limit on the body after decompression.
    package let maxRequestBytes: Int
    /// Required bearer tokens; nil: none required.
    package let authenticator: Authenticator?
    /// Metrics and logs; nil: only traces (other paths 404).
    package let relay: (any SignalIngestHandler)?

    package init(handler: any TraceIngestHandler, maxRequestBytes: Int, authenticator: Authenticator? = nil,
                relay: (any SignalIngestHandler)? = nil) {
        self.relay = relay
        self.handler = handler
        self.maxRequestBytes = maxRequestBytes
        self.authenticator = authenticator
    }

    enum Encoding {
        case protobuf
        case json

        var contentType: String { self == .json ? "application/json" : "application/x-protobuf" }
    }

    // gRPC status codes used in google.rpc.Status bodies.
    static let invalidArgument = 3
    static let resourceExhausted = 8
    static let unavailable = 14
    static let notFound = 5
    static let unimplemented = 12
    static let unauthenticated = 16

    package func handle(_ request: HTTPRequest) -> HTTPResponse {
        let head = request.head
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let signal: IngestSignal
        switch path {
        case "/v1/traces": signal = .traces
        case "/v1/metrics" where relay != nil: signal = .metrics
        case "/v1/logs" where relay != nil: signal = .logs
        default:
            handler.refused(transport: .http, reason: .notFound)
            let paths = relay == nil ? "traces at POST /v1/traces" : "POST /v1/traces, /v1/metrics and /v1/logs"
            return HTTPResponse(status: .notFound, text: "not found: Tailgate accepts OTLP \(paths)\n")
        }
        guard head.method == .POST else {
            var response = HTTPResponse(status: .methodNotAllowed, text: "use POST for \(path)\n")
            response.headers.add(name: "Allow", value: "POST")
            return response
        }
        if let authenticator, !authenticator.accepts(authorization: head.headers.first(name: "authorization")) {
            handler.refused(transport: .http, reason: .unauthenticated)
            let json = head.headers.first(name: "content-type")?.lowercased().hasPrefix("application/json") ?? false
            var response = error(.unauthorized, Self.unauthenticated, "missing or invalid bearer token", json ? .json : .protobuf)
            response.headers.add(name: "WWW-Authenticate", value: "Bearer")
            return response
        }
        let contentType = head.headers.first(name: "content-type")?.lowercased() ?? ""
        let encoding: Encoding
        if contentType.hasPrefix("application/x-protobuf") || contentType.hasPrefix("application/protobuf") {
            encoding = .protobuf
        } else if contentType.hasPrefix("application/json") {
            encoding = .json
        } else {
            handler.refused(transport: .http, reason: .badContentType)
            return HTTPResponse(
                status: .unsupportedMediaType,
                text: "unsupported Content-Type '\(contentType)': use application/x-protobuf or application/json\n")
        }

        // Decompress (bounded), then transcode JSON, then hand the protobuf bytes over.
        let contentEncoding = head.headers.first(name: "content-encoding")?.lowercased() ?? "identity"
        var decompressed: [UInt8]? = nil
        switch contentEncoding {
        case "identity", "":
            break
        case "gzip", "x-gzip":
            do {
                let result = request.body.withUnsafeReadableBytes { raw in
                    Result { () throws(Gzip.Failure) -> [UInt8] in try Gzip.decompress(raw, limit: maxRequestBytes) }
                }
                decompressed = try result.get()
            } catch .tooLarge(let limit) {
                handler.refused(transport: .http, reason: .tooLarge)
                return error(.payloadTooLarge, Self.resourceExhausted, "request body exceeds the limit of \(limit) bytes after decompression", encoding)
            } catch {
                handler.refused(transport: .http, reason: .badEncoding)
                return self.error(.badRequest, Self.invalidArgument, "\(error)", encoding)
            }
        default:
            handler.refused(transport: .http, reason: .badEncoding)
            return error(.unsupportedMediaType, Self.unimplemented, "unsupported Content-Encoding '\(contentEncoding)': use gzip or none", encoding)
        }

        var result: IngestResult
        let passed = handler.passThrough { request.head.headers.first(name: $0) }
        if signal != .traces, let relay {
            if encoding == .json && !relay.acceptsJSON {
                handler.refused(transport: .http, reason: .badContentType)
                return error(.unsupportedMediaType, Self.invalidArgument,
                             "OTLP/JSON \(signal.rawValue) can be relayed only to an OTLP/HTTP downstream: send application/x-protobuf", encoding)
            }
            let body = decompressed ?? Array(request.body.readableBytesView)
            result = relay.relay(body, signal: signal, json: encoding == .json, transport: .http, headers: passed)
        } else {
        switch encoding {
        case .protobuf:
            if let decompressed {
                result = decompressed.withUnsafeBytes { handler.ingest($0, transport: .http, headers: passed) }
            } else {
                result = request.body.withUnsafeReadableBytes { handler.ingest($0, transport: .http, headers: passed) }
            }
        case .json:
            // Transcoded straight from the request's bytes, and the protobuf ingested where the transcoder wrote it.
            var malformedIDs = OTLPJSON.MalformedIDs()
            let transcode = { (json: UnsafeRawBufferPointer) in
                Result { () throws(OTLPJSONError) -> IngestResult in
                    try OTLPJSON.withProtobuf(fromJSON: json, malformedIDs: &malformedIDs) {
                        handler.ingest($0, transport: .http, headers: passed)
                    }
                }
            }
            let transcoded = decompressed.map { $0.withUnsafeBytes(transcode) } ?? request.body.withUnsafeReadableBytes(transcode)
            switch transcoded {
            case .success(let ingested):
                result = ingested
            case .failure(let error):
                handler.refused(transport: .http, reason: .malformedJSON)
                return self.error(.badRequest, Self.invalidArgument, "malformed OTLP/JSON: \(error)", encoding)
            }
            // A malformed ID reached the scanner as bytes of a wrong length, rejecting its span as for protobuf;
            // the scanner's reason says only that, so the answer also names the ID as the client wrote it.
            if let first = malformedIDs.first, case .partiallyAccepted(let rejected, let message) = result {
                let more = malformedIDs.count > 1 ? " (\(malformedIDs.count) malformed span IDs in all)" : ""
                result = .partiallyAccepted(
                    rejectedSpans: rejected, message: "\(message); malformed OTLP/JSON ID at \(first.path): \(first.message)\(more)")
            }
        }
        }

        switch result {
        case .accepted:
            return success(encoding)
        case .partiallyAccepted(let rejected, let message):
            return success(encoding, rejected: rejected, message: message)
        case .invalid(let message):
            return error(.badRequest, Self.invalidArgument, message, encoding)
        case .overloaded(let seconds, let message):
            var response = error(.serviceUnavailable, Self.unavailable, message, encoding)
            response.headers.add(name: "Retry-After", value: String(seconds))
            return response
        }
    }

    /// Counts a refusal by the HTTP server (connection cap, timeouts, in-flight budget) and, for a request, builds
    /// the OTLP answer: 429 with `Retry-After` for the in-flight budget.
    package func refused(_ head: HTTPRequestHead?, reason: HTTPServer.Refusal) -> HTTPResponse? {
        handler.refused(transport: .http, reason: RefusalReason(reason))
        guard let head, reason == .inflightLimit else { return nil }
        let json = head.headers.first(name: "content-type")?.lowercased().hasPrefix("application/json") ?? false
        var response = error(.tooManyRequests, Self.resourceExhausted, "too many request bytes in flight; retry later", json ? .json : .protobuf)
        response.headers.add(name: "Retry-After", value: "1")
        return response
    }

    /// The answer to a body over the limit before decompression.
    package func tooLarge(_ head: HTTPRequestHead, limit: Int) -> HTTPResponse {
        handler.refused(transport: .http, reason: .tooLarge)
        let json = head.headers.first(name: "content-type")?.lowercased().hasPrefix("application/json") ?? false
        return error(.payloadTooLarge, Self.resourceExhausted, "request body exceeds the limit of \(limit) bytes", json ? .json : .protobuf)
    }

    private func success(_ encoding: Encoding, rejected: Int64 = 0, message: String = "") -> HTTPResponse {
        switch encoding {
        case .protobuf:
            HTTPResponse(status: .ok, contentType: encoding.contentType, body: OTLPResponse.exportResponse(rejectedSpans: rejected, message: message))
        case .json:
            HTTPResponse(status: .ok, contentType: encoding.contentType, body: Array(OTLPResponse.exportResponseJSON(rejectedSpans: rejected, message: message).utf8))
        }
    }

    private func error(_ status: HTTPResponseStatus, _ code: Int, _ message: String, _ encoding: Encoding) -> HTTPResponse {
        switch encoding {
        case .protobuf:
            HTTPResponse(status: status, contentType: encoding.contentType, body: OTLPResponse.status(code: code, message: message))
        case .json:
            HTTPResponse(status: status, contentType: encoding.contentType, body: Array(OTLPResponse.statusJSON(code: code, message: message).utf8))
        }
    }
}

extension RefusalReason {
    /// The metric label of a refusal by the HTTP server itself.
    init(_ refusal: HTTPServer.Refusal) {
        switch refusal {
        case .inflightLimit: self = .inflightLimit
        case .connectionLimit: self = .connectionLimit
        case .timeout: self = .timeout
        }
    }
}
