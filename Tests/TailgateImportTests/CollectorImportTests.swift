import Foundation
import Testing
import Yams
@testable import TailgateImport
@testable import TailgatePolicies
import TailgateConfig

/// A Collector configuration whose tail_sampling processor lists `policies` (written at column 0, one YAML list).
private func collector(_ policies: String, settings: String = "") -> String {
    let indented = policies.split(separator: "\n", omittingEmptySubsequences: false)
        .map { $0.isEmpty ? "" : "      " + $0 }.joined(separator: "\n")
    return "processors:\n  tail_sampling:\n" + settings + "    policies:\n" + indented + "\n"
}

/// The output without its header comment.
private func body(_ result: CollectorImport) -> String {
    let lines = result.policiesYAML.split(separator: "\n", omittingEmptySubsequences: false)
    return lines.dropFirst().drop { $0.hasPrefix("# The import printed") }.joined(separator: "\n")
}

private func positioned(_ notes: [Diagnostic]) -> [String] {
    notes.map { "\($0.line):\($0.column): \($0.message)" }
}

@Suite struct CollectorImportRealisticTests {
    static let config = """
        receivers:
          otlp:
            protocols:
              grpc:
                endpoint: 0.0.0.0:4317
              http:
                endpoint: 0.0.0.0:4318

        processors:
          memory_limiter:
            check_interval: 1s
            limit_mib: 2000
          batch: {}
          tail_sampling:
            decision_wait: 10s
            decision_wait_after_root_received: 2s
            num_traces: 100000
            expected_new_traces_per_sec: 1000
            sample_on_first_match: true
            decision_cache:
              sampled_cache_size: 50000
              non_sampled_cache_size: 200000
            policies:
              - name: errors
                type: status_code
                status_code: {status_codes: [ERROR]}
              - name: slow
                type: latency
                latency: {threshold_ms: 5000, upper_threshold_ms: 60_000}
              - name: checkout-routes
                type: string_attribute
                string_attribute:
                  key: http.route
                  values: ["^/checkout/.*$", /cart]
                  enabled_regex_matching: true
                  cache_max_size: 500
              - name: baseline
                type: probabilistic
                probabilistic:
                  sampling_percentage: 12.50
                  hash_salt: "2024"
              - name: debug-flagged
                type: ottl_condition
                ottl_condition:
                  error_mode: ignore
                  span:
                    - attributes["debug"] == true
              - name: big-llm-traces
                type: and
                and:
                  and_sub_policy:
                    - name: many-spans
                      type: span_count
                      span_count: {min_spans: 50}
                    - name: is-llm
                      type: string_attribute
                      string_attribute: {key: gen_ai.system, values: [openai, anthropic]}
                    - name: sampled-flag
                      type: trace_flags
              - name: not-health
                type: not
                not:
                  not_sub_policy:
                    name: health
                    type: string_attribute
                    string_attribute: {key: http.target, values: [/health, /ready]}
              - name: drop-synthetic
                type: drop
                drop:
                  drop_sub_policy:
                    - name: synthetic
                      type: boolean_attribute
                      boolean_attribute: {key: synthetic, value: true}
              - name: budget
                type: composite
                composite:
                  max_total_spans_per_second: 1000
                  policy_order: [vip, premium-only, rest]
                  composite_sub_policy:
                    - name: vip
                      type: numeric_attribute
                      numeric_attribute: {key: customer.tier, min_value: 3, max_value: 5}
                    - name: premium-only
                      type: ottl_condition
                      ottl_condition: {span: ['attributes["plan"] == "premium"']}
                    - name: rest
                      type: always_sample
                  rate_allocation:
                    - policy: vip
                      percent: 60
                    - policy: premium-only
                      percent: 10
                    - policy: rest
                      percent: 30

        exporters:
          otlp:
            endpoint: tempo:4317
            tls:
              insecure: true

        service:
          pipelines:
            traces:
              receivers: [otlp]
              processors: [memory_limiter, tail_sampling, batch]
              exporters: [otlp]
        """

