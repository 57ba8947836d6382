import Testing
import TailgateTestSupport
@testable import TailgateWire

private func scan(_ bytes: [UInt8], plan: AttributePlan) throws(ScanError) -> ScannedRequest {
    var result = ScannedRequest()
    let scanner = OTLPScanner(plan: plan)
    let outcome = bytes.withUnsafeBytes { raw in Result { () throws(ScanError) in try scanner.scan(raw, into: &result) } }
    try outcome.get()
    return result
}

/// The GenAI facts of one span: what the token rule and the prices start from.
private func genAI(_ span: TestSpan) throws -> GenAISpan? {
    let r = try scan(exportRequest(spans: [span]), plan: AttributePlan())
    return r.genAI(of: r.spans[0])
}

@Suite struct SaturationTests {
    @Test(arguments: [
        (0.0, Int64(0)),
        (1.5, 2),
        (-1.5, -2),
        (-0.4, 0),
        (4e18, 4_000_000_000_000_000_000),
        (9.2e18, 9_200_000_000_000_000_000),
        (9_223_372_036_854_775_808.0, .max),   // 2⁶³: one past Int64.max
        (-9_223_372_036_854_775_808.0, .min),  // −2⁶³ is Int64.min itself
        (1e19, .max),
        (-1e19, .min),
        (1e300, .max),
        (-1e300, .min),
        (Double.greatestFiniteMagnitude, .max),
        (Double.infinity, .max),
        (-Double.infinity, .min),
        (Double.nan, 0),
        (-Double.nan, 0),
        (Double.signalingNaN, 0),
    ] as [(Double, Int64)])
    func saturatingInt64Clamps(value: Double, expected: Int64) {
        #expect(saturatingInt64(value) == expected, "\(value)")
    }

    @Test(arguments: [
        (Int64(1), Int64(2), Int64(3)),
        (-5, 3, -2),
        (.max, 1, .max),
        (.max - 1, 1, .max),
        (.max, .max, .max),
        (.min, -1, .min),
        (.min, .min, .min),
        (.min + 1, -1, .min),
        (.max, .min, -1),
        (.min, .max, -1),
        (4_000_000_000_000_000_000, 4_000_000_000_000_000_000, 8_000_000_000_000_000_000),
        (5_000_000_000_000_000_000, 5_000_000_000_000_000_000, .max),
        (-5_000_000_000_000_000_000, -5_000_000_000_000_000_000, .min),
    ] as [(Int64, Int64, Int64)])
    func addSaturatingSaturatesEachLane(a: Int64, b: Int64, expected: Int64) {
        #expect(saturatingAdd(a, b) == expected)
        // The lane under test in every position, with ordinary lanes around it that must add normally.
        for lane in 0..<8 {
            var x = SIMD8<Int64>(repeating: 10), y = SIMD8<Int64>(repeating: -3)
            x[lane] = a
            y[lane] = b
            var expectedSum = SIMD8<Int64>(repeating: 7)
            expectedSum[lane] = expected
            #expect(x.addingSaturating(y) == expectedSum)
            x.addSaturating(y)
            #expect(x == expectedSum, "lane \(lane)")
        }
    }

    @Test func addSaturatingMixesLanes() {
        var total = SIMD8<Int64>(.max, .min, 0, -1, 1, .max, .min, 100)
        total.addSaturating(SIMD8<Int64>(.max, .min, .min, .min, .max, -1, 1, -200))
        #expect(total == SIMD8<Int64>(.max, .min, .min, .min, .max, .max - 1, .min + 1, -100))
    }

    /// A span's input tokens as the client sent them → the input lane of its GenAI facts: numbers of any form
    /// saturate, never wrap; negative counts are 0; what is not a number is absent.
    static let tokenCases: [(TestValue, Int64)] = [
        (.int(6000), 6000),
        (.int(4_000_000_000_000_000_000), 4_000_000_000_000_000_000),  // the crash report
        (.int(.max), .max),
        (.int(.min), 0),
        (.int(-6000), 0),
        (.double(6000.4), 6000),
        (.double(6000.5), 6001),
        (.double(-6000.5), 0),
        (.double(4e18), 4_000_000_000_000_000_000),
        (.double(1e300), .max),
        (.double(-1e300), 0),
        (.double(.infinity), .max),
        (.double(-.infinity), 0),
        (.double(.nan), 0),
        (.string("6000"), 6000),
        (.string("6000.0"), 6000),
        (.string("6000.6"), 6001),
        (.string("6e3"), 6000),
        (.string("-6000.0"), 0),
        (.string("4000000000000000000"), 4_000_000_000_000_000_000),
        (.string("99999999999999999999"), .max),
        (.string("1e400"), .max),
        (.string("nan"), 0),
        (.string("six thousand"), 0),
        (.string(""), 0),
        (.string(String(repeating: "1", count: 100)), 0),   // too long to be a number
        (.bool(true), 0),
    ]

    @Test(arguments: tokenCases.indices)
    func clientTokensSaturate(index: Int) throws {
        let (input, expected) = Self.tokenCases[index]
        let span = TestSpan(trace: tid(1), span: 1, attributes: [
            ("gen_ai.request.model", .string("mystery")),
            ("gen_ai.usage.input_tokens", input),
            ("gen_ai.usage.output_tokens", .int(1000)),
        ])
        let facts = try #require(try genAI(span))
        #expect(facts.tokens[GenAISpan.Lane.input] == expected, "\(input)")
        #expect(facts.tokens[GenAISpan.Lane.output] == 1000)
    }
}
