import TailgateBuffer
import TailgateWire
import Yams

/// `token_usage`: keeps traces whose total LLM token usage, summed over every span, is at least `min_total_tokens`
/// (and, when set, at most `max_total_tokens`). A span's tokens are `gen_ai.usage.input_tokens` (or the deprecated
/// `gen_ai.usage.prompt_tokens`) plus `gen_ai.usage.output_tokens` (or the deprecated `gen_ai.usage.completion_tokens`).
public struct TokenUsagePolicy: SamplingPolicy {
    public static let typeName = "token_usage"
    public static let keys = ["min_total_tokens", "max_total_tokens"]

    public static let inputKeys = ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"]
    public static let outputKeys = ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"]

    public var minTotal: Int64
    public var maxTotal: Int64?
    var inputSlot: Int
    var outputSlot: Int

    /// Registers the token attributes in `plan`.
    public init(minTotal: Int64, maxTotal: Int64? = nil, plan: inout AttributePlan) {
        self.minTotal = minTotal
        self.maxTotal = maxTotal
        // Two slots are always available to the first token policy; later ones share them.
        inputSlot = plan.slot(forFirstOf: Self.inputKeys) ?? 0
        outputSlot = plan.slot(forFirstOf: Self.outputKeys) ?? 1
    }

    public static func parse(_ block: Node?, at typeNode: Node, reader: inout YAMLReader, plan: inout AttributePlan) -> Self? {
        guard let block else {
            reader.error(typeNode, "token_usage policy needs a 'token_usage:' block with 'min_total_tokens'")
            return nil
        }
        var minTotal: Int64? = nil
        var maxTotal: Int64? = nil
        var maxNode: Node? = nil
        var ok = true
        for (key, _, value) in reader.mapping(block, allowed: keys, what: "token_usage") {
            let v = reader.integer(value, what: key, range: 0...Int64.max)
            if v == nil { ok = false }
            if key == "min_total_tokens" { minTotal = v } else { maxTotal = v; maxNode = value }
        }
        guard ok else { return nil }
        guard let minTotal else {
            reader.error(typeNode, "token_usage policy needs 'min_total_tokens'")
            return nil
        }
        if let maxTotal, maxTotal < minTotal {
            reader.error(maxNode, "max_total_tokens (\(maxTotal)) is below min_total_tokens (\(minTotal)): no trace can match")
            return nil
        }
        guard plan.slots.count <= AttributePlan.maxSlots - 2 || plan.slots.contains(inputKeys) else {
            reader.error(typeNode, "too many attribute-reading policies")
            return nil
        }
        return TokenUsagePolicy(minTotal: minTotal, maxTotal: maxTotal, plan: &plan)
    }

    public func total(_ trace: TraceSummary) -> Int64 {
        trace.sums[inputSlot] &+ trace.sums[outputSlot]
    }

    public func keeps(_ trace: TraceSummary) -> Bool {
        let t = total(trace)
        guard t >= minTotal else { return false }
        if let maxTotal, t > maxTotal { return false }
        return true
    }
}
