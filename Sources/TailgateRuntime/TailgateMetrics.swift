import CTailgateSupport
import CoreMetrics
import Foundation
import Metrics
package import Prometheus
import Synchronization
import TailgateStore
import TailgateBuffer
package import TailgateExport
import TailgateIngest

/// Every metric Tailgate exposes on `/metrics`. Metrics are created once (never on the hot path) through an
/// injected swift-metrics factory backed by a Prometheus registry, so tests and servers each get their own.
package final class TailgateMetrics: Sendable, ForwarderObserver {
    package let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    let spansReceived: [IngestTransport: CoreMetrics.Counter]
    let requestsAccepted: [IngestTransport: CoreMetrics.Counter]
    let spansRejected: [IngestTransport: CoreMetrics.Counter]
    let requestsRefused: [String: CoreMetrics.Counter]
    let spansKept: CoreMetrics.Counter
    let spansForwarded: CoreMetrics.Counter
    let requestsForwarded: CoreMetrics.Counter
    let spansDropped: [String: CoreMetrics.Counter]
    let tracesDecided: Mutex<[PolicyOutcome: CoreMetrics.Counter]>
    let tracesDecidedByTrigger: [TriggerOutcome: CoreMetrics.Counter]
    /// First span → decision, seconds.
    let decisionLatency: CoreMetrics.Timer
    let forwardFailures: Mutex<[String: CoreMetrics.Counter]>
    let tracesBuffered: CoreMetrics.Gauge
    let bytesBuffered: CoreMetrics.Gauge
    let forwardQueueBytes: CoreMetrics.Gauge
    let policiesHash: CoreMetrics.Gauge
    /// Spans per trace and trace duration (earliest start to latest end) at the decision.
    let traceSpans: CoreMetrics.Recorder
    let traceDuration: CoreMetrics.Timer
    /// One request to the downstream, sent to answered (delivered or not).
    let forwardLatency: CoreMetrics.Timer
    /// XXH3 of the loaded policies file, for `tailgate_policies_info{hash}`.
    private let policiesHashValue = Mutex<UInt64>(0)
    let policyReloads: CoreMetrics.Counter
    let policyReloadFailures: CoreMetrics.Counter
    /// Spans dropped by reason, readable for the summary logged at shutdown.
    private let drops = Mutex<[String: Int]>([:])
    /// Relayed metrics and logs requests: received by transport, forwarded, refused at ingest and dropped after
    /// acceptance, by signal (and reason).
    let signalReceivedCounters: [String: CoreMetrics.Counter]
    let signalForwardedCounters: [String: CoreMetrics.Counter]
    let signalBytesCounters: [String: CoreMetrics.Counter]
    let signalDroppedCounters: [String: CoreMetrics.Counter]
    let signalRefusedCounters: [String: CoreMetrics.Counter]
    let signalQueueBytes: CoreMetrics.Gauge
    private let signalDrops = Mutex<[String: Int]>([:])

    /// Why a metrics or logs request was not relayed (beyond `SignalDropReason`).
    package static let signalUnsupported = "unsupported_by_downstream"

    /// Why spans were dropped (the `reason` label of `tailgate_spans_dropped_total`).
    package enum DropReason: String, CaseIterable, Sendable {
        /// No policy kept the trace.
        case policy
        /// Late span of a trace already dropped by policy.
        case lateDropped = "late_span_of_dropped_trace"
        /// Invalid trace or span ID (reported to the client as partial success).
        case invalidSpan = "invalid_span"
        /// A span ID its buffered trace already had (an exporter retrying a request that had arrived).
        case duplicate = "duplicate_span"
    }

    // The trace store (`data_dir`).
    let storeWritten: CoreMetrics.Counter
    let storeReadBack: CoreMetrics.Counter
    let storeRefusals: CoreMetrics.Counter
    let storeDamagedRecords: CoreMetrics.Counter
    let storeDiskBytes: CoreMetrics.Gauge
    let storeDiskBudget: CoreMetrics.Gauge
    let storeTraces: CoreMetrics.Gauge
    let storeColdTraces: CoreMetrics.Gauge
    let storeTraceBytes: CoreMetrics.Gauge
    let storeRecoveredTraces: CoreMetrics.Gauge
    let storeRecoveredRecords: CoreMetrics.Gauge
    let storeRecoverySeconds: CoreMetrics.Gauge
    let storeUnsyncedRequests: CoreMetrics.Counter
    /// Decisions forgotten before their traces could have no more late spans (`decision_cache_size` too small).
    let decisionCacheEarlyEvictions: CoreMetrics.Counter

    package init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        // Decision latency spans seconds (a complete trace) to half an hour (an agent run at max_trace_age).
        factory.durationHistogramBuckets["tailgate_decision_latency_seconds"] = [
            .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
            .seconds(120), .seconds(300), .seconds(600), .seconds(1200), .seconds(1800), .seconds(3600),
        ]
        factory.durationHistogramBuckets["tailgate_trace_duration_seconds"] = [
            .milliseconds(10), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(10), .seconds(30),
            .seconds(60), .seconds(300), .seconds(600), .seconds(1800), .seconds(3600),
        ]
        factory.durationHistogramBuckets["tailgate_forward_request_duration_seconds"] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10),
        ]
        factory.valueHistogramBuckets["tailgate_trace_spans"] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
        self.factory = factory
        func counter(_ name: String, _ dims: [(String, String)] = []) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: name, dimensions: dims, factory: factory)
        }
        var received: [IngestTransport: CoreMetrics.Counter] = [:]
        var accepted: [IngestTransport: CoreMetrics.Counter] = [:]
        var rejected: [IngestTransport: CoreMetrics.Counter] = [:]
        for t in [IngestTransport.grpc, .http] {
            received[t] = counter("tailgate_spans_received_total", [("transport", t.rawValue)])
            accepted[t] = counter("tailgate_requests_accepted_total", [("transport", t.rawValue)])
            rejected[t] = counter("tailgate_spans_rejected_total", [("transport", t.rawValue)])
        }
        spansReceived = received
        requestsAccepted = accepted
        spansRejected = rejected
        var refused: [String: CoreMetrics.Counter] = [:]
        for t in [IngestTransport.grpc, .http] {
            for r in RefusalReason.allCases + [nil] {
                let reason = r?.rawValue ?? "invalid"
                refused["\(t.rawValue)/\(reason)"] = counter("tailgate_requests_refused_total", [("transport", t.rawValue), ("reason", reason)])
            }
            refused["\(t.rawValue)/overloaded"] = counter("tailgate_requests_refused_total", [("transport", t.rawValue), ("reason", "overloaded")])
        }
        requestsRefused = refused
        spansKept = counter("tailgate_spans_kept_total")
        spansForwarded = counter("tailgate_spans_forwarded_total")
        requestsForwarded = counter("tailgate_forward_requests_total")
        var dropped: [String: CoreMetrics.Counter] = [:]
        for r in DropReason.allCases.map(\.rawValue) + ForwardDropReason.allCases.map(\.rawValue) {
            dropped[r] = counter("tailgate_spans_dropped_total", [("reason", r)])
        }
        spansDropped = dropped
        tracesDecided = Mutex([:])
        var byTrigger: [TriggerOutcome: CoreMetrics.Counter] = [:]
        for t in DecisionTrigger.allCases {
            for complete in [true, false] {
                byTrigger[TriggerOutcome(trigger: t, complete: complete)] = counter("tailgate_traces_decided_by_trigger_total",
                                                                  [("trigger", t.rawValue), ("complete", complete ? "true" : "false")])
            }
        }
        tracesDecidedByTrigger = byTrigger
        decisionLatency = CoreMetrics.Timer(label: "tailgate_decision_latency_seconds", factory: factory)
        forwardFailures = Mutex([:])
        tracesBuffered = CoreMetrics.Gauge(label: "tailgate_traces_buffered", factory: factory)
        bytesBuffered = CoreMetrics.Gauge(label: "tailgate_buffered_bytes", factory: factory)
        forwardQueueBytes = CoreMetrics.Gauge(label: "tailgate_forward_queue_bytes", factory: factory)
        policiesHash = CoreMetrics.Gauge(label: "tailgate_policies_hash", factory: factory)
        var sReceived: [String: CoreMetrics.Counter] = [:], sForwarded: [String: CoreMetrics.Counter] = [:]
        var sBytes: [String: CoreMetrics.Counter] = [:], sDropped: [String: CoreMetrics.Counter] = [:]
        var sRefused: [String: CoreMetrics.Counter] = [:]
        for signal in [OTLPSignal.metrics, .logs] {
            let name = signal.rawValue
            for t in [IngestTransport.grpc, .http] {
                sReceived["\(name)/\(t.rawValue)"] = counter("tailgate_signal_requests_received_total", [("signal", name), ("transport", t.rawValue)])
            }
            sForwarded[name] = counter("tailgate_signal_requests_forwarded_total", [("signal", name)])
            sBytes[name] = counter("tailgate_signal_bytes_forwarded_total", [("signal", name)])
            for reason in SignalDropReason.allCases.map(\.rawValue) + [Self.signalUnsupported] {
                sDropped["\(name)/\(reason)"] = counter("tailgate_signal_requests_dropped_total", [("signal", name), ("reason", reason)])
            }
            for reason in ["queue_full", "json_unsupported"] {
                sRefused["\(name)/\(reason)"] = counter("tailgate_signal_requests_refused_total", [("signal", name), ("reason", reason)])
            }
        }
        signalReceivedCounters = sReceived
        signalForwardedCounters = sForwarded
        signalBytesCounters = sBytes
        signalDroppedCounters = sDropped
        signalRefusedCounters = sRefused
        signalQueueBytes = CoreMetrics.Gauge(label: "tailgate_signal_queue_bytes", factory: factory)
        storeWritten = counter("tailgate_store_written_bytes_total")
        storeReadBack = counter("tailgate_store_read_bytes_total")
        storeRefusals = counter("tailgate_store_write_refusals_total")
        storeDamagedRecords = counter("tailgate_store_damaged_records_total")
        storeDiskBytes = CoreMetrics.Gauge(label: "tailgate_store_disk_bytes", factory: factory)
        storeDiskBudget = CoreMetrics.Gauge(label: "tailgate_store_disk_budget_bytes", factory: factory)
        storeTraces = CoreMetrics.Gauge(label: "tailgate_store_traces", factory: factory)
        storeColdTraces = CoreMetrics.Gauge(label: "tailgate_store_cold_traces", factory: factory)
        storeTraceBytes = CoreMetrics.Gauge(label: "tailgate_store_trace_bytes", factory: factory)
        storeRecoveredTraces = CoreMetrics.Gauge(label: "tailgate_store_recovered_traces", factory: factory)
        storeRecoveredRecords = CoreMetrics.Gauge(label: "tailgate_store_recovered_records", factory: factory)
        storeRecoverySeconds = CoreMetrics.Gauge(label: "tailgate_store_recovery_seconds", factory: factory)
        storeUnsyncedRequests = counter("tailgate_store_unsynced_requests_total")
        decisionCacheEarlyEvictions = counter("tailgate_decision_cache_early_evictions_total")
        traceSpans = CoreMetrics.Recorder(label: "tailgate_trace_spans", aggregate: true, factory: factory)
        traceDuration = CoreMetrics.Timer(label: "tailgate_trace_duration_seconds", factory: factory)
        forwardLatency = CoreMetrics.Timer(label: "tailgate_forward_request_duration_seconds", factory: factory)
        policyReloads = counter("tailgate_policies_reloads_total")
        policyReloadFailures = counter("tailgate_policies_reload_failures_total")
    }

    /// `tailgate_traces_decided_by_trigger_total{trigger, complete}` and the decision latency histogram.
    func decided(trigger: DecisionTrigger, complete: Bool, latencyNanos: UInt64) {
        tracesDecidedByTrigger[TriggerOutcome(trigger: trigger, complete: complete)]?.increment()
        decisionLatency.recordNanoseconds(Int64(clamping: latencyNanos))
    }

    /// `tailgate_policies_hash`: XXH3 of the loaded policies file, as a number (low 52 bits, exact in a double).
    func policiesLoaded(hash: UInt64) {
        policiesHash.record(Double(hash & ((1 << 52) - 1)))
        policiesHashValue.withLock { $0 = hash }
    }

    /// Spans and duration of a decided trace.
    func decidedShape(spans: Int, durationNanos: UInt64) {
        traceSpans.record(spans)
        traceDuration.recordNanoseconds(Int64(clamping: durationNanos))
    }

    /// The Prometheus text exposition.
    package func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        buffer += Array(infoAndProcessMetrics().utf8)
        return buffer
    }

    func refused(_ transport: IngestTransport, _ reason: String) {
        requestsRefused["\(transport.rawValue)/\(reason)"]?.increment()
    }

    func dropped(_ spans: Int, _ reason: DropReason) {
        count(spans, reason.rawValue)
    }

    private func count(_ spans: Int, _ reason: String) {
        guard spans > 0 else { return }
        spansDropped[reason]?.increment(by: spans)
        drops.withLock { $0[reason, default: 0] += spans }
    }

    /// Spans dropped so far, by reason.
    package func dropTally() -> [String: Int] { drops.withLock { $0 } }

    /// `tailgate_traces_decided_total{policy, decision}`: policy names come from the loaded file.
    /// Keys of the per-decision counters (hashed per decided trace: no string is built).
    struct TriggerOutcome: Hashable {
        var trigger: DecisionTrigger
        var complete: Bool
    }

    struct PolicyOutcome: Hashable {
        var policy: String
        var keep: Bool
    }

    func decided(policy: String, keep: Bool) {
        let key = PolicyOutcome(policy: policy, keep: keep)
        let counter = tracesDecided.withLock { counters -> CoreMetrics.Counter in
            if let c = counters[key] { return c }
            let c = CoreMetrics.Counter(label: "tailgate_traces_decided_total",
                            dimensions: [("policy", policy), ("decision", keep ? "keep" : "drop")], factory: factory)
            counters[key] = c
            return c
        }
        counter.increment()
    }

    // MARK: ForwarderObserver

    package func forwarded(spans: Int, requests: Int) {
        spansForwarded.increment(by: spans)
        requestsForwarded.increment(by: requests)
    }

    package func dropped(spans: Int, reason: ForwardDropReason) {
        count(spans, reason.rawValue)
    }

    package func sendFailed(reason: String, willRetry: Bool) {
        // Keep the label's cardinality low: the part before the first colon ("unavailable", "HTTP 503", …).
        let short = String(reason.prefix { $0 != ":" }.prefix(40))
        let key = "\(short)/\(willRetry)"
        let counter = forwardFailures.withLock { counters -> CoreMetrics.Counter in
            if let c = counters[key] { return c }
            let c = CoreMetrics.Counter(label: "tailgate_forward_failures_total",
                            dimensions: [("reason", short), ("retried", willRetry ? "true" : "false")], factory: factory)
            counters[key] = c
            return c
        }
        counter.increment()
    }

    package func queued(bytes: Int) {
        forwardQueueBytes.record(bytes)
    }

    package func requestFinished(after: Duration) {
        forwardLatency.recordNanoseconds(Int64(clamping: after.nanoseconds))
    }

    // MARK: Relayed metrics and logs

    func signalReceived(_ signal: OTLPSignal, transport: IngestTransport) {
        signalReceivedCounters["\(signal.rawValue)/\(transport.rawValue)"]?.increment()
    }

    func signalRefused(_ signal: OTLPSignal, reason: String) {
        signalRefusedCounters["\(signal.rawValue)/\(reason)"]?.increment()
    }

    func signalDropped(_ signal: OTLPSignal, reason: String) {
        signalDroppedCounters["\(signal.rawValue)/\(reason)"]?.increment()
        signalDrops.withLock { $0["\(signal.rawValue)/\(reason)", default: 0] += 1 }
    }

    /// Relayed requests lost after they were accepted, by `signal/reason`.
    package func signalDropTally() -> [String: Int] { signalDrops.withLock { $0 } }
}

