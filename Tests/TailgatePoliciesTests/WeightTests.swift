import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire

/// Weights that downstream math can trust: over many traces, the sum of the adjusted counts (1/probability) of the
/// kept traces estimates the number of traces offered (Horvitz–Thompson). Each set ends with a random catch-all, so
/// every trace has a chance of being kept and a defined weight.
@Suite struct WeightTests {
    static let traces = 100_000

    /// Synthetic traces: random IDs (SplitMix64), 5 % errors, 1–20 spans, one decided every 0.5 ms of decision clock.
    static func population() -> [TraceSummary] {
        var rng = SplitMix64(seed: 0x5EED)
        func next() -> UInt64 { rng.next() }
        return (0..<traces).map { i in
            var s = TraceSummary(traceID: TraceID(hi: next(), lo: next()))
            s.spanCount = Int(1 + next() % 20)
            s.spanBytes = s.spanCount * 400
            if next() % 20 == 0 { s.statusMask = StatusCode.error.bit }
            s.decidedAt = 1_000_000_000 + UInt64(i) * 500_000
            return s
        }
    }

    static let catchAll = "{name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: rest}}"

    @Test(arguments: [
        "{name: p, type: probabilistic, probabilistic: {sampling_percentage: 30}}",
        "{name: p, type: probabilistic, probabilistic: {sampling_percentage: 30, mode: consistent}}",
        "{name: p, type: probabilistic, probabilistic: {sampling_percentage: 30, hash_salt: rest}}",  // nested with the catch-all
        "{name: e, type: status_code, status_code: {status_codes: [ERROR]}}",
        "{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 4000}}",
        "{name: b, type: bytes_limiting, bytes_limiting: {bytes_per_second: 1000000}}",
        "{name: a, type: and, and: {and_sub_policy: [{name: x, type: probabilistic, probabilistic: {sampling_percentage: 10}}, {name: y, type: probabilistic, probabilistic: {sampling_percentage: 20}}]}}",
        "{name: a, type: and, and: {and_sub_policy: [{name: x, type: probabilistic, probabilistic: {sampling_percentage: 50, hash_salt: a}}, {name: y, type: probabilistic, probabilistic: {sampling_percentage: 40, hash_salt: b}}]}}",
        "{name: a, type: and, and: {and_sub_policy: [{name: x, type: status_code, status_code: {status_codes: [ERROR]}}, {name: y, type: probabilistic, probabilistic: {sampling_percentage: 50}}]}}",
        "{name: n, type: not, not: {not_sub_policy: {name: x, type: probabilistic, probabilistic: {sampling_percentage: 70}}}}",
        "{name: c, type: composite, composite: {max_total_spans_per_second: 6000, policy_order: [e, p], composite_sub_policy: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 40}}], rate_allocation: [{policy: e, percent: 50}, {policy: p, percent: 50}]}}",
        "{name: all, type: always_sample}",
    ])
    func adjustedCountsAddUpToTheTracesOffered(policy: String) throws {
        let set = try PolicySet.parse("policies: [\(policy), \(Self.catchAll)]", file: "w.yaml")
        let engine = PolicyEngine(set)
        var estimate = 0.0, variance = 0.0, kept = 0
        for trace in Self.population() {
            let d = engine.decide(trace)
            guard d.keep else { continue }
            let p = d.weight.probability
            #expect(p > 0 && p <= 1)
            estimate += 1 / p
            variance += (1 - p) / (p * p)
            kept += 1
        }
        let sigma = variance.squareRoot()
        let offered = Double(Self.traces)
        #expect(kept > 0 && kept < Self.traces || policy.contains("always_sample"))
        #expect(abs(estimate - offered) <= 4 * max(sigma, 1), "Σ adjusted \(Int(estimate)) vs \(Self.traces) offered (σ \(Int(sigma)), kept \(kept))")
    }

    /// The th written on a consistent keep never contradicts the keep: R ≥ T for every kept trace.
    @Test func consistentKeepsHaveRAboveTheirThreshold() throws {
        let set = try PolicySet.parse("policies: [{name: p, type: probabilistic, probabilistic: {sampling_percentage: 10, mode: consistent}}]", file: "w.yaml")
        let engine = PolicyEngine(set)
        var kept = 0
        for trace in Self.population() {
            let d = engine.decide(trace)
            guard d.keep else { continue }
            guard case .consistent(let t) = d.weight else { Issue.record("not consistent: \(d.weight)"); return }
            #expect(trace.traceID.lo & ((1 << 56) - 1) >= t)
            kept += 1
        }
        #expect(abs(Double(kept) - 10_000) < 4 * (100_000 * 0.1 * 0.9).squareRoot())
    }

