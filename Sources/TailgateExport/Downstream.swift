/// The outcome of one attempt to deliver an export request.
public enum SendOutcome: Sendable, Equatable {
    case delivered
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
public protocol Downstream: Sendable {
    /// Human-readable target, for logs.
    var target: String { get }
    /// Runs the downstream's connections until `close()`; returns when closed.
    func run() async throws
    /// Sends one encoded (uncompressed) `ExportTraceServiceRequest`.
    func send(_ request: [UInt8]) async -> SendOutcome
    /// Stops the connections; `run()` returns.
    func close()
}

/// Where a `--downstream` value points.
public enum DownstreamAddress: Sendable, Equatable, CustomStringConvertible {
    case grpc(host: String, port: Int)
    case http(host: String, port: Int, path: String)
    case file(path: String)

    /// Parses `grpc://HOST:PORT`, `http://HOST:PORT[/path]` (default path `/v1/traces`) or `file:PATH`.
    public init?(_ text: String) {
        if text.hasPrefix("file:") {
            let path = String(text.dropFirst("file:".count))
            guard !path.isEmpty else { return nil }
            self = .file(path: path)
            return
        }
        let scheme: String
        var rest: Substring
        if text.hasPrefix("grpc://") { scheme = "grpc"; rest = text.dropFirst(7) }
        else if text.hasPrefix("http://") { scheme = "http"; rest = text.dropFirst(7) }
        else { return nil }
        var path = "/v1/traces"
        if let slash = rest.firstIndex(of: "/") {
            let p = String(rest[slash...])
            if p != "/" { path = p }
            rest = rest[..<slash]
        }
        guard let (host, port) = parseHostPort(String(rest)) else { return nil }
        self = scheme == "grpc" ? .grpc(host: host, port: port) : .http(host: host, port: port, path: path)
    }

    public var description: String {
        switch self {
        case .grpc(let host, let port): "grpc://\(formatHost(host)):\(port)"
        case .http(let host, let port, let path): "http://\(formatHost(host)):\(port)\(path)"
        case .file(let path): "file:\(path)"
        }
    }
}

/// Parses `HOST:PORT`, `[IPV6]:PORT`.
public func parseHostPort(_ text: String) -> (String, Int)? {
    var host: Substring
    var portText: Substring
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]") else { return nil }
        host = text[text.index(after: text.startIndex)..<close]
        let after = text[text.index(after: close)...]
        guard after.hasPrefix(":") else { return nil }
        portText = after.dropFirst()
    } else {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        host = text[..<colon]
        portText = text[text.index(after: colon)...]
    }
    guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
    return (String(host), port)
}

func formatHost(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }
