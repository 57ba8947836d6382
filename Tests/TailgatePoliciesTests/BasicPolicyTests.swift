import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire

@Suite struct StatusCodePolicyTests {
    @Test(arguments: [
        ([StatusCode.error], [StatusCode.ok, .error], true),
        ([.error], [.ok, .unset], false),
        ([.error], [], false),
        ([.ok, .unset], [.ok], true),
        ([.unset], [.error], false),
    ] as [([StatusCode], [StatusCode], Bool)])
    func keeps(codes: [StatusCode], seen: [StatusCode], expected: Bool) {
        #expect(StatusCodePolicy(codes: codes).evaluate(summary(status: seen)).isSample == expected)
    }

    @Test func anErrorInAnotherServiceKeepsTheTrace() throws {
        let resources = [
            TestResource(service: "agent", spans: [span(1), span(2)]),
            TestResource(service: "tools", spans: [span(3, parent: 2, status: .error)]),
        ]
        #expect(try decide("{name: e, type: status_code, status_code: {status_codes: [ERROR]}}", resources).keep)
    }
}

@Suite struct LatencyPolicyTests {
    @Test(arguments: [
        (Int64(1000), Int64?.none, UInt64(999_999_999), false),
        (1000, nil, 1_000_000_000, true),   // exactly the threshold keeps
        (1000, 2000, 1_000_000_000, false),  // with an upper bound, the lower one is exclusive (the Collector's rule)
        (1000, 2000, 1_001_000_000, true),
        (1000, 2000, 2_000_000_000, true),
        (1000, 2000, 2_000_000_001, true),  // whole milliseconds, truncated: 2000
        (1000, 2000, 2_001_000_000, false),
        (0, nil, 0, true),
    ] as [(Int64, Int64?, UInt64, Bool)])
    func keeps(threshold: Int64, upper: Int64?, durationNanos: UInt64, expected: Bool) {
        let policy = LatencyPolicy(thresholdMs: threshold, upperThresholdMs: upper)
        #expect(policy.evaluate(summary(start: 5_000, end: 5_000 + durationNanos)).isSample == expected)
    }
}

@Suite struct SpanCountPolicyTests {
    @Test(arguments: [(5, Int?.none, 4, false), (5, nil, 5, true), (5, 10, 10, true), (5, 10, 11, false), (0, nil, 1, true)])
    func keeps(min: Int, max: Int?, spans: Int, expected: Bool) {
        #expect(SpanCountPolicy(minSpans: min, maxSpans: max).evaluate(summary(spans: spans)).isSample == expected)
    }
}

@Suite struct AlwaysSamplePolicyTests {
    @Test func keepsEverything() throws {
        #expect(try decide("{name: all, type: always_sample}", trace([span(1)])) == Decision(keep: true, policy: 0, generation: 0))
    }
}

@Suite struct ProbabilisticPolicyTests {
    @Test(arguments: [0.0, 1.0, 10.0, 50.0, 100.0])
    func keepsTheConfiguredShareByHash(percentage: Double) {
        let policy = ProbabilisticPolicy(percentage: percentage)
        let n = 20_000
        var kept = 0
        for i in 0..<n {
            let id = TraceID(hi: UInt64(i) &* 0x9E37_79B9_7F4A_7C15, lo: UInt64(i) &+ 0x1234_5678)
            if policy.evaluate(summary(id)).isSample { kept += 1 }
        }
        let share = Double(kept) / Double(n) * 100
        #expect(abs(share - percentage) < 1.0, "kept \(share)% for \(percentage)%")
        if percentage == 0 { #expect(kept == 0) }
        if percentage == 100 { #expect(kept == n) }
    }

    @Test func decisionIsTheHashRuleAndCarriesItsProbability() {
        // Expected values from python-xxhash: xxh3_64(bytes.fromhex(id)) = 519413188669670458,
        // which is below 10% of 2^64 (1844674407370955264): kept at 10%, dropped at 2%.
        let id = TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!
        #expect(ProbabilisticPolicy(percentage: 10).evaluate(summary(id)) == .sample(probability: 0.1))
        #expect(ProbabilisticPolicy(percentage: 2).evaluate(summary(id)) == .notSampled)
        #expect(ProbabilisticPolicy(percentage: 10).threshold == 1_844_674_407_370_955_264)
        // With a salt the seed is xxh3("salt") = 11229228473275659907.
        #expect(ProbabilisticPolicy(percentage: 10, salt: "salt").seed == 11_229_228_473_275_659_907)
    }
}

@Suite struct EngineTests {
    @Test func firstKeepingPolicyInFileOrderIsRecorded() throws {
        let set = try PolicySet.parse("""
            policies:
              - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
              - {name: slow, type: latency, latency: {threshold_ms: 1000}}
              - {name: all, type: always_sample}
            """, file: "t.yaml")
        let engine = PolicyEngine(set)
        #expect(engine.decide(summary(status: [.error], start: 0, end: 5_000_000_000)).policy == 0)
        #expect(engine.decide(summary(start: 0, end: 5_000_000_000)).policy == 1)
        #expect(engine.decide(summary()).policy == 2)
    }

    @Test func aCertainKeepWinsOverAnEarlierProbabilisticOne() throws {
        let set = try PolicySet.parse("""
            policies:
              - {name: sample, type: probabilistic, probabilistic: {sampling_percentage: 100}}
              - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 50}}
              - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
            """, file: "t.yaml")
        let engine = PolicyEngine(set)
        // 100% is certain: recorded at once.
        #expect(engine.decide(summary(status: [.error])) == Decision(keep: true, policy: 0))
        let half = try PolicySet.parse("""
            policies:
              - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 50}}
              - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
            """, file: "t.yaml")
        let id = TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!  // inside 50%
        #expect(PolicyEngine(half).decide(summary(id, status: [.error])) == Decision(keep: true, policy: 1))
        #expect(PolicyEngine(half).decide(summary(id)) == Decision(keep: true, policy: 0, probability: 0.5))
    }

    @Test func nothingMatchingDrops() throws {
        let set = try PolicySet.parse("policies: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}]", file: "t.yaml")
        #expect(PolicyEngine(set).decide(summary(status: [.ok])) == .noMatch)
    }

    @Test func defaultPoliciesAreTheMissionsPolicy() {
        let engine = PolicyEngine(PolicySet.builtIn())
        #expect(engine.policyNames == ["errors", "expensive", "baseline"])
        #expect(engine.decide(summary(status: [.error])).policy == 0)
        #expect(engine.decide(summary(tokensIn: 6_000, tokensOut: 4_000)).policy == 1)
        let id = TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!  // inside the 10%
        #expect(engine.decide(summary(id, tokensIn: 9_999)).policy == 2)
    }

    @Test func dryRunKeepsEverythingAndSaysWhatWouldHappen() throws {
        let set = try PolicySet.parse("policies: [{name: e, type: status_code, status_code: {status_codes: [ERROR]}}]", file: "t.yaml")
        let runtime = PolicyRuntime(set, generation: 3, dryRun: true)
        #expect(runtime.decide(summary(status: [.ok])) == Decision(keep: true, policy: -1, dryRunKeep: false, generation: 3))
        #expect(runtime.decide(summary(status: [.error])) == Decision(keep: true, policy: 0, dryRunKeep: true, generation: 3))
    }
}