    static let expectedYAML = """
        # Tailgate policies imported from otelcol.yaml, processor 'tail_sampling' (tailgate import-otel).
        # The import printed 13 notes; '# imported:' lines mark the policies concerned.
        policies:
          - name: errors
            type: status_code
            status_code:
              status_codes:
                - ERROR

          - name: slow
            type: latency
            latency:
              threshold_ms: 5000
              upper_threshold_ms: 60_000

          # imported: dropped 'cache_max_size' (not needed)
          - name: checkout-routes
            type: string_attribute
            string_attribute:
              key: http.route
              values:
                - '^/checkout/.*$'
                - /cart
              enabled_regex_matching: true

          # imported: hashed with XXH3, not FNV-1a: same rate, different traces
          - name: baseline
            type: probabilistic
            probabilistic:
              sampling_percentage: 12.50
              hash_salt: '2024'

          # imported: left out 'debug-flagged': ottl_condition is not supported

          - name: big-llm-traces
            type: and
            and:
              and_sub_policy:
                - name: many-spans
                  type: span_count
                  span_count:
                    min_spans: 50
                - name: is-llm
                  type: string_attribute
                  string_attribute:
                    key: gen_ai.system
                    values:
                      - openai
                      - anthropic
                # imported: left out 'sampled-flag': trace_flags is not supported; 'big-llm-traces' now matches more traces

          - name: not-health
            type: not
            not:
              not_sub_policy:
                name: health
                type: string_attribute
                string_attribute:
                  key: http.target
                  values:
                    - /health
                    - /ready

          - name: drop-synthetic
            type: drop
            drop:
              drop_sub_policy:
                - name: synthetic
                  type: boolean_attribute
                  boolean_attribute:
                    key: synthetic
                    value: true

          # imported: removed 'premium-only' from policy_order
          # imported: removed the rate_allocation of 'premium-only'
          - name: budget
            type: composite
            composite:
              max_total_spans_per_second: 1000
              policy_order:
                - vip
                - rest
              composite_sub_policy:
                - name: vip
                  type: numeric_attribute
                  numeric_attribute:
                    key: customer.tier
                    min_value: 3
                    max_value: 5
                # imported: left out 'premium-only': ottl_condition is not supported; 'budget' no longer samples what it matched
                - name: rest
                  type: always_sample
              rate_allocation:
                - policy: vip
                  percent: 60
                - policy: rest
                  percent: 30

        """

    static let expectedNotes = [
        "15:5: 'decision_wait' is a processor setting, not a policy; the closest Tailgate configuration key is "
            + "buffer.idle_timeout (decide after this long without a new span; buffer.max_trace_age bounds the time from "
            + "the first span): `buffer: {idle_timeout: 10s}`",
        "16:5: 'decision_wait_after_root_received' is a processor setting, not a policy; it corresponds to Tailgate's "
            + "configuration key buffer.wait_after_root: `buffer: {wait_after_root: 2s}`",
        "17:5: 'num_traces' is a processor setting, not a policy; no direct equivalent: Tailgate bounds the buffered bytes, "
            + "not the number of traces, and over the bound decides the oldest traces early instead of dropping them: "
            + "`buffer: {max_buffered_bytes: 512MiB}`",
        "18:5: 'expected_new_traces_per_sec' is a processor setting, not a policy; no equivalent needed: it only pre-sizes "
            + "the Collector's memory; Tailgate's buffer grows as needed",
        "19:5: 'sample_on_first_match' is a processor setting, not a policy; no equivalent needed: Tailgate evaluates the "
            + "policies in order and records the first one that keeps a trace; decisions are the same, since any policy "
            + "keeping a trace keeps it",
        "20:5: 'decision_cache' is a processor setting, not a policy; it corresponds to Tailgate's configuration key "
            + "buffer.decision_cache_size (trace IDs of kept and of dropped traces remembered for late spans, up to this "
            + "many each): `buffer: {decision_cache_size: 200000}`",
        "36:11: policy 'checkout-routes': dropped 'cache_max_size': Tailgate compiles each regular expression once and "
            + "needs no match cache",
        "37:9: policy 'baseline' (probabilistic): Tailgate hashes trace IDs with XXH3 where the Collector uses FNV-1a, so "
            + "the same share of traces is kept but not the same traces",
        "42:9: policy 'debug-flagged' (ottl_condition) not imported: Tailgate does not evaluate OTTL conditions; express "
            + "them with string_attribute, numeric_attribute or boolean_attribute policies where possible",
        "58:15: policy 'sampled-flag' in 'big-llm-traces' (trace_flags) not imported: Tailgate does not read the trace "
            + "flags of spans; the 'and' policy 'big-llm-traces' now matches more traces",
        "78:11: policy 'budget': removed 'premium-only' from policy_order, left out above",
        "83:15: policy 'premium-only' in 'budget' (ottl_condition) not imported: Tailgate does not evaluate OTTL "
            + "conditions; express them with string_attribute, numeric_attribute or boolean_attribute policies where "
            + "possible; the 'composite' policy 'budget' no longer samples what it matched",
        "91:15: policy 'budget': removed the rate_allocation of 'premium-only', left out above",
    ]

    @Test func convertsTheWholeProcessor() throws {
        let result = try CollectorImport.convert(Self.config, file: "otelcol.yaml")
        #expect(result.policiesYAML == Self.expectedYAML)
        #expect(positioned(result.notes) == Self.expectedNotes)
        #expect(result.notes.allSatisfy { $0.severity == .warning && $0.file == "otelcol.yaml" })
        #expect(result.notes.first?.description.hasPrefix("otelcol.yaml:15:5: warning: 'decision_wait'") == true)
    }

    @Test func outputIsValidYAMLWithTheSamePolicies() throws {
        let result = try CollectorImport.convert(Self.config, file: "otelcol.yaml")
        let loaded = try #require(try Yams.load(yaml: result.policiesYAML) as? [String: Any])
        let policies = try #require(loaded["policies"] as? [[String: Any]])
        #expect(policies.compactMap { $0["name"] as? String } == [
            "errors", "slow", "checkout-routes", "baseline", "big-llm-traces", "not-health", "drop-synthetic", "budget",
        ])
    }
}

