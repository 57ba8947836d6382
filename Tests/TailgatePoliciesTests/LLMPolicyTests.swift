import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire

func llm(_ id: UInt64, model: String = "gpt-4o", provider: String = "openai", input: Int64, output: Int64,
         deprecated: Bool = false, extra: [(String, TestValue)] = []) -> TestSpan {
    let tokens: [(String, TestValue)] = deprecated
        ? [("gen_ai.usage.prompt_tokens", .int(input)), ("gen_ai.usage.completion_tokens", .int(output))]
        : [("gen_ai.usage.input_tokens", .int(input)), ("gen_ai.usage.output_tokens", .int(output))]
    return span(id, [("gen_ai.operation.name", .string("chat")), ("gen_ai.request.model", .string(model)),
                     ("gen_ai.provider.name", .string(provider))] + tokens + extra)
}

@Suite struct TokenUsagePolicyTests {
    static let cases: [(String, [TestSpan], Bool)] = [
        ("min_total_tokens: 10000", [span(1), llm(2, input: 6000, output: 3999)], false),
        ("min_total_tokens: 10000", [span(1), llm(2, input: 6000, output: 3000), llm(3, input: 500, output: 500, deprecated: true)], true),
        ("min_total_tokens: 100, max_total_tokens: 500", [span(1), llm(2, input: 400, output: 101)], false),
        ("min_total_tokens: 100, max_total_tokens: 500", [span(1), llm(2, input: 400, output: 100)], true),
        // Filters: only spans of the listed models / providers count.
        ("min_total_tokens: 1000, models: [o3]", [span(1), llm(2, model: "gpt-4o", input: 5000, output: 0)], false),
        ("min_total_tokens: 1000, models: [o3]", [span(1), llm(2, model: "o3", input: 900, output: 100), llm(3, input: 5000, output: 0)], true),
        ("min_total_tokens: 1000, providers: [anthropic]", [span(1), llm(2, provider: "openai", input: 5000, output: 0)], false),
        ("min_total_tokens: 1000, providers: [anthropic], models: [claude-sonnet-4]",
         [span(1), llm(2, model: "claude-sonnet-4", provider: "anthropic", input: 1000, output: 0)], true),
        ("min_total_tokens: 1000, providers: [anthropic], models: [claude-sonnet-4]",
         [span(1), llm(2, model: "claude-opus-4", provider: "anthropic", input: 1000, output: 0)], false),
        // An agent run whose agent span aggregates its two calls' usage (6,000) is not 12,000 tokens.
        ("min_total_tokens: 10000", [span(1, [("gen_ai.operation.name", .string("invoke_agent")),
                                              ("gen_ai.usage.input_tokens", .int(4000)), ("gen_ai.usage.output_tokens", .int(2000))]),
                                     llm(2, input: 2000, output: 1000), llm(3, input: 2000, output: 1000)], false),
        ("min_total_tokens: 6000", [span(1, [("gen_ai.operation.name", .string("invoke_agent")),
                                             ("gen_ai.usage.input_tokens", .int(4000)), ("gen_ai.usage.output_tokens", .int(2000))]),
                                    llm(2, input: 2000, output: 1000), llm(3, input: 2000, output: 1000)], true),
        // … also when the calls hang under a step span that is not a GenAI span.
        ("min_total_tokens: 10000", [span(1, [("gen_ai.operation.name", .string("invoke_agent")),
                                              ("gen_ai.usage.input_tokens", .int(4000)), ("gen_ai.usage.output_tokens", .int(2000))]),
                                     span(5, parent: 1), llm(2, input: 2000, output: 1000).child(of: 5),
                                     llm(3, input: 2000, output: 1000).child(of: 5)], false),
        // OpenInference names (Phoenix): prompt + completion; the total is not added on top.
        ("min_total_tokens: 12000", [span(1), span(2, [("openinference.span.kind", .string("LLM")), ("llm.model_name", .string("gpt-4o")),
                                                      ("llm.token_count.prompt", .int(9000)), ("llm.token_count.completion", .int(3000)),
                                                      ("llm.token_count.total", .int(12000))])], true),
        ("min_total_tokens: 12001", [span(1), span(2, [("openinference.span.kind", .string("LLM")),
                                                      ("llm.token_count.prompt", .int(9000)), ("llm.token_count.completion", .int(3000)),
                                                      ("llm.token_count.total", .int(12000))])], false),
        // OpenLLMetry: only a total.
        ("min_total_tokens: 5000", [span(1), span(2, [("llm.request.type", .string("chat")), ("llm.usage.total_tokens", .int(5000))])], true),
        // Decimal strings.
        ("min_total_tokens: 6000", [span(1), span(2, [("gen_ai.operation.name", .string("chat")),
                                                      ("gen_ai.usage.input_tokens", .string("6000.0"))])], true),
        // Cache-read tokens are part of input tokens: never added on top.
        ("min_total_tokens: 1001", [span(1), llm(2, input: 1000, output: 0, extra: [("gen_ai.usage.cache_read.input_tokens", .int(800))])], false),
    ]

