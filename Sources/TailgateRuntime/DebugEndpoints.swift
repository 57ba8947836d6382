import CTailgateSupport
import Foundation
import NIOHTTP1
import Synchronization
import TailgateBuffer
import TailgateExport
import TailgateHTTPServer
import TailgatePolicies
import TailgateStore
import TailgateWire

// "Why was this trace kept?": `GET /debug/traces/{trace_id}` and the status page's `GET /debug/status` on the admin
// listener. Both answer from what the proxy holds (buffer, store, decision cache, metrics); neither shows span
// contents (names, attributes), only trace metadata.

/// What the admin listener's debug routes read: the pipeline, the forwarder's recent health, and the counters sampled
/// over the last minute for rates.
package final class AdminContext: Sendable {
    let pipeline: Pipeline
    let metrics: TailgateMetrics
    let health: DownstreamHealth
    let policiesPath: String?
    let startedMono: UInt64
    let startedWall: UInt64
    private let clock: any NanoClock
    private let samples: Mutex<[RateSample]>

    struct RateSample { var at: UInt64; var received: Double; var kept: Double; var forwarded: Double }

    /// How far back rates look (the oldest sample within it, else the newest before it).
    static let rateWindow: UInt64 = 60_000_000_000

    init(pipeline: Pipeline, metrics: TailgateMetrics, health: DownstreamHealth, policiesPath: String?,
         clock: any NanoClock = SystemClock()) {
        self.pipeline = pipeline
        self.metrics = metrics
        self.health = health
        self.policiesPath = policiesPath
        self.clock = clock
        startedMono = clock.now()
        startedWall = wallClockNanos()
        samples = Mutex([RateSample(at: startedMono, received: 0, kept: 0, forwarded: 0)])
    }

    /// Records a sample and returns rates per second since the oldest sample of the window, and the window's length
    /// in seconds (nil rates: less than half a second of history).
    func rates(received: Double, kept: Double, forwarded: Double) -> (received: Double, kept: Double, forwarded: Double, window: Double)? {
        let now = clock.now()
        return samples.withLock { list -> (Double, Double, Double, Double)? in
            // Keep one sample older than the window (the base), and at most one sample per second within it.
            while list.count > 1, now &- list[1].at >= Self.rateWindow { list.removeFirst() }
            if let last = list.last, now &- last.at < 1_000_000_000, list.count > 1 {
                list[list.count - 1] = RateSample(at: now, received: received, kept: kept, forwarded: forwarded)
            } else {
                list.append(RateSample(at: now, received: received, kept: kept, forwarded: forwarded))
            }
            if list.count > 120 { list.removeFirst(list.count - 120) }
            guard let base = list.first, now > base.at, now &- base.at >= 500_000_000 else { return nil }
            let seconds = Double(now &- base.at) / 1e9
            return ((received - base.received) / seconds, (kept - base.kept) / seconds, (forwarded - base.forwarded) / seconds, seconds)
        }
    }
}

/// The forwarder's observer with memory: passes every count on to the metrics, and remembers when the downstream
/// last took a batch and when (and why) it last failed, for the status page.
final class DownstreamHealth: ForwarderObserver {
    struct State {
        var lastSuccess: UInt64 = 0
        var lastFailure: UInt64 = 0
        var lastFailureReason: String? = nil
        var failures = 0
    }

    let metrics: TailgateMetrics
    private let clock: any NanoClock
    private let state = Mutex(State())

    init(metrics: TailgateMetrics, clock: any NanoClock = SystemClock()) {
        self.metrics = metrics
        self.clock = clock
    }

    var current: State { state.withLock { $0 } }
    func now() -> UInt64 { clock.now() }

    // Every requirement of ForwarderObserver is passed on explicitly (none may fall to a default implementation).
    func forwarded(spans: Int, requests: Int) {
        metrics.forwarded(spans: spans, requests: requests)
        let now = clock.now()
        state.withLock { $0.lastSuccess = now }
    }

    func dropped(spans: Int, reason: ForwardDropReason) {
        metrics.dropped(spans: spans, reason: reason)
    }

