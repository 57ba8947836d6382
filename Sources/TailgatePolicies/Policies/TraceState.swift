package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `trace_state`: keeps traces where a span's W3C tracestate has `key` with one of `values`.
package struct TraceStatePolicy: SamplingPolicy {
    package static let typeName = "trace_state"
    package static let keys = ["key", "values"]

    package var bit: Int

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "key: vendor, values: [debug]") else { return nil }
        var key: String? = nil
        var values: [String] = []
        var valuesNode: Node? = nil
        for (k, keyNode, value) in entries {
            if k == "key" {
                key = context.reader.string(value, what: "key")
            } else {
                valuesNode = keyNode
                values = context.reader.sequence(value, what: "values").compactMap { context.reader.string($0, what: "a value") }
            }
        }
        guard let key, !key.isEmpty else { context.reader.error(at, "trace_state policy needs 'key'"); return nil }
        guard !values.isEmpty else { context.reader.error(valuesNode ?? at, "trace_state policy needs at least one entry in 'values'"); return nil }
        guard let bit = context.plan(at, { (p: inout AttributePlan) throws(AttributePlan.PlanError) in try p.traceStateBit(key: key, values: values) }) else { return nil }
        return TraceStatePolicy(bit: bit)
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict { trace.bits & (1 << UInt64(bit)) != 0 ? .sampled : .notSampled }
}
