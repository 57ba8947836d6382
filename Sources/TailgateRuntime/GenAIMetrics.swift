import CoreMetrics
package import Prometheus
import Synchronization
package import TailgateBuffer
package import TailgatePolicies
package import TailgateWire

/// Exact GenAI metrics over all traffic, before sampling: every trace's GenAI spans are counted once, when the trace
/// is decided (kept or dropped), with the same token rule as the policies (`GenAILedger`). Spans arriving after their
/// trace's decision are counted as they arrive: their model calls' usage counts, an aggregate span's does not (its
/// calls were counted with the trace).
///
/// Label values are capped per label (`maxLabelValues`): values beyond the cap are folded into `other` and counted in
/// `tailgate_gen_ai_label_overflow_total{label}`. Spans without a provider or model count as `unknown`.
package final class GenAIMetrics: Sendable {
    /// The GenAI conventions' bucket boundaries for `gen_ai.client.operation.duration` (seconds).
    package static let durationBuckets: [Double] = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]

    let factory: PrometheusMetricsFactory
    let maxLabelValues: Int
    private let state = Mutex(State())

    struct State {
        /// Counters, floating-point counters and timers by name and labels.
        var metrics: [String: any AnyObject & Sendable] = [:]
        /// Distinct values admitted per label.
        var values: [String: Set<String>] = [:]
        /// Series by the names spans carry .
        var groups: [GroupKey: Group] = [:]
        /// The same by the identity of a span's interned names (the object is held, so its identity is not reused):
        /// one pointer hashed per span instead of three strings, and whether its operation is a model call's.
        /// Emptied when it reaches `namesCacheLimit` (names beyond the interner's table are made per request).
        var byNames: [NamesKey: (names: GenAINames, group: Group, inferenceOperation: Bool)] = [:]
        var named: [NamedKey: (Label, CoreMetrics.Counter)] = [:]
    }

    package init(registry: PrometheusCollectorRegistry, maxLabelValues: Int = 200) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["tailgate_gen_ai_operation_duration_seconds"] =
            Self.durationBuckets.map { .nanoseconds(Int64(($0 * 1e9).rounded())) }
        self.factory = factory
        self.maxLabelValues = max(1, maxLabelValues)
    }

    /// Counts a decided trace's GenAI spans.
    package func record(_ ledger: GenAILedger, pricing: PriceTable) {
        var ledger = ledger
        if !ledger.resolved { ledger.resolve() }
        let counted = ledger.counted
        state.withLock { s in
            ledger.spans.withUnsafeBufferPointer { spans in
                for i in spans.indices {
                    count(spans[i], tokens: i < counted.count ? counted[i] : SIMD8(), pricing: pricing, &s)
                }
            }
        }
    }

    /// Counts GenAI spans that arrived after their trace was decided.
    package func recordLate(_ spans: [GenAISpan], pricing: PriceTable) {
        guard !spans.isEmpty else { return }
        state.withLock { s in
            spans.withUnsafeBufferPointer { spans in
                for i in spans.indices {
                    count(spans[i], tokens: spans[i].role == .inference ? spans[i].tokens : SIMD8(), pricing: pricing, &s)
                }
            }
        }
    }

    /// The series of one (provider, model, operation) as spans name them, resolved to labels (capped) once; counters
    /// are created on first use, so a series appears only once it has counted something.
    final class Group {
        let provider: Label, model: Label
        /// `nil`: the span had no operation and no usage (no duration, no operation label).
        let operation: Label?
        var tokens: [CoreMetrics.Counter?] = [nil, nil, nil]
        var details: [CoreMetrics.Counter?] = [nil, nil, nil]
        var cost: CoreMetrics.FloatingPointCounter?
        var duration: CoreMetrics.Timer?
        var calls: CoreMetrics.Counter?
        var failures: [String: (label: Label, counter: CoreMetrics.Counter)] = [:]

        init(provider: Label, model: Label, operation: Label?) {
            self.provider = provider
            self.model = model
            self.operation = operation
        }
    }

    /// A label value after the cap, and whether it overflowed (each use of an overflowed value is counted).
    struct Label {
        var value: String
        var overflowed: Bool
    }

    struct NamesKey: Hashable {
        var names: ObjectIdentifier
        var unknownOperation: Bool
    }

    static let namesCacheLimit = 4096

    /// Token lanes counted as `tailgate_gen_ai_tokens_total{type}` and `tailgate_gen_ai_token_details_total{type}`,
    /// with the slot of their counter in `Group`.
    static let tokenTypes: [(slot: Int, lane: Int, type: String)] =
        [(0, GenAISpan.Lane.input, "input"), (1, GenAISpan.Lane.output, "output"), (2, GenAISpan.Lane.totalOnly, "unspecified")]
    static let detailTypes: [(slot: Int, lane: Int, type: String)] =
        [(0, GenAISpan.Lane.cacheRead, "cache_read"), (1, GenAISpan.Lane.cacheCreation, "cache_creation"), (2, GenAISpan.Lane.reasoning, "reasoning")]

    struct GroupKey: Hashable {
        var provider: String, model: String, operation: String
        /// No operation but usage: operation label `unknown` (not admitted as a value).
        var unknownOperation: Bool
    }

    private func count(_ span: GenAISpan, tokens t: SIMD8<Int64>, pricing: PriceTable, _ s: inout State) {
        let unknownOperation = span.operation.isEmpty && span.hasUsage
        let namesKey = NamesKey(names: ObjectIdentifier(span.names), unknownOperation: unknownOperation)
        let g: Group
        let inferenceOperation: Bool
        if let cached = s.byNames[namesKey] {
            g = cached.group
            inferenceOperation = cached.inferenceOperation
        } else {
            g = group(span, unknownOperation: unknownOperation, &s)
            inferenceOperation = GenAIKeys.inferenceOperations.contains(span.operation)
            if s.byNames.count >= Self.namesCacheLimit { s.byNames.removeAll(keepingCapacity: true) }
            s.byNames[namesKey] = (span.names, g, inferenceOperation)
        }
        count(span, group: g, isModelCall: inferenceOperation || unknownOperation, tokens: t, pricing: pricing, &s)
    }

    /// The series of the span's provider, model and operation.
    private func group(_ span: GenAISpan, unknownOperation: Bool, _ s: inout State) -> Group {
        let key = GroupKey(provider: span.provider, model: span.model, operation: span.operation, unknownOperation: unknownOperation)
        let g: Group
        if let found = s.groups[key] {
            g = found
        } else {
            let provider = label("provider", span.provider.isEmpty ? "unknown" : span.provider, &s)
            let model = label("model", span.model.isEmpty ? "unknown" : span.model, &s)
            let operation: Label? = key.unknownOperation ? Label(value: "unknown", overflowed: false)
                : span.operation.isEmpty ? nil : label("operation", span.operation, &s)
            g = Group(provider: provider, model: model, operation: operation)
            s.groups[key] = g
        }
        return g
    }

    private func count(_ span: GenAISpan, group g: Group, isModelCall: Bool, tokens t: SIMD8<Int64>, pricing: PriceTable, _ s: inout State) {
        if g.provider.overflowed { overflow("provider", &s) }
        if g.model.overflowed { overflow("model", &s) }
        let provider = g.provider.value, model = g.model.value
        if t != SIMD8() {
            for (slot, lane, type) in Self.tokenTypes where t[lane] > 0 {
                // A span that reported only a total cannot be split into input and output.
                if g.tokens[slot] == nil {
                    g.tokens[slot] = counter("tailgate_gen_ai_tokens_total", [("type", type), ("provider", provider), ("model", model)], &s)
                }
                g.tokens[slot]!.increment(by: Int(t[lane]))
            }
            for (slot, lane, type) in Self.detailTypes where t[lane] > 0 {
                if g.details[slot] == nil {
                    g.details[slot] = counter("tailgate_gen_ai_token_details_total", [("type", type), ("provider", provider), ("model", model)], &s)
                }
                g.details[slot]!.increment(by: Int(t[lane]))
            }
            if let price = pricing.price(span) {
                let usd = price.cost(t)
                if usd > 0 {
                    if g.cost == nil { g.cost = floatCounter("tailgate_gen_ai_cost_usd_total", [("provider", provider), ("model", model)], &s) }
                    g.cost!.increment(by: usd)
                }
            }
        }
        if let operation = g.operation {
            if operation.overflowed { overflow("operation", &s) }
            if g.duration == nil {
                g.duration = timer("tailgate_gen_ai_operation_duration_seconds", [("operation", operation.value), ("provider", provider), ("model", model)], &s)
            }
            g.duration!.recordNanoseconds(Int64(clamping: span.durationNanos))
        }
        if isModelCall {
            if g.calls == nil {
                g.calls = counter("tailgate_gen_ai_calls_total", [("operation", g.operation?.value ?? ""), ("provider", provider), ("model", model)], &s)
            }
            g.calls!.increment()
            if span.failed {
                let raw = span.errorType.isEmpty ? "_OTHER" : span.errorType
                let failure: (label: Label, counter: CoreMetrics.Counter)
                if let found = g.failures[raw] {
                    failure = found
                } else {
                    let errorType = label("error_type", raw, &s)
                    failure = (errorType, counter("tailgate_gen_ai_call_failures_total", [("provider", provider), ("model", model), ("error_type", errorType.value)], &s))
                    g.failures[raw] = failure
                }
                if failure.label.overflowed { overflow("error_type", &s) }
                failure.counter.increment()
            }
        }
        switch span.operation {
        case "invoke_agent":
            named(.agentRun(failed: span.failed), span.agentName, &s).increment()
        case "execute_tool":
            named(.toolCall, span.toolName, &s).increment()
            if span.failed { named(.toolFailure, span.toolName, &s).increment() }
        default:
            break
        }
    }

    enum NamedSeries: Hashable {
        case agentRun(failed: Bool)
        case toolCall
        case toolFailure
    }

    struct NamedKey: Hashable {
        var series: NamedSeries
        var name: String
    }

    /// The agent-run or tool counter for a name as the span carries it (its label capped once; an overflowed
    /// value is counted at each use).
    private func named(_ series: NamedSeries, _ name: String, _ s: inout State) -> CoreMetrics.Counter {
        let key = NamedKey(series: series, name: name)
        let labelName = if case .agentRun = series { "agent" } else { "tool" }
        if let (label, counter) = s.named[key] {
            if label.overflowed { overflow(labelName, &s) }
            return counter
        }
        let label = label(labelName, name.isEmpty ? "unknown" : name, &s)
        if label.overflowed { overflow(labelName, &s) }
        let counter = switch series {
        case .agentRun(let failed):
            counter("tailgate_gen_ai_agent_runs_total", [("agent", label.value), ("outcome", failed ? "error" : "ok")], &s)
        case .toolCall: counter("tailgate_gen_ai_tool_calls_total", [("tool", label.value)], &s)
        case .toolFailure: counter("tailgate_gen_ai_tool_call_failures_total", [("tool", label.value)], &s)
        }
        s.named[key] = (label, counter)
        return counter
    }

    /// The value as a label, or `other` once the label has `maxLabelValues` distinct values.
    private func label(_ name: String, _ value: String, _ s: inout State) -> Label {
        if s.values[name]?.contains(value) == true { return Label(value: value, overflowed: false) }
        if (s.values[name]?.count ?? 0) < maxLabelValues {
            s.values[name, default: []].insert(value)
            return Label(value: value, overflowed: false)
        }
        return Label(value: "other", overflowed: true)
    }

    private func overflow(_ label: String, _ s: inout State) {
        counter("tailgate_gen_ai_label_overflow_total", [("label", label)], &s).increment()
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