    func sendFailed(reason: String, willRetry: Bool) {
        metrics.sendFailed(reason: reason, willRetry: willRetry)
        let now = clock.now()
        state.withLock {
            $0.lastFailure = now
            $0.lastFailureReason = String(reason.prefix(300))
            $0.failures += 1
        }
    }

    func queued(bytes: Int) {
        metrics.queued(bytes: bytes)
    }

    func requestFinished(after: Duration) {
        metrics.requestFinished(after: after)
    }
}

// MARK: - JSON

/// A JSON value with ordered object keys (the answers read top to bottom).
indirect enum DebugJSON {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([DebugJSON])
    case object([(String, DebugJSON)])

    static func number(_ d: Double?, places: Int = 3) -> DebugJSON {
        guard let d, d.isFinite else { return .null }
        let scale = pow(10, Double(places))
        return .double((d * scale).rounded() / scale)
    }

    static func optional(_ s: String?) -> DebugJSON { s.map { .string($0) } ?? .null }

    var rendered: String {
        var out = ""
        render(into: &out)
        return out
    }

    func render(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if !d.isFinite { out += "null" } else if d == d.rounded(), abs(d) < 1e15 { out += String(Int64(d)) } else { out += "\(d)" }
        case .string(let s): Self.escape(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.render(into: &out)
            }
            out += "]"
        case .object(let fields):
            out += "{"
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out += "," }
                Self.escape(key, into: &out)
                out += ":"
                value.render(into: &out)
            }
            out += "}"
        }
    }

    /// JSON string escaping; `<`, `>`, `&` and `'` are escaped too, so that the text is inert in any HTML context.
    static func escape(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<", ">", "&", "'", "\u{2028}", "\u{2029}":
                out += String(format: "\\u%04x", scalar.value)
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        out += "\""
    }
}

extension HTTPResponse {
    static func json(_ status: HTTPResponseStatus, _ value: DebugJSON) -> HTTPResponse {
        var headers = HTTPHeaders()
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        return HTTPResponse(status: status, contentType: "application/json; charset=utf-8", headers: headers,
                            body: Array((value.rendered + "\n").utf8))
    }
}

// MARK: - /debug/traces/{trace_id}

enum DebugRoutes {
    static let tracesPrefix = "/debug/traces/"

    static func seconds(_ nanos: UInt64) -> Double { Double(nanos) / 1e9 }

    /// Age in seconds of a clock reading (0 readings are "never": nil).
    static func age(_ reading: UInt64, now: UInt64) -> Double? {
        reading == 0 ? nil : seconds(now &- min(reading, now))
    }

    /// A clock reading as an RFC 3339 UTC time.
    static func wallTime(_ reading: UInt64, now: UInt64, wallNow: UInt64) -> String? {
        guard reading != 0 else { return nil }
        return rfc3339(wallNow &- (now &- min(reading, now)))
    }

