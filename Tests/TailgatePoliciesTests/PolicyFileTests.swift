import Foundation
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire
import TailgateConfig

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

    /// Each mistake: the text, and the diagnostics expected as "line:column: severity: message".
    @Test(arguments: [
        ("policies:\n  - name: a\n    type: status_cod\n", ["3:11: error: unknown policy type 'status_cod'; did you mean 'status_code'?"]),
        ("policies:\n  - name: a\n    type: probabilistic\n    probabilistic:\n      sampling_percentag: 10\n",
         ["5:7: error: unknown key 'sampling_percentag' in probabilistic; did you mean 'sampling_percentage'?",
          "4:5: error: probabilistic policy needs 'sampling_percentage' (0 to 100)"]),
        ("policies:\n  - name: a\n    type: probabilistic\n    probabilistic: {sampling_percentage: 150}\n",
         ["4:42: error: sampling_percentage must be between 0 and 100, got 150"]),
        ("policies:\n  - name: a\n    type: latency\n    latency: {threshold_ms: 500, upper_threshold_ms: 100}\n",
         ["4:54: error: upper_threshold_ms (100) is below threshold_ms (500): no trace can match"]),
        ("policies:\n  - {name: a, type: always_sample}\n  - {name: a, type: always_sample}\n",
         ["3:12: error: duplicate policy name 'a' (first defined at line 2)"]),
        ("policies:\n  - name: a\n    type: status_code\n    status_code: {status_codes: [EROR]}\n",
         ["4:34: error: unknown status code 'EROR'; expected ERROR, OK or UNSET; did you mean 'ERROR'?"]),
        ("policies:\n  - name: a\n    type: token_usage\n    token_usage: {min_total_tokens: lots}\n",
         ["4:37: error: min_total_tokens must be an integer, got 'lots'"]),
        ("policies:\n  - type: always_sample\n", ["2:5: error: policy needs a 'name'"]),
        ("policies:\n  - name: x\n    type: latency\n", ["3:11: error: latency policy needs a 'latency:' block, e.g. latency: {threshold_ms: 5000}"]),
        ("polices: []\n", ["1:1: error: unknown key 'polices' in the policies file; did you mean 'policies'?"]),
        ("policies: [\n", ["2:1: error: invalid YAML: did not find expected node content"]),
        // Bad regular expression, at the value.
        ("policies:\n  - name: r\n    type: string_attribute\n    string_attribute: {key: k, values: ['a(b'], enabled_regex_matching: true}\n",
         ["4:41: error: invalid regular expression 'a(b': expected ')'"]),
        // Impossible ranges.
        ("policies:\n  - name: n\n    type: numeric_attribute\n    numeric_attribute: {key: k, min_value: 10, max_value: 1}\n",
         ["4:59: error: max_value (1) is below min_value (10): no value can match"]),
        ("policies:\n  - name: s\n    type: span_count\n    span_count: {min_spans: 10, max_spans: 2}\n",
         ["4:44: error: max_spans (2) is below min_spans (10): no trace can match"]),
        // Sub-policy mistakes are found too, with their own positions.
        ("policies:\n  - name: a\n    type: and\n    and_sub_policy: []\n",
         ["4:5: error: unknown key 'and_sub_policy' in a policy; 'and_sub_policy' belongs inside the 'and:' block",
          "3:11: error: and policy needs a 'and:' block, e.g. and: {and_sub_policy: [...]}"]),
        ("policies:\n  - name: a\n    type: and\n    and:\n      and_sub_policy:\n        - {name: x, type: latncy}\n",
         ["6:27: error: unknown policy type 'latncy'; did you mean 'latency'?"]),
        ("policies:\n  - name: c\n    type: composite\n    composite:\n      max_total_spans_per_second: 10\n      policy_order: [erors]\n      composite_sub_policy: [{name: errors, type: always_sample}]\n",
         ["6:22: error: policy_order names 'erors', which is not in composite_sub_policy; did you mean 'errors'?"]),
        ("policies:\n  - name: a\n    type: numeric_attribute\n    numeric_attribute: {key: k, min_value: 1, scope: roots}\n",
         ["4:54: error: scope must be one of any, span, resource, root; got 'roots'; did you mean 'root'?"]),
        // Warnings: policies that can never keep anything.
        ("policies:\n  - name: never\n    type: probabilistic\n    probabilistic: {sampling_percentage: 0}\n  - {name: e, type: status_code, status_code: {status_codes: [ERROR]}}\n",
         ["2:11: warning: policy 'never' can never keep a trace"]),
        ("policies:\n  - {name: none, type: rate_limiting, rate_limiting: {spans_per_second: 0}}\n",
         ["2:12: warning: policy 'none' can never keep a trace", "1:1: warning: no policy can keep a trace: every trace will be dropped"]),
        ("policies:\n  - {name: n, type: not, not: {not_sub_policy: {name: all, type: always_sample}}}\n",
         ["2:12: warning: policy 'n' can never keep a trace", "1:1: warning: no policy can keep a trace: every trace will be dropped"]),
    ] as [(String, [String])])
    func mistakesAreReportedWithLineAndColumn(text: String, expected: [String]) {
        #expect(diagnostics(text) == expected)
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
        #expect(diagnostics(text).count == 2)
    }

    @Test func tooManyConditionsIsAnError() {
        var text = "policies:\n"
        for i in 0..<70 {
            text += "  - {name: p\(i), type: numeric_attribute, numeric_attribute: {key: k\(i), min_value: 1}}\n"
        }
        #expect(diagnostics(text).contains { $0.contains("more than 64 attribute conditions") })
    }
}