    @Test func correlatedAndStatesTheSmallerProbability() throws {
        // 10 % AND 20 % with the same (default) salt keep the 10 % alone: the weight is 1/0.1, not 1/0.02.
        let set = try PolicySet.parse("policies: [{name: a, type: and, and: {and_sub_policy: [{name: x, type: probabilistic, probabilistic: {sampling_percentage: 10}}, {name: y, type: probabilistic, probabilistic: {sampling_percentage: 20}}]}}]", file: "w.yaml")
        let d = Self.population().lazy.map { PolicyEngine(set).decide($0) }.first { $0.keep }
        #expect(d?.weight == .hashed(probability: 0.1))
    }

    @Test func dryRunWritesNoWeight() throws {
        let set = try PolicySet.parse("policies: [\(Self.catchAll)]", file: "w.yaml")
        let runtime = PolicyRuntime(set, dryRun: true)
        for trace in Self.population().prefix(1000) {
            #expect(runtime.decide(trace).weight == .certain)
        }
    }

    @Test func aCertainKeepAfterARandomOneIsCertain() throws {
        let set = try PolicySet.parse("policies: [\(Self.catchAll), {name: e, type: status_code, status_code: {status_codes: [ERROR]}}]", file: "w.yaml")
        for trace in Self.population().prefix(2000) where trace.has(.error) {
            let d = PolicyEngine(set).decide(trace)
            #expect(d.keep && d.weight == .certain && d.policy == 1)
        }
    }
}

/// What kept spans say: hash keeps erase th (and carry the upstream weight in the sample rate), consistent keeps
/// raise it, certain keeps leave it.
@Suite struct WeightAnnotationTests {
    func annotated(_ weight: KeepWeight, traceState: String?) throws -> (traceState: String?, sampleRate: Double?) {
        let span = TestSpan(trace: tid(1), span: 1, traceState: traceState)
        let bytes = span.encoded.withUnsafeBytes { KeepAnnotation(policy: "p", weight: weight).annotate($0) }
        var state: String? = nil
        var rate: Double? = nil
        bytes.withUnsafeBytes { raw in
            var r = ProtoReader(raw)
            while let (f, wt) = try? r.readTag() {
                if f == 3, wt == .lengthDelimited, let range = try? r.readLengthDelimited() { state = r.string(range); continue }
                if f == 9, wt == .lengthDelimited, let range = try? r.readLengthDelimited() {
                    var kv = ProtoReader(raw, range: range)
                    var key = ""
                    while let (kf, kwt) = try? kv.readTag() {
                        if kf == 1, let k = try? kv.readLengthDelimited() { key = kv.string(k) }
                        else if kf == 2, let v = try? kv.readLengthDelimited(), key == KeepAnnotation.sampleRateAttribute {
                            var any = ProtoReader(raw, range: v)
                            if let (af, _) = try? any.readTag(), af == 4, let bits = try? any.readFixed64() { rate = Double(bitPattern: bits) }
                        } else { try? kv.skip(kwt) }
                    }
                    continue
                }
                try? r.skip(wt)
            }
        }
        return (state, rate)
    }

    @Test func hashKeepErasesThAndMultipliesTheUpstreamWeight() throws {
        // After a 50 % head sampler (th:8), a 10 % hash keep: the real probability is 0.05.
        let (state, rate) = try annotated(.hashed(probability: 0.1), traceState: "ot=th:8;rv:abcdef01234567,vendor=x")
        #expect(state == "ot=rv:abcdef01234567,vendor=x")
        #expect(rate == 20)
    }

    @Test func consistentKeepTakesTheMaxThreshold() throws {
        let (state, rate) = try annotated(.consistent(threshold: KeepAnnotation.threshold(probability: 0.1)), traceState: "ot=th:8")
        #expect(state == "ot=th:e6666666666666")
        #expect(rate.map { abs($0 - 10) < 1e-9 } == true)
        let (raised, r2) = try annotated(.consistent(threshold: KeepAnnotation.threshold(probability: 0.75)), traceState: "ot=th:8")
        #expect(raised == "ot=th:8")  // the incoming 50 % is the stricter: it stays
        #expect(r2 == 2)
    }

    @Test func certainKeepLeavesTheUpstreamThreshold() throws {
        let (state, rate) = try annotated(.certain, traceState: "ot=th:8")
        #expect(state == "ot=th:8")
        #expect(rate == nil)
    }
}
