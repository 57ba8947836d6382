import TailgateBuffer
import TailgateWire
import Yams

/// `probabilistic`: keeps `sampling_percentage` percent of traces, chosen by XXH3-64 of the 16 trace-ID bytes
/// seeded with the XXH3-64 of `hash_salt` (seed 0 without a salt). Every instance and every run keeps the same
/// traces: a trace is kept when its hash is below `sampling_percentage / 100 × 2^64`.
public struct ProbabilisticPolicy: SamplingPolicy {
    public static let typeName = "probabilistic"
    public static let keys = ["sampling_percentage", "hash_salt"]

    public var percentage: Double
    public var seed: UInt64
    /// Keep when hash < threshold; `nil` means keep everything (100 %).
    public var threshold: UInt64?

    public init(percentage: Double, salt: String = "") {
        self.percentage = percentage
        seed = salt.isEmpty ? 0 : xxh3(salt)
        let scaled = percentage / 100 * 18_446_744_073_709_551_616.0
        threshold = scaled >= 18_446_744_073_709_551_616.0 ? nil : UInt64(max(0, scaled))
    }

    public static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "sampling_percentage: 10") else { return nil }
        var percentage: Double? = nil
        var salt = ""
        var ok = true
        for (key, _, value) in entries {
            if key == "sampling_percentage" {
                percentage = context.reader.number(value, what: "sampling_percentage", range: 0...100)
                if percentage == nil { ok = false }
            } else {
                salt = context.reader.string(value, what: "hash_salt") ?? ""
            }
        }
        guard ok else { return nil }
        guard let percentage else {
            context.reader.error(at, "probabilistic policy needs 'sampling_percentage' (0 to 100)")
            return nil
        }
        return ProbabilisticPolicy(percentage: percentage, salt: salt)
    }

    public var neverKeeps: Bool { percentage == 0 }

    public func evaluate(_ trace: TraceSummary) -> Verdict {
        guard let threshold else { return .sampled }
        return trace.traceID.xxh3(seed: seed) < threshold ? .sample(probability: percentage / 100) : .notSampled
    }
}