    @Test(arguments: cases.indices) func table(index: Int) throws {
        let (block, spans, keep) = Self.cases[index]
        #expect(try decide("{name: t, type: token_usage, token_usage: {\(block)}}", trace(spans)).keep == keep, "\(block)")
    }
}

@Suite struct LLMCostPolicyTests {
    static let prices = """
        prices:
          default: {input: 1, output: 2}
          gpt-4o: {input: 2.5, output: 10}
          o3: {input: 10, output: 40}

        """

    /// USD: gpt-4o 100k in + 10k out = 0.25 + 0.10 = 0.35; o3 10k in + 5k out = 0.1 + 0.2 = 0.30;
    /// unknown model 100k in = 0.10 at the default price.
    static let cases: [(Double, [TestSpan], Bool)] = [
        (0.35, [span(1), llm(2, input: 100_000, output: 10_000)], true),
        (0.36, [span(1), llm(2, input: 100_000, output: 10_000)], false),
        (0.65, [span(1), llm(2, input: 100_000, output: 10_000), llm(3, model: "o3", input: 10_000, output: 5_000)], true),
        (0.10, [span(1), llm(2, model: "mystery", input: 100_000, output: 0)], true),
        (0.11, [span(1), llm(2, model: "mystery", input: 100_000, output: 0)], false),
    ]

    @Test(arguments: cases.indices) func table(index: Int) throws {
        let (min, spans, keep) = Self.cases[index]
        let decision = try decide("{name: c, type: llm_cost, llm_cost: {min_cost_usd: \(min)}}", trace(spans), preamble: Self.prices)
        #expect(decision.keep == keep, "min \(min)")
    }

    @Test func responseModelIsPreferredToRequestModel() throws {
        let s = llm(2, model: "gpt-4o", input: 100_000, output: 0, extra: [("gen_ai.response.model", .string("o3"))])
        // o3 price: 100k × 10 / 1M = 1.00 USD (gpt-4o would be 0.25).
        #expect(try decide("{name: c, type: llm_cost, llm_cost: {min_cost_usd: 1.0}}", trace([span(1), s]), preamble: Self.prices).keep)
    }

    @Test func withoutAPriceTableTheBuiltInPricesApply() throws {
        // gpt-4o at the built-in list price: 100k in × 2.5 + 10k out × 10 = 0.35 USD; a model it does not list costs 0.
        let policy = "{name: c, type: llm_cost, llm_cost: {min_cost_usd: 0.35}}"
        #expect(try decide(policy, trace([span(1), llm(2, input: 100_000, output: 10_000)])).keep)
        #expect(try !decide(policy, trace([span(1), llm(2, model: "mystery", input: 10_000_000, output: 0)])).keep)
        // The file overrides a built-in price.
        #expect(try !decide(policy, trace([span(1), llm(2, input: 100_000, output: 10_000)]),
                            preamble: "prices:\n  gpt-4o: {input: 1, output: 1}\n").keep)
    }

    /// policies/README.md, "How tokens are counted": 6,000 tokens (not 10,500) and 0.029 USD at the built-in prices.
    @Test func theReadmeWorkedExample() throws {
        let agent = span(1, [("gen_ai.operation.name", .string("invoke_agent")), ("gen_ai.agent.name", .string("planner")),
                             ("gen_ai.request.model", .string("gpt-4o")), ("gen_ai.usage.input_tokens", .int(4000)), ("gen_ai.usage.output_tokens", .int(2000))])
        let run = trace([agent, llm(2, input: 2000, output: 1000), span(3, parent: 1),
                         llm(4, input: 1000, output: 500, extra: [("gen_ai.usage.cache_read.input_tokens", .int(800))]).child(of: 3)])
        #expect(try decide("{name: t, type: token_usage, token_usage: {min_total_tokens: 6000, max_total_tokens: 6000}}", run).keep)
        #expect(try !decide("{name: t, type: token_usage, token_usage: {min_total_tokens: 10000}}", run).keep)
        #expect(try decide("{name: c, type: llm_cost, llm_cost: {min_cost_usd: 0.029, max_cost_usd: 0.029}}", run).keep)
    }

    @Test func cacheAndReasoningTokensArePricedAtTheirOwnRates() throws {
        let prices = "prices:\n  m: {input: 10, output: 100, cache_read: 1, cache_creation: 20, reasoning: 50}\n"
        // 1M input of which 600k cache reads and 100k cache writes, 100k output of which 40k reasoning:
        // 300k × 10 + 600k × 1 + 100k × 20 + 60k × 100 + 40k × 50 = 3 + 0.6 + 2 + 6 + 2 = 13.6 USD.
        let s = llm(2, model: "m", input: 1_000_000, output: 100_000, extra: [
            ("gen_ai.usage.cache_read.input_tokens", .int(600_000)), ("gen_ai.usage.cache_creation.input_tokens", .int(100_000)),
            ("gen_ai.usage.reasoning.output_tokens", .int(40_000))])
        #expect(try decide("{name: c, type: llm_cost, llm_cost: {min_cost_usd: 13.6}}", trace([span(1), s]), preamble: prices).keep)
        #expect(try !decide("{name: c, type: llm_cost, llm_cost: {min_cost_usd: 13.61}}", trace([span(1), s]), preamble: prices).keep)
    }
}

