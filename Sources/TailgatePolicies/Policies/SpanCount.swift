package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `span_count`: keeps traces with at least `min_spans` and, when set, at most `max_spans` spans.
package struct SpanCountPolicy: SamplingPolicy {
    package static let typeName = "span_count"
    package static let keys = ["min_spans", "max_spans"]

    package var minSpans: Int
    package var maxSpans: Int?

    package init(minSpans: Int, maxSpans: Int? = nil) {
        self.minSpans = minSpans
        self.maxSpans = maxSpans
    }

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "min_spans: 100") else { return nil }
        var lo: Int64? = nil, hi: Int64? = nil
        var hiNode: Node? = nil
        var ok = true
        for (k, _, value) in entries {
            let v = context.reader.integer(value, what: k, range: 0...Int64(Int32.max))
            ok = ok && v != nil
            if k == "min_spans" { lo = v } else { hi = v; hiNode = value }
        }
        guard ok else { return nil }
        guard let lo else { context.reader.error(at, "span_count policy needs 'min_spans'"); return nil }
        if let hi, hi != 0, hi < lo {
            context.reader.error(hiNode, "max_spans (\(hi)) is below min_spans (\(lo)): no trace can match")
            return nil
        }
        return SpanCountPolicy(minSpans: Int(lo), maxSpans: hi.flatMap { $0 == 0 ? nil : Int($0) })
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        guard trace.spanCount >= minSpans else { return .notSampled }
        if let maxSpans, trace.spanCount > maxSpans { return .notSampled }
        return .sampled
    }
}