/// One policy in, the `policies:` section out, and the notes' messages.
struct CollectorImportCase: Sendable, CustomTestStringConvertible {
    var label: String
    var input: String
    var output: String
    var notes: [String] = []
    var testDescription: String { label }
}

@Suite struct CollectorImportPolicyTypeTests {
    static let xxh3 = "policy 'p' (probabilistic): Tailgate hashes trace IDs with XXH3 where the Collector uses FNV-1a, so the "
        + "same share of traces is kept but not the same traces"

    static let supported: [CollectorImportCase] = [
        CollectorImportCase(label: "always_sample", input: """
            - name: p
              type: always_sample
            """, output: """
            policies:
              - name: p
                type: always_sample
            """),
        CollectorImportCase(label: "latency", input: """
            - {name: p, type: latency, latency: {threshold_ms: 1500, upper_threshold_ms: 3e4}}
            """, output: """
            policies:
              - name: p
                type: latency
                latency:
                  threshold_ms: 1500
                  upper_threshold_ms: 30000
            """),
        CollectorImportCase(label: "numeric_attribute", input: """
            - name: p
              type: numeric_attribute
              numeric_attribute: {key: http.status_code, min_value: -1, max_value: 0x1F3, invert_match: True}
            """, output: """
            policies:
              - name: p
                type: numeric_attribute
                numeric_attribute:
                  key: http.status_code
                  min_value: -1
                  max_value: 0x1F3
                  invert_match: True
            """),
        CollectorImportCase(label: "string_attribute", input: """
            - name: p
              type: string_attribute
              string_attribute:
                key: service.name
                values: [checkout, "cart.v2", 'true']
                enabled_regex_matching: false
                invert_match: yes
            """, output: """
            policies:
              - name: p
                type: string_attribute
                string_attribute:
                  key: service.name
                  values:
                    - checkout
                    - cart.v2
                    - 'true'
                  enabled_regex_matching: false
                  invert_match: yes
            """),
        CollectorImportCase(label: "boolean_attribute", input: """
            - name: p
              type: boolean_attribute
              boolean_attribute: {key: app.synthetic, value: false, invert_match: false}
            """, output: """
            policies:
              - name: p
                type: boolean_attribute
                boolean_attribute:
                  key: app.synthetic
                  value: false
                  invert_match: false
            """),
        CollectorImportCase(label: "span_count", input: """
            - name: p
              type: span_count
              span_count: {min_spans: 2, max_spans: 10_000}
            """, output: """
            policies:
              - name: p
                type: span_count
                span_count:
                  min_spans: 2
                  max_spans: 10_000
            """),
        CollectorImportCase(label: "probabilistic", input: """
            - name: p
              type: probabilistic
              probabilistic: {sampling_percentage: 0.50, hash_salt: my-salt}
            """, output: """
            policies:
              # imported: hashed with XXH3, not FNV-1a: same rate, different traces
              - name: p
                type: probabilistic
                probabilistic:
                  sampling_percentage: 0.50
                  hash_salt: my-salt
            """, notes: [xxh3]),
        CollectorImportCase(label: "status_code", input: """
            - name: p
              type: status_code
              status_code:
                status_codes:
                  - ERROR
                  - UNSET
            """, output: """
            policies:
              - name: p
                type: status_code
                status_code:
                  status_codes:
                    - ERROR
                    - UNSET
            """),
        CollectorImportCase(label: "rate_limiting", input: """
            - name: p
              type: rate_limiting
              rate_limiting: {spans_per_second: 35}
            """, output: """
            policies:
              - name: p
                type: rate_limiting
                rate_limiting:
                  spans_per_second: 35
            """),
        CollectorImportCase(label: "bytes_limiting", input: """
            - name: p
              type: bytes_limiting
              bytes_limiting: {bytes_per_second: 1048576, burst_capacity: 2097152}
            """, output: """
            policies:
              - name: p
                type: bytes_limiting
                bytes_limiting:
                  bytes_per_second: 1048576
                  burst_capacity: 2097152
            """),
        CollectorImportCase(label: "trace_state", input: """
            - name: p
              type: trace_state
              trace_state: {key: vendor, values: ["on", value2]}
            """, output: """
            policies:
              - name: p
                type: trace_state
                trace_state:
                  key: vendor
                  values:
                    - 'on'
                    - value2
            """),
        CollectorImportCase(label: "and", input: """
            - name: p
              type: and
              and:
                and_sub_policy:
                  - {name: a, type: latency, latency: {threshold_ms: 100}}
                  - {name: b, type: status_code, status_code: {status_codes: [ERROR]}}
            """, output: """
            policies:
              - name: p
                type: and
                and:
                  and_sub_policy:
                    - name: a
                      type: latency
                      latency:
                        threshold_ms: 100
                    - name: b
                      type: status_code
                      status_code:
                        status_codes:
                          - ERROR
            """),
        CollectorImportCase(label: "not", input: """
            - name: p
              type: not
              not:
                not_sub_policy: {name: a, type: span_count, span_count: {min_spans: 1}}
            """, output: """
            policies:
              - name: p
                type: not
                not:
                  not_sub_policy:
                    name: a
                    type: span_count
                    span_count:
                      min_spans: 1
            """),
        CollectorImportCase(label: "drop", input: """
            - name: p
              type: drop
              drop:
                drop_sub_policy:
                  - {name: a, type: string_attribute, string_attribute: {key: url.path, values: [/healthz]}}
            """, output: """
            policies:
              - name: p
                type: drop
                drop:
                  drop_sub_policy:
                    - name: a
                      type: string_attribute
                      string_attribute:
                        key: url.path
                        values:
                          - /healthz
            """),
        CollectorImportCase(label: "composite", input: """
            - name: p
              type: composite
              composite:
                max_total_spans_per_second: 500
                policy_order: [a, b]
                composite_sub_policy:
                  - {name: a, type: always_sample}
                  - {name: b, type: probabilistic, probabilistic: {sampling_percentage: 5}}
                rate_allocation:
                  - {policy: a, percent: 75}
                  - {policy: b, percent: 25}
            """, output: """
            policies:
              - name: p
                type: composite
                composite:
                  max_total_spans_per_second: 500
                  policy_order:
                    - a
                    - b
                  composite_sub_policy:
                    - name: a
                      type: always_sample
                    # imported: hashed with XXH3, not FNV-1a: same rate, different traces
                    - name: b
                      type: probabilistic
                      probabilistic:
                        sampling_percentage: 5
                  rate_allocation:
                    - policy: a
                      percent: 75
                    - policy: b
                      percent: 25
            """, notes: [
                "policy 'b' in 'p' (probabilistic): Tailgate hashes trace IDs with XXH3 where the Collector uses FNV-1a, so "
                    + "the same share of traces is kept but not the same traces",
            ]),
    ]

