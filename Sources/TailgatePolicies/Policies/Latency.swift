package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `latency`: keeps traces by duration (earliest span start to latest span end), compared in whole milliseconds
/// (truncated), as the OpenTelemetry Collector compares them. With `threshold_ms` alone, the duration must be at least
/// the threshold; with `upper_threshold_ms` too, it must be above `threshold_ms` (exclusive) and at most
/// `upper_threshold_ms` (inclusive) — the Collector's two rules, kept as they are.
package struct LatencyPolicy: SamplingPolicy {
    package static let typeName = "latency"
    package static let keys = ["threshold_ms", "upper_threshold_ms"]

    package var thresholdMs: UInt64
    /// nil (or `0` in the file): no upper bound, and the lower bound is inclusive.
    package var upperThresholdMs: UInt64?

    package init(thresholdMs: Int64, upperThresholdMs: Int64? = nil) {
        self.thresholdMs = UInt64(max(0, thresholdMs))
        self.upperThresholdMs = upperThresholdMs.flatMap { $0 == 0 ? nil : UInt64(max(0, $0)) }
    }

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "threshold_ms: 5000") else { return nil }
        var threshold: Int64? = nil
        var upper: Int64? = nil
        var upperNode: Node? = nil
        var ok = true
        for (key, _, value) in entries {
            let v = context.reader.integer(value, what: key, range: 0...Int64(Int32.max) * 1000)
            if v == nil { ok = false }
            if key == "threshold_ms" { threshold = v } else { upper = v; upperNode = value }
        }
        guard ok else { return nil }
        guard let threshold else {
            context.reader.error(at, "latency policy needs 'threshold_ms'")
            return nil
        }
        if let upper, upper != 0, upper < threshold {
            context.reader.error(upperNode, "upper_threshold_ms (\(upper)) is below threshold_ms (\(threshold)): no trace can match")
            return nil
        }
        if let upper, upper != 0, upper == threshold {
            context.reader.error(upperNode, "upper_threshold_ms (\(upper)) equals threshold_ms: with an upper bound, threshold_ms "
                + "is exclusive (as in the Collector), so no trace can match")
            return nil
        }
        return LatencyPolicy(thresholdMs: threshold, upperThresholdMs: upper)
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        let ms = trace.durationNanos / 1_000_000
        if let upperThresholdMs {
            return ms > thresholdMs && ms <= upperThresholdMs ? .sampled : .notSampled
        }
        return ms >= thresholdMs ? .sampled : .notSampled
    }
}
