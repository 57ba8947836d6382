import Foundation
import TailgateBuffer
import TailgateExport
import TailgateIngest
import TailgatePolicies
import TailgateStore
import Yams
import TailgateRecording
import TailgateConfig

/// Every key of the configuration file, once: its name, how it is read, its default (rendered from
/// `TailgateConfiguration()`), and its documentation. The parser dispatches through this table and the README's
/// configuration block is `TailgateConfiguration.reference()` (a test keeps the two identical).
struct ConfigKey: @unchecked Sendable {  // closures over key paths; the table is immutable
    /// Reads a value into the configuration being parsed.
    typealias Read = (Node, inout ConfigParse) -> Void

    enum Body {
        /// A value; `render` gives its default for the reference.
        case value(read: Read, render: (TailgateConfiguration) -> String)
        /// A mapping of keys. `read`, when set, reads the whole block (keys that must be checked together);
        /// otherwise each child reads its own value.
        case section([ConfigKey], read: Read?)
    }

    var name: String
    var body: Body
    /// Comment lines in the reference (the first follows the value).
    var doc: [String]
    /// False for older names still accepted but not advertised.
    var advertised = true

    var children: [ConfigKey] { if case .section(let c, _) = body { c } else { [] } }
}

/// The state of one parse: the reader (diagnostics with positions), the configuration built so far, and the file
/// (for relative paths).
struct ConfigParse {
    var reader: YAMLReader
    var config = TailgateConfiguration()
    let file: String
    var downstreamTLSKey: Node? = nil
}

extension ConfigKey {
    static func value(_ name: String, _ doc: [String], advertised: Bool = true, read: @escaping Read,
                      render: @escaping (TailgateConfiguration) -> String) -> ConfigKey {
        ConfigKey(name: name, body: .value(read: read, render: render), doc: doc, advertised: advertised)
    }

    static func section(_ name: String, doc: [String] = [], read: Read? = nil, _ children: [ConfigKey]) -> ConfigKey {
        ConfigKey(name: name, body: .section(children, read: read), doc: doc)
    }

    static func duration(_ name: String, _ path: WritableKeyPath<TailgateConfiguration, Duration>, _ doc: String...) -> ConfigKey {
        value(name, doc, read: { v, p in if let d = p.reader.duration(v, what: name) { p.config[keyPath: path] = d } },
              render: { formatDuration($0[keyPath: path]) })
    }

    static func size(_ name: String, _ path: WritableKeyPath<TailgateConfiguration, Int>, _ doc: String...) -> ConfigKey {
        value(name, doc, read: { v, p in if let n = p.reader.size(v, what: name) { p.config[keyPath: path] = n } },
              render: { formatSize($0[keyPath: path]) })
    }

    static func integer(_ name: String, _ path: WritableKeyPath<TailgateConfiguration, Int>, _ range: ClosedRange<Int64>,
                        _ doc: String...) -> ConfigKey {
        value(name, doc, read: { v, p in if let n = p.reader.integer(v, what: name, range: range) { p.config[keyPath: path] = Int(n) } },
              render: { String($0[keyPath: path]) })
    }

    static func bool(_ name: String, _ path: WritableKeyPath<TailgateConfiguration, Bool>, _ doc: String...) -> ConfigKey {
        value(name, doc, read: { v, p in if let b = p.reader.bool(v, what: name) { p.config[keyPath: path] = b } },
              render: { String($0[keyPath: path]) })
    }

    static func listen(_ name: String, _ path: WritableKeyPath<TailgateConfiguration, String?>, advertised: Bool = true,
                       _ doc: String...) -> ConfigKey {
        value(name, doc, advertised: advertised, read: { v, p in
            guard let s = p.reader.string(v, what: name) else { return }
            if s == "off" || s.isEmpty { p.config[keyPath: path] = nil }
            else if parseHostPort(s) != nil { p.config[keyPath: path] = s }
            else { p.reader.error(v, "\(name) must be HOST:PORT (or off), got '\(s)'") }
        }, render: { $0[keyPath: path] ?? "off" })
    }
}

