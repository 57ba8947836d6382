import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire
import TailgateConfig

/// `tailgate check` warns where a combination's weight cannot be stated honestly. Each case: the policies (each file
/// ends with an independent 10 % catch-all, so every trace has a weight), the warnings expected (position, policy,
/// a phrase of the message), and whether the engine's weights are honest on 100,000 synthetic turns (Σ adjusted count
/// within 4 σ of the traces offered, no infinite weight): every warned case is shown to be really wrong, every case
/// without a warning to be right.
@Suite struct CheckWarningTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var what: String
        var policies: String
        /// (line, column, policy named, phrase)
        var warnings: [(Int, Int, String, String)]
        var honest: Bool
        /// Traces dropped by a `drop` policy are not counted as offered (a deterministic filter).
        var excludeDropped = false
        var testDescription: String { what }
    }

    static let catchAll = "  - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: rest}}\n"
    static let correlated = "is a source of its own, so the two are correlated"

    static let cases: [Case] = [
        // --- not ---
        Case(what: "not of a probabilistic policy on the catch-all's source: disjoint draws, weighed as independent",
             policies: "  - name: n\n    type: not\n    not: {not_sub_policy: {name: x, type: probabilistic, probabilistic: {sampling_percentage: 70, hash_salt: rest}}}\n",
             warnings: [(2, 11, "n", "draws on the trace-ID hash with the same hash_salt like policy 'rest'")], honest: false),
        Case(what: "not of a probabilistic policy on a source of its own: honest",
             policies: "  - name: n\n    type: not\n    not: {not_sub_policy: {name: x, type: probabilistic, probabilistic: {sampling_percentage: 70}}}\n",
             warnings: [], honest: true),
        Case(what: "not of a limiter: weighed 1 − an admission ratio",
             policies: "  - name: n\n    type: not\n    not: {not_sub_policy: {name: cap, type: rate_limiting, rate_limiting: {spans_per_second: 15000}}}\n",
             warnings: [(2, 11, "n", "keeps what the limiter 'cap' refuses")], honest: false),
        Case(what: "not of a conversation policy next to one with the same salt",
             policies: "  - name: n\n    type: not\n    not: {not_sub_policy: {name: x, type: conversation, conversation: {sampling_percentage: 70, hash_salt: s}}}\n"
                + "  - {name: c, type: conversation, conversation: {sampling_percentage: 20, hash_salt: s}}\n",
             warnings: [(2, 11, "n", "draws on the conversation hash with the same hash_salt like policy 'c'")], honest: false),
        // --- and ---
        Case(what: "and over two salts next to a probabilistic policy on one of them: correlated",
             policies: "  - name: a\n    type: and\n    and: {and_sub_policy: [{name: x, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: a}}, {name: y, type: probabilistic, probabilistic: {sampling_percentage: 20, hash_salt: b}}]}\n"
                + "  - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 30, hash_salt: a}}\n",
             warnings: [(2, 11, "a", "like policy 'p'")], honest: false),
        Case(what: "two ands over different salts: independent (each a source of its own), honest",
             policies: "  - name: a\n    type: and\n    and: {and_sub_policy: [{name: x, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: a}}, {name: y, type: probabilistic, probabilistic: {sampling_percentage: 20, hash_salt: b}}]}\n"
                + "  - name: b\n    type: and\n    and: {and_sub_policy: [{name: x, type: probabilistic, probabilistic: {sampling_percentage: 30, hash_salt: c}}, {name: y, type: probabilistic, probabilistic: {sampling_percentage: 40, hash_salt: d}}]}\n",
             warnings: [], honest: true),
        Case(what: "and of a percentage and the complement of another on the same salt: the conjunction is not the product",
             policies: "  - name: a\n    type: and\n    and:\n      and_sub_policy:\n        - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50, hash_salt: s}}\n"
                + "        - name: n\n          type: not\n          not: {not_sub_policy: {name: third, type: probabilistic, probabilistic: {sampling_percentage: 30, hash_salt: s}}}\n",
             warnings: [(7, 17, "n", "like policy 'half'")], honest: false),
        Case(what: "and of a percentage and a limiter (a capped baseline): honest",
             policies: "  - name: capped\n    type: and\n    and: {and_sub_policy: [{name: five, type: probabilistic, probabilistic: {sampling_percentage: 50}}, {name: cap, type: rate_limiting, rate_limiting: {spans_per_second: 4000}}]}\n",
             warnings: [], honest: true),
        Case(what: "and of a conversation policy and a percentage: honest",
             policies: "  - name: a\n    type: and\n    and: {and_sub_policy: [{name: c, type: conversation, conversation: {sampling_percentage: 50}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 40}}]}\n",
             warnings: [], honest: true),
        Case(what: "a conversation policy with the catch-all's salt: nested where no conversation is named, honest",
             policies: "  - {name: c, type: conversation, conversation: {sampling_percentage: 30, hash_salt: rest}}\n",
             warnings: [], honest: true),
        // --- drop ---
        Case(what: "drop at random: spared errors are written as certain",
             policies: "  - name: d\n    type: drop\n    drop: {drop_sub_policy: [{name: coin, type: probabilistic, probabilistic: {sampling_percentage: 50}}]}\n"
                + "  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n",
             warnings: [(2, 11, "d", "drops at random ('coin' is probabilistic)")], honest: false),
        Case(what: "drop on a deterministic condition: honest",
             policies: "  - name: d\n    type: drop\n    drop: {drop_sub_policy: [{name: big, type: span_count, span_count: {min_spans: 18}}]}\n"
                + "  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n",
             warnings: [], honest: true, excludeDropped: true),
        // --- composite ---
        Case(what: "composite whose errors fall through to the rest when their share runs out",
             policies: "  - name: budget\n    type: composite\n    composite:\n      max_total_spans_per_second: 8000\n      policy_order: [errors, rest-of-it]\n"
                + "      composite_sub_policy:\n        - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n        - {name: rest-of-it, type: always_sample}\n"
                + "      rate_allocation: [{policy: errors, percent: 1}, {policy: rest-of-it, percent: 99}]\n",
             warnings: [(2, 11, "budget", "a trace refused by the share of 'errors' falls through to 'rest-of-it'")], honest: false),
        Case(what: "composite of one sub-policy: honest",
             policies: "  - name: budget\n    type: composite\n    composite: {max_total_spans_per_second: 8000, composite_sub_policy: [{name: all, type: always_sample}]}\n",
             warnings: [], honest: true),
        // --- plain ---
        Case(what: "limiter alone: honest",
             policies: "  - {name: cap, type: rate_limiting, rate_limiting: {spans_per_second: 4000}}\n",
             warnings: [], honest: true),
    ]

    static func text(_ c: Case) -> String { "policies:\n" + c.policies + catchAll }

    @Test(arguments: cases) func warnings(_ c: Case) throws {
        let set = try PolicySet.parse(Self.text(c), file: "p.yaml")
        let got = set.weightWarnings(file: "p.yaml")
        #expect(got.count == c.warnings.count, "\(got)")
        for (d, (line, column, name, phrase)) in zip(got, c.warnings) {
            #expect(d.severity == .warning)
            #expect((d.line, d.column) == (line, column), "\(d)")
            #expect(d.message.hasPrefix("the weight of ") && d.message.contains("'\(name)'"), "\(d)")
            #expect(d.message.contains(phrase), "\(d)")
            #expect(d.message.contains("; hint: "), "\(d)")
            #expect(d.description.hasPrefix("p.yaml:\(line):\(column): warning: the weight of "))
        }
        // A warning never makes the file invalid, and the parse warnings are not affected.
        #expect(set.warnings.isEmpty)
    }

    /// What the engine does on each combination: the warned ones give wrong adjusted counts, the others do not.
    @Test(arguments: cases) func weightsMatchTheWarnings(_ c: Case) throws {
        let set = try PolicySet.parse(Self.text(c), file: "p.yaml")
        let e = Conversations.estimate(set, Conversations.population(), excludeDropped: c.excludeDropped)
        print("check warnings: \(c.what): \(e)")
        #expect(e.honest == c.honest, "\(c.what): \(e)")
    }

    /// The shipped files: the weight warnings `tailgate check` prints for them (the Collector-compatible file's
    /// composite falls through, as the Collector's does; the LLM file's baseline has its own salt).
    @Test func shippedFiles() throws {
        let repo = URLBase.repoRoot
        for (file, expected) in [("default.yaml", 0), ("llm-agents.yaml", 0), ("otel-compat.yaml", 1)] {
            let path = repo + "/policies/" + file
            let set = try PolicySet.load(path: path)
            let warnings = set.weightWarnings(file: path)
            #expect(warnings.count == expected, "\(file): \(warnings)")
        }
    }
}

enum URLBase {
    /// The repository root (three levels above this file).
    static var repoRoot: String {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }
}
