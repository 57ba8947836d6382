import GRPCCore
import GRPCNIOTransportHTTP2
import TailgateGRPCCodec
import TailgateWire

/// OTLP/gRPC to the real collector, on grpc-swift-2 with raw bytes (no generated code).
package final class GRPCDownstream: Downstream {
    static let method = MethodDescriptor(
        fullyQualifiedService: "opentelemetry.proto.collector.trace.v1.TraceService", method: "Export")
    static func method(_ signal: OTLPSignal) -> MethodDescriptor {
        MethodDescriptor(fullyQualifiedService: signal.grpcService, method: "Export")
    }

    package let target: String
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let options: CallOptions
    private let metadata: Metadata

    /// `reconnectBackoff` bounds how long the connection waits before redialling a downstream that went away: it
    /// follows the forwarder's retry backoff, so a collector that is back is used again within `max`
    /// (the transport's own default grows to 2 minutes, longer than the forwarder retries a batch).
    package convenience init(host: String, port: Int, gzip: Bool, timeout: Duration,
                            reconnectBackoff: (initial: Duration, max: Duration) = (.milliseconds(100), .seconds(5)),
                            headers: [String: String] = [:], tls: DownstreamTLS? = nil) throws {
        try self.init(host: host, port: port, gzip: gzip, timeout: timeout, reconnectBackoff: reconnectBackoff, headers: headers,
                      tls: tls, resolution: nil)
    }

    /// `resolution`: a name resolution to use instead of the transport's own (literals, DNS): a test injects one that
    /// answers several addresses, or changes its answer between connections.
    init(host: String, port: Int, gzip: Bool, timeout: Duration,
         reconnectBackoff: (initial: Duration, max: Duration) = (.milliseconds(100), .seconds(5)),
         headers: [String: String] = [:], tls: DownstreamTLS? = nil,
         resolution: (target: any ResolvableTarget, registry: NameResolverRegistry)?) throws {
        var metadata = Metadata()
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { metadata.addString(value, forKey: name.lowercased()) }
        self.metadata = metadata
        target = "\(tls == nil ? "grpc" : "grpcs")://\(formatHost(host)):\(port)"
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.compression.enabledAlgorithms = .all
        // Batches are up to a few MB: a 64 KiB window would stall each one on WINDOW_UPDATE round trips.
        config.http2.targetWindowSize = 16 << 20
        config.http2.maxFrameSize = 1 << 20
        config.backoff = .init(initial: reconnectBackoff.initial, max: reconnectBackoff.max, multiplier: 1.6, jitter: 0.2)
        // Names are resolved through DNS (again on every reconnect, so a collector that moves is followed);
        // literals are used as they are.
        let resolvable: any ResolvableTarget
        if host.contains(":") {
            resolvable = .ipv6(address: host, port: port)
        } else if host.split(separator: ".").count == 4, host.split(separator: ".").allSatisfy({ UInt8($0) != nil }) {
            resolvable = .ipv4(address: host, port: port)
        } else {
            resolvable = .dns(host: host, port: port)
        }
        var security = HTTP2ClientTransport.Posix.TransportSecurity.plaintext
        if let tls {
            // The certificate must name `server_name` when given (it is also sent as SNI and :authority), else the
            // host (a literal IP is checked against the certificate's IP addresses).
            if let name = tls.serverName { config.http2.authority = name }
            security = .tls { c in
                if let ca = tls.caFile { c.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
                if let cert = tls.certFile, let key = tls.keyFile {
                    c.certificateChain = [.file(path: cert, format: .pem)]
                    c.privateKey = .file(path: key, format: .pem)
                }
                if tls.insecureSkipVerify { c.serverCertificateVerification = .noVerification }
            }
        }
        let transport = try HTTP2ClientTransport.Posix(target: resolution?.target ?? resolvable, transportSecurity: security, config: config,
                                                       resolverRegistry: resolution?.registry ?? .defaults)
        client = GRPCClient(transport: transport)
        var options = CallOptions.defaults
        options.timeout = timeout
        options.compression = gzip ? .gzip : CompressionAlgorithm.none
        options.waitForReady = false
        self.options = options
    }

    package func run() async throws {
        try await client.runConnections()
    }

    package func close() {
        client.beginGracefulShutdown()
    }

    package func send(_ request: [UInt8]) async -> SendOutcome {
        await send(request, signal: .traces, json: false)
    }

    package func send(_ request: [UInt8], signal: OTLPSignal, json: Bool) async -> SendOutcome {
        await send(request, signal: signal, json: json, headers: [])
    }

    package func send(_ request: [UInt8], signal: OTLPSignal, json: Bool, headers: [(String, String)]) async -> SendOutcome {
        guard !json else { return .permanent(reason: "unsupported: OTLP/JSON cannot be sent over gRPC") }
        var metadata = self.metadata
        for (name, value) in headers {
            metadata.removeAllValues(forKey: name)
            metadata.addString(value, forKey: name)
        }
        do {
            let response = try await client.unary(
                request: ClientRequest(message: RawBytes(bytes: request), metadata: metadata),
                descriptor: signal == .traces ? Self.method : Self.method(signal),
                serializer: RawSerializer(),
                deserializer: RawDeserializer(),
                options: options
            ) { response in try response.message }
            if let (rejected, message) = ExportResponse.partialSuccess(response.bytes) {
                return .partial(rejected: rejected, message: message)
            }
            return .delivered
        } catch let error as RPCError {
            return Self.classify(error)
        } catch {
            return .retryable(reason: "transport error: \(error)", retryAfter: nil)
        }
    }

    /// OTLP's retryable codes (RESOURCE_EXHAUSTED counts as retryable: a collector under pressure says so, unless
    /// it is about the message size, which is answered by splitting).
    static func classify(_ error: RPCError) -> SendOutcome {
        switch error.code {
        case .resourceExhausted where isAboutSize(error.message):
            return .tooLarge(reason: "\(error.code): \(error.message)")
        case .invalidArgument:
            return .invalid(reason: "\(error.code): \(error.message)")
        case .cancelled, .deadlineExceeded, .aborted, .outOfRange, .unavailable, .dataLoss, .resourceExhausted:
            return .retryable(reason: "\(error.code): \(error.message)", retryAfter: nil)
        default:
            return .permanent(reason: "\(error.code): \(error.message)")
        }
    }

    /// gRPC implementations word a message-size refusal as "Received message larger than max (N vs. M)",
    /// "message too large", "exceeds the maximum …".
    static func isAboutSize(_ message: String) -> Bool {
        let m = message.lowercased()
        return m.contains("larger than") || m.contains("too large") || m.contains("exceeds") || m.contains("message length")
    }
}
