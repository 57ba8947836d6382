import Synchronization
package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// A per-second budget of units (spans or bytes), counted on the decision clock (`TraceSummary.decidedAt`), so
/// simulations with a virtual clock behave like the live proxy. Also estimates the share of offered traces it admits
/// over a window (the previous complete second; the current one until there is one), the probability written on kept spans: a limiter is not a
/// consistent sampler, so that ratio — not 1 until the first refusal of a second — is the honest weight. Traces, not
/// units: a bucket refilled continuously admits small traces more often than large ones, so a ratio of units would
/// overstate how many traces a kept one stands for.
final class SecondBudget: Sendable {
    struct State {
        var second: UInt64 = .max
        var spent: Double = 0
        var offered: Double = 0
        /// Traces admitted and offered this second, and in the previous one (the window's first half).
        var admittedTraces: Double = 0
        var offeredTraces: Double = 0
        var previousAdmitted: Double = 0
        var previousOfferedTraces: Double = 0
        var tokens: Double
        /// nil until the first take: the bucket starts full.
        var lastRefill: UInt64? = nil

        /// The previous second's share of traces admitted (a complete window), else this second's so far.
        var admissionRatio: Double {
            let (admitted, offered) = previousOfferedTraces > 0 ? (previousAdmitted, previousOfferedTraces) : (admittedTraces, offeredTraces)
            guard offered > 0 else { return 1 }
            return min(1, max(admitted / offered, 1e-9))
        }
    }

    let perSecond: Double
    /// With a burst capacity, a token bucket refilled continuously; without, a fixed one-second window.
    let burst: Double?
    private let state: Mutex<State>

    init(perSecond: Double, burst: Double? = nil) {
        self.perSecond = perSecond
        self.burst = burst
        state = Mutex(State(tokens: burst ?? perSecond))
    }

    /// Takes `units` if they fit; returns the probability estimate (the admission ratio over the window), or nil.
    func take(_ units: Double, at now: UInt64) -> Double? {
        state.withLock { s in
            let second = now / 1_000_000_000
            if second != s.second {
                let consecutive = s.second != .max && second == s.second &+ 1
                s.previousAdmitted = consecutive ? s.admittedTraces : 0
                s.previousOfferedTraces = consecutive ? s.offeredTraces : 0
                s.second = second
                s.spent = 0
                s.offered = 0
                s.admittedTraces = 0
                s.offeredTraces = 0
            }
            s.offeredTraces += 1
            s.offered += units
            if let burst {
                if let last = s.lastRefill {
                    if now < last { s.tokens = burst } else { s.tokens = min(burst, s.tokens + Double(now - last) / 1e9 * perSecond) }
                }
                s.lastRefill = now
                guard s.tokens >= units else { return nil }
                s.tokens -= units
            } else {
                guard s.spent + units <= perSecond else { return nil }
            }
            s.spent += units
            s.admittedTraces += 1
            return s.admissionRatio
        }
    }

    /// The current admission ratio (read-only).
    var admissionRatio: Double { state.withLock { $0.admissionRatio } }
}

/// `rate_limiting`: keeps traces while the spans kept by this policy fit a token bucket refilled continuously at
/// `spans_per_second` and holding at most `burst_capacity` spans (default, as in the Collector: twice the rate); a
/// trace with more spans than the burst capacity is never kept. Kept spans carry the share of offered traces
/// admitted (the budget's admission ratio) as their sampling probability.
package struct RateLimitingPolicy: SamplingPolicy {
    package static let typeName = "rate_limiting"
    package static let keys = ["spans_per_second", "burst_capacity"]

    let budget: SecondBudget

    /// `burst` nil or 0: twice `spansPerSecond`, the Collector's default.
    package init(spansPerSecond: Double, burst: Double? = nil) {
        let capacity = burst.flatMap { $0 > 0 ? $0 : nil } ?? 2 * spansPerSecond
        budget = SecondBudget(perSecond: spansPerSecond, burst: capacity)
    }

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "spans_per_second: 1000") else { return nil }
        var rate: Int64? = nil, burst: Int64? = nil
        var ok = true
        for (k, _, value) in entries {
            let v = context.reader.integer(value, what: k, range: 0...Int64(Int32.max) * (k == "burst_capacity" ? 2 : 1))
            ok = ok && v != nil
            if k == "spans_per_second" { rate = v } else { burst = v }
        }
        guard ok else { return nil }
        guard let rate else { context.reader.error(at, "rate_limiting policy needs 'spans_per_second'"); return nil }
        return RateLimitingPolicy(spansPerSecond: Double(rate), burst: burst.map(Double.init))
    }

    /// Nothing refills and the bucket is empty. (With a rate of 0 and a burst, the first `burst_capacity` spans pass,
    /// once.)
    package var neverKeeps: Bool { budget.perSecond == 0 && (budget.burst ?? 0) == 0 }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        guard let p = budget.take(Double(trace.spanCount), at: trace.decidedAt) else { return .notSampled }
        return .sample(.hashed(probability: p))
    }

    package func chance(_ trace: TraceSummary) -> Chance? {
        .random(probability: budget.admissionRatio, source: .budget(ObjectIdentifier(budget)))
    }
}

/// `bytes_limiting`: keeps traces while the span bytes kept by this policy stay within a token bucket of
/// `bytes_per_second`, holding at most `burst_capacity` bytes (default: twice the rate).
package struct BytesLimitingPolicy: SamplingPolicy {
    package static let typeName = "bytes_limiting"
    package static let keys = ["bytes_per_second", "burst_capacity"]

    let budget: SecondBudget

    package init(bytesPerSecond: Double, burst: Double? = nil) {
        budget = SecondBudget(perSecond: bytesPerSecond, burst: burst ?? 2 * bytesPerSecond)
    }

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "bytes_per_second: 1048576") else { return nil }
        var rate: Int? = nil, burst: Int? = nil
        var ok = true
        for (k, _, value) in entries {
            let v = context.reader.size(value, what: k)
            ok = ok && v != nil
            if k == "bytes_per_second" { rate = v } else { burst = v }
        }
        guard ok else { return nil }
        guard let rate else { context.reader.error(at, "bytes_limiting policy needs 'bytes_per_second'"); return nil }
        return BytesLimitingPolicy(bytesPerSecond: Double(rate), burst: burst.map(Double.init))
    }

    package var neverKeeps: Bool { budget.perSecond == 0 }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        guard let p = budget.take(Double(trace.spanBytes), at: trace.decidedAt) else { return .notSampled }
        return .sample(.hashed(probability: p))
    }

    package func chance(_ trace: TraceSummary) -> Chance? {
        .random(probability: budget.admissionRatio, source: .budget(ObjectIdentifier(budget)))
    }
}
