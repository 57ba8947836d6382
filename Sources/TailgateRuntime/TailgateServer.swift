package import Logging
import CTailgateSupport
import NIOCore
import Synchronization
import NIOPosix
import ServiceLifecycle
import TailgateBuffer
package import TailgateExport
import TailgateHTTPServer
import TailgateIngest
package import TailgatePolicies
import TailgateStore
import TailgateWire
import UnixSignals
import NIOHTTP1
import FoundationEssentials
import Foundation
import CoreMetrics
import TailgateRecording
import TailgateConfig

/// Assembles receivers, pipeline and forwarder, and runs them until SIGINT/SIGTERM.
///
/// Shutdown order (swift-service-lifecycle stops services in reverse order): the metrics page and the
/// receivers stop accepting, then every buffered trace is decided by policy, then the forwarder flushes
/// within one `shutdown_timeout` budget, and a summary line says what, if anything, was lost.
package struct TailgateServer: Sendable {
    package let configuration: TailgateConfiguration
    package let policies: PolicySet
    package let logger: Logger

    package init(configuration: TailgateConfiguration, policies: PolicySet, logger: Logger) {
        self.configuration = configuration
        self.policies = policies
        self.logger = logger
    }

    /// The forwarder's client for `address` (built by `DownstreamAddress.makeDownstream`, as the load tester's are).
    package static func makeDownstream(_ address: DownstreamAddress, forwarder: ForwarderConfiguration,
                                      headers: [String: String] = [:], tls: DownstreamTLS? = nil) throws -> any Downstream {
        var options = DownstreamOptions(
            gzip: forwarder.gzip, timeout: forwarder.timeout, reconnectBackoff: (forwarder.initialBackoff, forwarder.maxBackoff),
            headers: headers, tls: tls)
        options.compressionLevel = forwarder.compressionLevel
        return try address.makeDownstream(options)
    }

    /// Runs until SIGINT/SIGTERM; returns a summary of what was lost (0 is the expected figure). Throws when a
    /// listener cannot bind (the error names the address).
    @discardableResult
    package func run() async throws -> ShutdownSummary {
        let config = configuration
        let logger = self.logger
        let policies = self.policies
        let metrics = TailgateMetrics()
        let readiness = Readiness()
        let shutdown = ShutdownBudget(total: config.shutdownTimeout, readiness: readiness)
        if config.downstream.isTLS, let tls = config.downstreamTLS, tls.insecureSkipVerify {
            logger.warning("downstream_tls.insecure_skip_verify is on: the downstream's certificate is NOT verified; anyone on the path can read and alter forwarded telemetry. Use it for testing only", metadata: [
                "downstream": "\(config.downstream)"])
        } else if config.downstreamTLS != nil, !config.downstream.isTLS {
            logger.warning("downstream_tls is ignored: the downstream is not grpcs:// or https://", metadata: ["downstream": "\(config.downstream)"])
        }
        let downstream: any Downstream
        do {
            downstream = try Self.makeDownstream(config.downstream, forwarder: config.forwarder, headers: config.downstreamHeaders,
                                                 tls: config.downstreamTLS)
        } catch {
            throw TailgateSetupError(description: "cannot set up the downstream \(config.downstream): \(error)")
        }
        let authenticator = Authenticator(tokens: config.bearerTokens)
        var store: DiskTraceStore? = nil
        if let dir = config.dataDir {
            var storeConfig = config.store
            storeConfig.directory = dir
            do {
                store = try DiskTraceStore(configuration: storeConfig, logger: logger, observer: metrics)
            } catch {
                if error.operation == "lock" {
                    let holder = (try? String(contentsOfFile: "\(dir)/LOCK", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
                    throw TailgateStoreError(description: "data directory \(dir) is in use by another tailgate (pid \(holder)); give each instance its own data_dir")
                }
                throw TailgateStoreError(description: "cannot use data directory \(dir): \(error)")
            }
            metrics.storeDiskBudget.record(storeConfig.maxDiskBytes)
        }
        // The metrics, plus the downstream's last success and failure for the status page.
        let health = DownstreamHealth(metrics: metrics)
        // Both flush on graceful shutdown until the shutdown budget's deadline. Persisting: the trace forwarder flushes
        // what the downstream takes quickly and keeps the rest for the next start (a restart must fit inside an SDK's
        // retry window).
        let persistAfter: Duration? = config.persistsOnShutdown ? min(config.shutdownTimeout / 3, .seconds(3)) : nil
        let forwarder = Forwarder(configuration: config.forwarder, downstream: downstream, observer: health, logger: logger,
                                  spool: store, shutdownBudget: { shutdown.remaining(flushingAtMost: persistAfter) })
        let signals = SignalForwarder(downstream: downstream, queueBytes: config.signalQueueBytes,
                                      concurrency: config.forwarder.concurrency, initialBackoff: config.forwarder.initialBackoff,
                                      maxBackoff: config.forwarder.maxBackoff, observer: metrics, logger: logger,
                                      shutdownBudget: { shutdown.remaining() })
        let relay = SignalRelay(forwarder: signals, metrics: metrics, logger: logger)
        var ingestTLS: IngestTLSContext? = nil
        if let tls = config.tls {
            do {
                ingestTLS = try IngestTLSContext(tls, logger: logger)
            } catch {
                throw TailgateSetupError(description: "tls.\(error)")
            }
        }
        let recorder = try config.record.map { try RecordingWriter(configuration: $0, logger: logger) }
        let pipeline = Pipeline(policies: policies, buffer: config.buffer, forwarder: forwarder, metrics: metrics, logger: logger,
                                annotate: config.annotateKeptSpans, dryRun: config.dryRun, recorder: recorder, store: store,
                                passThroughHeaders: config.passThroughHeaders, genAIMaxLabelValues: config.genAIMaxLabelValues)
        // Before anything listens: undecided traces, remembered decisions and queued batches from the last run.
        pipeline.recover()
        let budget = InflightBudget(limit: config.limits.maxInflightBytes)

        // Services stop in reverse order: receivers first, then decisions, the forwarder, and the metrics page
        // last, so that it can be scraped while the buffer is flushed.
        var services: [any Service] = []
        var listening: [String] = []
        var started: [HTTPServer] = []
        do {
            if let address = config.adminListen, let (host, port) = parseHostPort(address) {
                var options = HTTPServer.Options(maxBodyBytes: 64 << 10)
                options.threads = 1  // its own thread: heavy ingest requests never delay a scrape or a probe
                options.maxConnections = 64
                let admin = AdminContext(pipeline: pipeline, metrics: metrics, health: health, policiesPath: config.policiesPath)
                let server = HTTPServer(host: host, port: port, options: options, logger: logger) { request in
                    AdminRoutes.handle(request, metrics: metrics, readiness: readiness, context: admin)
                }
                try await server.start()
                started.append(server)
                services.append(HTTPServerService(server: server, shutdown: nil))
                listening.append("admin=\(address)")
            }
            // The forwarders are services themselves: graceful shutdown flushes them within the shutdown budget.
            services.append(forwarder)
            // The metrics/logs relay: listed after the trace forwarder so that it stops first (the trace forwarder
            // closes the shared downstream).
            services.append(signals)
            if let ingestTLS { services.append(CertificateReloadService(tls: ingestTLS)) }
            services.append(DecisionService(pipeline: pipeline, tick: config.decisionTick, persist: config.persistsOnShutdown))
            if let path = config.policiesPath {
                let reloader = PolicyReloader(path: path, pipeline: pipeline, logger: logger)
                // Without a watch interval, SIGHUP still reloads.
                let interval = config.policiesReloadInterval > .zero ? config.policiesReloadInterval : .seconds(365 * 86400)
                services.append(PolicyReloadService(reloader: reloader, interval: interval))
            }
            if let recorder { services.append(RecordingService(writer: recorder)) }
            if let address = config.httpListen, let (host, port) = parseHostPort(address) {
                let ingest = OTLPHTTPIngest(handler: pipeline, maxRequestBytes: config.limits.maxRequestBytes, authenticator: authenticator,
                                            relay: relay)
                var options = HTTPServer.Options(limits: config.limits, budget: budget)
                options.tls = ingestTLS?.sslContext
                // OTLP/JSON costs far more CPU per byte than protobuf: it gets its own thread, so a heavy JSON client
                // can delay only other JSON requests.
                options.isHeavy = { head in head.headers.first(name: "content-type")?.lowercased().hasPrefix("application/json") ?? false }
                let server = HTTPServer(
                    host: host, port: port, options: options, logger: logger,
                    tooLarge: { head, limit in ingest.tooLarge(head, limit: limit) },
                    refused: { head, reason in ingest.refused(head, reason: reason) },
                    route: { ingest.handle($0) })
                try await server.start()
                started.append(server)
                services.append(HTTPServerService(server: server, shutdown: shutdown))
                listening.append("otlp/http\(ingestTLS == nil ? "" : "+tls")=\(address)")
            }
        } catch {
            for server in started { await server.stop(deadline: .now) }
            throw error
        }
        var grpc: GRPCIngestServer? = nil
        if let address = config.grpcListen, let (host, port) = parseHostPort(address) {
            let server = GRPCIngestServer(host: host, port: port, limits: config.limits, budget: budget, handler: pipeline,
                                          authenticator: authenticator, relay: relay, tls: ingestTLS, serving: { readiness.isReady })
            services.append(GRPCIngestService(server: server, shutdown: shutdown, logger: logger))
            listening.append("otlp/grpc\(ingestTLS == nil ? "" : "+tls")=\(address)")
            grpc = server
        }

        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            // A listener that cannot bind stops everything (the error names its address) before "started" is said.
            do {
                try await grpc?.waitUntilListening()
            } catch {
                // The gRPC service's own error says why (address in use, …); it ends the service group at once.
                do { try await tasks.next() } catch let reason as GRPCBindError { throw reason } catch {}
                throw error
            }
            readiness.markReady()
            logger.info("tailgate started", metadata: [
                "version": "\(TailgateVersion.current)",
                "allocator": "\(String(cString: tailgate_allocator()))",
                "listening": "\(listening.joined(separator: " "))",
                "downstream": "\(config.downstream)",
                "mode": "\(config.dryRun ? "dry run (everything forwarded)" : "sampling")",
                "policies": "\(config.policiesPath ?? "built-in default") (\(policies.policies.map { "\($0.name):\($0.type)" }.joined(separator: ", ")))",
            ])
            try await tasks.next()
        }
        pipeline.closeStore()
        let persisted = forwarder.persistedAtStop
        var summary = ShutdownSummary(dropped: metrics.dropTally(), bufferedLeft: pipeline.buffer.bufferedTraces)
        if config.persistsOnShutdown {
            summary.persistedTraces = summary.bufferedLeft
            summary.bufferedLeft = 0
        }
        let signalsLost = metrics.signalDropTally().filter { !$0.key.hasSuffix(TailgateMetrics.signalUnsupported) }.values.reduce(0, +)
        var metadata: Logger.Metadata = [
            "spans_lost": "\(summary.spansLost)",
            "buffered_traces_left": "\(summary.bufferedLeft)",
            "signal_requests_lost": "\(signalsLost)",
        ]
        if store != nil {
            metadata["persisted_traces"] = "\(summary.persistedTraces)"
            metadata["persisted_forward_spans"] = "\(persisted.spans)"
        }
        for (reason, n) in summary.dropped.sorted(by: { $0.key < $1.key }) { metadata["dropped.\(reason)"] = "\(n)" }
        if summary.spansLost > 0 || summary.bufferedLeft > 0 || signalsLost > 0 {
            logger.error("tailgate stopped: kept spans were lost", metadata: metadata)
        } else {
            logger.notice("tailgate stopped", metadata: metadata)
        }
        return summary
    }
}

/// Hands metrics and logs requests from both receivers to the relay queue (`SignalForwarder`), unchanged: full
/// queue → UNAVAILABLE / 503 with Retry-After; a file downstream cannot write them (its JSON lines are traces):
/// they are accepted and dropped, counted as `unsupported_by_downstream` and logged once.
final class SignalRelay: SignalIngestHandler, Sendable {
    let forwarder: SignalForwarder
    let metrics: TailgateMetrics
    let logger: Logger
    let relays: Bool
    private let noted = Mutex(false)

    init(forwarder: SignalForwarder, metrics: TailgateMetrics, logger: Logger) {
        self.forwarder = forwarder
        self.metrics = metrics
        self.logger = logger
        relays = !(forwarder.downstream is FileDownstream)
    }

    var acceptsJSON: Bool { forwarder.downstream.acceptsJSON }

    func relay(_ body: [UInt8], signal: IngestSignal, json: Bool, transport: IngestTransport, headers: [(String, String)]) -> IngestResult {
        let s: OTLPSignal = signal == .metrics ? .metrics : .logs
        metrics.signalReceived(s, transport: transport)
        guard relays else {
            metrics.signalDropped(s, reason: TailgateMetrics.signalUnsupported)
            let first = noted.withLock { n -> Bool in defer { n = true }; return !n }
            if first {
                logger.notice("metrics and logs are accepted but not written by a file: downstream (it writes traces only); they are dropped and counted in tailgate_signal_requests_dropped_total{reason=\"unsupported_by_downstream\"}", metadata: [
                    "downstream": "\(forwarder.downstream.target)"])
            }
            return .accepted
        }
        guard forwarder.submit(body, signal: s, json: json, headers: headers) else {
            metrics.signalRefused(s, reason: "queue_full")
            return .overloaded(retryAfterSeconds: 1, message: "Tailgate's \(s.rawValue) relay queue is full (the downstream is slow or down); retry later")
        }
        return .accepted
    }
}

/// The configuration cannot be put to use (a TLS file that cannot be loaded): nothing was started. `serve` exits 2.
package struct TailgateSetupError: Error, CustomStringConvertible {
    package var description: String
}

/// The data directory cannot be used (another instance holds it, or it is not writable). `serve` exits 1.
package struct TailgateStoreError: Error, CustomStringConvertible {
    package var description: String
}

/// What a run lost, reported when it stops. `spansLost` counts kept spans that never reached the downstream
/// (queue full, rejected, retries exhausted, too large, shutdown budget exceeded); drops by policy are not losses.
package struct ShutdownSummary: Sendable {
    /// Spans dropped by reason (the `reason` label of `tailgate_spans_dropped_total`), over the whole run.
    package var dropped: [String: Int]
    package var bufferedLeft: Int
    /// Undecided traces left in the store for the next start (`on_shutdown: persist`).
    package var persistedTraces = 0

    package var spansLost: Int {
        ForwardDropReason.allCases.reduce(0) { $0 + (dropped[$1.rawValue] ?? 0) }
    }

    /// Kept spans lost because the shutdown budget ran out.
    package var lostAtShutdown: Int { dropped[ForwardDropReason.shutdown.rawValue] ?? 0 }
}

/// The admin listener's routes: `/metrics` (Prometheus text; OpenMetrics when asked), `/livez` (the process answers), `/readyz` (503 while
/// starting or draining at shutdown), `/version`; with a context, the status page `/`, `/debug/status` (its JSON) and
/// `/debug/traces/{trace_id}` (where a trace is and why it was, or would be, kept or dropped).
enum AdminRoutes {
    static func handle(_ request: HTTPRequest, metrics: TailgateMetrics, readiness: Readiness, context: AdminContext? = nil) -> HTTPResponse {
        let path = request.head.uri.split(separator: "?", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        switch path {
        case "/metrics":
            // OpenMetrics when the scraper prefers it (Prometheus asks for it first), else the Prometheus text format.
            return OpenMetrics.response(to: request, exposition: metrics.exposition())
        case "/livez":
            return HTTPResponse(status: .ok, text: "ok\n")
        case "/readyz":
            let state = readiness.current
            return HTTPResponse(status: state == .ready ? .ok : .serviceUnavailable, text: "\(state.rawValue)\n")
        case "/version":
            return HTTPResponse(status: .ok, contentType: "application/json",
                                body: Array("{\"version\":\"\(TailgateVersion.current)\"}\n".utf8))
        case "/" where context != nil:
            return StatusPage.response()
        case "/debug/status" where context != nil:
            return DebugRoutes.status(context: context!, readiness: readiness)
        case _ where context != nil && path.hasPrefix(DebugRoutes.tracesPrefix):
            return DebugRoutes.trace(path: path, context: context!)
        case "/debug/traces":
            return DebugRoutes.badRequest("a trace ID is needed: GET /debug/traces/{trace_id} with 32 hexadecimal digits")
        default:
            return HTTPResponse(status: .notFound, text: "not found: see /, /metrics, /livez, /readyz, /version, /debug/status, /debug/traces/{trace_id}\n")
        }
    }
}
