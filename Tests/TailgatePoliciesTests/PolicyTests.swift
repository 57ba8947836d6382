import Foundation
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire

func summary(_ id: TraceID = tid(1), status: [StatusCode] = [], tokensIn: Int64 = 0, tokensOut: Int64 = 0,
             start: UInt64 = 0, end: UInt64 = 0, spans: Int = 1) -> TraceSummary {
    var s = TraceSummary(traceID: id)
    s.spanCount = spans
    s.statusMask = status.reduce(0) { $0 | $1.bit }
    s.sums = SIMD4(tokensIn, tokensOut, 0, 0)
    s.earliestStart = start
    s.latestEnd = end
    return s
}

@Suite struct StatusCodePolicyTests {
    @Test(arguments: [
        ([StatusCode.error], [StatusCode.ok, .error], true),
        ([.error], [.ok, .unset], false),
        ([.error], [], false),
        ([.ok, .unset], [.ok], true),
        ([.unset], [.error], false),
    ] as [([StatusCode], [StatusCode], Bool)])
    func keeps(codes: [StatusCode], seen: [StatusCode], expected: Bool) {
        #expect(StatusCodePolicy(codes: codes).keeps(summary(status: seen)) == expected)
    }
}

@Suite struct LatencyPolicyTests {
    @Test(arguments: [
        (Int64(1000), Int64?.none, UInt64(999_999_999), false),
        (1000, nil, 1_000_000_000, true),   // exactly the threshold keeps
        (1000, 2000, 2_000_000_000, true),
        (1000, 2000, 2_000_000_001, false),
        (0, nil, 0, true),
    ] as [(Int64, Int64?, UInt64, Bool)])
    func keeps(threshold: Int64, upper: Int64?, durationNanos: UInt64, expected: Bool) {
        let policy = LatencyPolicy(thresholdMs: threshold, upperThresholdMs: upper)
        #expect(policy.keeps(summary(start: 5_000, end: 5_000 + durationNanos)) == expected)
    }
}

