public import CoreMetrics
public import Prometheus
public import Synchronization
public import TailgateBuffer
public import TailgatePolicies
public import TailgateWire

/// Exact GenAI metrics over all traffic, before sampling: every trace's GenAI spans are counted once, when the trace
/// is decided (kept or dropped), with the same token rule as the policies (`GenAILedger`). Spans arriving after their
/// trace's decision are counted as they arrive: their model calls' usage counts, an aggregate span's does not (its
/// calls were counted with the trace).
///
/// Label values are capped per label (`maxLabelValues`): values beyond the cap are folded into `other` and counted in
/// `tailgate_gen_ai_label_overflow_total{label}`. Spans without a provider or model count as `unknown`.
public final class GenAIMetrics: Sendable {
    /// The GenAI conventions' bucket boundaries for `gen_ai.client.operation.duration` (seconds).
    public static let durationBuckets: [Double] = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]

    let factory: PrometheusMetricsFactory
    let maxLabelValues: Int
    private let state = Mutex(State())

    struct State {
        /// Counters, floating-point counters and timers by name and labels.
        var metrics: [String: any AnyObject & Sendable] = [:]
        /// Distinct values admitted per label.
        var values: [String: Set<String>] = [:]
    }

    public init(registry: PrometheusCollectorRegistry, maxLabelValues: Int = 200) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["tailgate_gen_ai_operation_duration_seconds"] =
            Self.durationBuckets.map { .nanoseconds(Int64(($0 * 1e9).rounded())) }
        self.factory = factory
        self.maxLabelValues = max(1, maxLabelValues)
    }

    /// Counts a decided trace's GenAI spans.
    public func record(_ ledger: GenAILedger, pricing: PriceTable) {
        var ledger = ledger
        if !ledger.resolved { ledger.resolve() }
        state.withLock { s in
            for (i, span) in ledger.spans.enumerated() {
                count(span, tokens: i < ledger.counted.count ? ledger.counted[i] : SIMD8(), pricing: pricing, &s)
            }
        }
    }

    /// Counts GenAI spans that arrived after their trace was decided.
    public func recordLate(_ spans: [GenAISpan], pricing: PriceTable) {
        guard !spans.isEmpty else { return }
        state.withLock { s in
            for span in spans { count(span, tokens: span.role == .inference ? span.tokens : SIMD8(), pricing: pricing, &s) }
        }
    }

    private func count(_ span: GenAISpan, tokens t: SIMD8<Int64>, pricing: PriceTable, _ s: inout State) {
        typealias L = GenAISpan.Lane
        let provider = label("provider", span.provider.isEmpty ? "unknown" : span.provider, &s)
        let model = label("model", span.model.isEmpty ? "unknown" : span.model, &s)
        if t != SIMD8() {
            let input = t[L.input], output = t[L.output], total = t[L.totalOnly]
            if input > 0 { counter("tailgate_gen_ai_tokens_total", [("type", "input"), ("provider", provider), ("model", model)], &s).increment(by: Int(input)) }
            if output > 0 { counter("tailgate_gen_ai_tokens_total", [("type", "output"), ("provider", provider), ("model", model)], &s).increment(by: Int(output)) }
            // A span that reported only a total cannot be split into input and output.
            if total > 0 { counter("tailgate_gen_ai_tokens_total", [("type", "unspecified"), ("provider", provider), ("model", model)], &s).increment(by: Int(total)) }
            for (lane, type) in [(L.cacheRead, "cache_read"), (L.cacheCreation, "cache_creation"), (L.reasoning, "reasoning")] where t[lane] > 0 {
                counter("tailgate_gen_ai_token_details_total", [("type", type), ("provider", provider), ("model", model)], &s).increment(by: Int(t[lane]))
            }
            if let price = pricing.price(span) {
                let usd = price.cost(t)
                if usd > 0 { floatCounter("tailgate_gen_ai_cost_usd_total", [("provider", provider), ("model", model)], &s).increment(by: usd) }
            }
        }
        let operation = span.operation.isEmpty ? (span.hasUsage ? "unknown" : "") : label("operation", span.operation, &s)
        if !operation.isEmpty {
            timer("tailgate_gen_ai_operation_duration_seconds", [("operation", operation), ("provider", provider), ("model", model)], &s)
                .recordNanoseconds(Int64(clamping: span.durationNanos))
        }
        if span.isModelCall {
            counter("tailgate_gen_ai_calls_total", [("operation", operation), ("provider", provider), ("model", model)], &s).increment()
            if span.failed {
                let errorType = label("error_type", span.errorType.isEmpty ? "_OTHER" : span.errorType, &s)
                counter("tailgate_gen_ai_call_failures_total", [("provider", provider), ("model", model), ("error_type", errorType)], &s).increment()
            }
        }
        switch span.operation {
        case "invoke_agent":
            let agent = label("agent", span.agentName.isEmpty ? "unknown" : span.agentName, &s)
            counter("tailgate_gen_ai_agent_runs_total", [("agent", agent), ("outcome", span.failed ? "error" : "ok")], &s).increment()
        case "execute_tool":
            let tool = label("tool", span.toolName.isEmpty ? "unknown" : span.toolName, &s)
            counter("tailgate_gen_ai_tool_calls_total", [("tool", tool)], &s).increment()
            if span.failed { counter("tailgate_gen_ai_tool_call_failures_total", [("tool", tool)], &s).increment() }
        default:
            break
        }
    }

    /// The value as a label, or `other` once the label has `maxLabelValues` distinct values (counted).
    private func label(_ name: String, _ value: String, _ s: inout State) -> String {
        if s.values[name]?.contains(value) == true { return value }
        if (s.values[name]?.count ?? 0) < maxLabelValues {
            s.values[name, default: []].insert(value)
            return value
        }
        counter("tailgate_gen_ai_label_overflow_total", [("label", name)], &s).increment()
        return "other"
    }

    private func key(_ name: String, _ dims: [(String, String)]) -> String {
        dims.reduce(into: name) { $0 += "\u{1}\($1.0)=\($1.1)" }
    }

    private func counter(_ name: String, _ dims: [(String, String)], _ s: inout State) -> CoreMetrics.Counter {
        metric(name, dims, &s) { CoreMetrics.Counter(label: name, dimensions: dims, factory: factory) }
    }

    private func floatCounter(_ name: String, _ dims: [(String, String)], _ s: inout State) -> CoreMetrics.FloatingPointCounter {
        metric(name, dims, &s) { CoreMetrics.FloatingPointCounter(label: name, dimensions: dims, factory: factory) }
    }

    private func timer(_ name: String, _ dims: [(String, String)], _ s: inout State) -> CoreMetrics.Timer {
        metric(name, dims, &s) { CoreMetrics.Timer(label: name, dimensions: dims, factory: factory) }
    }

    /// The metric of this name and labels, created once (metric names differ by kind, so one map holds them all).
    private func metric<M: AnyObject & Sendable>(_ name: String, _ dims: [(String, String)], _ s: inout State, _ make: () -> M) -> M {
        let k = key(name, dims)
        if let m = s.metrics[k] as? M { return m }
        let m = make()
        s.metrics[k] = m
        return m
    }
}
