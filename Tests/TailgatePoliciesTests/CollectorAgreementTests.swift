import Foundation
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire
import TailgateConfig
import TailgateImport

// Where Tailgate's policies and `tailgate import-otel` must agree with the OpenTelemetry Collector's `tail_sampling`
// processor (opentelemetry-collector-contrib, processor/tailsamplingprocessor). Every case runs through the real
// parser and engine; the import cases through `CollectorImport.convert` and then the parser `tailgate check` uses.

// MARK: - latency: lower bound inclusive alone, exclusive with an upper bound; whole milliseconds

/// One trace of two spans, the first spanning `durationNanos`, decided through the real scanner, buffer and engine.
struct LatencyAgreementCase: Sendable, CustomTestStringConvertible {
    var latency: String
    var durationNanos: UInt64
    var keep: Bool
    var testDescription: String { "latency \(latency), \(Double(durationNanos) / 1e6) ms → \(keep ? "keep" : "drop")" }
}

@Suite struct LatencyAgreementTests {
    static let ms: UInt64 = 1_000_000

    // internal/sampling/latency.go: without an upper bound `duration.Milliseconds() >= thresholdMs`; with one
    // `thresholdMs < duration.Milliseconds() && duration.Milliseconds() <= upperThresholdMs` (Milliseconds truncates).
    static let cases: [LatencyAgreementCase] = [
        .init(latency: "{threshold_ms: 1000}", durationNanos: 1000 * ms, keep: true),
        .init(latency: "{threshold_ms: 1000}", durationNanos: 1000 * ms - 1, keep: false),
        .init(latency: "{threshold_ms: 1000, upper_threshold_ms: 0}", durationNanos: 1000 * ms, keep: true),
        .init(latency: "{threshold_ms: 1000, upper_threshold_ms: 2000}", durationNanos: 1000 * ms, keep: false),
        .init(latency: "{threshold_ms: 1000, upper_threshold_ms: 2000}", durationNanos: 1000 * ms + ms / 2, keep: false),
        .init(latency: "{threshold_ms: 1000, upper_threshold_ms: 2000}", durationNanos: 1001 * ms, keep: true),
        .init(latency: "{threshold_ms: 1000, upper_threshold_ms: 2000}", durationNanos: 2000 * ms, keep: true),
        .init(latency: "{threshold_ms: 1000, upper_threshold_ms: 2000}", durationNanos: 2000 * ms + 900_000, keep: true),
        .init(latency: "{threshold_ms: 1000, upper_threshold_ms: 2000}", durationNanos: 2001 * ms, keep: false),
        .init(latency: "{threshold_ms: 0, upper_threshold_ms: 5}", durationNanos: 0, keep: false),
    ]

    @Test(arguments: cases)
    func agreesWithTheCollector(_ c: LatencyAgreementCase) throws {
        let set = try PolicySet.parse("policies: [{name: slow, type: latency, latency: \(c.latency)}]", file: "t.yaml")
        let start: UInt64 = 1_000_000_000
        let spans = [
            TestSpan(trace: tid(77), span: 1, start: start, end: start + c.durationNanos),
            TestSpan(trace: tid(77), span: 2, parent: 1, start: start + 10, end: start + 20),
        ]
        let decision = run(PolicyRuntime(set), [TestResource(service: "agent", spans: spans)])
        #expect(decision.keep == c.keep)
    }
}

// MARK: - rate_limiting (token bucket, burst) and composite (percent 0): stateful, on the decision clock

/// Traces offered to the engine in order: `count` traces of `spans` spans with `status`, decided at `at` seconds.
struct BudgetRound: Sendable {
    var count: Int
    var spans: Int
    var status: StatusCode? = nil
    var at: Double
    /// How many of them are kept.
    var kept: Int
    /// The probability every kept one carries, when checked.
    var probability: Double? = nil
}

struct BudgetAgreementCase: Sendable, CustomTestStringConvertible {
    var label: String
    var policies: String
    var rounds: [BudgetRound]
    var testDescription: String { label }
}

@Suite struct BudgetAgreementTests {
    static let statusSubPolicies = """
        composite_sub_policy:
          - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
          - {name: oks, type: status_code, status_code: {status_codes: [OK]}}
          - {name: unsets, type: status_code, status_code: {status_codes: [UNSET]}}
        """

    static func composite(total: Int, allocation: String, subs: String = statusSubPolicies) -> String {
        let indented = subs.split(separator: "\n").map { "      " + $0 }.joined(separator: "\n")
        return """
            policies:
              - name: budget
                type: composite
                composite:
                  max_total_spans_per_second: \(total)
            \(indented)
                  rate_allocation: \(allocation)
            """
    }

