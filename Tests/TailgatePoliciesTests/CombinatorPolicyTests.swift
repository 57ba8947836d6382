import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire

@Suite struct CombinatorPolicyTests {
    static let errorsPolicy = "{name: err, type: status_code, status_code: {status_codes: [ERROR]}}"
    static let prodPolicy = "{name: prod, type: string_attribute, string_attribute: {key: env, values: [prod]}}"

    /// (policies, spans (status, env), expected keep, expected policy index)
    static let cases: [(String, [(StatusCode?, String)], Bool, Int)] = [
        // and: both must match.
        ("{name: a, type: and, and: {and_sub_policy: [\(errorsPolicy), \(prodPolicy)]}}", [(.error, "prod")], true, 0),
        ("{name: a, type: and, and: {and_sub_policy: [\(errorsPolicy), \(prodPolicy)]}}", [(.error, "dev")], false, -1),
        // not: inverts.
        ("{name: n, type: not, not: {not_sub_policy: \(prodPolicy)}}", [(nil, "dev")], true, 0),
        ("{name: n, type: not, not: {not_sub_policy: \(prodPolicy)}}", [(nil, "prod")], false, -1),
        // drop wins over everything, only when all its sub-policies match.
        ("{name: all, type: always_sample}, {name: d, type: drop, drop: {drop_sub_policy: [\(prodPolicy)]}}", [(nil, "prod")], false, 1),
        ("{name: all, type: always_sample}, {name: d, type: drop, drop: {drop_sub_policy: [\(prodPolicy), \(errorsPolicy)]}}", [(nil, "prod")], true, 0),
        ("\(errorsPolicy), {name: d, type: drop, drop: {drop_sub_policy: [\(prodPolicy), \(errorsPolicy)]}}", [(.error, "prod")], false, 1),
        // not inside and: errors outside prod.
        ("{name: a, type: and, and: {and_sub_policy: [\(errorsPolicy), {name: n, type: not, not: {not_sub_policy: \(prodPolicy)}}]}}", [(.error, "dev")], true, 0),
        ("{name: a, type: and, and: {and_sub_policy: [\(errorsPolicy), {name: n, type: not, not: {not_sub_policy: \(prodPolicy)}}]}}", [(.error, "prod")], false, -1),
    ]

    @Test(arguments: cases.indices) func table(index: Int) throws {
        let (policies, spans, keep, policy) = Self.cases[index]
        let testSpans = spans.enumerated().map { i, s in span(UInt64(i + 1), status: s.0, [("env", .string(s.1))]) }
        let decision = try decide(policies, trace(testSpans))
        #expect(decision.keep == keep, "\(policies)")
        #expect(decision.policy == policy, "\(policies)")
    }

    @Test func andMultipliesProbabilities() throws {
        let set = try PolicySet.parse("""
            policies:
              - name: a
                type: and
                and:
                  and_sub_policy:
                    - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
                    - {name: all, type: always_sample}
            """, file: "t.yaml")
        let id = TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!
        #expect(PolicyEngine(set).decide(summary(id)) == Decision(keep: true, policy: 0, probability: 0.5))
    }

    @Test func compositeSharesTheRateByAllocationInOrder() throws {
        let set = try PolicySet.parse("""
            policies:
              - name: c
                type: composite
                composite:
                  max_total_spans_per_second: 100
                  policy_order: [errors, everything]
                  composite_sub_policy:
                    - {name: everything, type: always_sample}
                    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
                  rate_allocation:
                    - {policy: errors, percent: 60}
                    - {policy: everything, percent: 40}
            """, file: "t.yaml")
        let engine = PolicyEngine(set)
        let second: UInt64 = 5_000_000_000
        // 10-span traces: errors get 60 spans/s, everything else 40 spans/s, within one second.
        var errorsKept = 0, othersKept = 0
        for i in 0..<20 {
            if engine.decide(summary(tid(UInt64(i)), status: [.error], spans: 10, at: second)).keep { errorsKept += 1 }
            if engine.decide(summary(tid(UInt64(100 + i)), spans: 10, at: second)).keep { othersKept += 1 }
        }
        // Errors use their 60 first, then may fall through to "everything"'s share, which the others also use.
        #expect(errorsKept + othersKept == 10)
        #expect(errorsKept >= 6)
        // The next second the budgets refill.
        #expect(engine.decide(summary(tid(999), spans: 10, at: second + 1_000_000_000)).keep)
    }
}

@Suite struct RatePolicyTests {
    @Test func rateLimitingKeepsUpToTheBurstAndStatesTheShare() {
        // A token bucket refilled at 100 spans/s, holding at most 100 (the default would be 200, as in the Collector).
        let policy = RateLimitingPolicy(spansPerSecond: 100, burst: 100)
        var kept = 0
        var last: Verdict = .notSampled
        for i in 0..<30 {
            let v = policy.evaluate(summary(tid(UInt64(i)), spans: 10, at: 7_000_000_000))
            if v.isSample { kept += 1; last = v }
        }
        #expect(kept == 10)
        // A limiter is not a consistent sampler: its keeps state the admission ratio (th erased), 10 of 10 so far.
        #expect(last == .sample(.hashed(probability: 1)))
        // The ratio is the previous complete second's, so the first trace of a new second is not weighted 1 just
        // because nothing was refused yet: 10 of 30 traces last second.
        let next = policy.evaluate(summary(tid(100), spans: 10, at: 8_000_000_000))
        #expect(next == .sample(.hashed(probability: 10.0 / 30.0)))
        #expect(policy.evaluate(summary(tid(101), spans: 1000, at: 8_100_000_000)) == .notSampled)
    }

    @Test func bytesLimitingIsATokenBucket() {
        let policy = BytesLimitingPolicy(bytesPerSecond: 1000, burst: 2000)
        let t0: UInt64 = 10_000_000_000
        #expect(policy.evaluate(summary(tid(1), bytes: 1500, at: t0)).isSample)
        #expect(!policy.evaluate(summary(tid(2), bytes: 1000, at: t0)).isSample)  // 500 left
        #expect(policy.evaluate(summary(tid(3), bytes: 1000, at: t0 + 500_000_000)).isSample)  // +500 after 0.5 s
        #expect(!policy.evaluate(summary(tid(4), bytes: 2001, at: t0 + 60_000_000_000)).isSample)  // over the burst
    }
}