    @Test(arguments: supported)
    func convertsEachSupportedType(_ c: CollectorImportCase) throws {
        let result = try CollectorImport.convert(collector(c.input), file: "c.yaml")
        #expect(body(result) == c.output + "\n")
        #expect(result.notes.map(\.message) == c.notes)
    }

    @Test func everySupportedTypeHasACase() {
        #expect(Set(Self.supported.map(\.label)) == Set(CollectorImport.translations.map(\.collectorType)))
    }

    static let changed: [CollectorImportCase] = [
        CollectorImportCase(label: "ottl_condition is left out", input: """
            - name: kept
              type: always_sample
            - name: p
              type: ottl_condition
              ottl_condition: {span: ['name == "x"']}
            """, output: """
            policies:
              - name: kept
                type: always_sample

              # imported: left out 'p': ottl_condition is not supported
            """, notes: [
                "policy 'p' (ottl_condition) not imported: Tailgate does not evaluate OTTL conditions; express them with "
                    + "string_attribute, numeric_attribute or boolean_attribute policies where possible",
            ]),
        CollectorImportCase(label: "trace_flags is left out", input: """
            - {name: p, type: trace_flags}
            """, output: """
            # imported: left out 'p': trace_flags is not supported
            policies: []
            """, notes: ["policy 'p' (trace_flags) not imported: Tailgate does not read the trace flags of spans"]),
        CollectorImportCase(label: "unknown type, with a suggestion", input: """
            - {name: p, type: latncy, latncy: {threshold_ms: 1}}
            """, output: """
            # imported: left out 'p': unknown type 'latncy'
            policies: []
            """, notes: ["policy 'p' not imported: unknown policy type 'latncy'; did you mean 'latency'?"]),
        CollectorImportCase(label: "unknown type, no suggestion", input: """
            - {name: p, type: groupbytrace}
            """, output: """
            # imported: left out 'p': unknown type 'groupbytrace'
            policies: []
            """, notes: ["policy 'p' not imported: unknown policy type 'groupbytrace'"]),
        CollectorImportCase(label: "cache_max_size and unknown keys are dropped", input: """
            - name: p
              type: string_attribute
              string_attribute: {key: k, values: [v], cache_max_size: 10, invert_mach: true, colour: red}
            """, output: """
            policies:
              # imported: dropped 'cache_max_size' (not needed)
              # imported: dropped unknown key 'invert_mach'
              # imported: dropped unknown key 'colour'
              - name: p
                type: string_attribute
                string_attribute:
                  key: k
                  values:
                    - v
            """, notes: [
                "policy 'p': dropped 'cache_max_size': Tailgate compiles each regular expression once and needs no match cache",
                "policy 'p': dropped unknown key 'invert_mach' in string_attribute; did you mean 'invert_match'?",
                "policy 'p': dropped unknown key 'colour' in string_attribute; expected one of: key, values, "
                    + "enabled_regex_matching, invert_match",
            ]),
        CollectorImportCase(label: "settings of another type and unknown policy keys are dropped", input: """
            - name: p
              type: latency
              latency: {threshold_ms: 10}
              status_code: {status_codes: [ERROR]}
              latencyy: {}
            """, output: """
            policies:
              # imported: dropped the unused 'status_code' settings
              # imported: dropped unknown key 'latencyy'
              - name: p
                type: latency
                latency:
                  threshold_ms: 10
            """, notes: [
                "policy 'p': ignored the 'status_code' settings, the policy's type is 'latency' (the Collector ignores them too)",
                "policy 'p': dropped unknown key 'latencyy'; did you mean 'latency'?",
            ]),
        CollectorImportCase(label: "a combinator whose sub-policies all vanished is left out", input: """
            - name: p
              type: and
              and:
                and_sub_policy:
                  - {name: a, type: ottl_condition}
                  - {name: b, type: trace_flags}
            """, output: """
            # imported: left out 'p': none of its sub-policies could be imported
            policies: []
            """, notes: [
                "policy 'p' (and) not imported: none of its sub-policies could be imported",
                "policy 'a' in 'p' (ottl_condition) not imported: Tailgate does not evaluate OTTL conditions; express them "
                    + "with string_attribute, numeric_attribute or boolean_attribute policies where possible",
                "policy 'b' in 'p' (trace_flags) not imported: Tailgate does not read the trace flags of spans",
            ]),
        CollectorImportCase(label: "a not whose sub-policy vanished is left out, and its parent says so", input: """
            - name: outer
              type: drop
              drop:
                drop_sub_policy:
                  - {name: flagged, type: not, not: {not_sub_policy: {name: f, type: trace_flags}}}
                  - {name: slow, type: latency, latency: {threshold_ms: 1}}
            """, output: """
            policies:
              - name: outer
                type: drop
                drop:
                  drop_sub_policy:
                    # imported: left out 'flagged': its sub-policy was left out; 'outer' now drops more traces
                    - name: slow
                      type: latency
                      latency:
                        threshold_ms: 1
            """, notes: [
                "policy 'flagged' in 'outer' (not) not imported: its sub-policy was left out; the 'drop' policy 'outer' now "
                    + "drops more traces",
                "policy 'f' in 'flagged' (trace_flags) not imported: Tailgate does not read the trace flags of spans",
            ]),
        CollectorImportCase(label: "notes on a not's sub-policy go above the not", input: """
            - name: p
              type: not
              not:
                not_sub_policy: {name: s, type: string_attribute, string_attribute: {key: k, values: [a], cache_max_size: 5}}
            """, output: """
            policies:
              # imported: 's': dropped 'cache_max_size' (not needed)
              - name: p
                type: not
                not:
                  not_sub_policy:
                    name: s
                    type: string_attribute
                    string_attribute:
                      key: k
                      values:
                        - a
            """, notes: [
                "policy 's' in 'p': dropped 'cache_max_size': Tailgate compiles each regular expression once and needs no match cache",
            ]),
        CollectorImportCase(label: "a combinator without sub-policies is left out", input: """
            - {name: p, type: composite, composite: {max_total_spans_per_second: 10}}
            """, output: """
            # imported: left out 'p': it has no 'composite_sub_policy'
            policies: []
            """, notes: ["policy 'p' (composite) not imported: it has no 'composite_sub_policy'"]),
        CollectorImportCase(label: "missing name and type", input: """
            - {type: always_sample}
            - {name: t}
            - just-a-string
            """, output: """
            policies:
              # imported: named 'policy-1': it had no name
              - name: policy-1
                type: always_sample

              # imported: left out 't': no type

              # imported: left out entry 3: not a policy
            """, notes: [
                "policy 1 has no name; named 'policy-1'",
                "policy 't' has no 'type'; left out",
                "entry 3 is not a policy (a mapping with name and type); left out",
            ]),
        CollectorImportCase(label: "values of the wrong kind are copied with a note", input: """
            - {name: p, type: latency, latency: {threshold_ms: 5s, upper_threshold_ms: }}
            - {name: q, type: trace_state, trace_state: {key: k, values: v}}
            """, output: """
            policies:
              # imported: 'threshold_ms' is not a number
              # imported: left out 'upper_threshold_ms': no value
              - name: p
                type: latency
                latency:
                  threshold_ms: 5s

              # imported: 'values' is not a list
              - name: q
                type: trace_state
                trace_state:
                  key: k
                  values: v
            """, notes: [
                "policy 'p': 'threshold_ms' should be a number, got '5s'; copied as written",
                "policy 'p': 'upper_threshold_ms' has no value; left out",
                "policy 'q': 'values' should be a list; copied as written",
            ]),
        CollectorImportCase(label: "environment references are flagged", input: """
            - {name: p, type: string_attribute, string_attribute: {key: env, values: ["${env:DEPLOY_ENV}"]}}
            """, output: """
            policies:
              # imported: replace '${env:DEPLOY_ENV}' with its value
              - name: p
                type: string_attribute
                string_attribute:
                  key: env
                  values:
                    - '${env:DEPLOY_ENV}'
            """, notes: [
                "policy 'p': '${env:DEPLOY_ENV}' is a Collector environment reference, which Tailgate does not expand; "
                    + "replace it with its value",
            ]),
    ]

