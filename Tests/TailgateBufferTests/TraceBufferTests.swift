import Synchronization
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgateWire

/// Keeps traces whose span count is even; records every summary it saw.
final class RecordingDecider: TraceDecider {
    let seen = Mutex<[TraceSummary]>([])
    let keep: @Sendable (TraceSummary) -> Bool
    init(keep: @escaping @Sendable (TraceSummary) -> Bool = { _ in true }) { self.keep = keep }
    func decide(_ trace: TraceSummary) -> Decision {
        seen.withLock { $0.append(trace) }
        return keep(trace) ? Decision(keep: true, policy: 0) : .noMatch
    }
}

private func config(shards: Int = 4) -> BufferConfiguration {
    var c = BufferConfiguration()
    c.shardCount = shards
    c.waitAfterRoot = .seconds(5)
    c.idleTimeout = .seconds(30)
    c.maxTraceAge = .seconds(120)
    c.maxSpansPerTrace = 100
    c.maxBufferedBytes = 1 << 30
    c.decisionCacheSize = 1000
    return c
}

private func insert(_ buffer: TraceBuffer, _ spans: [TestSpan], service: String = "svc") -> InsertOutcome {
    let body = exportRequest(service: service, spans: spans)
    var scanned = ScannedRequest()
    var plan = AttributePlan()
    _ = try! plan.slot(.firstOf(keys: ["gen_ai.usage.input_tokens"], condition: nil))
    return body.withUnsafeBytes { raw in
        try! OTLPScanner(plan: plan).scan(raw, into: &scanned)
        return buffer.insert(scanned, body: raw)
    }
}

