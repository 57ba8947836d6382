package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `probabilistic`: keeps `sampling_percentage` percent of traces. Every instance and every run keeps the same traces.
///
/// - `mode: hash` (default): a trace is kept when XXH3-64 of its 16 trace-ID bytes, seeded with the XXH3-64 of
///   `hash_salt` (seed 0 without), is below `sampling_percentage / 100 × 2^64` — robust to trace IDs that are not
///   random. It cannot state a consistent threshold, so a keep erases `th` and writes `tailgate.sample_rate`.
/// - `mode: consistent`: OpenTelemetry consistent probability sampling — kept when the trace's randomness R is ≥ the
///   threshold of the percentage; a keep writes `ot=th` (the max with an incoming one), which downstream consistent
///   samplers and backends understand. R is the explicit `rv` of a span's tracestate (`ot=…;rv:<14 hex>`, on any
///   span of the trace) when there is one, else the trace ID's low 56 bits — even when the W3C random flag is not
///   set (the Python SDK generates random IDs without setting it); use hash mode for instrumentations whose IDs are
///   not random.
package struct ProbabilisticPolicy: SamplingPolicy {
    package static let typeName = "probabilistic"
    package static let keys = ["sampling_percentage", "hash_salt", "mode"]

    package enum Mode: String, Sendable, CaseIterable {
        case hash, consistent
    }

    package var percentage: Double
    package var seed: UInt64
    package var mode: Mode
    /// Hash mode: keep when hash < threshold; `nil` means keep everything (100 %).
    package var threshold: UInt64?
    /// Consistent mode: keep when R ≥ this 56-bit rejection threshold.
    package var rejectionThreshold: UInt64

    package init(percentage: Double, salt: String = "", mode: Mode = .hash) {
        self.percentage = percentage
        self.mode = mode
        seed = salt.isEmpty ? 0 : xxh3(salt)
        let scaled = percentage / 100 * 18_446_744_073_709_551_616.0
        threshold = scaled >= 18_446_744_073_709_551_616.0 ? nil : UInt64(max(0, scaled))
        rejectionThreshold = percentage >= 100 ? 0 : KeepAnnotation.threshold(probability: percentage / 100)
    }

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "sampling_percentage: 10") else { return nil }
        var percentage: Double? = nil
        var salt = ""
        var mode = Mode.hash
        var ok = true
        for (key, _, value) in entries {
            if key == "sampling_percentage" {
                percentage = context.reader.number(value, what: "sampling_percentage", range: 0...100)
                if percentage == nil { ok = false }
            } else if key == "mode" {
                let text = context.reader.string(value, what: "mode") ?? ""
                if let m = Mode(rawValue: text) { mode = m } else {
                    context.reader.error(value, "mode must be hash or consistent, got '\(text)'")
                    ok = false
                }
            } else {
                salt = context.reader.string(value, what: "hash_salt") ?? ""
            }
        }
        guard ok else { return nil }
        guard let percentage else {
            context.reader.error(at, "probabilistic policy needs 'sampling_percentage' (0 to 100)")
            return nil
        }
        return ProbabilisticPolicy(percentage: percentage, salt: salt, mode: mode)
    }

    package var neverKeeps: Bool { percentage == 0 }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        switch mode {
        case .hash:
            guard let threshold else { return .sampled }
            return trace.traceID.xxh3(seed: seed) < threshold ? .sample(.hashed(probability: percentage / 100)) : .notSampled
        case .consistent:
            guard rejectionThreshold > 0 else { return .sampled }
            return Self.randomness(trace) >= rejectionThreshold ? .sample(.consistent(threshold: rejectionThreshold)) : .notSampled
        }
    }

    package func chance(_ trace: TraceSummary) -> Chance? {
        if percentage >= 100 { return .certain }
        if percentage <= 0 { return .never }
        return .random(probability: percentage / 100, source: mode == .hash ? .hash(seed: seed) : .traceRandomness)
    }

    /// The trace's randomness R: an explicit `rv`, else the low 56 bits of the trace ID.
    static func randomness(_ trace: TraceSummary) -> UInt64 {
        trace.randomness != .max ? trace.randomness : trace.traceID.lo & ((UInt64(1) << 56) - 1)
    }
}