@Suite struct TokenUsagePolicyTests {
    @Test(arguments: [
        (Int64(10_000), Int64?.none, Int64(9_000), Int64(999), false),
        (10_000, nil, 9_000, 1_000, true),      // exactly the minimum keeps
        (10_000, nil, 0, 12_000, true),
        (100, 500, 400, 101, false),
        (100, 500, 400, 100, true),
    ] as [(Int64, Int64?, Int64, Int64, Bool)])
    func keeps(min: Int64, max: Int64?, input: Int64, output: Int64, expected: Bool) {
        var plan = AttributePlan()
        let policy = TokenUsagePolicy(minTotal: min, maxTotal: max, plan: &plan)
        #expect(plan.slots == [TokenUsagePolicy.inputKeys, TokenUsagePolicy.outputKeys])
        #expect(policy.keeps(summary(tokensIn: input, tokensOut: output)) == expected)
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
            if policy.keeps(summary(id)) { kept += 1 }
        }
        let share = Double(kept) / Double(n) * 100
        #expect(abs(share - percentage) < 1.0, "kept \(share)% for \(percentage)%")
        if percentage == 0 { #expect(kept == 0) }
        if percentage == 100 { #expect(kept == n) }
    }

    @Test func decisionIsTheHashRuleAndDependsOnTheSalt() {
        // Expected values from python-xxhash: xxh3_64(bytes.fromhex(id)) = 519413188669670458,
        // which is below 10% of 2^64 (1844674407370955264): kept at 10%, dropped at 2%.
        let id = TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!
        #expect(ProbabilisticPolicy(percentage: 10).keeps(summary(id)))
        #expect(!ProbabilisticPolicy(percentage: 2).keeps(summary(id)))
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
        #expect(engine.decide(summary(status: [.error], start: 0, end: 5_000_000_000)) == Decision(keep: true, policy: 0))
        #expect(engine.decide(summary(start: 0, end: 5_000_000_000)) == Decision(keep: true, policy: 1))
        #expect(engine.decide(summary()) == Decision(keep: true, policy: 2))
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
}

@Suite struct PolicyFileTests {
    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    @Test func builtInDefaultIsIdenticalToPoliciesDefaultYAML() throws {
        let file = try String(contentsOf: Self.repoRoot.appendingPathComponent("policies/default.yaml"), encoding: .utf8)
        #expect(file == PolicySet.defaultYAML)
    }

    @Test func everyFileInPoliciesDirectoryIsValid() throws {
        let dir = Self.repoRoot.appendingPathComponent("policies")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
        #expect(!files.isEmpty)
        for f in files {
            let set = try PolicySet.load(path: dir.appendingPathComponent(f).path)
            #expect(!set.policies.isEmpty, "\(f)")
            #expect(set.warnings.isEmpty, "\(f): \(set.warnings)")
        }
    }

    /// Each mistake: the text, and the diagnostics expected as "line:column: message fragment".
    @Test(arguments: [
        ("policies:\n  - name: a\n    type: status_cod\n", ["3:11: unknown policy type 'status_cod'; did you mean 'status_code'?"]),
        ("policies:\n  - name: a\n    type: probabilistic\n    probabilistic:\n      sampling_percentag: 10\n",
         ["5:7: unknown key 'sampling_percentag' in probabilistic; did you mean 'sampling_percentage'?",
          "4:5: probabilistic policy needs 'sampling_percentage'"]),
        ("policies:\n  - name: a\n    type: probabilistic\n    probabilistic: {sampling_percentage: 150}\n",
         ["4:42: sampling_percentage must be between 0 and 100, got 150"]),
        ("policies:\n  - name: a\n    type: latency\n    latency: {threshold_ms: 500, upper_threshold_ms: 100}\n",
         ["4:54: upper_threshold_ms (100) is below threshold_ms (500)"]),
        ("policies:\n  - {name: a, type: always_sample}\n  - {name: a, type: always_sample}\n",
         ["3:12: duplicate policy name 'a' (first defined at line 2)"]),
        ("policies:\n  - name: a\n    type: status_code\n    status_code: {status_codes: [EROR]}\n",
         ["4:34: unknown status code 'EROR'; expected ERROR, OK or UNSET; did you mean 'ERROR'?"]),
        ("policies:\n  - name: a\n    type: token_usage\n    token_usage: {min_total_tokens: lots}\n",
         ["4:37: min_total_tokens must be an integer, got 'lots'"]),
        ("policies:\n  - type: always_sample\n", ["2:5: policy needs a 'name'"]),
        ("policies:\n  - name: x\n    type: latency\n", ["3:11: latency policy needs a 'latency:' block"]),
        ("polices: []\n", ["1:1: unknown key 'polices' in the policies file; did you mean 'policies'?"]),
        ("policies: [\n", ["2:1: invalid YAML"]),
    ] as [(String, [String])])
    func mistakesAreReportedWithLineAndColumn(text: String, expected: [String]) {
        do {
            _ = try PolicySet.parse(text, file: "p.yaml")
            Issue.record("expected errors for:\n\(text)")
        } catch {
            let got = error.diagnostics.map { "\($0.line):\($0.column): \($0.message)" }
            #expect(got.count == expected.count, "\(got)")
            for (g, e) in zip(got, expected) {
                #expect(g.hasPrefix(e), "got \(g), expected \(e)")
            }
            #expect(error.diagnostics.allSatisfy { $0.description.hasPrefix("p.yaml:\($0.line):\($0.column): error: ") })
        }
    }

    @Test func everyProblemIsReportedAtOnce() {
        let text = """
            policies:
              - name: a
                type: nope
              - name: b
                type: probabilistic
                probabilistic: {sampling_percentage: -1}
            """
        #expect(throws: DiagnosticsError.self) { try PolicySet.parse(text, file: "p.yaml") }
        do { _ = try PolicySet.parse(text, file: "p.yaml") } catch { #expect(error.diagnostics.count == 2) }
    }
}

@Suite struct ValueParsingTests {
    @Test(arguments: [("500ms", 0.5), ("5s", 5.0), ("1m30s", 90.0), ("2h", 7200.0), ("0", 0.0), ("1.5s", 1.5)])
    func durations(text: String, seconds: Double) {
        let d = parseDuration(text)!
        #expect(abs(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 - seconds) < 1e-9)
    }

    @Test(arguments: ["", "5", "5x", "ms", "-1s"])
    func badDurations(text: String) { #expect(parseDuration(text) == nil) }

    @Test(arguments: [("4MiB", 4 << 20), ("64MB", 64_000_000), ("1024", 1024), ("512KiB", 512 << 10), ("1GiB", 1 << 30)])
    func sizes(text: String, bytes: Int) { #expect(parseSize(text) == bytes) }
}