    @Test(arguments: changed)
    func notesWhatItChanges(_ c: CollectorImportCase) throws {
        let result = try CollectorImport.convert(collector(c.input), file: "c.yaml")
        #expect(body(result) == c.output + "\n")
        #expect(result.notes.map(\.message) == c.notes)
    }
}

@Suite struct CollectorImportProcessorTests {
    static let onePolicy = "- {name: all, type: always_sample}"

    @Test(arguments: [
        ("decision_wait: 30s", "the closest Tailgate configuration key is buffer.idle_timeout", "`buffer: {idle_timeout: 30s}`"),
        ("decision_wait_after_root_received: 500ms", "buffer.wait_after_root", "`buffer: {wait_after_root: 500ms}`"),
        ("num_traces: 50000", "no direct equivalent: Tailgate bounds the buffered bytes", "`buffer: {max_buffered_bytes: 512MiB}`"),
        ("expected_new_traces_per_sec: 10", "no equivalent needed", "Tailgate's buffer grows as needed"),
        ("decision_cache: {sampled_cache_size: 1_000}", "buffer.decision_cache_size", "`buffer: {decision_cache_size: 1000}`"),
        ("decision_cache: {sampled_cache_size: 0, non_sampled_cache_size: 0}", "the Collector's cache is off",
         "`buffer: {decision_cache_size: 100000}`"),
        ("sample_on_first_match: true", "no equivalent needed: Tailgate evaluates the policies in order",
         "decisions are the same, since any policy keeping a trace keeps it"),
        ("maximum_trace_size_bytes: 1000000", "no direct equivalent", "`buffer: {max_spans_per_trace: 10000}`"),
        ("drop_pending_traces_on_shutdown: true", "decides every buffered trace by policy", "`forwarder: {shutdown_timeout: 10s}`"),
        ("block_on_overflow: true", "never drops undecided traces", "`buffer: {max_buffered_bytes: 512MiB}`"),
        ("decison_wait: 5s", "'decison_wait' is not a tail_sampling setting known to the importer; ignored",
         "did you mean 'decision_wait'?"),
    ])
    func processorSettingsBecomeNotes(setting: String, says: String, ends: String) throws {
        let result = try CollectorImport.convert(collector(Self.onePolicy, settings: "    \(setting)\n"), file: "c.yaml")
        #expect(result.notes.count == 1)
        let note = try #require(result.notes.first)
        #expect((note.line, note.column) == (3, 5))
        #expect(note.message.contains(says))
        #expect(note.message.hasSuffix(ends))
        #expect(body(result) == "policies:\n  - name: all\n    type: always_sample\n")
    }

