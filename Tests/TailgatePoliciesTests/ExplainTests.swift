import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire

/// `PolicySet.explain`: every policy's verdict in order and the policy that would decide — the same decision as the
/// engine, without spending any limiter's budget.
@Suite struct ExplainTests {
    /// Inside the default 10 % (see BasicPolicyTests).
    let sampledID = TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!

    /// A trace ID outside the default 10 % of hash mode.
    func unsampledID() -> TraceID {
        let engine = PolicyEngine(PolicySet.builtIn())
        return (1...1000).lazy.map { tid($0) }.first { engine.decide(summary($0)) == .noMatch }!
    }

    @Test func anErrorIsKeptByTheErrorsPolicyForCertain() {
        let set = PolicySet.builtIn()
        let e = set.explain(summary(status: [.error, .unset]))
        #expect(e.policies.map(\.name) == ["errors", "expensive", "baseline"])
        #expect(e.policies.map(\.type) == ["status_code", "token_usage", "probabilistic"])
        #expect(e.policies[0].outcome == .keep && e.policies[0].weight == .certain && e.policies[0].chance == nil)
        #expect(e.policies[1].outcome == .no)
        #expect(e.policies[2].chance == 0.1)
        #expect(e.keep && e.deciding == 0 && e.decidingName == "errors" && e.weight == .certain)
        #expect(e.text == "would keep by policy 'errors'")
        #expect(e.undetermined.isEmpty)
    }

    @Test func anOrdinaryTraceOutsideTheShareMatchesNothing() {
        let id = unsampledID()
        let e = PolicySet.builtIn().explain(summary(id, tokensIn: 100))
        #expect(e.policies.map(\.outcome) == [.no, .no, .no])
        #expect(!e.keep && e.deciding == nil)
        #expect(e.text == "would drop: no policy matched")
    }

    @Test func aKeepByChanceStatesItsWeight() {
        let e = PolicySet.builtIn().explain(summary(sampledID, tokensIn: 9_999))
        #expect(e.policies.map(\.outcome) == [.no, .no, .keep])
        #expect(e.keep && e.decidingName == "baseline")
        #expect(e.weight == .hashed(probability: 0.1))
        #expect(e.text == "would keep by policy 'baseline' with probability 10.0%")
    }

    @Test func theExplanationAgreesWithTheEngine() throws {
        let set = try PolicySet.parse("""
            policies:
              - {name: sample, type: probabilistic, probabilistic: {sampling_percentage: 50, mode: consistent}}
              - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
              - {name: big, type: span_count, span_count: {min_spans: 3}}
              - {name: no-health, type: drop, drop: {drop_sub_policy: [{name: many, type: span_count, span_count: {min_spans: 50}}]}}
            """, file: "t.yaml")
        let engine = PolicyEngine(set)
        for n in UInt64(1)...200 {
            for s in [summary(tid(n)), summary(tid(n), status: [.error]), summary(tid(n), spans: 4), summary(tid(n), spans: 60)] {
                let d = engine.decide(s)
                let e = set.explain(s)
                #expect(e.keep == d.keep, "\(s.traceID)")
                #expect((e.deciding ?? -1) == d.policy, "\(s.traceID)")
                if d.keep { #expect(e.weight == d.weight, "\(s.traceID)") }
            }
        }
        // A later certain keep is preferred to an earlier random one; a matching drop policy wins over everything.
        #expect(set.explain(summary(tid(1), status: [.error])).decidingName == "errors")
        let dropped = set.explain(summary(tid(1), status: [.error], spans: 60))
        #expect(!dropped.keep && dropped.decidingName == "no-health" && dropped.policies[3].outcome == .drop)
        #expect(dropped.text == "would drop by policy 'no-health' (drop)")
    }

    @Test func limitersAreNotAskedAndTheirBudgetIsNotSpent() throws {
        let set = try PolicySet.parse("""
            policies:
              - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
              - {name: some, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 1}}
            """, file: "t.yaml")
        // Explaining many times leaves the budget whole (one span per second, burst one).
        for _ in 0..<20 {
            let e = set.explain(summary(tid(1)))
            #expect(e.policies[1].outcome == .limited)
            #expect(!e.keep && e.undetermined == [1])
            #expect(e.text == "would drop: no policy matched (unless budget-limited 'some' admits it)")
        }
        #expect(PolicyEngine(set).decide(summary(tid(1), at: 5_000_000_000)).keep)
        // A certain keep does not depend on the limiter.
        let error = set.explain(summary(tid(2), status: [.error]))
        #expect(error.keep && error.decidingName == "errors" && error.undetermined.isEmpty)
    }
}
