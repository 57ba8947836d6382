import TailgateBuffer
import TailgateWire
import Yams

/// `token_usage`: keeps traces whose LLM token usage, summed over every span, is at least `min_total_tokens`
/// (and, when set, at most `max_total_tokens`). A span's tokens are `gen_ai.usage.input_tokens` (or the deprecated
/// `gen_ai.usage.prompt_tokens`) plus `gen_ai.usage.output_tokens` (or the deprecated `gen_ai.usage.completion_tokens`).
/// With `models` and/or `providers`, only spans of those models (`gen_ai.request.model` or `gen_ai.response.model`)
/// and providers (`gen_ai.provider.name` or the deprecated `gen_ai.system`) count.
public struct TokenUsagePolicy: SamplingPolicy {
    public static let typeName = "token_usage"
    public static let keys = ["min_total_tokens", "max_total_tokens", "models", "providers"]

    public static let inputKeys = ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"]
    public static let outputKeys = ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"]
    public static let modelKeys = ["gen_ai.response.model", "gen_ai.request.model"]
    public static let providerKeys = ["gen_ai.provider.name", "gen_ai.system"]

    public var minTotal: Int64
    public var maxTotal: Int64?
    var inputSlot: Int
    var outputSlot: Int

    /// Registers the token attributes (and the filter conditions) in `plan`.
    public init(minTotal: Int64, maxTotal: Int64? = nil, models: [String] = [], providers: [String] = [],
                plan: inout AttributePlan) throws(AttributePlan.PlanError) {
        self.minTotal = minTotal
        self.maxTotal = maxTotal
        let condition = try Self.filter(models: models, providers: providers, plan: &plan)
        inputSlot = try plan.slot(.firstOf(keys: Self.inputKeys, condition: condition))
        outputSlot = try plan.slot(.firstOf(keys: Self.outputKeys, condition: condition))
    }

    /// The bit of "this span is of one of `models` and one of `providers`" (nil when neither is given).
    static func filter(models: [String], providers: [String], plan: inout AttributePlan) throws(AttributePlan.PlanError) -> Int? {
        var parts: [Int] = []
        if !models.isEmpty {
            var bits: [Int] = []
            for key in modelKeys { bits.append(try plan.bit(key: key, target: .span, .strings(models))) }
            parts.append(try plan.bit(anyOf: bits))
        }
        if !providers.isEmpty {
            var bits: [Int] = []
            for key in providerKeys { bits.append(try plan.bit(key: key, target: .any, .strings(providers))) }
            parts.append(try plan.bit(anyOf: bits))
        }
        if parts.isEmpty { return nil }
        return parts.count == 1 ? parts[0] : try plan.bit(allOf: parts)
    }

    public static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
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
        return context.plan(at) { (plan) throws(AttributePlan.PlanError) in
            try TokenUsagePolicy(minTotal: minTotal, maxTotal: maxTotal, models: models, providers: providers, plan: &plan)
        }
    }

    public func total(_ trace: TraceSummary) -> Int64 {
        trace.sums[inputSlot] &+ trace.sums[outputSlot]
    }

    public func evaluate(_ trace: TraceSummary) -> Verdict {
        let t = total(trace)
        guard t >= minTotal else { return .notSampled }
        if let maxTotal, t > maxTotal { return .notSampled }
        return .sampled
    }
}
