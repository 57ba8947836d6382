import TailgateBuffer
import TailgateWire
import Yams

/// `latency`: keeps traces whose duration (earliest span start to latest span end) is at least `threshold_ms`
/// and, when `upper_threshold_ms` is set, at most that.
public struct LatencyPolicy: SamplingPolicy {
    public static let typeName = "latency"
    public static let keys = ["threshold_ms", "upper_threshold_ms"]

    public var thresholdNanos: UInt64
    public var upperThresholdNanos: UInt64?

    public init(thresholdMs: Int64, upperThresholdMs: Int64? = nil) {
        thresholdNanos = UInt64(thresholdMs) * 1_000_000
        upperThresholdNanos = upperThresholdMs.map { UInt64($0) * 1_000_000 }
    }

    public static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
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
        return LatencyPolicy(thresholdMs: threshold, upperThresholdMs: upper == 0 ? nil : upper)
    }

    public func evaluate(_ trace: TraceSummary) -> Verdict {
        let d = trace.durationNanos
        guard d >= thresholdNanos else { return .notSampled }
        if let upperThresholdNanos, d > upperThresholdNanos { return .notSampled }
        return .sampled
    }
}