    static let cases: [BudgetAgreementCase] = [
        // internal/sampling/rate_limiting.go: NewRateLimiting uses a token bucket of burst spansPerSecond*2; the
        // bucket starts full (golang.org/x/time/rate) and refills continuously.
        BudgetAgreementCase(label: "rate_limiting: default burst is twice the rate", policies: """
            policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 100}}]
            """, rounds: [
                BudgetRound(count: 30, spans: 10, at: 7, kept: 20),
                BudgetRound(count: 10, spans: 10, at: 7.5, kept: 5),  // 0.5 s refills 50 spans
            ]),
        // processor.go: burst_capacity > 0 selects NewRateLimitingWithBurstCapacity, otherwise the default.
        BudgetAgreementCase(label: "rate_limiting: burst_capacity 0 is the default", policies: """
            policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 100, burst_capacity: 0}}]
            """, rounds: [BudgetRound(count: 30, spans: 10, at: 7, kept: 20)]),
        BudgetAgreementCase(label: "rate_limiting: burst_capacity bounds the bucket", policies: """
            policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 100, burst_capacity: 50}}]
            """, rounds: [
                BudgetRound(count: 30, spans: 10, at: 7, kept: 5),
                BudgetRound(count: 5, spans: 10, at: 7.25, kept: 2),  // 25 spans refilled
                BudgetRound(count: 3, spans: 10, at: 60, kept: 3),  // refilled up to the burst, no further
                BudgetRound(count: 3, spans: 10, at: 60, kept: 2),
            ]),
        BudgetAgreementCase(label: "rate_limiting: a trace larger than the burst is never kept", policies: """
            policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 100, burst_capacity: 50}}]
            """, rounds: [
                BudgetRound(count: 1, spans: 60, at: 7, kept: 0),
                BudgetRound(count: 1, spans: 60, at: 100, kept: 0),
                BudgetRound(count: 1, spans: 50, at: 100, kept: 1),
            ]),
        BudgetAgreementCase(label: "rate_limiting: weights state the previous second's admission ratio", policies: """
            policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 100, burst_capacity: 50}}]
            """, rounds: [
                BudgetRound(count: 10, spans: 10, at: 7, kept: 5, probability: 1),  // 5 of 5 so far, each time
                BudgetRound(count: 1, spans: 10, at: 8, kept: 1, probability: 0.5),  // 5 of the 10 offered at 7 s
            ]),
        // composite_helper.go, getRateAllocationMap: a percent not above 0 gets maxTotalSPS / len(SubPolicyCfg).
        BudgetAgreementCase(label: "composite: percent 0 is the total divided by the number of sub-policies",
                            policies: composite(total: 120, allocation: "[{policy: errors, percent: 0}, {policy: oks, percent: 50}]"),
                            rounds: [
                                BudgetRound(count: 10, spans: 10, status: .error, at: 5, kept: 4),  // 120 / 3 = 40 spans
                                BudgetRound(count: 10, spans: 10, status: .ok, at: 5, kept: 6),  // 50 % = 60 spans
                                BudgetRound(count: 10, spans: 10, status: .unset, at: 5, kept: 2),  // the rest: 20 spans
                                BudgetRound(count: 10, spans: 10, status: .error, at: 6, kept: 4),  // the next second
                            ]),
        BudgetAgreementCase(label: "composite: percent 0 with two sub-policies is half the total",
                            policies: composite(total: 100, allocation: "[{policy: errors, percent: 0}, {policy: oks, percent: 0}]", subs: """
                                composite_sub_policy:
                                  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
                                  - {name: oks, type: status_code, status_code: {status_codes: [OK]}}
                                """),
                            rounds: [
                                BudgetRound(count: 10, spans: 10, status: .error, at: 5, kept: 5),
                                BudgetRound(count: 10, spans: 10, status: .ok, at: 5, kept: 5),
                            ]),
        BudgetAgreementCase(label: "composite: every percent 0 splits the total evenly",
                            policies: composite(total: 90, allocation: """
                                [{policy: errors, percent: 0}, {policy: oks, percent: 0}, {policy: unsets, percent: 0}]
                                """),
                            rounds: [
                                BudgetRound(count: 5, spans: 10, status: .error, at: 5, kept: 3),
                                BudgetRound(count: 5, spans: 10, status: .ok, at: 5, kept: 3),
                                BudgetRound(count: 5, spans: 10, status: .unset, at: 5, kept: 3),
                            ]),
    ]

