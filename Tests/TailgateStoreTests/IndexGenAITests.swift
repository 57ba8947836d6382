import Testing
@testable import TailgateBuffer
@testable import TailgateStore
@testable import TailgateWire

@Suite struct IndexGenAITests {
    @Test func aTracesGenAISpansAndConversationSurviveTheIndex() throws {
        var summary = TraceSummary(traceID: TraceID(hi: 1, lo: 2))
        summary.conversation = 0xABCDEF
        let span = GenAISpan(spanID: 7, parentSpanID: 3, role: .aggregate, operation: "invoke_agent", provider: "openai",
                             model: "gpt-4o-2024-08-06", requestModel: "gpt-4o", errorType: "timeout", toolName: "",
                             agentName: "planner ✓", statusError: true, durationNanos: 123_456,
                             tokens: SIMD8(4000, 2000, 100, 50, 25, 0, 0, 0))
        summary.add(SpanFacts(traceID: summary.traceID, spanID: 7, parentSpanID: 3, startTime: 1, endTime: 2, status: .error,
                              bits: 0, sums: SIMD8(), scope: 0, bytes: 0..<10), genAI: span)
        let trace = IndexedTrace(summary: summary, timing: SpillTiming(firstSeen: 1, lastSeen: 2, rootArrived: 0),
                                 missing: [], refs: [], headers: [], aggregatesCurrent: true)
        let bytes = IndexFile.encode(.init(planKey: 1, lastSegment: 2, lastSegmentSize: 3, traces: [trace], decisions: []))
        let decoded = try #require(IndexFile.decode(bytes))
        let back = try #require(decoded.traces.first?.summary)
        #expect(back.conversation == 0xABCDEF)
        #expect(back.genAI?.spans == [span])
        // A damaged index is refused as a whole (the start then scans the segments).
        var damaged = bytes
        damaged[damaged.count / 2] ^= 0xFF
        #expect(IndexFile.decode(damaged) == nil)
    }
}