extension TailgateMetrics: StoreObserver {
    package func storeWrote(bytes: Int) { storeWritten.increment(by: bytes) }
    package func storeRead(bytes: Int) { storeReadBack.increment(by: bytes) }
    package func storeFull() { storeRefusals.increment() }
    package func storeDamaged(records: Int) { storeDamagedRecords.increment(by: records) }
}

extension TailgateMetrics: SignalForwarderObserver {
    package func signalForwarded(_ signal: OTLPSignal, bytes: Int) {
        signalForwardedCounters[signal.rawValue]?.increment()
        signalBytesCounters[signal.rawValue]?.increment(by: bytes)
    }

    package func signalDropped(_ signal: OTLPSignal, reason: SignalDropReason) {
        signalDropped(signal, reason: reason.rawValue)
    }

    package func signalSendFailed(_ signal: OTLPSignal, reason: String, willRetry: Bool) {
        sendFailed(reason: reason, willRetry: willRetry)
    }

    package func signalQueued(bytes: Int) {
        signalQueueBytes.record(bytes)
    }
}

extension TailgateMetrics {
    /// Build and policies information as info metrics, and the process metrics every Prometheus client exports
    /// (`process_*`, read from /proc at scrape time).
    func infoAndProcessMetrics() -> String {
        let hash = policiesHashValue.withLock { $0 }
        let commit = String(cString: tailgate_build_commit())
        let allocator = String(cString: tailgate_allocator())
        var out = """
        # HELP tailgate_build_info Version and commit of the running binary, and the library its malloc comes from.
        # TYPE tailgate_build_info gauge
        tailgate_build_info{version="\(TailgateVersion.current)",commit="\(commit)",allocator="\(allocator)"} 1
        # HELP tailgate_policies_info The loaded policies file, by its XXH3 hash (hex).
        # TYPE tailgate_policies_info gauge
        tailgate_policies_info{hash="\(String(hash, radix: 16))"} 1

        """
        let process = ProcessStats.read()
        func metric(_ name: String, _ type: String, _ help: String, _ value: Double?) {
            guard let value else { return }
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        metric("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", process.cpuSeconds)
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", process.residentBytes)
        metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", process.virtualBytes)
        metric("process_open_fds", "gauge", "Open file descriptors.", process.openFDs)
        metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", process.maxFDs)
        metric("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.", process.startTime)
        return out
    }
}

/// The process's own figures, from /proc (nil where it cannot be read).
struct ProcessStats {
    var cpuSeconds: Double?
    var residentBytes: Double?
    var virtualBytes: Double?
    var openFDs: Double?
    var maxFDs: Double?
    var startTime: Double?

    static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    static let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))

    static func read() -> ProcessStats {
        var s = ProcessStats()
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            // Fields after the command name: state is field 3; utime 14, stime 15, starttime 22, vsize 23, rss 24.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            func field(_ n: Int) -> Double? { n - 3 < fields.count ? Double(fields[n - 3]) : nil }
            if let u = field(14), let k = field(15) { s.cpuSeconds = (u + k) / ticks }
            s.virtualBytes = field(23)
            s.residentBytes = field(24).map { $0 * pageSize }
            if let start = field(22), let uptime = bootTime() { s.startTime = uptime + start / ticks }
        }
        s.openFDs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")).map { Double($0.count) }
        if let limits = try? String(contentsOfFile: "/proc/self/limits", encoding: .utf8),
           let line = limits.split(separator: "\n").first(where: { $0.hasPrefix("Max open files") }) {
            s.maxFDs = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first.flatMap { Double($0) }
        }
        return s
    }

    /// Boot time, seconds since the epoch (`btime` of /proc/stat).
    static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }) else { return nil }
        return Double(line.dropFirst(6))
    }
}