    static let several = """
        processors:
          batch:
          tail_sampling/errors:
            policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]
          tail_sampling:
            policies: [{name: slow, type: latency, latency: {threshold_ms: 100}}]
          tail_sampling/all:
            policies: [{name: all, type: always_sample}]
        """

    @Test func severalProcessorsConvertTheFirstAndListTheOthers() throws {
        let result = try CollectorImport.convert(Self.several, file: "c.yaml")
        #expect(result.policiesYAML.hasPrefix("# Tailgate policies imported from c.yaml, processor 'tail_sampling/errors'"))
        #expect(result.policiesYAML.contains("- name: errors"))
        #expect(positioned(result.notes) == [
            "3:3: 3 tail_sampling processors: converted 'tail_sampling/errors', not 'tail_sampling' (line 5), "
                + "'tail_sampling/all' (line 7); choose another with --processor NAME",
        ])
    }

    @Test(arguments: [
        ("tail_sampling", "slow"), ("tail_sampling/all", "all"), ("all", "all"), ("errors", "errors"),
    ])
    func processorIsChosenByName(requested: String, policy: String) throws {
        let result = try CollectorImport.convert(Self.several, file: "c.yaml", processor: requested)
        #expect(result.notes.isEmpty)
        #expect(result.policiesYAML.contains("- name: \(policy)\n"))
    }

    @Test(arguments: [
        ("al", "2:1: no processor 'al' under 'processors'; did you mean 'tail_sampling/all'?"),
        ("sampling", "2:1: no processor 'sampling' under 'processors'; tail_sampling processors: tail_sampling/errors, "
            + "tail_sampling, tail_sampling/all"),
        ("batch", "2:1: processor 'batch' is not a tail_sampling processor"),
    ])
    func unknownRequestedProcessorIsAnError(requested: String, expected: String) {
        #expect {
            _ = try CollectorImport.convert("# config\n" + Self.several, file: "c.yaml", processor: requested)
        } throws: { error in
            positioned((error as? DiagnosticsError)?.diagnostics ?? []) == [expected]
        }
    }

    @Test(arguments: [
        ("processors:\n  batch: {}\n  tailsampling:\n    policies: []\n",
         "c.yaml:1:1: error: no tail_sampling processor under 'processors' (found: batch, tailsampling); did you mean "
            + "'tail_sampling' instead of 'tailsampling' (line 3)?"),
        ("receivers:\n  otlp: {}\nexporters:\n  debug: {}\n",
         "c.yaml:1:1: error: no 'processors:' section, so no tail_sampling processor to import"),
        ("", "c.yaml:1:1: error: no 'processors:' section, so no tail_sampling processor to import"),
        ("receivers: {}\nprocessors: [tail_sampling]\n",
         "c.yaml:2:1: error: 'processors' must be a mapping from processor IDs to their settings"),
        ("- tail_sampling\n",
         "c.yaml:1:1: error: not an OpenTelemetry Collector configuration: expected a mapping with 'processors:' at the top level"),
        ("processors:\n  tail_sampling: {policies: [\n", "c.yaml:3:1: error: invalid YAML: did not find expected node content"),
        ("processors:\n\ttail_sampling:\n",
         "c.yaml:2:1: error: invalid YAML: found character that cannot start any token"),
    ])
    func missingProcessorOrInvalidYAMLIsAnError(text: String, expected: String) {
        #expect {
            _ = try CollectorImport.convert(text, file: "c.yaml")
        } throws: { error in
            (error as? DiagnosticsError)?.description == expected
        }
    }

    @Test func processorOutsideEveryPipelineIsNoted() throws {
        let text = """
            processors:
              tail_sampling:
                policies: [{name: all, type: always_sample}]
            service:
              pipelines:
                traces: {receivers: [otlp], processors: [batch], exporters: [otlp]}
            """
        let result = try CollectorImport.convert(text, file: "c.yaml")
        #expect(positioned(result.notes) == [
            "2:3: processor 'tail_sampling' is not used by any pipeline under service.pipelines, so the Collector does not run it",
        ])
    }

    @Test(arguments: [
        ("processors:\n  tail_sampling:\n", "2:3: processor 'tail_sampling' has no settings, so no policies to import"),
        ("processors:\n  tail_sampling:\n    decision_wait: 1s\n", "2:3: processor 'tail_sampling' has no 'policies'"),
        ("processors:\n  tail_sampling:\n    policies: {name: a}\n", "3:5: 'policies' must be a list of policies; nothing imported from it"),
    ])
    func processorWithoutPoliciesGivesAnEmptyList(text: String, expected: String) throws {
        let result = try CollectorImport.convert(text, file: "c.yaml")
        #expect(body(result) == "policies: []\n")
        #expect(positioned(result.notes).contains(expected))
    }

    @Test func headerNamesTheSourceAndTheProcessor() throws {
        let clean = try CollectorImport.convert(collector(Self.onePolicy), file: "deploy/otel.yaml")
        #expect(clean.policiesYAML == """
            # Tailgate policies imported from deploy/otel.yaml, processor 'tail_sampling' (tailgate import-otel).
            policies:
              - name: all
                type: always_sample

            """)
        let noted = try CollectorImport.convert(collector(Self.onePolicy, settings: "    num_traces: 10\n"), file: "x.yaml")
        #expect(noted.policiesYAML.hasPrefix("""
            # Tailgate policies imported from x.yaml, processor 'tail_sampling' (tailgate import-otel).
            # The import printed 1 note; '# imported:' lines mark the policies concerned.
            policies:
            """))
    }
}

@Suite struct CollectorImportQuotingTests {
    /// Strings that YAML would misread if written plain, each written double-quoted in the source.
    static let tricky = [
        "true", "false", "True", "yes", "No", "on", "OFF", "y", "n", "null", "Null", "~", "", " ", " lead", "trail ",
        "1.0", "42", "-7", "0x1F", "0o17", "017", "08", "1e3", ".5", ".inf", "-.Inf", ".nan", "1_000", "12:30", "2024-01-01",
        "a: b", "a:b", "key:", "#x", "a #b", "a#b", "^/health.*$", "[a-z]+", "{x}", "(a|b)", "\\\\d+", "*star", "&anchor",
        "!tag", "|pipe", ">fold", "%pct", "@at", "`tick", "'single'", "\\\"double\\\"", "it's", "- dash", "-dash", "? q",
        ":colon", ",comma", "<<", "=", "tab\\there", "line\\nbreak", "caf\u{e9}", "/health", "checkout.v1",
    ]

    @Test func quotedValuesSurviveARoundTrip() throws {
        let values = Self.tricky.map { "\"\($0)\"" }.joined(separator: ", ")
        let input = "- {name: p, type: string_attribute, string_attribute: {key: k, values: [\(values)]}}"
        let result = try CollectorImport.convert(collector(input), file: "c.yaml")
        #expect(result.notes.isEmpty)

        let source = try #require(try Yams.load(yaml: collector(input)) as? [String: Any])
        let written = try #require(
            ((((source["processors"] as? [String: Any])?["tail_sampling"] as? [String: Any])?["policies"] as? [[String: Any]])?
                .first?["string_attribute"] as? [String: Any])?["values"] as? [String])
        #expect(written.count == Self.tricky.count)

        let loaded = try #require(try Yams.load(yaml: result.policiesYAML) as? [String: Any])
        let policy = try #require((loaded["policies"] as? [[String: Any]])?.first)
        let values2 = try #require((policy["string_attribute"] as? [String: Any])?["values"] as? [Any])
        #expect(values2.map { $0 as? String } == written.map { Optional($0) })
    }

    @Test(arguments: [
        ("true", "'true'"), ("1.0", "'1.0'"), ("a: b", "'a: b'"), ("#x", "'#x'"), ("^/health.*$", "'^/health.*$'"),
        ("", "''"), ("it's", "it's"), ("'q'", "'''q'''"), ("tab\there", "\"tab\\there\""), ("/health", "/health"),
        ("checkout.v1", "checkout.v1"), ("service name", "service name"), ("-7", "'-7'"), ("~", "'~'"),
    ])
    func stringsAreQuotedOnlyWhenNeeded(value: String, rendered: String) {
        #expect(CollectorImport.renderString(value) == rendered)
    }

    @Test func namesAndKeysAreQuotedLikeValues() throws {
        let input = #"- {name: "no", type: boolean_attribute, boolean_attribute: {key: "a: b", value: true}}"#
        let result = try CollectorImport.convert(collector(input), file: "c.yaml")
        #expect(body(result) == """
            policies:
              - name: 'no'
                type: boolean_attribute
                boolean_attribute:
                  key: 'a: b'
                  value: true

            """)
        let loaded = try #require(try Yams.load(yaml: result.policiesYAML) as? [String: Any])
        let policy = try #require((loaded["policies"] as? [[String: Any]])?.first)
        #expect(policy["name"] as? String == "no")
        #expect((policy["boolean_attribute"] as? [String: Any])?["key"] as? String == "a: b")
        #expect((policy["boolean_attribute"] as? [String: Any])?["value"] as? Bool == true)
    }
}

/// The importer's Tailgate side comes from the policy registry: every type it writes is registered, every key it
/// writes is one its policy type accepts, and what it writes loads with the parser `tailgate check` uses.
@Suite struct CollectorImportVocabularyTests {
    typealias StandIn = CollectorImport.Converter.StandIn

    @Test func everyTypeItWritesIsInTheRegistry() {
        let registered = Set(policyTypes.map { ObjectIdentifier($0) })
        for translation in CollectorImport.translations {
            #expect(registered.contains(ObjectIdentifier(translation.policy)), "\(translation.collectorType)")
        }
        let names = Set(policyTypes.map { $0.typeName })
        for standIn in [StandIn.never, StandIn.always] {
            #expect(names.contains(standIn.type), "stand-in \(standIn.type)")
        }
        // One Collector type to one Tailgate type.
        #expect(Set(CollectorImport.translations.map(\.collectorType)).count == CollectorImport.translations.count)
    }

    @Test func everyKeyItWritesIsAcceptedByItsPolicyType() throws {
        for translation in CollectorImport.translations {
            for (key, _) in translation.keys {
                #expect(translation.policy.keys.contains(key), "\(translation.collectorType).\(key) is not a key of \(translation.policy.typeName)")
            }
        }
        for standIn in [StandIn.never, StandIn.always] {
            let policy = try #require(policyTypes.first { $0.typeName == standIn.type })
            guard case .mapping(let entries)? = standIn.settings else { continue }
            for entry in entries {
                #expect(policy.keys.contains(entry.key), "stand-in \(standIn.type).\(entry.key)")
            }
        }
    }

    static let standIns = [
        "- {name: p, type: string_attribute, string_attribute: {key: k, values: []}}",
        "- {name: p, type: string_attribute, string_attribute: {key: k, values: [], invert_match: true}}",
        "- {name: p, type: trace_state, trace_state: {key: vendor, values: []}}",
        "- {name: p, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}",
    ]

    @Test(arguments: CollectorImportPolicyTypeTests.supported.map(\.input) + standIns)
    func whatItWritesLoadsWithTheRealParser(_ input: String) throws {
        let result = try CollectorImport.convert(collector(input), file: "c.yaml")
        let set = try PolicySet.parse(result.policiesYAML, file: "imported.yaml")
        #expect(!set.policies.isEmpty)
    }

    @Test func theRealisticConfigurationLoadsWithTheRealParser() throws {
        let result = try CollectorImport.convert(CollectorImportRealisticTests.config, file: "otelcol.yaml")
        let set = try PolicySet.parse(result.policiesYAML, file: "imported.yaml")
        #expect(set.policies.map(\.name) == [
            "errors", "slow", "checkout-routes", "baseline", "big-llm-traces", "not-health", "drop-synthetic", "budget",
        ])
    }
}