@Suite struct FinishReasonPolicyTests {
    @Test(arguments: [
        (["stop"], "", false),
        (["length"], "", true),
        (["stop", "content_filter"], "", true),
        (["stop"], "reasons: [stop]", true),
        (["length"], "reasons: [tool_calls]", false),
    ])
    func table(reasons: [String], block: String, keep: Bool) throws {
        let s = span(2, [("gen_ai.response.finish_reasons", .strings(reasons))])
        let policy = block.isEmpty ? "{name: f, type: finish_reason}" : "{name: f, type: finish_reason, finish_reason: {\(block)}}"
        #expect(try decide(policy, trace([span(1), s])).keep == keep)
    }
}

@Suite struct AgentLoopPolicyTests {
    static func agent(llmCalls: Int, toolCalls: Int) -> [TestSpan] {
        var spans = [span(1)]
        for i in 0..<llmCalls { spans.append(llm(UInt64(10 + i), input: 10, output: 10)) }
        for i in 0..<toolCalls { spans.append(span(UInt64(100 + i), [("gen_ai.operation.name", .string("execute_tool"))])) }
        return spans
    }

    @Test(arguments: [
        ("max_llm_calls: 5", 5, 0, false),
        ("max_llm_calls: 5", 6, 0, true),
        ("max_tool_calls: 3", 10, 3, false),
        ("max_tool_calls: 3", 0, 4, true),
        ("max_llm_calls: 5, max_tool_calls: 3", 2, 4, true),
    ])
    func table(block: String, llmCalls: Int, toolCalls: Int, keep: Bool) throws {
        let decision = try decide("{name: loop, type: agent_loop, agent_loop: {\(block)}}", trace(Self.agent(llmCalls: llmCalls, toolCalls: toolCalls)))
        #expect(decision.keep == keep)
    }
}

@Suite struct ToolErrorPolicyTests {
    static let tool: (String, TestValue) = ("gen_ai.operation.name", .string("execute_tool"))

    @Test(arguments: [
        ([tool], StatusCode?.none, false),
        ([tool], .error, true),
        ([tool, ("error.type", .string("timeout"))], nil, true),
        ([("error.type", .string("timeout"))], nil, false),  // not a tool span
        ([("gen_ai.operation.name", .string("chat"))], .error, false),
    ] as [([(String, TestValue)], StatusCode?, Bool)])
    func table(attributes: [(String, TestValue)], status: StatusCode?, keep: Bool) throws {
        #expect(try decide("{name: t, type: tool_error}", trace([span(1), span(2, status: status, attributes)])).keep == keep)
    }
}

extension TestSpan {
    /// The same span under another parent.
    func child(of parent: UInt64) -> TestSpan {
        var s = self
        s.parentSpanID = parent
        return s
    }
}

@Suite struct PriceTableTests {
    /// `policies/llm-agents.yaml` writes the built-in table out in full: the two must agree model by model.
    @Test func theShippedFileCarriesTheBuiltInTable() throws {
        let set = try PolicySet.load(path: URLBase.repoRoot + "/policies/llm-agents.yaml")
        for (model, price) in PriceTable.builtinPrices {
            #expect(set.pricing.prices[model] == price, "\(model): file \(String(describing: set.pricing.prices[model])), built in \(price)")
        }
        // A file without prices gets the built-in table, and no default price.
        let builtIn = PolicySet.builtIn().pricing
        #expect(builtIn.prices == PriceTable.builtinPrices && builtIn.defaultPrice == nil)
    }
}
