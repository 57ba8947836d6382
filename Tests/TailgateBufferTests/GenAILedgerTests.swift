import Testing
import TailgateWire
@testable import TailgateBuffer

/// The GenAI token rule: model calls count; an aggregate span (agent, workflow) counts only what its subtree's
/// reports do not already account for.
@Suite struct GenAILedgerTests {
    typealias L = GenAISpan.Lane

    static func tokens(_ input: Int64, _ output: Int64, cacheRead: Int64 = 0, reasoning: Int64 = 0, total: Int64 = 0) -> SIMD8<Int64> {
        var t = SIMD8<Int64>()
        t[L.input] = input
        t[L.output] = output
        t[L.cacheRead] = cacheRead
        t[L.reasoning] = reasoning
        t[L.totalOnly] = total
        return t
    }
    static func chat(_ id: UInt64, parent: UInt64, _ input: Int64, _ output: Int64) -> GenAISpan {
        GenAISpan(spanID: id, parentSpanID: parent, role: .inference, operation: "chat", model: "m", tokens: tokens(input, output))
    }
    static func agent(_ id: UInt64, parent: UInt64, _ t: SIMD8<Int64>) -> GenAISpan {
        GenAISpan(spanID: id, parentSpanID: parent, role: .aggregate, operation: "invoke_agent", tokens: t)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var spans: [GenAISpan]
        /// Links of spans that are not GenAI spans (child → parent).
        var others: [UInt64: UInt64] = [:]
        var total: Int64
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "aggregated agent over two chats counts the calls once",
             spans: [agent(1, parent: 0, tokens(4000, 2000)), chat(2, parent: 1, 2000, 1000), chat(3, parent: 1, 2000, 1000)],
             total: 6000),
        Case(name: "agent without traced calls counts its own usage",
             spans: [agent(1, parent: 0, tokens(4000, 2000))], total: 6000),
        Case(name: "agent over one traced call of two counts the untraced rest",
             spans: [agent(1, parent: 0, tokens(4000, 2000)), chat(2, parent: 1, 2000, 1000)], total: 6000),
        Case(name: "agent reporting less than its calls adds nothing",
             spans: [agent(1, parent: 0, tokens(100, 50)), chat(2, parent: 1, 2000, 1000)], total: 3000),
        Case(name: "nested agents: innermost reports first",
             spans: [agent(1, parent: 0, tokens(7000, 3000)), agent(2, parent: 1, tokens(4000, 2000)),
                     chat(3, parent: 2, 2000, 1000), chat(4, parent: 2, 2000, 1000), chat(5, parent: 1, 3000, 1000)],
             total: 10000),
        Case(name: "calls under non-GenAI steps are found through the trace's parent links",
             spans: [agent(1, parent: 0, tokens(4000, 2000)), chat(3, parent: 20, 2000, 1000), chat(4, parent: 21, 2000, 1000)],
             others: [20: 1, 21: 20], total: 6000),
        Case(name: "a total reported alone is compared with the calls' input and output",
             spans: [agent(1, parent: 0, tokens(0, 0, total: 6000)), chat(2, parent: 1, 2000, 1000), chat(3, parent: 1, 2000, 1000)],
             total: 6000),
        Case(name: "sibling agents: one with traced calls, one remote",
             spans: [agent(1, parent: 0, tokens(4000, 2000)), chat(2, parent: 1, 2000, 1000), chat(3, parent: 1, 2000, 1000),
                     agent(4, parent: 0, tokens(3000, 1000))],
             total: 10000),
        Case(name: "calls without an agent simply add up",
             spans: [chat(1, parent: 0, 10, 5), chat(2, parent: 1, 20, 5), chat(3, parent: 0, 30, 30)], total: 100),
        Case(name: "a cycle of parent links cannot loop",
             spans: [agent(1, parent: 2, tokens(10, 0)), agent(2, parent: 1, tokens(20, 0))], total: 30),
    ]

    @Test(arguments: cases)
    func tokenRule(_ c: Case) {
        var ledger = GenAILedger(spans: c.spans)
        let others = c.others
        ledger.resolve { others[$0] }
        #expect(ledger.totalTokens() == c.total)
        // Packed (a waiting trace), before or after resolving: the same count.
        var packedAfter = ledger
        packedAfter.pack()
        #expect(packedAfter.isPacked && packedAfter.totalTokens() == c.total)
        var packedBefore = GenAILedger(spans: c.spans)
        packedBefore.pack()
        packedBefore.resolve { others[$0] }
        #expect(!packedBefore.isPacked && packedBefore.totalTokens() == c.total)
    }

    @Test func withoutTheParentLinksAnIntermediateStepHidesTheCalls() {
        // The same trace as above without the links: the agent's aggregate is counted on top (the buffer always
        // gives the links; this shows they matter).
        var ledger = GenAILedger(spans: [Self.agent(1, parent: 0, Self.tokens(4000, 2000)), Self.chat(3, parent: 20, 2000, 1000)])
        ledger.resolve()
        #expect(ledger.totalTokens() == 9000)
    }

    @Test func cacheAndReasoningTokensArePartsNotAdditions() {
        var ledger = GenAILedger(spans: [GenAISpan(spanID: 1, parentSpanID: 0, role: .inference, operation: "chat",
                                                   tokens: Self.tokens(1000, 500, cacheRead: 800, reasoning: 400))])
        ledger.resolve()
        #expect(ledger.totalTokens() == 1500)
        #expect(ledger.counted[0][L.cacheRead] == 800 && ledger.counted[0][L.reasoning] == 400)
    }

    @Test func residualKeepsDetailLanesWithinTheirParents() {
        // Agent: 4000 in (3000 cached), 2000 out (1500 reasoning); one traced call: 2000 in (2500 cached?? no: 1000), 1000 out.
        let own = Self.tokens(4000, 2000, cacheRead: 3000, reasoning: 1500)
        let below = Self.tokens(2000, 1000, cacheRead: 1000, reasoning: 500)
        let r = GenAILedger.residual(own: own, below: below)
        #expect(r[L.input] == 2000 && r[L.output] == 1000)
        #expect(r[L.cacheRead] == 2000 && r[L.reasoning] == 1000)
        #expect(r[L.totalOnly] == 0)
    }

    @Test func hugeClientNumbersSaturateInsteadOfWrapping() {
        // Three calls of 5e18 tokens, and an agent above them reporting Int64.max: the total stays at Int64.max.
        var ledger = GenAILedger(spans: (2...4).map { Self.chat(UInt64($0), parent: 1, 5_000_000_000_000_000_000, 0) }
                                 + [Self.agent(1, parent: 0, Self.tokens(.max, .max))])
        ledger.resolve()
        #expect(ledger.totalTokens() == .max)
    }

    @Test func filtersSelectSpans() {
        var a = Self.chat(1, parent: 0, 100, 0)
        a.names = GenAINames.of(operation: a.operation, model: "gpt-4o")
        var b = Self.chat(2, parent: 0, 10, 0)
        b.names = GenAINames.of(operation: b.operation, model: "claude")
        var ledger = GenAILedger(spans: [a, b])
        ledger.resolve()
        #expect(ledger.totalTokens { $0.model == "gpt-4o" } == 100)
    }

    /// Spans with every field in use: all eight lanes, zero and extreme values, shared and distinct names.
    static var variedSpans: [GenAISpan] {
        var spans: [GenAISpan] = []
        let shared = GenAINames.of(operation: "chat", provider: "openai", model: "gpt-x")
        for i in 0..<40 {
            var t = SIMD8<Int64>()
            // Reported lanes are never negative (the scanner clamps); the two spare lanes carry any bit pattern.
            for lane in 0..<6 where (i + lane) % 3 != 0 { t[lane] = [0, 1, 127, 128, 300, 1 << 40, .max][(i * 7 + lane) % 7] }
            for lane in 6..<8 where i % 2 == 0 { t[lane] = [-1, .min, .max, 5][(i / 2 + lane) % 4] }
            let names = i % 4 == 0 ? GenAINames.of(operation: "execute_tool", toolName: "tool-\(i)") : shared
            spans.append(GenAISpan(spanID: UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15, parentSpanID: i == 0 ? 0 : UInt64(i) &* 0x9E37_79B9_7F4A_7C15,
                                   role: i % 5 == 0 ? .aggregate : .inference, names: names, statusError: i % 6 == 0,
                                   durationNanos: [0, 1, 999_999_999, .max][i % 4], tokens: t))
        }
        return spans
    }

    @Test(arguments: [false, true])
    func packingGivesBackEverySpanAndCount(resolvedFirst: Bool) {
        var ledger = GenAILedger(spans: Self.variedSpans)
        if resolvedFirst { ledger.resolve() }
        var packed = ledger
        packed.pack()
        #expect(packed.isPacked && packed.count == 40)
        #expect(packed.spans == ledger.spans)
        #expect(packed.counted == ledger.counted && packed.resolved == resolvedFirst)
        #expect(packed == ledger)
        #expect(packed.accountedBytes * 2 < ledger.accountedBytes, "\(packed.accountedBytes) of \(ledger.accountedBytes)")
        packed.unpack()
        #expect(!packed.isPacked && packed == ledger)
    }

    @Test func aSpanAppendedToAPackedLedgerJoinsTheOthers() {
        var ledger = GenAILedger(spans: Self.variedSpans)
        ledger.resolve()
        ledger.pack()
        let extra = Self.chat(999, parent: 1, 5, 5)
        ledger.append(extra)
        #expect(!ledger.isPacked && !ledger.resolved)
        #expect(ledger.spans == Self.variedSpans + [extra])
    }

    /// Spans appended one at a time (as a buffering trace gets them) are held encoded; every reader sees them as if
    /// they had been held decoded, before and after packing, and resolving counts the same tokens.
    @Test func appendedSpansAreHeldEncodedAndReadBackTheSame() {
        let spans = Self.variedSpans
        var appended = GenAILedger()
        for span in spans { appended.append(span) }
        let decoded = GenAILedger(spans: spans)
        #expect(appended.count == 40 && !appended.isPacked && !appended.resolved)
        #expect(appended.spans == spans && appended == decoded)
        #expect(appended.needsAncestry == decoded.needsAncestry)
        // ~30 bytes a span (plus spare capacity) where a decoded span takes 112.
        #expect(appended.accountedBytes * 2 < decoded.accountedBytes, "\(appended.accountedBytes) of \(decoded.accountedBytes)")

        var packed = appended
        packed.pack()
        #expect(packed.isPacked && packed.spans == spans && packed.accountedBytes <= appended.accountedBytes)

        var resolvedAppended = appended, resolvedDecoded = decoded, resolvedPacked = packed
        resolvedAppended.resolve()
        resolvedDecoded.resolve()
        resolvedPacked.resolve()
        #expect(resolvedAppended == resolvedDecoded && resolvedPacked == resolvedDecoded)
        #expect(resolvedAppended.totalTokens() == resolvedDecoded.totalTokens())

        // A span after the resolve (a late span) joins the decoded ones, in arrival order.
        let late = Self.chat(999, parent: 1, 5, 5)
        resolvedAppended.append(late)
        #expect(!resolvedAppended.resolved && resolvedAppended.spans == spans + [late])
    }

    /// The summary keeps the ledger's accounted bytes beside it through every way the ledger changes: set, changed in
    /// place, taken out, cleared.
    @Test func theSummaryKeepsTheLedgersBytesBesideIt() {
        var summary = TraceSummary(traceID: TraceID(hi: 1, lo: 2))
        #expect(summary.genAI == nil && summary.genAIAccountedBytes == 0)
        summary.genAI = GenAILedger()
        summary.genAI!.append(Self.variedSpans[0])
        #expect(summary.genAIAccountedBytes == summary.genAI!.accountedBytes && summary.genAIAccountedBytes > 0)
        summary.withGenAI { for span in Self.variedSpans.dropFirst() { $0.append(span) } }
        #expect(summary.genAI!.count == Self.variedSpans.count)
        #expect(summary.genAIAccountedBytes == summary.genAI!.accountedBytes)
        summary.withGenAI { $0.pack() }
        #expect(summary.genAI!.isPacked && summary.genAIAccountedBytes == summary.genAI!.accountedBytes)
        let taken = summary.genAI.take()
        #expect(taken?.count == Self.variedSpans.count && summary.genAI == nil && summary.genAIAccountedBytes == 0)
        summary.prefetchGenAI()  // nil: the hints read meaningless addresses, harmlessly
    }

    /// The prefetch hints are read from where the arrays' storage references really are: the bits it reads at the
    /// offsets it uses are the storage of the ledger's arrays.
    @Test func thePrefetchReadsTheArraysStorage() {
        var ledger = GenAILedger()
        for span in Self.variedSpans { ledger.append(span) }
        var held: GenAILedger? = ledger
        let (bytes, names) = withUnsafeMutablePointer(to: &held) { p in
            let raw = UnsafeRawPointer(p)
            return (raw.load(fromByteOffset: GenAILedger.arrayOffsets.0, as: UInt.self),
                    raw.load(fromByteOffset: GenAILedger.arrayOffsets.1, as: UInt.self))
        }
        let expected = ledger.arrayStorageBits
        #expect(expected.0 != expected.1 && expected.0 != 0 && expected.1 != 0)
        #expect(bytes == expected.0 && names == expected.1)
        withUnsafeMutablePointer(to: &held) { GenAILedger.prefetch(at: UnsafeMutableRawPointer($0)) }
    }

    @Test func anEmptyLedgerStaysUnpacked() {
        var ledger = GenAILedger()
        ledger.pack()
        #expect(!ledger.isPacked && ledger.count == 0)
    }
}
