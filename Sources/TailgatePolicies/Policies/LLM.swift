package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `llm_cost`: keeps traces whose LLM cost reaches `min_cost_usd`. Each GenAI span's cost is the tokens it counts
/// for (the token rule of `GenAILedger`) times the price of its model (`gen_ai.response.model`, else
/// `gen_ai.request.model`): the built-in price table (`PriceTable.builtinPrices`) overridden by the policies file's
/// `prices:` (USD per million tokens; cache-read, cache-creation and reasoning rates where given; `default` for models
/// not listed — without it, unlisted models cost nothing).
package struct LLMCostPolicy: SamplingPolicy {
    package static let typeName = "llm_cost"
    package static let keys = ["min_cost_usd", "max_cost_usd"]

    package var minCost: Double
    package var maxCost: Double?
    package var pricing: PriceTable

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "min_cost_usd: 0.50") else { return nil }
        var lo: Double? = nil, hi: Double? = nil
        var hiNode: Node? = nil
        var ok = true
        for (k, _, value) in entries {
            let v = context.reader.number(value, what: k, range: 0...1e9)
            ok = ok && v != nil
            if k == "min_cost_usd" { lo = v } else { hi = v; hiNode = value }
        }
        guard ok else { return nil }
        guard let lo else { context.reader.error(at, "llm_cost policy needs 'min_cost_usd'"); return nil }
        if let hi, hi < lo {
            context.reader.error(hiNode, "max_cost_usd (\(formatNumber(hi))) is below min_cost_usd (\(formatNumber(lo))): no trace can match")
            return nil
        }
        // The table is complete once the whole file is read (prices come first in parsing order).
        return LLMCostPolicy(minCost: lo, maxCost: hi, pricing: context.pricing)
    }

    /// The trace's cost in USD.
    package func costUSD(_ trace: TraceSummary) -> Double {
        guard var ledger = trace.genAI else { return 0 }
        if !ledger.resolved { ledger.resolve() }
        return pricing.cost(ledger)
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        // Compared in micro-USD, rounded, so that a bound written in the file is met exactly.
        let cost = (costUSD(trace) * 1e6).rounded()
        guard cost >= (minCost * 1e6).rounded() else { return .notSampled }
        if let maxCost, cost > (maxCost * 1e6).rounded() { return .notSampled }
        return .sampled
    }
}

/// `finish_reason`: keeps traces with a generation that stopped for one of `reasons` (default: `length` and
/// `content_filter`: truncated or refused), read from `gen_ai.response.finish_reasons`.
package struct FinishReasonPolicy: SamplingPolicy {
    package static let typeName = "finish_reason"
    package static let keys = ["reasons"]
    package static let attribute = "gen_ai.response.finish_reasons"

    var bit: Int

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        var reasons = ["length", "content_filter"]
        if let block {
            for (_, keyNode, value) in context.reader.mapping(block, allowed: keys, what: typeName) {
                reasons = context.reader.sequence(value, what: "reasons").compactMap { context.reader.string($0, what: "a reason") }
                if reasons.isEmpty { context.reader.error(keyNode, "reasons must list at least one finish reason"); return nil }
            }
        }
        guard let bit = context.plan(at, { (p: inout AttributePlan) throws(AttributePlan.PlanError) in try p.bit(key: attribute, target: .span, .strings(reasons)) }) else { return nil }
        return FinishReasonPolicy(bit: bit)
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict { trace.bits & (1 << UInt64(bit)) != 0 ? .sampled : .notSampled }
}

/// `agent_loop`: keeps runaway agents: traces with more than `max_llm_calls` LLM calls (spans whose
/// `gen_ai.operation.name` is chat, text_completion or generate_content) or more than `max_tool_calls` tool calls
/// (`execute_tool`).
package struct AgentLoopPolicy: SamplingPolicy {
    package static let typeName = "agent_loop"
    package static let keys = ["max_llm_calls", "max_tool_calls"]
    package static let operation = "gen_ai.operation.name"
    package static let llmOperations = ["chat", "text_completion", "generate_content"]

    var llm: (slot: Int, max: Int64)?
    var tools: (slot: Int, max: Int64)?

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "max_llm_calls: 20") else { return nil }
        var policy = AgentLoopPolicy()
        for (k, _, value) in entries {
            guard let limit = context.reader.integer(value, what: k, range: 0...Int64(Int32.max)) else { return nil }
            let operations = k == "max_llm_calls" ? llmOperations : ["execute_tool"]
            guard let slot = context.plan(value, { (plan) throws(AttributePlan.PlanError) -> Int in
                let bit = try plan.bit(key: operation, target: .span, .strings(operations))
                return try plan.slot(.count(bit: bit))
            }) else { return nil }
            if k == "max_llm_calls" { policy.llm = (slot, limit) } else { policy.tools = (slot, limit) }
        }
        guard policy.llm != nil || policy.tools != nil else {
            context.reader.error(at, "agent_loop policy needs 'max_llm_calls' and/or 'max_tool_calls'")
            return nil
        }
        return policy
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        if let llm, trace.sums[llm.slot] > llm.max { return .sampled }
        if let tools, trace.sums[tools.slot] > tools.max { return .sampled }
        return .notSampled
    }
}

/// `tool_error`: keeps traces with a failed tool call: a span whose `gen_ai.operation.name` is `execute_tool` and
/// whose status is ERROR or which has `error.type` set.
package struct ToolErrorPolicy: SamplingPolicy {
    package static let typeName = "tool_error"
    package static let keys: [String] = []

    var bit: Int

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        if let block { _ = context.reader.mapping(block, allowed: keys, what: typeName) }
        guard let bit = context.plan(at, { (plan) throws(AttributePlan.PlanError) -> Int in
            let tool = try plan.bit(key: AgentLoopPolicy.operation, target: .span, .strings(["execute_tool"]))
            let errorType = try plan.bit(key: "error.type", target: .span, .exists)
            return try plan.bit(allOf: [tool], anyOf: [errorType], orStatusError: true)
        }) else { return nil }
        return ToolErrorPolicy(bit: bit)
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict { trace.bits & (1 << UInt64(bit)) != 0 ? .sampled : .notSampled }
}