    static func rfc3339(_ unixNanos: UInt64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(unixNanos) / 1e9))
    }

    /// The weight of a keep as it is written downstream: certain (nothing written), `th` (consistent mode) and
    /// `tailgate.sample_rate` (before any upstream adjusted count is multiplied in).
    static func weight(_ w: KeepWeight) -> DebugJSON {
        switch w {
        case .certain:
            return .object([("kind", .string("certain")), ("probability", .int(1))])
        case .consistent(let threshold):
            return .object([("kind", .string("consistent")), ("probability", .number(w.probability, places: 9)),
                            ("th", .string(KeepAnnotation.thValue(threshold))),
                            ("sample_rate", .number(KeepAnnotation.adjustedCount(threshold: threshold), places: 6))])
        case .hashed(let p):
            return .object([("kind", .string("hashed")), ("probability", .number(p, places: 9)),
                            ("sample_rate", p > 0 ? .number(1 / p, places: 6) : .null)])
        }
    }

    static func weightText(_ w: KeepWeight) -> String {
        switch w {
        case .certain: return "certain"
        case .consistent(let t):
            return "probability \(formatPercent(w.probability)), th=\(KeepAnnotation.thValue(t)), sample rate \(formatRate(KeepAnnotation.adjustedCount(threshold: t)))"
        case .hashed(let p): return "probability \(formatPercent(p)), sample rate \(p > 0 ? formatRate(1 / p) : "∞")"
        }
    }

    static func formatPercent(_ p: Double) -> String {
        let percent = p * 100
        return percent >= 1 ? "\((percent * 100).rounded() / 100)%" : "\(percent)%"
    }

    static func formatRate(_ r: Double) -> String { "\((r * 1000).rounded() / 1000)" }

    static func statuses(_ mask: UInt8) -> [String] {
        StatusCode.allCases.filter { mask & $0.bit != 0 }.map { code in
            switch code {
            case .unset: "unset"
            case .ok: "ok"
            case .error: "error"
            }
        }
    }

    static func badRequest(_ message: String) -> HTTPResponse {
        .json(.badRequest, .object([("error", .string(message))]))
    }

    static func trace(path: String, context: AdminContext) -> HTTPResponse {
        let raw = path.dropFirst(tracesPrefix.count)
        guard !raw.isEmpty else {
            return badRequest("a trace ID is needed: GET /debug/traces/{trace_id} with 32 hexadecimal digits")
        }
        guard raw.utf8.count == 32, raw.utf8.allSatisfy({ isHexDigit($0) }) else {
            let shown = raw.count > 64 ? String(raw.prefix(64)) + "…" : String(raw)
            let what = raw.utf8.count != 32 ? "\(raw.utf8.count) characters" : "a character that is not a hexadecimal digit"
            return badRequest("invalid trace ID '\(shown)': expected 32 hexadecimal digits, got \(what)")
        }
        guard let id = TraceID(hex: raw), id.isValid else {
            return badRequest("invalid trace ID '\(raw)': the all-zero trace ID is invalid in OpenTelemetry")
        }
        let pipeline = context.pipeline
        guard let inspection = pipeline.buffer.inspect(id) else {
            let retention = pipeline.buffer.decisionRetention.components.seconds
            let cacheSize = pipeline.buffer.configuration.decisionCacheSize
            return .json(.notFound, .object([
                ("trace_id", .string(id.description)),
                ("state", .string("unknown")),
                ("text", .string("not seen (or forgotten after \(retention) s: decisions are remembered for max_trace_age + 5 min, at most \(cacheSize) per outcome)")),
                ("forgotten_after_seconds", .int(Int(retention))),
            ]))
        }
        return .json(.ok, describe(inspection, context: context))
    }

    static func isHexDigit(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f"))
            || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "F"))
    }

    /// What describing a trace needs besides the inspection: the policies, their names and the wall clock.
    struct DescribeContext {
        var policySet: PolicySet
        var policyName: (Decision) -> String
        var dryRun: Bool
        /// Unix nanoseconds at `TraceInspection.now`.
        var wallNow: UInt64
    }

    static func describe(_ i: TraceInspection, context: AdminContext) -> DebugJSON {
        let pipeline = context.pipeline
        return describe(i, DescribeContext(policySet: pipeline.policySet, policyName: { pipeline.policyName($0) },
                                           dryRun: pipeline.dryRun, wallNow: wallClockNanos()))
    }

    /// Span count, bytes, statuses, root, duration, and the GenAI tokens and cost when the trace has GenAI spans.
    static func summaryFields(_ summary: TraceSummary, pricing: PriceTable) -> [(String, DebugJSON)] {
        var fields: [(String, DebugJSON)] = [
            ("spans", .int(summary.spanCount)),
            ("bytes", .int(summary.spanBytes)),
            ("statuses", .array(statuses(summary.statusMask).map { .string($0) })),
            ("root_seen", .bool(summary.rootSeen)),
            ("duration_seconds", .number(seconds(summary.durationNanos), places: 6)),
        ]
        if var ledger = summary.genAI {
            if !ledger.resolved { ledger.resolve() }
            fields.append(("gen_ai", .object([
                ("spans", .int(ledger.spans.count)),
                ("tokens", .int(Int(clamping: ledger.totalTokens()))),
                ("cost_usd", .number(pricing.cost(ledger), places: 6)),
            ])))
        }
        return fields
    }

    /// " 412 tokens, $0.0012" for a trace with GenAI spans, "" otherwise.
    static func genAIText(_ summary: TraceSummary, pricing: PriceTable) -> String {
        guard var ledger = summary.genAI else { return "" }
        if !ledger.resolved { ledger.resolve() }
        let usd = pricing.cost(ledger)
        return ", \(ledger.totalTokens()) tokens (\(String(format: "$%.4f", usd)))"
    }

    /// Every policy's verdict, in file order.
    static func verdicts(_ explanation: PolicyExplanation) -> DebugJSON {
        .array(explanation.policies.map { e in
            .object([("name", .string(e.name)), ("type", .string(e.type)), ("verdict", .string(e.outcome.rawValue)),
                     ("chance", .number(e.chance, places: 9)), ("weight", e.weight.map(weight) ?? .null)])
        })
    }

    static func describe(_ i: TraceInspection, _ context: DescribeContext) -> DebugJSON {
        let now = i.now
        let wallNow = context.wallNow
        var fields: [(String, DebugJSON)] = [("trace_id", .string(i.traceID.description)), ("state", .string(i.state.rawValue))]
        var text = ""
        if let summary = i.summary {
            fields += summaryFields(summary, pricing: context.policySet.pricing)
        }
        switch i.state {
        case .buffered, .spilled:
            let p = i.pending!
            let summary = i.summary!
            fields += [
                ("spans_in_memory", .int(p.spansInMemory)),
                ("memory_bytes", .int(p.memoryBytes)),
                ("stored_bytes", .int(p.storedBytes)),
                ("stored_records", .int(p.storedRecords)),
                ("complete", .bool(p.complete)),
                ("missing_parents", .object([("local", .int(p.missingLocal)), ("remote", .int(p.missingRemote + p.missingUnknown)),
                                             ("of_which_unknown_locality", .int(p.missingUnknown))])),
                ("first_seen", .optional(wallTime(p.firstSeen, now: now, wallNow: wallNow))),
                ("first_seen_age_seconds", .number(age(p.firstSeen, now: now))),
                ("last_seen", .optional(wallTime(p.lastSeen, now: now, wallNow: wallNow))),
                ("last_seen_age_seconds", .number(age(p.lastSeen, now: now))),
                ("root_arrived_age_seconds", .number(age(p.rootArrived, now: now))),
                ("decision", .object([
                    ("due_in_seconds", .number(p.deadline > now ? seconds(p.deadline - now) : 0)),
                    ("due_at", .string(rfc3339(p.deadline > now ? wallNow &+ (p.deadline - now) : wallNow &- (now - p.deadline)))),
                    ("trigger", .string(p.trigger.rawValue)),
                    ("why", .string(deadlineReason(p))),
                ])),
            ]
            let set = context.policySet
            let explanation = set.explain(summary)
            fields.append(("policies", verdicts(explanation)))
            var would: [(String, DebugJSON)] = [
                ("keep", .bool(explanation.keep)),
                ("policy", .optional(explanation.decidingName)),
                ("weight", explanation.keep ? weight(explanation.weight) : .null),
                ("text", .string(explanation.text)),
            ]
            if !explanation.undetermined.isEmpty {
                would.append(("undetermined", .array(explanation.undetermined.map { .string(explanation.policies[$0].name) })))
            }
            if p.reaggregated { would.append(("reaggregated", .bool(true))) }
            fields.append(("would", .object(would)))
            fields.append(("policies_hash", .string(String(set.sourceHash, radix: 16))))
            if context.dryRun { fields.append(("dry_run", .bool(true))) }
            let location = i.state == .buffered ? "buffered in memory" : "spilled to the store (summary in memory)"
            text = "\(location): \(summary.spanCount) span\(summary.spanCount == 1 ? "" : "s")"
                + genAIText(summary, pricing: set.pricing) + ", decided in "
                + "\(formatSeconds(p.deadline > now ? seconds(p.deadline - now) : 0)) by \(p.trigger.rawValue); \(explanation.text)"
                + (context.dryRun ? " (dry run: every trace is forwarded)" : "")
        case .retainedAfterDrop, .kept, .dropped:
            let d = i.decision!
            let name = context.policyName(d)
            var trigger = d.trigger?.rawValue
            var decidedAt = d.decidedAt
            if i.state == .retainedAfterDrop, let summary = i.summary, trigger == nil {
                trigger = summary.trigger.rawValue
                decidedAt = summary.decidedAt
            }
            let decidedAge = decidedAt != 0 ? age(decidedAt, now: now) : nil
            var decision: [(String, DebugJSON)] = [
                ("keep", .bool(d.keep)),
                ("policy", d.policy >= 0 ? .string(name) : .null),
                ("weight", d.keep ? weight(d.weight) : .null),
                ("trigger", .optional(trigger)),
                ("decided_at", .optional(decidedAt != 0 ? wallTime(decidedAt, now: now, wallNow: wallNow) : nil)),
                ("decided_age_seconds", .number(decidedAge)),
            ]
            if let dry = d.dryRunKeep { decision.append(("dry_run_decision", .string(dry ? "keep" : "drop"))) }
            fields.append(("decision", .object(decision)))
            let by = d.policy >= 0 ? "by policy '\(name)'" : "no policy matched"
            var when = trigger.map { "trigger: \($0)" } ?? "decided before a restart: trigger not remembered"
            if let decidedAge { when += ", \(formatSeconds(decidedAge)) ago" }
            switch i.state {
            case .kept:
                text = "kept \(by) (\(weightText(d.weight)); \(when))"
                if let dry = d.dryRunKeep { text += "; dry run: the policies said \(dry ? "keep" : "drop")" }
            case .dropped:
                text = "dropped: \(by) (\(when))"
            default:
                let closes = i.retainedUntil.map { $0 > now ? seconds($0 - now) : 0 } ?? 0
                fields.append(("revise_window_closes_in_seconds", .number(closes)))
                fields.append(("late_spans", .int(i.lateSpans)))
                text = "dropped: \(by) (\(when)); spans kept on disk \(formatSeconds(closes)) more in case a late span makes a deterministic policy keep it"
            }
        }
        fields.insert(("text", .string(text)), at: 2)
        return .object(fields)
    }

    static func formatSeconds(_ s: Double) -> String {
        s < 10 ? "\((s * 10).rounded() / 10) s" : "\(Int(s.rounded())) s"
    }

    /// Why the decision is due when it is (README, "How a trace's decision is timed").
    static func deadlineReason(_ p: TraceInspection.Pending) -> String {
        switch p.trigger {
        case .maxAge where p.missingLocal > 0:
            return "\(p.missingLocal) parent span(s) of the same process have not arrived (the run is still going): only max_trace_age applies"
        case .maxAge: return "max_trace_age after the first span comes first"
        case .root: return "wait_after_root after the root span arrived"
        case .idle where p.rootArrived != 0: return "idle_timeout after the last span comes before wait_after_root"
        case .idle where p.missingRemote + p.missingUnknown > 0:
            return "no root yet and only remote parents missing: remote_parent_timeout after the last span"
        case .idle: return "no root yet: idle_timeout after the last span"
        default: return p.trigger.rawValue
        }
    }
}

