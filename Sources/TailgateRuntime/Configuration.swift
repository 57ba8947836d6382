import Foundation
package import TailgateBuffer
package import TailgateExport
package import TailgateIngest
import TailgatePolicies
package import TailgateStore
import Yams
package import TailgateRecording
package import TailgateConfig

/// The server's configuration. Every field has a documented default, so `tailgate serve` runs without any file.
package struct TailgateConfiguration: Sendable, Equatable {
    /// OTLP/gRPC listen address, or nil for off. Default `127.0.0.1:4317`.
    package var grpcListen: String? = "127.0.0.1:4317"
    /// OTLP/HTTP listen address, or nil for off. Default `127.0.0.1:4318`.
    package var httpListen: String? = "127.0.0.1:4318"
    /// The admin listener (`/metrics`, `/livez`, `/readyz`, `/version`), or nil for off. Default `127.0.0.1:9464`.
    /// Config key `admin_listen` (the older `metrics_listen` is accepted).
    package var adminListen: String? = "127.0.0.1:9464"
    /// Older name of `adminListen`.
    package var metricsListen: String? {
        get { adminListen }
        set { adminListen = newValue }
    }
    /// Where kept traces go. Default `file:tailgate-traces.jsonl` (OTLP/JSON lines in the working directory).
    package var downstream: DownstreamAddress = .file(path: "tailgate-traces.jsonl")
    /// Policies file; nil uses the built-in default (the same as `policies/default.yaml`).
    package var policiesPath: String? = nil
    /// What clients may cost the receivers: request size, in-flight bytes, connections, timeouts.
    package var limits = IngestLimits()
    /// Largest accepted export request, after decompression. Default 16 MiB.
    package var maxRequestBytes: Int {
        get { limits.maxRequestBytes }
        set { limits.maxRequestBytes = newValue }
    }
    /// One budget for the whole graceful shutdown (SIGINT/SIGTERM): open requests are cut at a third of it (at most
    /// 10 s), then every buffered trace is decided and the forwarder flushes until it ends; what is not delivered by
    /// then is dropped, counted and reported. Default 25 s, under Kubernetes' 30 s termination grace period.
    package var shutdownTimeout: Duration = .seconds(25)
    /// How often expired traces are decided. Default 100 ms.
    package var decisionTick: Duration = .milliseconds(100)
    /// How often the policies file is checked for changes (it is also reloaded on SIGHUP); 0 turns watching off.
    /// Default 2 s.
    package var policiesReloadInterval: Duration = .seconds(2)
    /// Mark forwarded spans with the policy that kept them (`tailgate.policy`) and, when the keep was
    /// probabilistic or rate-limited, its probability (`ot=th:…` in tracestate, `tailgate.sample_rate`). Default on.
    package var annotateKeptSpans = true
    /// Dry run: forward every span, marked with what the policies would have decided (`tailgate.dry_run.decision`,
    /// `tailgate.policy`). Default off.
    package var dryRun = false
    /// Tee every accepted export request into this recording (`.tgrec`), rotated; nil for none. Default nil.
    package var record: RecordingWriter.Configuration? = nil
    package var buffer = BufferConfiguration()
    package var forwarder = ForwarderConfiguration()
    /// Bearer tokens required on both receivers (`auth.bearer_tokens`, `auth.bearer_tokens_file`); empty: none.
    package var bearerTokens: [String] = []
    /// Headers sent with every request to the downstream (`downstream_headers`), e.g. `X-Scope-OrgID` for a
    /// multi-tenant Tempo, or an API key. Values may use `${env:NAME}`.
    package var downstreamHeaders: [String: String] = [:]
    /// Request headers passed through to the downstream with the spans of that request (`downstream_headers_from_request`),
    /// e.g. `[X-Scope-OrgID]` so that each agent's tenant reaches a multi-tenant Tempo; a trace keeps the headers of
    /// its first request that had any, and a forward batch holds spans of one set of values only. Default none.
    package var passThroughHeaders: [String] = []
    /// TLS towards a `grpcs://` or `https://` downstream (`downstream_tls`); nil: the system's roots, no client
    /// certificate.
    package var downstreamTLS: DownstreamTLS? = nil
    /// TLS on both receivers (`tls`); nil: plaintext.
    package var tls: IngestTLS? = nil
    /// Metrics and logs requests waiting to be relayed, at most this many bytes (`forwarder.signals_queue_bytes`);
    /// beyond it the receivers push back (UNAVAILABLE / 503 with Retry-After). Default 64 MiB.
    package var signalQueueBytes: Int = 64 << 20
    /// Distinct values each label of the GenAI metrics keeps (`metrics.gen_ai_max_label_values`); later values are
    /// folded into `other` (counted). Default 200.
    package var genAIMaxLabelValues: Int = 200
    /// The data directory of the durable trace store (`data_dir`, `--data-dir`, `TAILGATE_DATA_DIR`); nil (the
    /// default): no store — idle traces wait in memory, and a stop decides and flushes everything.
    package var dataDir: String? = nil
    /// The store's settings (`store:`); its directory is `dataDir`.
    package var store = StoreConfiguration(directory: "")
    /// What a graceful stop does with undecided traces (`store.on_shutdown`): `persist` (the default with a data
    /// directory) leaves them in the store for the next start; `decide` decides and flushes them (the only choice
    /// without one).
    package var onShutdown: OnShutdown? = nil

    package enum OnShutdown: String, Sendable, Equatable {
        case persist, decide
    }

    /// `onShutdown` as it applies: persist only with a data directory.
    package var persistsOnShutdown: Bool { dataDir != nil && (onShutdown ?? .persist) == .persist }

    /// Warnings found while reading the file (deprecated keys, …), to be logged at start.
    package var warnings: [Diagnostic] = []

    package init() {}

    /// Loads a configuration file over the defaults; relative `policies` paths are relative to the file.
    package static func load(path: String) throws(DiagnosticsError) -> TailgateConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw DiagnosticsError([Diagnostic(file: path, line: 1, column: 1, message: "cannot read file: \(error.localizedDescription)")])
        }
        var config = try parse(text, file: path)
        if let p = config.policiesPath, !p.hasPrefix("/") {
            let dir = (path as NSString).deletingLastPathComponent
            if !dir.isEmpty { config.policiesPath = (dir as NSString).appendingPathComponent(p) }
        }
        return config
    }

    /// Replaces `${env:NAME}` with the variable's value (`$${` stays a literal `${`); an unset variable is an error at
    /// its line and column.
    static func substituteEnvironment(_ text: String, file: String, environment: [String: String]) throws(DiagnosticsError) -> String {
        guard text.contains("${") else { return text }
        var out = ""
        var problems: [Diagnostic] = []
        for (lineIndex, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if lineIndex > 0 { out += "\n" }
            var rest = Substring(line)
            var column = 1
            while let start = rest.range(of: "${") {
                let before = rest[..<start.lowerBound]
                if before.hasSuffix("$") {  // $${: escaped
                    out += before.dropLast() + "${"
                    column += before.count + 2
                    rest = rest[start.upperBound...]
                    continue
                }
                out += before
                column += before.count
                guard let end = rest[start.upperBound...].firstIndex(of: "}") else { out += rest; rest = ""; break }
                let reference = rest[start.upperBound..<end]
                if reference.hasPrefix("env:"), case let name = String(reference.dropFirst(4)), !name.isEmpty {
                    if let value = environment[name] {
                        out += value
                    } else {
                        problems.append(Diagnostic(file: file, line: lineIndex + 1, column: column, severity: .error,
                                                   message: "environment variable \(name) is not set (referenced as ${env:\(name)}); set it, or write $${ for a literal ${"))
                    }
                } else {
                    problems.append(Diagnostic(file: file, line: lineIndex + 1, column: column, severity: .error,
                                               message: "unsupported reference ${\(reference)}: use ${env:NAME}"))
                }
                column += rest[start.lowerBound...end].count
                rest = rest[rest.index(after: end)...]
            }
            out += rest
        }
        if !problems.isEmpty { throw DiagnosticsError(problems) }
        return out
    }

    package static func parse(_ text: String, file: String,
                             environment: [String: String] = ProcessInfo.processInfo.environment) throws(DiagnosticsError) -> TailgateConfiguration {
        let text = try substituteEnvironment(text, file: file, environment: environment)
        var p = ConfigParse(reader: YAMLReader(file: file), file: file)
        guard let root = p.reader.parse(text) else { throw DiagnosticsError(p.reader.diagnostics) }
        read(root, &p)
        var reader = p.reader
        var config = p.config
        if config.downstreamTLS != nil, !config.downstream.isTLS, let node = p.downstreamTLSKey {
            reader.warning(node, "downstream_tls applies only to a grpcs:// or https:// downstream (the downstream is \(config.downstream))")
        }
        if reader.hasErrors { throw DiagnosticsError(reader.diagnostics) }
        config.warnings = reader.diagnostics
        return config
    }

    /// A path relative to the configuration file's directory.
    static func resolve(_ path: String, relativeTo file: String) -> String {
        if path.hasPrefix("/") { return path }
        let dir = (file as NSString).deletingLastPathComponent
        return dir.isEmpty ? path : (dir as NSString).appendingPathComponent(path)
    }

    /// `downstream_tls: {ca_file, cert_file, key_file, server_name, insecure_skip_verify}`; the files are checked
    /// now, so that a bad one is reported at its key before anything listens.
    static func parseDownstreamTLS(_ value: Node, reader: inout YAMLReader, file: String) -> DownstreamTLS? {
        var tls = DownstreamTLS()
        var nodes: [String: Node] = [:]
        let keys = ["ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"]
        for (k, _, v) in reader.mapping(value, allowed: keys, what: "downstream_tls") where !YAMLReader.isNull(v) {
            nodes[k] = v
            switch k {
            case "ca_file": tls.caFile = reader.string(v, what: k).map { resolve($0, relativeTo: file) }
            case "cert_file": tls.certFile = reader.string(v, what: k).map { resolve($0, relativeTo: file) }
            case "key_file": tls.keyFile = reader.string(v, what: k).map { resolve($0, relativeTo: file) }
            case "server_name": tls.serverName = reader.string(v, what: k).flatMap { $0.isEmpty ? nil : $0 }
            default: if let b = reader.bool(v, what: k) { tls.insecureSkipVerify = b }
            }
        }
        if let ca = tls.caFile {
            do { try TLSFiles.checkCertificates(ca, field: .ca) } catch { reader.error(nodes["ca_file"], "downstream_tls.\(error)") }
        }
        switch (tls.certFile, tls.keyFile) {
        case (let cert?, let key?):
            do { try TLSFiles.checkPair(cert: cert, key: key) } catch {
                reader.error(nodes[error.field == .key ? "key_file" : "cert_file"], "downstream_tls.\(error)")
            }
        case (nil, _?): reader.error(nodes["key_file"], "downstream_tls.key_file needs a cert_file")
        case (_?, nil): reader.error(nodes["cert_file"], "downstream_tls.cert_file needs a key_file")
        default: break
        }
        return tls
    }

    /// `tls: {cert_file, key_file, client_ca_file, reload_interval}` on both receivers; the pair must load and match.
    static func parseIngestTLS(_ value: Node, reader: inout YAMLReader, file: String) -> IngestTLS? {
        var cert: String?, key: String?, clientCA: String?
        var interval: Duration?
        var nodes: [String: Node] = [:]
        for (k, _, v) in reader.mapping(value, allowed: ["cert_file", "key_file", "client_ca_file", "reload_interval"], what: "tls") where !YAMLReader.isNull(v) {
            nodes[k] = v
            switch k {
            case "cert_file": cert = reader.string(v, what: k).map { resolve($0, relativeTo: file) }
            case "key_file": key = reader.string(v, what: k).map { resolve($0, relativeTo: file) }
            case "client_ca_file": clientCA = reader.string(v, what: k).map { resolve($0, relativeTo: file) }
            default:
                if let d = reader.duration(v, what: k) {
                    if d > .zero { interval = d } else { reader.error(v, "tls.reload_interval must be positive") }
                }
            }
        }
        guard let cert, let key else {
            reader.error(nodes["cert_file"] ?? nodes["key_file"] ?? value, "tls needs both cert_file and key_file")
            return nil
        }
        var tls = IngestTLS(certFile: cert, keyFile: key, clientCAFile: clientCA)
        if let interval { tls.reloadInterval = interval }
        do { try TLSFiles.checkPair(cert: cert, key: key) } catch {
            reader.error(nodes[error.field == .key ? "key_file" : "cert_file"], "tls.\(error)")
        }
        if let clientCA {
            do { try TLSFiles.checkCertificates(clientCA, field: .clientCA) } catch { reader.error(nodes["client_ca_file"], "tls.\(error)") }
        }
        return tls
    }
}