    @Test(arguments: cases)
    func agreesWithTheCollector(_ c: BudgetAgreementCase) throws {
        let set = try PolicySet.parse(c.policies, file: "t.yaml")
        #expect(set.warnings.isEmpty, "\(set.warnings)")
        let engine = PolicyEngine(set)
        var next: UInt64 = 1
        for (index, round) in c.rounds.enumerated() {
            var kept = 0
            for _ in 0..<round.count {
                let trace = summary(tid(next), status: round.status.map { [$0] } ?? [], spans: round.spans,
                                    at: UInt64(round.at * 1e9))
                next += 1
                let decision = engine.decide(trace)
                guard decision.keep else { continue }
                kept += 1
                if let p = round.probability { #expect(abs(decision.probability - p) < 1e-9, "round \(index)") }
            }
            #expect(kept == round.kept, "round \(index)")
        }
    }
}

// MARK: - what `tailgate check` says

@Suite struct CheckAgreementTests {
    /// Diagnostics as "severity: message" (positions are covered by PolicyFileTests).
    static func messages(_ text: String) -> [String] {
        do {
            return try PolicySet.parse(text, file: "p.yaml").warnings.map { "\($0.severity.rawValue): \($0.message)" }
        } catch {
            return error.diagnostics.map { "\($0.severity.rawValue): \($0.message)" }
        }
    }

    static func composite(_ allocation: String) -> String {
        """
        policies:
          - name: c
            type: composite
            composite:
              max_total_spans_per_second: 100
              composite_sub_policy: [{name: a, type: always_sample}, {name: b, type: always_sample}]
              rate_allocation: [\(allocation)]
        """
    }

    @Test(arguments: [
        // Out of range: the range error only, not also "needs 'policy' and 'percent'".
        (composite("{policy: a, percent: 200}"), ["error: percent must be between 0 and 100, got 200"]),
        (composite("{policy: a, percent: -1}"), ["error: percent must be between 0 and 100, got -1"]),
        (composite("{policy: a, percent: lots}"), ["error: percent must be a number, got 'lots'"]),
        (composite("{policy: a}"), ["error: a rate allocation needs 'policy' and 'percent'"]),
        (composite("{policy: a, percentage: 5}"), [
            "error: unknown key 'percentage' in a rate allocation; expected one of: policy, percent",
            "error: a rate allocation needs 'policy' and 'percent'",
        ]),
        // percent 0 is the default share (50 of 100 here) and counts toward the 100.
        (composite("{policy: a, percent: 0}, {policy: b, percent: 80}"), [
            "error: rate_allocation percentages add up to 130, more than 100 (percent 0 stands for the default share, "
                + "100 / 2 sub-policies = 50)",
        ]),
        (composite("{policy: a, percent: 0}, {policy: b, percent: 50}"), []),
        (composite("{policy: a, percent: 0}, {policy: b, percent: 0}"), []),
        // latency: with an upper bound, threshold_ms is exclusive.
        ("policies: [{name: l, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 500}}]", [
            "error: upper_threshold_ms (500) equals threshold_ms: with an upper bound, threshold_ms is exclusive (as in the "
                + "Collector), so no trace can match",
        ]),
        ("policies: [{name: l, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 501}}]", []),
        // rate_limiting: burst_capacity is a known key.
        ("policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 10, burst_capacity: 25}}]", []),
        ("policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 10, burst_capacity: -1}}]",
         ["error: burst_capacity must be between 0 and 4294967294, got -1"]),
        ("policies: [{name: r, type: rate_limiting, rate_limiting: {burst_capacity: 10}}]",
         ["error: rate_limiting policy needs 'spans_per_second'"]),
        // A zero rate with a burst passes the burst once: not "never keeps".
        ("policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 0, burst_capacity: 10}}]", []),
    ] as [(String, [String])])
    func reportsWhatTheCollectorWouldNotAccept(text: String, expected: [String]) {
        #expect(Self.messages(text) == expected)
    }
}

// MARK: - import-otel, then check

struct ImportAgreementCase: Sendable, CustomTestStringConvertible {
    enum Outcome: Sendable {
        /// The import succeeds; the output passes `check` and contains these lines, the notes these phrases, and a
        /// plain one-span trace is kept or not.
        case imports(lines: [String], notes: [String], keepsPlainTrace: Bool?)
        /// The import fails with errors containing these phrases.
        case fails([String])
    }

    var label: String
    var policies: String
    var outcome: Outcome
    var testDescription: String { label }
}

@Suite struct ImportAgreementTests {
    static func collector(_ policies: String) -> String {
        let indented = policies.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.isEmpty ? "" : "      " + $0 }.joined(separator: "\n")
        return "processors:\n  tail_sampling:\n    policies:\n" + indented + "\n"
    }