extension TailgateConfiguration {
    /// The configuration file's keys, in the reference's order.
    static let keys: [ConfigKey] = [
        .listen("grpc_listen", \.grpcListen, "or \"off\""),
        .listen("http_listen", \.httpListen, "or \"off\""),
        .listen("admin_listen", \.adminListen, "/metrics, /livez, /readyz, /version, /debug, the status page /; or \"off\""),
        .listen("metrics_listen", \.adminListen, advertised: false, "older name of admin_listen"),
        .value("downstream", [
            "grpc://HOST:PORT, grpcs://HOST:PORT, http(s)://HOST:PORT[/path], file:PATH, file:- (stdout); host",
            "names resolve through DNS (every address of the name is tried; gRPC re-resolves after a GOAWAY or",
            "a broken connection, HTTP on every new connection)",
        ], read: { v, p in
            guard let s = p.reader.string(v, what: "downstream") else { return }
            if let d = DownstreamAddress(s) { p.config.downstream = d } else {
                p.reader.error(v, "downstream must be grpc://HOST:PORT, grpcs://HOST:PORT, http(s)://HOST:PORT[/path] or file:PATH, got '\(s)'")
            }
        }, render: { $0.downstream.description }),
        .section("downstream_tls", doc: ["for grpcs:// and https:// (see \"TLS\" below); without it: the system's roots"], read: { v, p in
            p.config.downstreamTLS = parseDownstreamTLS(v, reader: &p.reader, file: p.file)
        }, [
            .value("ca_file", ["PEM CA bundle to trust instead of the system's roots"], read: { _, _ in }, render: { _ in "null" }),
            .value("cert_file", ["client certificate chain (PEM) for mTLS, with key_file"], read: { _, _ in }, render: { _ in "null" }),
            .value("key_file", [], read: { _, _ in }, render: { _ in "null" }),
            .value("server_name", ["name to send (SNI, :authority) and verify instead of the address's host"], read: { _, _ in },
                   render: { _ in "null" }),
            .value("insecure_skip_verify", ["testing only: no verification at all (logged at warning on every start)"],
                   read: { _, _ in }, render: { _ in "false" }),
        ]),
        .value("tls", ["TLS on both receivers: {cert_file, key_file, client_ca_file, reload_interval: 30s}"], read: { v, p in
            p.config.tls = parseIngestTLS(v, reader: &p.reader, file: p.file)
        }, render: { _ in "null" }),
        .value("downstream_headers", ["sent with every downstream request, e.g. {X-Scope-OrgID: team-a, api-key: \"${env:KEY}\"}"],
               read: { v, p in
            for (k, _, value) in p.reader.mapping(v, allowed: [], what: "downstream_headers", allowAny: true) where !YAMLReader.isNull(value) {
                if let header = p.reader.string(value, what: k) { p.config.downstreamHeaders[k] = header }
            }
        }, render: { _ in "{}" }),
        .value("downstream_headers_from_request", [
            "request headers passed through with that request's spans, e.g. [X-Scope-OrgID]: each agent's",
            "tenant reaches a multi-tenant Tempo (a batch holds one tenant; a trace keeps the headers of its",
            "first request that had any; they override downstream_headers)",
        ], read: { v, p in
            for item in p.reader.sequence(v, what: "downstream_headers_from_request") {
                guard let name = p.reader.string(item, what: "a header name"), !name.isEmpty else { continue }
                if name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) {
                    p.config.passThroughHeaders.append(name.lowercased())
                } else {
                    p.reader.error(item, "'\(name)' is not a header name")
                }
            }
        }, render: { _ in "[]" }),
        .section("auth", doc: ["off unless tokens are given; then both receivers need `Authorization: Bearer TOKEN`"], [
            .value("bearer_tokens", ["(401 / UNAUTHENTICATED otherwise, counted as reason=\"unauthenticated\"); compared in constant time"],
                   read: { v, p in
                for item in p.reader.sequence(v, what: "bearer_tokens") {
                    if let t = p.reader.string(item, what: "a bearer token"), !t.isEmpty { p.config.bearerTokens.append(t) }
                }
            }, render: { _ in "[]" }),
            .value("bearer_tokens_file", ["one token per line (# comments), relative to this file"], read: { v, p in
                guard let path = p.reader.string(v, what: "bearer_tokens_file") else { return }
                let resolved = resolve(path, relativeTo: p.file)
                if let contents = try? String(contentsOfFile: resolved, encoding: .utf8) {
                    p.config.bearerTokens += contents.split(whereSeparator: \.isNewline)
                        .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
                } else {
                    p.reader.error(v, "cannot read bearer_tokens_file '\(resolved)'")
                }
            }, render: { _ in "null" }),
        ]),
        .value("policies", ["a policies file (relative to this file); null = built-in default policies"], read: { v, p in
            p.config.policiesPath = p.reader.string(v, what: "policies")
        }, render: { $0.policiesPath ?? "null" }),
        .duration("policies_reload_interval", \.policiesReloadInterval,
                  "how often the policies file is checked for changes (also reloaded on SIGHUP); 0 = off"),
        .bool("annotate_kept_spans", \.annotateKeptSpans, "tailgate.policy, trigger, and the weight (sample rate, th) of keeps by chance"),
        .bool("dry_run", \.dryRun, "forward everything, marked with what the policies would have decided"),
        .value("record", ["{path: FILE.tgrec, max_file_bytes: 256MiB, keep_files: 3, buffer_bytes: 64MiB}"], read: { v, p in
            var record = RecordingWriter.Configuration(path: "")
            for (k, _, value) in p.reader.mapping(v, allowed: ["path", "max_file_bytes", "keep_files", "buffer_bytes"], what: "record")
            where !YAMLReader.isNull(value) {
                switch k {
                case "path": record.path = p.reader.string(value, what: k) ?? ""
                case "max_file_bytes": if let n = p.reader.size(value, what: k) { record.maxFileBytes = n }
                case "keep_files": if let n = p.reader.integer(value, what: k, range: 0...1000) { record.keepFiles = Int(n) }
                default: if let n = p.reader.size(value, what: k) { record.bufferBytes = n }
                }
            }
            if record.path.isEmpty { p.reader.error(v, "record needs a 'path'") } else { p.config.record = record }
        }, render: { _ in "null" }),
        .duration("shutdown_timeout", \.shutdownTimeout, "one budget for the whole shutdown (drain requests, decide, flush); under k8s' 30 s"),
        .value("data_dir", ["the durable store (\"Durable store\" below); also --data-dir, TAILGATE_DATA_DIR"], read: { v, p in
            if let d = p.reader.string(v, what: "data_dir") { p.config.dataDir = d.isEmpty || d == "off" ? nil : resolve(d, relativeTo: p.file) }
        }, render: { $0.dataDir ?? "null" }),
        .section("store", doc: ["only with a data_dir"], [
            .size("max_disk_bytes", \.store.maxDiskBytes, "spilled traces, write-ahead records, forward-queue overflow"),
            .value("durability", ["or sync: acknowledge only once the request is written ahead and fdatasync'ed"], read: { v, p in
                guard let s = p.reader.string(v, what: "durability") else { return }
                if let d = StoreConfiguration.Durability(rawValue: s) { p.config.store.durability = d } else {
                    p.reader.error(v, "store.durability must be buffered or sync, got '\(s)'")
                }
            }, render: { $0.store.durability.rawValue }),
            .value("on_shutdown", ["or decide (the only behaviour without a data_dir)"], read: { v, p in
                guard let s = p.reader.string(v, what: "on_shutdown") else { return }
                if let o = OnShutdown(rawValue: s) { p.config.onShutdown = o } else {
                    p.reader.error(v, "store.on_shutdown must be persist or decide, got '\(s)'")
                }
            }, render: { ($0.onShutdown ?? .persist).rawValue }),
            .duration("spill_after", \.buffer.spillAfter, "a trace this long without a new span moves its spans to disk"),
            .duration("revise_window", \.buffer.reviseWindow, "dropped traces' spans kept on disk for late errors; 0 = off"),
            .value("segment_bytes", ["size of one segment file (64KiB to 1GiB)"], read: { v, p in
                guard let n = p.reader.size(v, what: "segment_bytes") else { return }
                if n >= 1 << 16 && n <= 1 << 30 {
                    p.config.store.segmentBytes = n
                } else {
                    p.reader.error(v, "store.segment_bytes must be between 64KiB and 1GiB")
                }
            }, render: { formatSize($0.store.segmentBytes) }),
        ]),
        .section("limits", [
            .size("max_request_bytes", \.limits.maxRequestBytes, "per export request, after decompression: gRPC RESOURCE_EXHAUSTED / HTTP 413"),
            .size("max_inflight_bytes", \.limits.maxInflightBytes,
                  "request bytes in flight over both receivers: beyond it HTTP 429 / RESOURCE_EXHAUSTED + retry delay"),
            .integer("max_connections", \.limits.maxConnections, 1...1_000_000, "per listener; beyond it new connections are closed at once"),
            .duration("read_header_timeout", \.limits.readHeaderTimeout,
                      "HTTP: a new connection must send a complete request head within this (slow-loris)"),
            .duration("read_body_timeout", \.limits.readBodyTimeout, "HTTP: the body must follow its head within this (408)"),
            .duration("connection_idle_timeout", \.limits.connectionIdleTimeout,
                      "a connection without a request in progress is closed (HTTP keep-alive, gRPC idle)"),
            .integer("grpc_max_concurrent_streams", \.limits.grpcMaxConcurrentStreams, 1...100_000, "gRPC calls per connection"),
            .duration("grpc_keepalive_time", \.limits.grpcKeepaliveTime, "gRPC keepalive ping after this long without reads (20 s to answer)"),
            .value("max_connection_age", ["gRPC: GOAWAY after this (30 s grace) so load balancers can rebalance; 0 = never"], read: { v, p in
                if let d = p.reader.duration(v, what: "max_connection_age") { p.config.limits.maxConnectionAge = d > .zero ? d : nil }
            }, render: { $0.limits.maxConnectionAge.map(formatDuration) ?? "0s" }),
        ]),
        .section("buffer", [
            .integer("shards", \.buffer.shardCount, 1...4096, "lock shards, chosen by XXH3 of the trace ID"),
            .duration("wait_after_root", \.buffer.waitAfterRoot, "decide this long after the root span (no parent) arrived …"),
            .duration("idle_timeout", \.buffer.idleTimeout, "… or after this long without a new span, once no span waits for a local parent"),
            .duration("remote_parent_timeout", \.buffer.remoteParentTimeout,
                      "no root, only remote parents missing: decide after this long without a new span"),
            .duration("max_trace_age", \.buffer.maxTraceAge, "at the latest this long after the first span (a run whose root has not come)"),
            .integer("max_spans_per_trace", \.buffer.maxSpansPerTrace, 1...100_000_000,
                     "a trace this large is decided at once; later spans follow the decision"),
            .size("max_buffered_bytes", \.buffer.maxBufferedBytes,
                  "over this, the oldest traces' spans spill to the store, or without room there are decided early"),
            .integer("decision_cache_size", \.buffer.decisionCacheSize, 0...100_000_000,
                     "decided trace IDs remembered (kept and dropped each) for late spans, for max_trace_age + 5m",
                     "at most; one forgotten sooner is counted (tailgate_decision_cache_early_evictions_total)"),
            .duration("decision_tick", \.decisionTick, "how often closed windows are decided"),
        ]),
        .section("forwarder", [
            .integer("max_batch_spans", \.forwarder.maxBatchSpans, 1...10_000_000, "a batch is sent at this many spans,"),
            .size("max_batch_bytes", \.forwarder.maxBatchBytes, "or this many bytes,"),
            .duration("batch_timeout", \.forwarder.batchTimeout, "or when its first span waited this long"),
            .size("queue_bytes", \.forwarder.queueBytes, "encoded batches waiting; beyond it batches are dropped (counted)"),
            .integer("concurrency", \.forwarder.concurrency, 1...256, "requests in flight to the downstream"),
            .value("compression", ["or none"], read: { v, p in
                switch p.reader.string(v, what: "compression") {
                case "gzip": p.config.forwarder.gzip = true
                case "none": p.config.forwarder.gzip = false
                default: p.reader.error(v, "compression must be gzip or none")
                }
            }, render: { $0.forwarder.gzip ? "gzip" : "none" }),
            .integer("compression_level", \.forwarder.compressionLevel, 1...9, "gzip level: 1 fastest (4x zlib level 6's speed, 5 % larger), 9 smallest"),
            .duration("timeout", \.forwarder.timeout, "per request"),
            .duration("initial_backoff", \.forwarder.initialBackoff, "retries: exponential backoff with jitter,"),
            .duration("max_backoff", \.forwarder.maxBackoff, "a failing batch is retried for as long as the queue holds it (no time limit)"),
            .value("max_retry_time", [], advertised: false, read: { v, p in
                p.reader.warning(v, "max_retry_time is ignored: a failing batch is retried for as long as the forward queue holds it (queue_bytes), so an outage the queue absorbs loses nothing")
            }, render: { _ in "" }),
            .size("signals_queue_bytes", \.signalQueueBytes,
                  "relayed metrics and logs waiting; beyond it the receivers answer 503 / UNAVAILABLE"),
            // Older name of the top-level shutdown_timeout (which covers the whole shutdown now).
            .value("shutdown_timeout", [], advertised: false, read: { v, p in
                if let d = p.reader.duration(v, what: "shutdown_timeout") { p.config.shutdownTimeout = d }
            }, render: { _ in "" }),
        ]),
        .section("metrics", [
            .integer("gen_ai_max_label_values", \.genAIMaxLabelValues, 1...100_000,
                     "distinct values per label of the tailgate_gen_ai_* metrics; later ones count as \"other\""),
        ]),
    ]

    /// Top-level key names (advertised or not).
    static var topKeys: [String] { keys.map(\.name) }

    /// Reads `root` through the table.
    static func read(_ root: Node, _ p: inout ConfigParse) {
        let table = Dictionary(uniqueKeysWithValues: keys.map { ($0.name, $0) })
        for (name, keyNode, value) in p.reader.mapping(root, allowed: keys.map(\.name), what: "the configuration file")
        where !YAMLReader.isNull(value) {
            guard let key = table[name] else { continue }
            switch key.body {
            case .value(let read, _):
                read(value, &p)
            case .section(_, let read?):
                if name == "downstream_tls" { p.downstreamTLSKey = keyNode }
                read(value, &p)
            case .section(let children, nil):
                let byName = Dictionary(uniqueKeysWithValues: children.map { ($0.name, $0) })
                for (k, _, v) in p.reader.mapping(value, allowed: children.map(\.name), what: name) where !YAMLReader.isNull(v) {
                    if case .value(let read, _)? = byName[k]?.body { read(v, &p) }
                }
            }
        }
    }

    /// The README's configuration block: every advertised key with its default and documentation.
    package static func reference() -> String {
        let defaults = TailgateConfiguration()
        var out = ""
        let column = 35
        func emit(_ text: String, _ doc: [String]) {
            var line = text
            if let first = doc.first {
                line += line.count < column ? String(repeating: " ", count: column - line.count) : "  "
                line += "# " + first
            }
            out += line + "\n"
            for more in doc.dropFirst() { out += String(repeating: " ", count: column) + "# " + more + "\n" }
        }
        for key in keys where key.advertised {
            switch key.body {
            case .value(_, let render):
                emit("\(key.name): \(render(defaults))", key.doc)
            case .section(let children, _):
                emit("\(key.name):", key.doc)
                for child in children where child.advertised {
                    if case .value(_, let render) = child.body { emit("  \(child.name): \(render(defaults))", child.doc) }
                }
            }
        }
        return out
    }
}

/// A duration in Go's syntax, as the configuration reads it (`100ms`, `5s`, `2m`, `1h`).
func formatDuration(_ d: Duration) -> String {
    let (seconds, attos) = d.components
    if attos == 0 {
        if seconds != 0 && seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds != 0 && seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }
    let ms = seconds * 1000 + attos / 1_000_000_000_000_000
    return "\(ms)ms"
}

/// A size with the largest binary unit that divides it (`64MiB`), else plain bytes.
func formatSize(_ n: Int) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] where n != 0 && n % (1 << shift) == 0 {
        return "\(n >> shift)\(unit)"
    }
    return String(n)
}