@Suite struct TraceBufferTests {
    @Test func rootSpanClosesTheWindowAfterWaitAfterRoot() {
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: config(), decider: RecordingDecider(), clock: clock)
        _ = insert(buffer, [TestSpan(trace: tid(1), span: 2, parent: 1)])
        clock.advance(by: .seconds(1))
        _ = insert(buffer, [TestSpan(trace: tid(1), span: 1)])  // root
        clock.advance(by: .milliseconds(4999))
        #expect(buffer.decideExpired().isEmpty)
        clock.advance(by: .milliseconds(1))
        let decided = buffer.decideExpired()
        #expect(decided.count == 1)
        #expect(decided[0].summary.trigger == .root)
        #expect(decided[0].summary.spanCount == 2)
        #expect(decided[0].spans?.count == 2)
        #expect(buffer.bufferedTraces == 0 && buffer.bufferedBytes == 0)
    }

    @Test func withoutRootTheTraceIsDecidedAfterIdleTimeoutAndNewSpansExtendIt() {
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: config(), decider: RecordingDecider(), clock: clock)
        _ = insert(buffer, [TestSpan(trace: tid(1), span: 2, parent: 1)])
        clock.advance(by: .seconds(20))
        _ = insert(buffer, [TestSpan(trace: tid(1), span: 3, parent: 1)])
        clock.advance(by: .seconds(20))  // 40 s after the first span, 20 s after the last
        #expect(buffer.decideExpired().isEmpty)
        clock.advance(by: .seconds(10))
        let decided = buffer.decideExpired()
        #expect(decided.map(\.summary.trigger) == [.idle])
        #expect(decided[0].summary.spanCount == 2)
    }

    @Test func maxTraceAgeBoundsATraceThatKeepsGrowing() {
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: config(), decider: RecordingDecider(), clock: clock)
        var decided: [DecidedTrace] = []
        for i in 0..<20 {  // a span every 10 s: never idle for 30 s
            _ = insert(buffer, [TestSpan(trace: tid(1), span: UInt64(i + 2), parent: 1)])
            clock.advance(by: .seconds(10))
            decided += buffer.decideExpired()
            if !decided.isEmpty { break }
        }
        #expect(decided.map(\.summary.trigger) == [.maxAge])
        #expect(decided[0].summary.spanCount == 12)  // spans at 0, 10, …, 110 s; decided at 120 s
    }

    @Test func spanLimitDecidesAtOnceAndLaterSpansFollowTheDecision() {
        var c = config()
        c.maxSpansPerTrace = 3
        let buffer = TraceBuffer(configuration: c, decider: RecordingDecider(), clock: ManualClock())
        let first = insert(buffer, (1...4).map { TestSpan(trace: tid(1), span: UInt64($0), parent: 99) })
        #expect(first.decided.count == 1)
        #expect(first.decided[0].summary.trigger == .spanLimit)
        #expect(first.decided[0].spans?.count == 3)
        #expect(first.lateKeptCount == 1)  // the fourth span of the same request follows the decision
        let later = insert(buffer, [TestSpan(trace: tid(1), span: 5, parent: 99)])
        #expect(later.lateKeptCount == 1 && later.buffered == 0)
    }

    @Test func lateSpansOfDroppedTracesAreDroppedAndCounted() {
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: config(), decider: RecordingDecider(keep: { _ in false }), clock: clock)
        _ = insert(buffer, [TestSpan(trace: tid(1), span: 1)])
        clock.advance(by: .seconds(5))
        let decided = buffer.decideExpired()
        #expect(decided.count == 1 && decided[0].spans == nil && !decided[0].decision.keep)
        let late = insert(buffer, [TestSpan(trace: tid(1), span: 2, parent: 1), TestSpan(trace: tid(2), span: 3)])
        #expect(late.lateDropped == 1)
        #expect(late.buffered == 1)  // the other trace is buffered normally
        #expect(buffer.bufferedTraces == 1)
    }

    @Test func memoryBoundDecidesTheOldestTracesEarlyWithoutDroppingThem() {
        var c = config(shards: 1)
        c.maxBufferedBytes = 4 * (traceOverheadBytes + 200)
        let decider = RecordingDecider()
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: c, decider: decider, clock: clock)
        var early: [DecidedTrace] = []
        for i in 1...10 {
            early += insert(buffer, [TestSpan(trace: tid(UInt64(i)), span: UInt64(i), parent: 1)]).decided
            clock.advance(by: .milliseconds(1))
        }
        #expect(!early.isEmpty)
        #expect(early.allSatisfy { $0.summary.trigger == .memoryPressure })
        // Oldest first.
        #expect(early.map(\.summary.traceID) == (1...early.count).map { tid(UInt64($0)) })
        #expect(buffer.bufferedBytes <= c.maxBufferedBytes)
        // Every trace got a decision or is still buffered: nothing vanished.
        #expect(early.count + buffer.bufferedTraces == 10)
    }

    @Test func aggregatesAreKeptAcrossRequestsAndServices() {
        let clock = ManualClock()
        let decider = RecordingDecider()
        let buffer = TraceBuffer(configuration: config(), decider: decider, clock: clock)
        _ = insert(buffer, [
            TestSpan(trace: tid(7), span: 2, parent: 1, start: 150, end: 400, status: .ok, ints: [("gen_ai.usage.input_tokens", 100)]),
        ], service: "agent")
        _ = insert(buffer, [
            TestSpan(trace: tid(7), span: 3, parent: 2, start: 200, end: 300, status: .error, ints: [("gen_ai.usage.input_tokens", 23)]),
        ], service: "tools")
        _ = insert(buffer, [TestSpan(trace: tid(7), span: 1, start: 100, end: 500)], service: "agent")
        clock.advance(by: .seconds(5))
        let decided = buffer.decideAll()
        #expect(decided.count == 1)
        let s = decided[0].summary
        #expect(s.spanCount == 3)
        #expect(s.has(.error) && s.has(.ok) && s.has(.unset))  // the root span has no status: UNSET
        #expect(s.sums[0] == 123)
        #expect(s.earliestStart == 100 && s.latestEnd == 500 && s.durationNanos == 400)
        #expect(s.rootSeen)
        #expect(decided[0].spans?.origins.count == 3)  // three requests, three scope origins
    }

    @Test func decideAllEmptiesTheBufferAndRecordsDecisions() {
        let buffer = TraceBuffer(configuration: config(), decider: RecordingDecider(), clock: ManualClock())
        for i in 1...50 { _ = insert(buffer, [TestSpan(trace: tid(UInt64(i)), span: 1)]) }
        #expect(buffer.bufferedTraces == 50)
        let all = buffer.decideAll()
        #expect(all.count == 50)
        #expect(Set(all.map(\.summary.traceID)).count == 50)
        #expect(all.allSatisfy { $0.summary.trigger == .shutdown })
        #expect(buffer.bufferedTraces == 0 && buffer.bufferedBytes == 0)
        // A late span of a kept trace is forwarded, not buffered.
        #expect(insert(buffer, [TestSpan(trace: tid(3), span: 2, parent: 1)]).lateKeptCount == 1)
    }

    @Test func concurrentWritersLoseNothing() async {
        let buffer = TraceBuffer(configuration: config(shards: 8), decider: RecordingDecider(), clock: ManualClock())
        await withTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask {
                    for i in 0..<200 {
                        let trace = tid(UInt64(i))  // all writers share the same 200 traces
                        _ = insert(buffer, [TestSpan(trace: trace, span: UInt64(w * 1000 + i + 1), parent: 1)])
                    }
                }
            }
        }
        let all = buffer.decideAll()
        #expect(all.count == 200)
        #expect(all.allSatisfy { $0.summary.spanCount == 4 && $0.spans?.count == 4 })
    }

    @Test func decisionCacheForgetsTheOldestBeyondItsCapacity() {
        var cache = DecisionCache(capacity: 3)
        for i in 1...5 { cache.insert(tid(UInt64(i))) }
        #expect(!cache.contains(tid(1)) && !cache.contains(tid(2)))
        #expect(cache.contains(tid(3)) && cache.contains(tid(5)))
    }
}
