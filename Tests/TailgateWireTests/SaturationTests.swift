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

/// What an `llm_cost` policy compiles to: input and output token slots, and a cost slot priced per model.
private var costPlan: AttributePlan {
    var plan = AttributePlan()
    let input = try! plan.slot(.firstOf(keys: ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"], condition: nil))
    let output = try! plan.slot(.firstOf(keys: ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"], condition: nil))
    _ = try! plan.slot(.cost(
        input: input, output: output, modelKeys: ["gen_ai.response.model", "gen_ai.request.model"],
        prices: ["gpt-4o": AttributePlan.Price(input: 2.5, output: 10)],
        defaultPrice: AttributePlan.Price(input: 1, output: 2)))
    return plan
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

    /// A span's input tokens as the client sent them (output tokens are 1000) → the input slot and the cost slot.
    /// At the default price (USD 1 per million input tokens, 2 per million output tokens) the cost in micro-USD is
    /// input + 2 × output, computed in doubles: near 2⁶² they are 512 or 1024 apart (so + 2000 becomes + 2048).
    static let tokenCases: [(TestValue, Int64, Int64)] = [
        (.int(6000), 6000, 6000 + 2000),
        (.int(4_000_000_000_000_000_000), 4_000_000_000_000_000_000, 4_000_000_000_000_002_048),  // the crash report
        (.int(.max - 1000), .max - 1000, .max),
        (.int(.max), .max, .max),
        (.int(.min), .min, .min + 2048),
        (.int(-6000), -6000, -4000),
        (.double(6000.4), 6000, 8000),
        (.double(6000.5), 6001, 8001),
        (.double(-6000.5), -6001, -4001),
        (.double(4e18), 4_000_000_000_000_000_000, 4_000_000_000_000_002_048),  // double precision: 4e18 + 2000 ≈ …2048
        (.double(1e300), .max, .max),
        (.double(-1e300), .min, .min + 2048),
        (.double(.infinity), .max, .max),
        (.double(-.infinity), .min, .min + 2048),
        (.double(.nan), 0, 2000),
        (.string("6000"), 6000, 8000),
        (.string("6000.0"), 6000, 8000),
        (.string("6000.6"), 6001, 8001),
        (.string("6e3"), 6000, 8000),
        (.string("-6000.0"), -6000, -4000),
        (.string("4000000000000000000"), 4_000_000_000_000_000_000, 4_000_000_000_000_002_048),
        (.string("99999999999999999999"), .max, .max),
        (.string("-99999999999999999999"), .min, .min + 2048),
        (.string("1e400"), .max, .max),
        (.string("nan"), 0, 2000),
        (.string("six thousand"), 0, 2000),
        (.string(""), 0, 2000),
        (.string(String(repeating: "1", count: 100)), 0, 2000),   // too long to be a number
        (.bool(true), 0, 2000),
    ]

    @Test(arguments: tokenCases.indices)
    func costOfClientTokensSaturates(index: Int) throws {
        let (input, expectedInput, expectedCost) = Self.tokenCases[index]
        let span = TestSpan(trace: tid(1), span: 1, attributes: [
            ("gen_ai.request.model", .string("mystery")),
            ("gen_ai.usage.input_tokens", input),
            ("gen_ai.usage.output_tokens", .int(1000)),
        ])
        let r = try scan(exportRequest(spans: [span]), plan: costPlan)
        try #require(r.spans.count == 1)
        #expect(r.spans[0].sums[0] == expectedInput, "\(input)")
        #expect(r.spans[0].sums[1] == 1000)
        #expect(r.spans[0].sums[2] == expectedCost, "\(input)")
    }

    @Test func hugeTokensOnBothSidesAndAPricedModel() throws {
        // gpt-4o: 2.5 and 10 per million: (max × 2.5 + max × 10) overflows any Int64; so does min.
        for (tokens, expected) in [(Int64.max, Int64.max), (.min, .min), (4_000_000_000_000_000_000, .max)] {
            let span = TestSpan(trace: tid(2), span: 1, ints: [("gen_ai.usage.input_tokens", tokens), ("gen_ai.usage.output_tokens", tokens)],
                                strings: [("gen_ai.request.model", "gpt-4o")])
            let r = try scan(exportRequest(spans: [span]), plan: costPlan)
            #expect(r.spans[0].sums[2] == expected, "\(tokens)")
        }
        // Opposite infinities: max × 2.5 + min × 10 is finite and negative.
        let span = TestSpan(trace: tid(2), span: 1, ints: [("gen_ai.usage.input_tokens", .max), ("gen_ai.usage.output_tokens", .min)],
                            strings: [("gen_ai.request.model", "gpt-4o")])
        let r = try scan(exportRequest(spans: [span]), plan: costPlan)
        #expect(r.spans[0].sums[2] == .min)
    }

    @Test func spansOfATraceSumWithoutWrapping() throws {
        // What the buffer does with the per-span sums of one trace: two 5e18-token spans do not wrap negative.
        let spans = (1...3).map { TestSpan(trace: tid(3), span: UInt64($0), ints: [("gen_ai.usage.input_tokens", 5_000_000_000_000_000_000)]) }
        let r = try scan(exportRequest(spans: spans), plan: costPlan)
        var total = SIMD8<Int64>()
        for s in r.spans { total.addSaturating(s.sums) }
        #expect(total[0] == .max)
        #expect(total[2] == .max)
        #expect(total[1] == 0)
    }
}