    static let composite = """
        - name: budget
          type: composite
          composite:
            max_total_spans_per_second: 100
            composite_sub_policy:
              - {name: a, type: always_sample}
              - {name: b, type: always_sample}
            rate_allocation:
        """

    static let cases: [ImportAgreementCase] = [
        // string_tag_filter.go / trace_state_filter.go: no values, nothing to match.
        ImportAgreementCase(label: "string_attribute with values: [] matches nothing", policies: """
            - {name: p, type: string_attribute, string_attribute: {key: k, values: []}}
            """, outcome: .imports(lines: ["    type: probabilistic", "      sampling_percentage: 0",
                                            "  # imported: no 'values': matches no trace; written as a probabilistic policy of 0 %, which keeps no trace either"],
                                    notes: ["'values' is empty, so the Collector's policy matches no trace"], keepsPlainTrace: false)),
        ImportAgreementCase(label: "string_attribute without values matches nothing", policies: """
            - {name: p, type: string_attribute, string_attribute: {key: k, enabled_regex_matching: true}}
            """, outcome: .imports(lines: ["      sampling_percentage: 0"], notes: ["matches no trace"], keepsPlainTrace: false)),
        // invertHasResourceOrSpanWithCondition: nothing can exclude a trace.
        ImportAgreementCase(label: "string_attribute with values: [] and invert_match matches everything", policies: """
            - {name: p, type: string_attribute, string_attribute: {key: k, values: [], invert_match: true}}
            """, outcome: .imports(lines: ["    type: always_sample"], notes: ["matches every trace"], keepsPlainTrace: true)),
        ImportAgreementCase(label: "trace_state with values: [] matches nothing", policies: """
            - {name: p, type: trace_state, trace_state: {key: vendor, values: []}}
            - {name: e, type: status_code, status_code: {status_codes: [ERROR]}}
            """, outcome: .imports(lines: ["      sampling_percentage: 0", "    type: status_code"], notes: ["matches no trace"],
                                    keepsPlainTrace: false)),
        ImportAgreementCase(label: "an empty values list inside and makes the and match nothing", policies: """
            - name: p
              type: and
              and:
                and_sub_policy:
                  - {name: all, type: always_sample}
                  - {name: none, type: string_attribute, string_attribute: {key: k, values: []}}
            """, outcome: .imports(lines: ["          type: probabilistic"], notes: ["policy 'none' in 'p' (string_attribute)"],
                                    keepsPlainTrace: false)),
        // processor.go: NewStatusCodeFilter fails on an empty list, so the Collector does not start.
        ImportAgreementCase(label: "status_codes: [] is refused by the Collector too", policies: """
            - {name: p, type: status_code, status_code: {status_codes: []}}
            """, outcome: .fails(["policy 'p' (status_code): 'status_codes' is empty: the Collector refuses to start with it"])),
        // probabilistic.go: calculateThreshold saturates (big.Float.Uint64 clamps to 0 and MaxUint64).
        ImportAgreementCase(label: "sampling_percentage above 100 is 100", policies: """
            - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 150}}
            """, outcome: .imports(lines: ["      sampling_percentage: 100",
                                            "  # imported: sampling_percentage 150 written as 100, what the Collector applies"],
                                    notes: ["sampling_percentage 150 is above 100; written as 100"], keepsPlainTrace: true)),
        ImportAgreementCase(label: "sampling_percentage below 0 is 0", policies: """
            - {name: p, type: probabilistic, probabilistic: {sampling_percentage: -5}}
            """, outcome: .imports(lines: ["      sampling_percentage: 0"], notes: ["sampling_percentage -5 is below 0; written as 0"],
                                    keepsPlainTrace: false)),
        // composite.go caps every sub-policy at maxTotalSPS as well as at its own share.
        ImportAgreementCase(label: "composite percent 200 is 100", policies: composite + """

                - {policy: a, percent: 200}
            """, outcome: .imports(lines: ["          percent: 100", "  # imported: percent 200 written as 100, what the Collector applies"],
                                    notes: ["percent 200 is above 100; written as 100"], keepsPlainTrace: true)),
        // composite_helper.go: a percent not above 0 is the default share, as Tailgate's percent 0.
        ImportAgreementCase(label: "composite percent below 0 is 0, the default share", policies: composite + """

                - {policy: a, percent: -10}
                - {policy: b, percent: 50}
            """, outcome: .imports(lines: ["          percent: 0", "          percent: 50"], notes: ["percent -10 is below 0; written as 0"],
                                    keepsPlainTrace: true)),
        ImportAgreementCase(label: "composite percent 0 keeps the Collector's divisor when a sub-policy is left out", policies: """
            - name: budget
              type: composite
              composite:
                max_total_spans_per_second: 90
                composite_sub_policy:
                  - {name: a, type: always_sample}
                  - {name: b, type: always_sample}
                  - {name: c, type: ottl_condition, ottl_condition: {span: ['name == "x"']}}
                rate_allocation:
                  - {policy: a, percent: 0}
                  - {policy: c, percent: 10}
            """, outcome: .imports(lines: ["          percent: 33.3333"],
                                    notes: ["percent 0 of 'a' is the Collector's default share, max_total_spans_per_second / 3 sub-policies"],
                                    keepsPlainTrace: true)),
        ImportAgreementCase(label: "a rate_allocation of no sub-policy is removed, as the Collector ignores it", policies: composite + """

                - {policy: a, percent: 50}
                - {policy: zz, percent: 80}
            """, outcome: .imports(lines: ["          percent: 50"], notes: ["removed the rate_allocation of 'zz', which is not one of its sub-policies"],
                                    keepsPlainTrace: true)),
        ImportAgreementCase(label: "composite shares over 100 cannot be translated", policies: composite + """

                - {policy: a, percent: 60}
                - {policy: b, percent: 60}
            """, outcome: .fails(["policy 'budget' (composite): the rate_allocation shares add up to 120 %"])),
        ImportAgreementCase(label: "clamped composite shares over 100 cannot be translated either", policies: composite + """

                - {policy: a, percent: 200}
                - {policy: b, percent: 0}
            """, outcome: .fails(["add up to 150 %", "lower the percents so that they add up to at most 100"])),
        // latency.go: with an upper bound, thresholdMs < d <= upperThresholdMs.
        ImportAgreementCase(label: "latency bounds that leave no room match nothing", policies: """
            - {name: p, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 500}}
            - {name: q, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}
            """, outcome: .imports(lines: ["      sampling_percentage: 0"],
                                    notes: ["upper_threshold_ms (500) is not above threshold_ms (500)", "upper_threshold_ms (100) is not above threshold_ms (500)"],
                                    keepsPlainTrace: false)),
        ImportAgreementCase(label: "rate_limiting keeps its burst_capacity", policies: """
            - {name: p, type: rate_limiting, rate_limiting: {spans_per_second: 100, burst_capacity: 400}}
            """, outcome: .imports(lines: ["      burst_capacity: 400"], notes: [], keepsPlainTrace: true)),
        ImportAgreementCase(label: "every untranslatable policy is reported at once", policies: """
            - {name: p, type: status_code, status_code: {}}
            - {name: q, type: status_code}
            """, outcome: .fails(["policy 'p' (status_code): 'status_codes' is empty", "policy 'q' (status_code): 'status_codes' is empty"])),
    ]

