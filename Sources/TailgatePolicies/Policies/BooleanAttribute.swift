package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `boolean_attribute`: keeps traces where attribute `key` is the boolean `value`. `invert_match` keeps the traces
/// where it never is. `scope` as for `numeric_attribute`.
package struct BooleanAttributePolicy: SamplingPolicy {
    package static let typeName = "boolean_attribute"
    package static let keys = ["key", "value", "invert_match", "scope"]

    package var test: BitTest

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "key: app.debug, value: true") else { return nil }
        var key: String? = nil
        var expected: Bool? = nil
        var invert = false
        var scopeNode: Node? = nil
        for (k, _, value) in entries {
            switch k {
            case "key": key = context.reader.string(value, what: "key")
            case "value": expected = context.reader.bool(value, what: "value")
            case "invert_match": invert = context.reader.bool(value, what: k) ?? false
            default: scopeNode = value
            }
        }
        guard let scope = context.attributeScope(scopeNode) else { return nil }
        guard let key, !key.isEmpty else { context.reader.error(at, "boolean_attribute policy needs 'key'"); return nil }
        guard let expected else { context.reader.error(at, "boolean_attribute policy needs 'value' (true or false)"); return nil }
        guard let bit = context.plan(at, { (p: inout AttributePlan) throws(AttributePlan.PlanError) in try p.bit(key: key, target: scope.target, .bool(expected)) }) else { return nil }
        return BooleanAttributePolicy(test: BitTest(bit: bit, rootOnly: scope == .root, invert: invert))
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict { test.matches(trace) ? .sampled : .notSampled }
}
