import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TailgateBuffer
import TailgateExport
import TailgateIngest
import TailgatePolicies
import TailgateWire

/// Assembles receivers, pipeline and forwarder, and runs them until SIGINT/SIGTERM.
///
/// Shutdown order (swift-service-lifecycle stops services in reverse order): the metrics page and the
/// receivers stop accepting, then every buffered trace is decided by policy, then the forwarder flushes
/// within `forwarder.shutdownTimeout`.
public struct TailgateServer: Sendable {
    public let configuration: TailgateConfiguration
    public let policies: PolicySet
    public let logger: Logger

    public init(configuration: TailgateConfiguration, policies: PolicySet, logger: Logger) {
        self.configuration = configuration
        self.policies = policies
        self.logger = logger
    }

    public static func makeDownstream(_ address: DownstreamAddress, forwarder: ForwarderConfiguration) throws -> any Downstream {
        switch address {
        case .grpc(let host, let port):
            return try GRPCDownstream(host: host, port: port, gzip: forwarder.gzip, timeout: forwarder.timeout,
                                      reconnectBackoff: (forwarder.initialBackoff, forwarder.maxBackoff))
        case .http(let host, let port, let path):
            return HTTPDownstream(host: host, port: port, path: path, gzip: forwarder.gzip, timeout: forwarder.timeout)
        case .file(let path):
            return try FileDownstream(path: path)
        }
    }

    public func run() async throws {
        let config = configuration
        let metrics = TailgateMetrics()
        let downstream = try Self.makeDownstream(config.downstream, forwarder: config.forwarder)
        let forwarder = Forwarder(configuration: config.forwarder, downstream: downstream, observer: metrics, logger: logger)
        let recorder = try config.record.map { try RecordingWriter(configuration: $0, logger: logger) }
        let pipeline = Pipeline(policies: policies, buffer: config.buffer, forwarder: forwarder, metrics: metrics, logger: logger,
                                annotate: config.annotateKeptSpans, dryRun: config.dryRun, recorder: recorder)

        var services: [any Service] = [ForwarderService(forwarder: forwarder), DecisionService(pipeline: pipeline, tick: config.decisionTick)]
        if let path = config.policiesPath {
            let reloader = PolicyReloader(path: path, pipeline: pipeline, logger: logger)
            // Without a watch interval, SIGHUP still reloads.
            let interval = config.policiesReloadInterval > .zero ? config.policiesReloadInterval : .seconds(365 * 86400)
            services.append(PolicyReloadService(reloader: reloader, interval: interval))
        }
        if let recorder { services.append(RecordingService(writer: recorder)) }
        var listening: [String] = []

        if let address = config.grpcListen, let (host, port) = parseHostPort(address) {
            let server = GRPCIngestServer(host: host, port: port, maxRequestBytes: config.maxRequestBytes, handler: pipeline)
            services.append(GRPCIngestService(server: server))
            listening.append("otlp/grpc=\(address)")
        }
        if let address = config.httpListen, let (host, port) = parseHostPort(address) {
            let ingest = OTLPHTTPIngest(handler: pipeline, maxRequestBytes: config.maxRequestBytes)
            let server = HTTPServer(
                host: host, port: port, maxBodyBytes: config.maxRequestBytes, logger: logger,
                tooLarge: { head, limit in ingest.tooLarge(head, limit: limit) },
                route: { ingest.handle($0) })
            try await server.start()
            services.append(HTTPServerService(server: server))
            listening.append("otlp/http=\(address)")
        }
        if let address = config.metricsListen, let (host, port) = parseHostPort(address) {
            let server = HTTPServer(host: host, port: port, maxBodyBytes: 64 << 10, logger: logger) { request in
                let path = request.head.uri.split(separator: "?").first.map(String.init) ?? ""
                guard path == "/metrics" else { return HTTPResponse(status: .notFound, text: "see /metrics\n") }
                return HTTPResponse(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.exposition())
            }
            try await server.start()
            services.append(HTTPServerService(server: server))
            listening.append("metrics=\(address)")
        }

        logger.info("tailgate started", metadata: [
            "listening": "\(listening.joined(separator: " "))",
            "downstream": "\(config.downstream)",
            "mode": "\(config.dryRun ? "dry run (everything forwarded)" : "sampling")",
            "policies": "\(config.policiesPath ?? "built-in default") (\(policies.policies.map { "\($0.name):\($0.type)" }.joined(separator: ", ")))",
        ])
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        logger.info("tailgate stopped", metadata: [
            "buffered_traces_left": "\(pipeline.buffer.bufferedTraces)",
        ])
    }
}