    @Test(arguments: cases)
    func importedFilesPassCheckOrTheImportSaysWhy(_ c: ImportAgreementCase) throws {
        switch c.outcome {
        case .imports(let lines, let notes, let keeps):
            let result = try CollectorImport.convert(Self.collector(c.policies), file: "otel.yaml")
            let written = result.policiesYAML.split(separator: "\n").map(String.init)
            for line in lines { #expect(written.contains(line), "\(line)\n--- in ---\n\(result.policiesYAML)") }
            for phrase in notes { #expect(result.notes.contains { $0.message.contains(phrase) }, "\(phrase): \(result.notes)") }
            if notes.isEmpty { #expect(result.notes.isEmpty, "\(result.notes)") }
            // What `tailgate check` does with the file: no errors (warnings allowed).
            let set: PolicySet
            do {
                set = try PolicySet.parse(result.policiesYAML, file: "imported.yaml")
            } catch {
                Issue.record("check rejects the imported file:\n\(error)\n--- file ---\n\(result.policiesYAML)")
                return
            }
            if let keeps {
                #expect(PolicyEngine(set).decide(summary(tid(1), spans: 1, at: 1_000_000_000)).keep == keeps)
            }
        case .fails(let phrases):
            #expect {
                _ = try CollectorImport.convert(Self.collector(c.policies), file: "otel.yaml")
            } throws: { error in
                let text = (error as? DiagnosticsError)?.description ?? ""
                return !phrases.isEmpty && phrases.allSatisfy { text.contains($0) } && text.contains("otel.yaml:")
            }
        }
    }
}
