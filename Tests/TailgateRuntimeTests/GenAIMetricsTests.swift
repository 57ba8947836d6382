import Testing
import TailgateBuffer
import TailgatePolicies
@testable import TailgateRuntime
import TailgateWire

@Suite struct GenAIMetricsTests {
    func exposition(_ metrics: TailgateMetrics) -> String { String(decoding: metrics.exposition(), as: UTF8.self) }

    func sample(_ text: String, _ prefix: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(prefix + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    @Test func aTraceIsCountedByTheTokenRule() {
        let metrics = TailgateMetrics()
        let genAI = GenAIMetrics(registry: metrics.registry)
        var agent = GenAISpan(spanID: 1, parentSpanID: 0, role: .aggregate, operation: "invoke_agent", provider: "openai",
                              model: "gpt-4o", agentName: "planner", tokens: SIMD8(4000, 2000, 0, 0, 0, 0, 0, 0))
        agent.durationNanos = 3_000_000_000
        let call = GenAISpan(spanID: 2, parentSpanID: 1, role: .inference, operation: "chat", provider: "openai", model: "gpt-4o",
                             errorType: "timeout", durationNanos: 500_000_000, tokens: SIMD8(2000, 1000, 1500, 0, 0, 0, 0, 0))
        let tool = GenAISpan(spanID: 3, parentSpanID: 1, role: .aggregate, operation: "execute_tool", toolName: "search",
                             statusError: true)
        genAI.record(GenAILedger(spans: [agent, call, call.with(id: 4), tool]), pricing: PriceTable())
        let text = exposition(metrics)
        // 2 × 3,000 from the calls; the agent's 6,000 adds nothing.
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="input",provider="openai",model="gpt-4o"}"#) == 4000)
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="output",provider="openai",model="gpt-4o"}"#) == 2000)
        #expect(sample(text, #"tailgate_gen_ai_token_details_total{type="cache_read",provider="openai",model="gpt-4o"}"#) == 3000)
        #expect(sample(text, #"tailgate_gen_ai_calls_total{operation="chat",provider="openai",model="gpt-4o"}"#) == 2)
        #expect(sample(text, #"tailgate_gen_ai_call_failures_total{provider="openai",model="gpt-4o",error_type="timeout"}"#) == 2)
        #expect(sample(text, #"tailgate_gen_ai_agent_runs_total{agent="planner",outcome="ok"}"#) == 1)
        #expect(sample(text, #"tailgate_gen_ai_tool_calls_total{tool="search"}"#) == 1)
        #expect(sample(text, #"tailgate_gen_ai_tool_call_failures_total{tool="search"}"#) == 1)
        // gpt-4o built-in: (500 plain × 2.5 + 1,500 cached × 1.25 + 1,000 × 10) per call / 1M = 0.013125 USD; two calls.
        let cost = sample(text, #"tailgate_gen_ai_cost_usd_total{provider="openai",model="gpt-4o"}"#) ?? 0
        #expect(abs(cost - 0.02625) < 1e-9)
        #expect(sample(text, #"tailgate_gen_ai_operation_duration_seconds_bucket{operation="chat",provider="openai",model="gpt-4o",le="0.64"}"#) == 2)
        #expect(sample(text, #"tailgate_gen_ai_operation_duration_seconds_bucket{operation="chat",provider="openai",model="gpt-4o",le="0.32"}"#) == 0)
    }

    /// A trace's totals per series are those of its spans counted one by one: tokens by type, model calls, and the
    /// cost priced span by span (a span reporting more cached tokens than input clamps its own plain input at zero,
    /// which pricing a series' summed tokens would not; a batching of the counting was measured and caught by this),
    /// with spans of several series interleaved, two names objects in one series, and a span priced by its request
    /// model.
    @Test func sumsPerSeriesEqualCountingSpanBySpan() {
        let metrics = TailgateMetrics()
        let genAI = GenAIMetrics(registry: metrics.registry)
        let pricing = PriceTable()
        let kinds: [(provider: String, model: String, requestModel: String)] = [
            ("openai", "gpt-4o", ""), ("anthropic", "claude-sonnet-4-5", ""), ("openai", "", "gpt-4o-mini"), ("openai", "gpt-4o", "gpt-4o")]
        var spans: [GenAISpan] = []
        var expectedInput: [String: Int64] = [:], expectedCalls: [String: Int] = [:], expectedUSD: [String: Double] = [:]
        for i in 0..<40 {
            let kind = kinds[(i * 7) % kinds.count]
            // Every fifth span reports more cached tokens than input (seen from real instrumentations).
            let tokens = i % 5 == 0 ? SIMD8<Int64>(100, 50, 500, 0, 0, 0, 0, 0) : SIMD8<Int64>(Int64(1000 + i), Int64(200 + i), 0, 0, 0, 0, 0, 0)
            let span = GenAISpan(spanID: UInt64(i + 1), role: .inference, operation: "chat", provider: kind.provider,
                                 model: kind.model, requestModel: kind.requestModel, durationNanos: 1_000_000, tokens: tokens)
            spans.append(span)
            let key = "\(kind.provider)/\(kind.model.isEmpty ? "unknown" : kind.model)"
            expectedInput[key, default: 0] += tokens[GenAISpan.Lane.input]
            expectedCalls[key, default: 0] += 1
            expectedUSD[key, default: 0] += pricing.price(span)?.cost(tokens) ?? 0
        }
        genAI.record(GenAILedger(spans: spans), pricing: pricing)
        let text = exposition(metrics)
        #expect(expectedUSD.count == 3)
        for (key, input) in expectedInput {
            let parts = key.split(separator: "/").map(String.init)
            let labels = #"provider="\#(parts[0])",model="\#(parts[1])""#
            #expect(sample(text, "tailgate_gen_ai_tokens_total{type=\"input\",\(labels)}") == Double(input), "\(key)")
            #expect(sample(text, "tailgate_gen_ai_calls_total{operation=\"chat\",\(labels)}") == Double(expectedCalls[key]!), "\(key)")
            let usd = sample(text, "tailgate_gen_ai_cost_usd_total{\(labels)}") ?? 0
            #expect(usd > 0 && abs(usd - expectedUSD[key]!) < 1e-9, "\(key): \(usd) against \(expectedUSD[key]!)")
        }
    }

    @Test func labelValuesBeyondTheCapFoldIntoOther() {
        let metrics = TailgateMetrics()
        let genAI = GenAIMetrics(registry: metrics.registry, maxLabelValues: 2)
        let spans = (1...5).map { i in
            GenAISpan(spanID: UInt64(i), role: .inference, operation: "chat", provider: "p", model: "m\(i)",
                      tokens: SIMD8(10, 0, 0, 0, 0, 0, 0, 0))
        }
        genAI.record(GenAILedger(spans: spans), pricing: PriceTable())
        let text = exposition(metrics)
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="input",provider="p",model="m1"}"#) == 10)
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="input",provider="p",model="m2"}"#) == 10)
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="input",provider="p",model="other"}"#) == 30)
        #expect(sample(text, #"tailgate_gen_ai_label_overflow_total{label="model"}"#) == 3)
    }

    /// Series are resolved once per (provider, model, operation) and per agent or tool name; counting the same
    /// names again must add to the same series, and an overflowed value must be counted at every use.
    @Test func repeatedNamesAddToTheSameSeriesAndOverflowIsCountedPerUse() {
        let metrics = TailgateMetrics()
        let genAI = GenAIMetrics(registry: metrics.registry, maxLabelValues: 1)
        let spans = [
            GenAISpan(spanID: 1, role: .inference, operation: "chat", provider: "p", model: "a", tokens: SIMD8(10, 1, 0, 0, 0, 0, 0, 0)),
            GenAISpan(spanID: 2, role: .inference, operation: "chat", provider: "p", model: "b", tokens: SIMD8(20, 2, 0, 0, 0, 0, 0, 0)),
            GenAISpan(spanID: 3, role: .aggregate, operation: "execute_tool", toolName: "search", statusError: true),
            GenAISpan(spanID: 4, role: .aggregate, operation: "execute_tool", toolName: "fetch", statusError: true),
            GenAISpan(spanID: 5, role: .aggregate, operation: "invoke_agent", agentName: "x"),
            GenAISpan(spanID: 6, role: .aggregate, operation: "invoke_agent", agentName: "x", statusError: true),
        ]
        for _ in 0..<3 { genAI.record(GenAILedger(spans: spans), pricing: PriceTable()) }
        genAI.recordLate([spans[1]], pricing: PriceTable())
        let text = exposition(metrics)
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="input",provider="p",model="a"}"#) == 30)
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="input",provider="p",model="other"}"#) == 80)
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="output",provider="p",model="other"}"#) == 8)
        #expect(sample(text, #"tailgate_gen_ai_calls_total{operation="chat",provider="p",model="other"}"#) == 4)
        // Models: "b" on 3 + 1 spans; the tool and agent spans have no model ("unknown" is a second value).
        #expect(sample(text, #"tailgate_gen_ai_label_overflow_total{label="model"}"#) == 16)
        #expect(sample(text, #"tailgate_gen_ai_tool_calls_total{tool="search"}"#) == 3)
        #expect(sample(text, #"tailgate_gen_ai_tool_calls_total{tool="other"}"#) == 3)
        #expect(sample(text, #"tailgate_gen_ai_tool_call_failures_total{tool="other"}"#) == 3)
        // "fetch" overflows once for the call and once for the failure, on each of 3 traces.
        #expect(sample(text, #"tailgate_gen_ai_label_overflow_total{label="tool"}"#) == 6)
        #expect(sample(text, #"tailgate_gen_ai_agent_runs_total{agent="x",outcome="ok"}"#) == 3)
        #expect(sample(text, #"tailgate_gen_ai_agent_runs_total{agent="x",outcome="error"}"#) == 3)
    }

    /// Series are found by the identity of a span's interned names, through a cache emptied at its limit: counts stay
    /// exact past the limit, and the same names with no operation count as a call only when the span reports usage.
    @Test func seriesFoundByNamesStayExactPastTheCacheLimit() {
        let metrics = TailgateMetrics()
        let genAI = GenAIMetrics(registry: metrics.registry, maxLabelValues: 10_000)
        let n = GenAIMetrics.namesCacheLimit + 500
        var spans = (0..<n).map { i in
            GenAISpan(spanID: UInt64(i + 1), role: .aggregate, operation: "execute_tool", toolName: "t\(i)")
        }
        let withUsage = GenAISpan(spanID: 900_001, role: .inference, provider: "p", model: "m", tokens: SIMD8(5, 0, 0, 0, 0, 0, 0, 0))
        let without = GenAISpan(spanID: 900_002, role: .inference, provider: "p", model: "m")
        #expect(withUsage.names === without.names)
        spans += [withUsage, without]
        for _ in 0..<2 { genAI.record(GenAILedger(spans: spans), pricing: PriceTable()) }
        let text = exposition(metrics)
        #expect(sample(text, #"tailgate_gen_ai_tool_calls_total{tool="t0"}"#) == 2)
        #expect(sample(text, #"tailgate_gen_ai_tool_calls_total{tool="t\#(n - 1)"}"#) == 2)
        #expect(sample(text, #"tailgate_gen_ai_calls_total{operation="unknown",provider="p",model="m"}"#) == 2)
        #expect(sample(text, #"tailgate_gen_ai_tokens_total{type="input",provider="p",model="m"}"#) == 10)
        #expect(!text.contains(#"tailgate_gen_ai_calls_total{operation="",provider="p""#))
    }

    @Test func lateSpansCountTheirCallsButNotAnAggregate() {
        let metrics = TailgateMetrics()
        let genAI = GenAIMetrics(registry: metrics.registry)
        genAI.recordLate([
            GenAISpan(spanID: 1, role: .aggregate, operation: "invoke_agent", model: "x", tokens: SIMD8(900, 0, 0, 0, 0, 0, 0, 0)),
            GenAISpan(spanID: 2, role: .inference, operation: "chat", model: "x", tokens: SIMD8(100, 0, 0, 0, 0, 0, 0, 0)),
        ], pricing: PriceTable())
        #expect(sample(exposition(metrics), #"tailgate_gen_ai_tokens_total{type="input",provider="unknown",model="x"}"#) == 100)
    }
}

extension GenAISpan {
    func with(id: UInt64) -> GenAISpan {
        var s = self
        s.spanID = id
        return s
    }
}
