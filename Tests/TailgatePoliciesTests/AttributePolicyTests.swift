import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire

/// Each row: a policy (flow YAML), the trace's span attributes (root first), resource attributes, expected keep.
typealias AttributeCase = (policy: String, spans: [[(String, TestValue)]], resource: [(String, TestValue)], keep: Bool)

func check(_ c: AttributeCase) throws {
    let spans = c.spans.enumerated().map { i, attrs in span(UInt64(i + 1), attributes: attrs) }
    let decision = try decide(c.policy, trace(spans, resource: c.resource))
    #expect(decision.keep == c.keep, "\(c.policy) on \(c.spans) / \(c.resource)")
}

func span(_ id: UInt64, attributes: [(String, TestValue)]) -> TestSpan { span(id, attributes) }

@Suite struct NumericAttributePolicyTests {
    static let cases: [AttributeCase] = [
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}",
         [[], [("http.status_code", .int(503))]], [], true),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}",
         [[("http.status_code", .int(200))]], [], false),
        // Bounds are inclusive; doubles and decimal strings count as numbers.
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1.5}}", [[("x", .double(1.5))]], [], true),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, max_value: 10}}", [[("x", .string("10"))]], [], true),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, max_value: 10}}", [[("x", .string("ten"))]], [], false),
        // Inverted: keeps when no span has a value in range.
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1, max_value: 5, invert_match: true}}",
         [[("x", .int(9))]], [], true),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1, max_value: 5, invert_match: true}}",
         [[("x", .int(9))], [("x", .int(3))]], [], false),
        // Scopes.
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1, scope: resource}}", [[("x", .int(2))]], [], false),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1, scope: resource}}", [[]], [("x", .int(2))], true),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1}}", [[]], [("x", .int(2))], true),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1, scope: span}}", [[]], [("x", .int(2))], false),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1, scope: root}}", [[], [("x", .int(2))]], [], false),
        ("{name: p, type: numeric_attribute, numeric_attribute: {key: x, min_value: 1, scope: root}}", [[("x", .int(2))], []], [], true),
    ]

    @Test(arguments: cases.indices) func table(index: Int) throws { try check(Self.cases[index]) }
}

@Suite struct StringAttributePolicyTests {
    static let cases: [AttributeCase] = [
        ("{name: p, type: string_attribute, string_attribute: {key: gen_ai.request.model, values: [gpt-4o, o3]}}",
         [[], [("gen_ai.request.model", .string("o3"))]], [], true),
        ("{name: p, type: string_attribute, string_attribute: {key: gen_ai.request.model, values: [gpt-4o]}}",
         [[("gen_ai.request.model", .string("gpt-4o-mini"))]], [], false),
        // Regular expressions.
        ("{name: p, type: string_attribute, string_attribute: {key: gen_ai.request.model, values: ['^gpt-4o'], enabled_regex_matching: true}}",
         [[("gen_ai.request.model", .string("gpt-4o-mini"))]], [], true),
        ("{name: p, type: string_attribute, string_attribute: {key: http.route, values: ['^/health', '^/ready$'], enabled_regex_matching: true}}",
         [[("http.route", .string("/api/ready"))]], [], false),
        // Inverted: keep traces that never hit the health check.
        ("{name: p, type: string_attribute, string_attribute: {key: http.route, values: [/health], invert_match: true}}",
         [[("http.route", .string("/checkout"))]], [], true),
        ("{name: p, type: string_attribute, string_attribute: {key: http.route, values: [/health], invert_match: true}}",
         [[("http.route", .string("/health"))]], [], false),
        ("{name: p, type: string_attribute, string_attribute: {key: http.route, values: ['^/he'], enabled_regex_matching: true, invert_match: true}}",
         [[("http.route", .string("/health"))]], [], false),
        // String arrays match on any element.
        ("{name: p, type: string_attribute, string_attribute: {key: tags, values: [vip]}}", [[("tags", .strings(["a", "vip"]))]], [], true),
        // Resource attributes (the Collector's default looks at both).
        ("{name: p, type: string_attribute, string_attribute: {key: deployment.environment, values: [prod]}}",
         [[]], [("deployment.environment", .string("prod"))], true),
        ("{name: p, type: string_attribute, string_attribute: {key: deployment.environment, values: [prod], scope: span}}",
         [[]], [("deployment.environment", .string("prod"))], false),
        // Non-string values never match a string condition.
        ("{name: p, type: string_attribute, string_attribute: {key: x, values: ['1']}}", [[("x", .int(1))]], [], false),
    ]

    @Test(arguments: cases.indices) func table(index: Int) throws { try check(Self.cases[index]) }
}

@Suite struct BooleanAttributePolicyTests {
    static let cases: [AttributeCase] = [
        ("{name: p, type: boolean_attribute, boolean_attribute: {key: app.debug, value: true}}", [[("app.debug", .bool(true))]], [], true),
        ("{name: p, type: boolean_attribute, boolean_attribute: {key: app.debug, value: true}}", [[("app.debug", .bool(false))]], [], false),
        ("{name: p, type: boolean_attribute, boolean_attribute: {key: app.debug, value: false}}", [[("app.debug", .bool(false))]], [], true),
        ("{name: p, type: boolean_attribute, boolean_attribute: {key: app.debug, value: true}}", [[("app.debug", .string("true"))]], [], false),
        ("{name: p, type: boolean_attribute, boolean_attribute: {key: app.debug, value: true, invert_match: true}}", [[]], [], true),
        ("{name: p, type: boolean_attribute, boolean_attribute: {key: app.debug, value: true, invert_match: true}}",
         [[("app.debug", .bool(true))]], [], false),
    ]

    @Test(arguments: cases.indices) func table(index: Int) throws { try check(Self.cases[index]) }
}

@Suite struct TraceStatePolicyTests {
    @Test(arguments: [
        ("vendor=debug,ot=th:8", true),
        ("ot=th:8, vendor=debug", true),
        ("vendor=prod", false),
        ("", false),
    ])
    func table(state: String, keep: Bool) throws {
        let s = TestSpan(trace: tid(77), span: 1, traceState: state.isEmpty ? nil : state)
        let decision = try decide("{name: p, type: trace_state, trace_state: {key: vendor, values: [debug]}}", trace([s]))
        #expect(decision.keep == keep)
    }
}
