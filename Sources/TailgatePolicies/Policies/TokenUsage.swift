package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `token_usage`: keeps traces whose LLM token usage is at least `min_total_tokens` (and, when set, at most
/// `max_total_tokens`). Tokens are counted by the GenAI rule (`GenAILedger`: model calls count, an agent's or
/// workflow's aggregated usage only for what its traced calls do not already report), from the GenAI conventions'
/// `gen_ai.usage.input_tokens` / `output_tokens` (or the deprecated `prompt_tokens` / `completion_tokens`),
/// OpenInference's `llm.token_count.*` and OpenLLMetry's totals; input + output (cache and reasoning tokens are part
/// of them). With `models` and/or `providers`, only spans of those models (response or request model) and providers
/// (`gen_ai.provider.name`, `gen_ai.system`, OpenInference `llm.provider`/`llm.system`) count.
package struct TokenUsagePolicy: SamplingPolicy {
    package static let typeName = "token_usage"
    package static let keys = ["min_total_tokens", "max_total_tokens", "models", "providers"]

    package var minTotal: Int64
    package var maxTotal: Int64?
    package var models: Set<String>
    package var providers: Set<String>

    package init(minTotal: Int64, maxTotal: Int64? = nil, models: [String] = [], providers: [String] = []) {
        self.minTotal = minTotal
        self.maxTotal = maxTotal
        self.models = Set(models)
        self.providers = Set(providers)
    }

    /// Whether a span's tokens count under `models` and `providers` (empty: any).
    static func filter(models: Set<String>, providers: Set<String>) -> (GenAISpan) -> Bool {
        { span in
            (models.isEmpty || models.contains(span.model) || models.contains(span.requestModel))
                && (providers.isEmpty || providers.contains(span.provider))
        }
    }

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "min_total_tokens: 10000") else { return nil }
        var minTotal: Int64? = nil
        var maxTotal: Int64? = nil
        var maxNode: Node? = nil
        var models: [String] = [], providers: [String] = []
        var ok = true
        for (key, _, value) in entries {
            switch key {
            case "models": models = context.reader.sequence(value, what: key).compactMap { context.reader.string($0, what: "a model") }
            case "providers": providers = context.reader.sequence(value, what: key).compactMap { context.reader.string($0, what: "a provider") }
            default:
                let v = context.reader.integer(value, what: key, range: 0...Int64.max)
                if v == nil { ok = false }
                if key == "min_total_tokens" { minTotal = v } else { maxTotal = v; maxNode = value }
            }
        }
        guard ok else { return nil }
        guard let minTotal else {
            context.reader.error(at, "token_usage policy needs 'min_total_tokens'")
            return nil
        }
        if let maxTotal, maxTotal < minTotal {
            context.reader.error(maxNode, "max_total_tokens (\(maxTotal)) is below min_total_tokens (\(minTotal)): no trace can match")
            return nil
        }
        return TokenUsagePolicy(minTotal: minTotal, maxTotal: maxTotal, models: models, providers: providers)
    }

    package func total(_ trace: TraceSummary) -> Int64 {
        trace.totalTokens(matching: Self.filter(models: models, providers: providers))
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        let t = total(trace)
        guard t >= minTotal else { return .notSampled }
        if let maxTotal, t > maxTotal { return .notSampled }
        return .sampled
    }
}