// MARK: - /debug/status

/// Samples of a Prometheus text exposition (the admin listener's own `/metrics`), summed as the page needs them.
struct ExpositionSamples {
    struct Sample { var name: String; var labels: [String: String]; var value: Double }
    var samples: [Sample] = []

    init(_ text: [UInt8]) {
        for line in text.split(separator: UInt8(ascii: "\n")) where !line.isEmpty && line.first != UInt8(ascii: "#") {
            if let s = Self.parse(Array(line)) { samples.append(s) }
        }
    }

    static func parse(_ line: [UInt8]) -> Sample? {
        var i = 0
        while i < line.count, line[i] != UInt8(ascii: "{"), line[i] != UInt8(ascii: " ") { i += 1 }
        let name = String(decoding: line[0..<i], as: UTF8.self)
        var labels: [String: String] = [:]
        if i < line.count, line[i] == UInt8(ascii: "{") {
            i += 1
            while i < line.count, line[i] != UInt8(ascii: "}") {
                var k = i
                while k < line.count, line[k] != UInt8(ascii: "=") { k += 1 }
                let key = String(decoding: line[i..<k], as: UTF8.self).trimmingCharacters(in: .whitespaces)
                guard k + 1 < line.count, line[k + 1] == UInt8(ascii: "\"") else { return nil }
                var j = k + 2
                var value: [UInt8] = []
                while j < line.count, line[j] != UInt8(ascii: "\"") {
                    if line[j] == UInt8(ascii: "\\"), j + 1 < line.count {
                        j += 1
                        value.append(line[j] == UInt8(ascii: "n") ? UInt8(ascii: "\n") : line[j])
                    } else {
                        value.append(line[j])
                    }
                    j += 1
                }
                labels[key] = String(decoding: value, as: UTF8.self)
                i = j + 1
                if i < line.count, line[i] == UInt8(ascii: ",") { i += 1 }
            }
            i += 1
        }
        let rest = String(decoding: line[min(i, line.count)...], as: UTF8.self).trimmingCharacters(in: .whitespaces)
        guard let valueText = rest.split(separator: " ").first, let value = Double(valueText) else { return nil }
        return Sample(name: name, labels: labels, value: value)
    }

