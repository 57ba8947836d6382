package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `string_attribute`: keeps traces where attribute `key` equals one of `values` (or, with `enabled_regex_matching`,
/// matches one of them as a regular expression); string arrays match on any element. `invert_match` keeps the
/// traces where no such value occurs. `scope` as for `numeric_attribute`.
package struct StringAttributePolicy: SamplingPolicy {
    package static let typeName = "string_attribute"
    package static let keys = ["key", "values", "enabled_regex_matching", "invert_match", "cache_max_size", "scope"]

    package var test: BitTest

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "key: http.route, values: [/checkout]") else { return nil }
        var key: String? = nil
        var values: [(String, Node)] = []
        var valuesNode: Node? = nil
        var regex = false
        var invert = false
        var scopeNode: Node? = nil
        for (k, keyNode, value) in entries {
            switch k {
            case "key": key = context.reader.string(value, what: "key")
            case "values":
                valuesNode = keyNode
                for item in context.reader.sequence(value, what: "values") {
                    if let s = context.reader.string(item, what: "a value") { values.append((s, item)) }
                }
            case "enabled_regex_matching": regex = context.reader.bool(value, what: k) ?? false
            case "invert_match": invert = context.reader.bool(value, what: k) ?? false
            case "cache_max_size": _ = context.reader.integer(value, what: k, range: 0...Int64.max)  // accepted for compatibility; unused
            default: scopeNode = value
            }
        }
        guard let scope = context.attributeScope(scopeNode) else { return nil }
        guard let key, !key.isEmpty else { context.reader.error(at, "string_attribute policy needs 'key'"); return nil }
        guard !values.isEmpty else {
            context.reader.error(valuesNode ?? at, "string_attribute policy needs at least one entry in 'values'")
            return nil
        }
        if regex {
            var ok = true
            for (pattern, node) in values {
                var scratch = AttributePlan()
                do { _ = try scratch.bit(key: key, .regex([pattern])) } catch { context.reader.error(node, error.description); ok = false }
            }
            guard ok else { return nil }
        }
        let matcher: AttributePlan.Matcher = regex ? .regex(values.map(\.0)) : .strings(values.map(\.0))
        guard let bit = context.plan(at, { (p: inout AttributePlan) throws(AttributePlan.PlanError) in try p.bit(key: key, target: scope.target, matcher) }) else { return nil }
        return StringAttributePolicy(test: BitTest(bit: bit, rootOnly: scope == .root, invert: invert))
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict { test.matches(trace) ? .sampled : .notSampled }
}
