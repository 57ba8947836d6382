#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
package import Darwin
#endif
import AsyncHTTPClient
import NIOConcurrencyHelpers
package import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import TailgateWire
import Foundation

/// OTLP/HTTP (protobuf) to the real collector: `POST` to `http://HOST:PORT/v1/traces` through one AsyncHTTPClient
/// `HTTPClient` (a pool of keep-alive HTTP/1.1 connections reused across requests; host names resolved on every new
/// connection), retryable statuses 429/502/503/504 with `Retry-After` honoured. With `tls`, every connection starts
/// with a TLS handshake (NIOSSL; `https://`); metrics and logs go to the paths next to the traces path (`/v1/metrics`,
/// `/v1/logs`).
package final class HTTPDownstream: Downstream {
    package let target: String
    private let hostHeader: String
    private let gzip: Bool
    private let compressionLevel: Int32
    private let timeout: TimeAmount
    private let client: HTTPClient
    /// The URL of each signal's path (`https://NAME:PORT/…` with a server name override: see `init`).
    private let urls: [OTLPSignal: String]
    private let state = NIOLockedValueBox(LifecycleState())

    /// Extra headers sent with every request (API keys, `X-Scope-OrgID`).
    private let extraHeaders: [(String, String)]

    /// Connections per host the pool may hold: each of the trace forwarder and the metrics/logs relay sends at most
    /// `forwarder.concurrency` (≤ 256) requests at once, and every request in flight needs a connection of its own
    /// (HTTP/1.1). Connections are only opened when needed; idle ones close after `idleTimeout`.
    static let maxConnectionsPerHost = 512

    private struct LifecycleState {
        var closed = false
        var shutDown = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    package convenience init(host: String, port: Int, path: String, gzip: Bool, timeout: Duration,
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, headers: [String: String] = [:],
                            compressionLevel: Int = 1) {
        self.init(host: host, port: port, path: path, gzip: gzip, timeout: timeout, group: group, headers: headers,
                  tlsConfiguration: nil, serverName: nil, compressionLevel: compressionLevel)
    }

    /// Over TLS (`https://`); throws when the CA, certificate or key cannot be loaded.
    package convenience init(host: String, port: Int, path: String, gzip: Bool, timeout: Duration,
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, headers: [String: String] = [:],
                            tls: DownstreamTLS, compressionLevel: Int = 1) throws {
        let configuration = try Self.tlsConfiguration(tls)
        // The client makes its contexts lazily, on the first connection: load the files now, so that a bad CA,
        // certificate or key fails the start instead of every send.
        _ = try NIOSSLContext(configuration: configuration)
        // SNI takes names only; a literal IP address is verified against the certificate's IP addresses.
        let name = tls.serverName ?? host
        self.init(host: host, port: port, path: path, gzip: gzip, timeout: timeout, group: group, headers: headers,
                  tlsConfiguration: configuration, serverName: isIPLiteral(name) ? nil : name, compressionLevel: compressionLevel)
    }

    private init(host: String, port: Int, path: String, gzip: Bool, timeout: Duration, group: any EventLoopGroup,
                 headers: [String: String], tlsConfiguration: TLSConfiguration?, serverName: String?, compressionLevel: Int) {
        self.compressionLevel = Int32(clamping: compressionLevel)  // Gzip.compress bounds it
        extraHeaders = headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        hostHeader = "\(formatHost(host)):\(port)"
        self.gzip = gzip
        self.timeout = .nanoseconds(Int64(timeout.nanosecondsClamped))
        let scheme = tlsConfiguration == nil ? "http" : "https"
        target = "\(scheme)://\(formatHost(host)):\(port)\(path)"

        var pool = HTTPClient.Configuration.ConnectionPool()
        pool.concurrentHTTP1ConnectionsPerHostSoftLimit = Self.maxConnectionsPerHost
        // A refused or timed-out connection fails the request at once; the forwarder's own backoff retries it.
        pool.retryConnectionEstablishment = false
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tlsConfiguration,
            // A 3xx is an answer (permanent), as it always was: the body is not sent again elsewhere.
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(5)),
            connectionPool: pool,
            // No proxy, whatever the environment says (the client reads none).
            proxy: nil,
            decompression: .disabled)
        // ALPN offers http/1.1 only, as before (the client would negotiate HTTP/2 over TLS otherwise).
        configuration.httpVersion = .http1Only
        // The proxy does not trace its own exports, whatever tracer the process bootstrapped.
        configuration.tracing.tracer = nil
        // The server name override: the URL names the server (SNI and the name verified); the connection goes to
        // `host`. The Host header stays `host:port`.
        var urlHost = formatHost(host)
        if let serverName, serverName != host {
            configuration.dnsOverride = [serverName: host]
            urlHost = serverName
        }
        client = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
        var urls: [OTLPSignal: String] = [:]
        for signal in OTLPSignal.allCases {
            urls[signal] = "\(scheme)://\(urlHost):\(port)\(signal.httpPath(tracesPath: path))"
        }
        self.urls = urls
    }

    deinit {
        // Dropped without `close()` (a start that failed later on): the client must still be shut down.
        if !state.withLockedValue({ $0.closed }) {
            client.shutdown().whenComplete { _ in }
        }
    }

    package func run() async throws {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLockedValue { state -> Bool in
                if state.shutDown { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Shuts the client down (its connections close; a request still in flight fails, retryable); `run()` returns
    /// once it is down. Closing twice is harmless.
    package func close() {
        let wasClosed = state.withLockedValue { s -> Bool in defer { s.closed = true }; return s.closed }
        guard !wasClosed else { return }
        client.shutdown().whenComplete { [state] _ in
            let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
                s.shutDown = true
                defer { s.waiters = [] }
                return s.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    /// The client side of `DownstreamTLS` as NIOSSL configuration.
    static func tlsConfiguration(_ tls: DownstreamTLS) throws -> TLSConfiguration {
        var config = TLSConfiguration.makeClientConfiguration()
        if let ca = tls.caFile { config.trustRoots = .file(ca) }
        if let cert = tls.certFile, let key = tls.keyFile {
            config.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
            // PEM, as documented (and as the gRPC downstream and the receivers read it); the deprecated `.file(key)`
            // guessed the format from the extension and took a `.key` file for DER.
            config.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        }
        if tls.insecureSkipVerify { config.certificateVerification = .none }
        config.applicationProtocols = ["http/1.1"]
        return config
    }

    package var acceptsJSON: Bool { true }

    package func send(_ request: [UInt8]) async -> SendOutcome {
        await send(request, signal: .traces, json: false)
    }

    package func send(_ request: [UInt8], signal: OTLPSignal, json: Bool) async -> SendOutcome {
        await send(request, signal: signal, json: json, headers: [])
    }

    package func send(_ request: [UInt8], signal: OTLPSignal, json: Bool, headers passed: [(String, String)]) async -> SendOutcome {
        var httpRequest = HTTPClientRequest(url: urls[signal]!)
        httpRequest.method = .POST
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: hostHeader)
        headers.add(name: "Content-Type", value: json ? "application/json" : "application/x-protobuf")
        headers.add(name: "User-Agent", value: "tailgate")
        for (name, value) in extraHeaders { headers.replaceOrAdd(name: name, value: value) }
        for (name, value) in passed { headers.replaceOrAdd(name: name, value: value) }
        let body = gzip ? request.withUnsafeBytes { Gzip.compress($0, level: compressionLevel) } : request
        if gzip { headers.add(name: "Content-Encoding", value: "gzip") }
        httpRequest.headers = headers  // Content-Length: set by the client from the body
        httpRequest.body = .bytes(ByteBuffer(bytes: body))
        // One deadline for the whole exchange: connection (from the pool or new), request, response head and body.
        let deadline = NIODeadline.now() + timeout
        do {
            let response = try await client.execute(httpRequest, deadline: deadline)
            let retryAfter = response.headers.first(name: "retry-after").flatMap { RetryAfter.parse($0, now: wallClockSeconds()) }
            // The answer counts once it is whole (and the connection goes back to the pool only then).
            let protobuf = response.headers.first(name: "content-type")?.lowercased().hasPrefix("application/x-protobuf") ?? false
            let answer = try await Self.read(response.body, deadline: deadline, keep: protobuf ? 64 << 10 : 0)
            let outcome = Self.classify(status: Int(response.status.code), retryAfter: retryAfter)
            if case .delivered = outcome, !json, let (rejected, message) = ExportResponse.partialSuccess(answer) {
                return .partial(rejected: rejected, message: message)
            }
            return outcome
        } catch {
            if Self.isConnectFailure(error) {
                return .retryable(reason: "cannot connect to \(target): \(error)", retryAfter: nil)
            }
            return .retryable(reason: "request to \(target) failed: \(error)", retryAfter: nil)
        }
    }

    static func classify(status code: Int, retryAfter: Duration?) -> SendOutcome {
        switch code {
        case 200..<300:
            return .delivered
        case 429, 502, 503, 504:
            return .retryable(reason: "HTTP \(code)", retryAfter: retryAfter)
        case 413:
            return .tooLarge(reason: "HTTP 413")
        case 400:
            return .invalid(reason: "HTTP 400")
        default:
            return .permanent(reason: "HTTP \(code)")
        }
    }

    /// Reads the response body to its end by `deadline`, keeping its first `keep` bytes.
    private static func read(_ body: HTTPClientResponse.Body, deadline: NIODeadline, keep: Int) async throws -> [UInt8] {
        try await withThrowingTaskGroup(of: [UInt8].self) { group in
            group.addTask {
                var kept: [UInt8] = []
                for try await chunk in body where kept.count < keep {
                    kept += chunk.readableBytesView.prefix(keep - kept.count)
                }
                return kept
            }
            group.addTask {
                let left = (deadline - .now()).nanoseconds
                if left > 0 { try await Task.sleep(for: .nanoseconds(left)) }
                throw HTTPClientError.deadlineExceeded
            }
            let kept = try await group.next() ?? []
            group.cancelAll()  // the timer; a cancelled body stream closes its connection
            return kept
        }
    }

    /// Whether `error` means no connection could be made (refused, unreachable, name not resolved, connect timeout),
    /// as opposed to one failing during the exchange.
    static func isConnectFailure(_ error: any Error) -> Bool {
        switch error {
        case is NIOConnectionError, is SocketAddressError:
            return true
        case let error as HTTPClientError:
            return error == .connectTimeout
        case let error as ChannelError:
            if case .connectTimeout = error { return true }
            return false
        case let error as IOError:
            return [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, ETIMEDOUT].contains(error.errnoCode)
        default:
            return false
        }
    }
}

extension Duration {
    var nanosecondsClamped: UInt64 {
        let (s, atto) = components
        guard s >= 0 else { return 0 }
        return UInt64(min(s, 1_000_000)) * 1_000_000_000 + UInt64(atto / 1_000_000_000)
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
