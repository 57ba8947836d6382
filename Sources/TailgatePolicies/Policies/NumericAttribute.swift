package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `numeric_attribute`: keeps traces where an attribute `key` has a number in [`min_value`, `max_value`]
/// (either bound may be omitted). `invert_match` keeps the traces where no such value occurs. `scope` (Tailgate):
/// `any` (span or resource attributes, the default), `span`, `resource` or `root` (the root span only).
package struct NumericAttributePolicy: SamplingPolicy {
    package static let typeName = "numeric_attribute"
    package static let keys = ["key", "min_value", "max_value", "invert_match", "scope"]

    package var test: BitTest

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "key: http.status_code, min_value: 500") else { return nil }
        var key: String? = nil
        var lo: Double? = nil, hi: Double? = nil
        var invert = false
        var scopeNode: Node? = nil
        var maxNode: Node? = nil
        var ok = true
        for (k, _, value) in entries {
            switch k {
            case "key": key = context.reader.string(value, what: "key")
            case "min_value": lo = context.reader.number(value, what: "min_value"); ok = ok && lo != nil
            case "max_value": hi = context.reader.number(value, what: "max_value"); ok = ok && hi != nil; maxNode = value
            case "invert_match": invert = context.reader.bool(value, what: "invert_match") ?? false
            default: scopeNode = value
            }
        }
        guard ok, let scope = context.attributeScope(scopeNode) else { return nil }
        guard let key, !key.isEmpty else { context.reader.error(at, "numeric_attribute policy needs 'key'"); return nil }
        guard lo != nil || hi != nil else {
            context.reader.error(at, "numeric_attribute policy needs 'min_value' and/or 'max_value'")
            return nil
        }
        if let lo, let hi, hi < lo {
            context.reader.error(maxNode, "max_value (\(formatNumber(hi))) is below min_value (\(formatNumber(lo))): no value can match")
            return nil
        }
        guard let bit = context.plan(at, { (p: inout AttributePlan) throws(AttributePlan.PlanError) in try p.bit(key: key, target: scope.target, .numeric(min: lo ?? -.infinity, max: hi ?? .infinity)) }) else { return nil }
        return NumericAttributePolicy(test: BitTest(bit: bit, rootOnly: scope == .root, invert: invert))
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict { test.matches(trace) ? .sampled : .notSampled }
}