    func sum(_ name: String, where match: (([String: String]) -> Bool)? = nil) -> Double {
        samples.reduce(0) { $1.name == name && (match?($1.labels) ?? true) ? $0 + $1.value : $0 }
    }

    /// Sums of `name` by the value of `label`.
    func by(_ name: String, _ label: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for s in samples where s.name == name { out[s.labels[label] ?? "", default: 0] += s.value }
        return out
    }
}

extension DebugRoutes {
    static func status(context: AdminContext, readiness: Readiness) -> HTTPResponse {
        let pipeline = context.pipeline
        // The downstream's health is read before the counters: the forwarder counts a delivery before it records
        // the success, so a status that says "ok" always includes that delivery in `forwarded`.
        let h = context.health.current
        let metrics = ExpositionSamples(context.metrics.exposition())
        let received = metrics.sum("tailgate_spans_received_total")
        let kept = metrics.sum("tailgate_spans_kept_total")
        let forwarded = metrics.sum("tailgate_spans_forwarded_total")
        let rates = context.rates(received: received, kept: kept, forwarded: forwarded)
        let now = context.health.now()
        let buffer = pipeline.buffer
        let set = pipeline.policySet

        let droppedByReason = metrics.by("tailgate_spans_dropped_total", "reason").sorted { $0.key < $1.key }
        let spans: DebugJSON = .object([
            ("received", .number(received)),
            ("kept", .number(kept)),
            ("forwarded", .number(forwarded)),
            ("dropped", .object(droppedByReason.map { ($0.key, .number($0.value)) })),
            ("rates_per_second", .object([
                ("received", .number(rates?.received, places: 2)),
                ("kept", .number(rates?.kept, places: 2)),
                ("forwarded", .number(rates?.forwarded, places: 2)),
            ])),
            ("rate_window_seconds", .number(rates?.window, places: 1)),
        ])

        let bufferJSON: DebugJSON = .object([
            ("traces", .int(buffer.bufferedTraces)),
            ("bytes", .int(buffer.bufferedBytes)),
            ("max_bytes", .int(buffer.configuration.maxBufferedBytes)),
        ])

        var storeJSON: DebugJSON = .null
        if let store = pipeline.store {
            storeJSON = .object([
                ("directory", .string(store.configuration.directory)),
                ("disk_bytes", .int(store.diskBytes)),
                ("max_disk_bytes", .int(store.configuration.maxDiskBytes)),
                ("traces", .int(buffer.storedTraces)),
                ("cold_traces", .int(buffer.coldTraces)),
                ("trace_bytes", .int(buffer.storedBytes)),
            ])
        }

        let forwarder = pipeline.forwarder
        let queue: DebugJSON = .object([
            ("bytes", .int(forwarder.queuedBytes)),
            ("max_bytes", .int(forwarder.configuration.queueBytes)),
            ("saturated", .bool(forwarder.isSaturated)),
        ])

        let downstreamState: String
        if h.lastFailure == 0 && h.lastSuccess == 0 {
            downstreamState = "idle"
        } else if h.lastFailure > h.lastSuccess {
            downstreamState = "failing"
        } else {
            downstreamState = "ok"
        }
        let downstream: DebugJSON = .object([
            ("target", .string(forwarder.downstream.target)),
            ("state", .string(downstreamState)),
            ("last_success_age_seconds", .number(DebugRoutes.age(h.lastSuccess, now: now), places: 1)),
            ("last_failure_age_seconds", .number(DebugRoutes.age(h.lastFailure, now: now), places: 1)),
            ("last_failure_reason", .optional(h.lastFailureReason)),
            ("failures", .int(h.failures)),
        ])

        let decided = metrics.samples.filter { $0.name == "tailgate_traces_decided_total" }
        func count(_ policy: String, _ decision: String) -> Double {
            decided.filter { $0.labels["policy"] == policy && $0.labels["decision"] == decision }.reduce(0) { $0 + $1.value }
        }
        let policyList: [DebugJSON] = set.policies.map { p in
            .object([("name", .string(p.name)), ("type", .string(p.type)),
                     ("kept", .number(count(p.name, "keep"))), ("dropped", .number(count(p.name, "drop")))])
        }
        let policies: DebugJSON = .object([
            ("file", .string(context.policiesPath ?? "built-in default")),
            ("hash", .string(String(set.sourceHash, radix: 16))),
            ("dry_run", .bool(pipeline.dryRun)),
            ("list", .array(policyList)),
            ("no_policy_matched", .number(count("none", "drop"))),
            ("kept_traces", .number(decided.filter { $0.labels["decision"] == "keep" }.reduce(0) { $0 + $1.value })),
            ("dropped_traces", .number(decided.filter { $0.labels["decision"] == "drop" }.reduce(0) { $0 + $1.value })),
        ])

        let recent = pipeline.recentDecisions
        let wallNow = wallClockNanos()
        let lastDecisions: [DebugJSON] = recent.newestFirst.map { e in
            var fields: [(String, DebugJSON)] = [
                ("trace_id", .string(e.traceID.description)),
                ("decision", .string(e.keep ? "keep" : "drop")),
                ("policy", .string(e.policy)),
                ("trigger", .string(e.trigger.rawValue)),
                ("spans", .int(e.spans)),
                ("at", .string(DebugRoutes.rfc3339(e.at))),
                ("age_seconds", .number(Double(wallNow &- min(e.at, wallNow)) / 1e9, places: 1)),
            ]
            if let dry = e.dryRunKeep { fields.append(("dry_run_decision", .string(dry ? "keep" : "drop"))) }
            return .object(fields)
        }

        var triggers: [String: Double] = [:]
        for s in metrics.samples where s.name == "tailgate_traces_decided_by_trigger_total" {
            triggers[s.labels["trigger"] ?? "", default: 0] += s.value
        }
        let body: DebugJSON = .object([
            ("version", .string(TailgateVersion.current)),
            ("commit", .string(String(cString: tailgate_build_commit()))),
            ("allocator", .string(String(cString: tailgate_allocator()))),
            ("started_at", .string(DebugRoutes.rfc3339(context.startedWall))),
            ("uptime_seconds", .number(Double(now &- min(context.startedMono, now)) / 1e9, places: 1)),
            ("readiness", .string(readiness.current.rawValue)),
            ("spans", spans),
            ("buffer", bufferJSON),
            ("store", storeJSON),
            ("forward_queue", queue),
            ("downstream", downstream),
            ("policies", policies),
            ("decisions_by_trigger", .object(triggers.sorted { $0.key < $1.key }.map { ($0.key, .number($0.value)) })),
            ("last_decisions", .array(lastDecisions)),
            ("last_decisions_capacity", .int(recent.capacity)),
        ])
        return .json(.ok, body)
    }
}
