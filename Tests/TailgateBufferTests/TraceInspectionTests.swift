import Synchronization
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgateWire

/// `TraceBuffer.inspect`: where a trace is (buffered, spilled, retained after a drop, kept, dropped, unknown) and
/// when it will be decided, on an injected clock.

/// Keeps traces that have an error span; `planGeneration` and a marker set by `reaggregate` for the reload case.
private struct ErrorDecider: TraceDecider {
    var planGeneration: UInt64 = 0
    func decide(_ trace: TraceSummary) -> Decision {
        trace.has(.error) ? Decision(keep: true, policy: 0) : .noMatch
    }
    func reaggregate(_ summary: inout TraceSummary, spans: BufferedSpans) {
        summary.bits = UInt64(spans.count) | 0x100
    }
}

/// The store's contract in memory: records are encoded requests, refs index them.
private final class MemoryTraceStore: TraceStore, @unchecked Sendable {
    private let records = Mutex<[[UInt8]]>([])
    let decisions = Mutex<[(TraceID, Bool)]>([])

    func append(trace: TraceID, spans: BufferedSpans, timing: SpillTiming, supersedes: Bool, headers: [(String, String)]) -> SpillRef? {
        let bytes = spans.encodeRequest()
        let index = records.withLock { r -> Int in
            r.append(bytes)
            return r.count - 1
        }
        return SpillRef(segment: 1, offset: UInt64(index), length: UInt32(bytes.count))
    }

    /// Calls of `read`.
    let reads = Atomic<Int>(0)

    func read(_ refs: [SpillRef], into spans: inout BufferedSpans) -> Bool {
        reads.add(1, ordering: .relaxed)
        for ref in refs {
            let bytes = records.withLock { $0[Int(ref.offset)] }
            guard let decoded = try? bytes.withUnsafeBytes({ try BufferedSpans.decode($0) }) else { return false }
            spans.append(contentsOf: decoded)
        }
        return true
    }

    func decided(trace: TraceID, decision: Decision, policyName: String, stored: Bool) {
        decisions.withLock { $0.append((trace, decision.keep)) }
    }

    func wallNow() -> UInt64 { 1_700_000_000_000_000_000 }
    var walSegment: UInt64? { nil }
    var recordCount: Int { records.withLock { $0.count } }
}

private func configuration() -> BufferConfiguration {
    var c = BufferConfiguration()
    c.shardCount = 4
    c.waitAfterRoot = .seconds(5)
    c.idleTimeout = .seconds(30)
    c.remoteParentTimeout = .seconds(60)
    c.maxTraceAge = .seconds(120)
    c.spillAfter = .seconds(10)
    c.reviseWindow = .seconds(300)
    c.decisionCacheSize = 1000
    return c
}

private func insert(_ buffer: TraceBuffer, _ spans: [TestSpan]) -> InsertOutcome {
    let body = exportRequest(service: "svc", spans: spans)
    var scanned = ScannedRequest()
    return body.withUnsafeBytes { raw in
        try! OTLPScanner(plan: AttributePlan()).scan(raw, into: &scanned)
        return buffer.insert(scanned, body: raw)
    }
}

/// Flags of a span whose exporter says where its parent lives (0x100: it says; 0x200: remote).
private let localParent: UInt32 = 0x100
private let remoteParent: UInt32 = 0x300

@Suite struct TraceInspectionTests {
    @Test func aBufferedTraceShowsItsSpansTreeTimingAndDeadline() throws {
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: configuration(), decider: ErrorDecider(), clock: clock)
        let start = clock.now()
        var child = TestSpan(trace: tid(1), span: 2, parent: 1, status: .error)
        child.flags = localParent
        var remoteChild = TestSpan(trace: tid(1), span: 3, parent: 9)
        remoteChild.flags = remoteParent
        _ = insert(buffer, [child, remoteChild])

        // Span 2 waits for its local parent: the run is still going, only max_trace_age applies.
        var i = try #require(buffer.inspect(tid(1)))
        #expect(i.state == .buffered)
        #expect(i.traceID == tid(1))
        var p = try #require(i.pending)
        #expect(p.missingLocal == 1 && p.missingRemote == 1 && p.missingUnknown == 0)
        #expect(p.trigger == .maxAge && p.deadline == start + 120_000_000_000)
        #expect(!p.complete && p.spansInMemory == 2 && p.storedRecords == 0 && p.storedBytes == 0)
        #expect(p.memoryBytes > 0)
        var summary = try #require(i.summary)
        #expect(summary.spanCount == 2 && summary.has(.error) && summary.has(.unset) && !summary.has(.ok))
        #expect(!summary.rootSeen)

        // The root arrives 2 s later: decided wait_after_root after it.
        clock.advance(by: .seconds(2))
        _ = insert(buffer, [TestSpan(trace: tid(1), span: 1)])
        i = try #require(buffer.inspect(tid(1)))
        p = try #require(i.pending)
        #expect(i.now == start + 2_000_000_000)
        #expect(p.firstSeen == start && p.lastSeen == start + 2_000_000_000 && p.rootArrived == start + 2_000_000_000)
        #expect(p.missingLocal == 0 && p.missingRemote == 1)
        #expect(p.trigger == .root && p.deadline == start + 7_000_000_000)
        #expect(!p.complete)  // the remote parent 9 never came
        summary = try #require(i.summary)
        #expect(summary.rootSeen && summary.spanCount == 3)
        // Ready to be evaluated as if decided now.
        #expect(summary.decidedAt == i.now && summary.trigger == .root && summary.firstSeenAt == start)
        #expect(i.decision == nil)

        // Looking does not decide: the trace is decided at its deadline, exactly as without the inspection.
        clock.advance(by: .milliseconds(4999))
        #expect(buffer.decideExpired().isEmpty)
        #expect(buffer.inspect(tid(1))?.state == .buffered)
        clock.advance(by: .milliseconds(1))
        let decided = buffer.decideExpired()
        #expect(decided.count == 1 && decided[0].decision.keep && decided[0].summary.trigger == .root)
    }

    @Test func aKeptTraceIsRememberedWithItsDecision() throws {
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: configuration(), decider: ErrorDecider(), clock: clock)
        _ = insert(buffer, [TestSpan(trace: tid(2), span: 1, status: .error)])
        clock.advance(by: .seconds(5))
        #expect(buffer.decideExpired().count == 1)
        let i = try #require(buffer.inspect(tid(2)))
        #expect(i.state == .kept)
        #expect(i.decision == Decision(keep: true, policy: 0))
        #expect(i.summary == nil && i.pending == nil)
    }

    @Test func aDroppedTraceIsRememberedThenForgotten() throws {
        let clock = ManualClock()
        var c = configuration()
        c.shardCount = 1  // one decision cache: the next decision is what forgets expired ones
        let buffer = TraceBuffer(configuration: c, decider: ErrorDecider(), clock: clock)
        _ = insert(buffer, [TestSpan(trace: tid(3), span: 1)])
        clock.advance(by: .seconds(5))
        #expect(buffer.decideExpired().count == 1)
        let i = try #require(buffer.inspect(tid(3)))
        #expect(i.state == .dropped)
        #expect(i.decision?.keep == false && i.decision?.policy == -1)
        #expect(i.retainedUntil == nil)  // no store: nothing retained

        // Decisions are remembered for max_trace_age + 5 min; the next decision after that forgets it.
        #expect(buffer.decisionRetention == .seconds(420))
        clock.advance(by: .seconds(421))
        _ = insert(buffer, [TestSpan(trace: tid(4), span: 1)])
        clock.advance(by: .seconds(5))
        #expect(buffer.decideExpired().count == 1)
        #expect(buffer.inspect(tid(3)) == nil)
        #expect(buffer.inspect(tid(4))?.state == .dropped)
    }

    @Test func aTraceNeverSeenIsUnknown() {
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: configuration(), decider: ErrorDecider(), clock: clock)
        #expect(buffer.inspect(tid(5)) == nil)
        _ = insert(buffer, [TestSpan(trace: tid(6), span: 1)])
        #expect(buffer.inspect(tid(5)) == nil)
        #expect(buffer.inspect(tid(6)) != nil)
    }

    @Test func aQuietTraceSpillsToTheStoreAndSaysSo() throws {
        let clock = ManualClock()
        let store = MemoryTraceStore()
        let buffer = TraceBuffer(configuration: configuration(), decider: ErrorDecider(), clock: clock, store: store)
        let start = clock.now()
        // No root, parent of unknown locality: decided remote_parent_timeout (60 s) after the last span.
        _ = insert(buffer, [TestSpan(trace: tid(7), span: 2, parent: 1), TestSpan(trace: tid(7), span: 3, parent: 2)])
        #expect(buffer.inspect(tid(7))?.state == .buffered)
        clock.advance(by: .seconds(10))
        #expect(buffer.decideExpired().isEmpty)
        #expect(store.recordCount == 1)

        let i = try #require(buffer.inspect(tid(7)))
        #expect(i.state == .spilled)
        let p = try #require(i.pending)
        #expect(p.spansInMemory == 0 && p.storedRecords == 1 && p.storedBytes > 0)
        #expect(p.missingUnknown == 1 && p.missingRemote == 0 && p.missingLocal == 0)
        #expect(p.trigger == .idle && p.deadline == start + 60_000_000_000)
        #expect(i.summary?.spanCount == 2)

        // A new span: in memory again beside the stored record; still "spilled" (part of it is on disk).
        clock.advance(by: .seconds(1))
        _ = insert(buffer, [TestSpan(trace: tid(7), span: 4, parent: 2)])
        let again = try #require(buffer.inspect(tid(7)))
        #expect(again.state == .spilled)
        #expect(again.pending?.spansInMemory == 1 && again.summary?.spanCount == 3)
        #expect(again.pending?.deadline == start + 71_000_000_000)
    }

    @Test func aDroppedTraceRetainedForTheReviseWindowThenDropped() throws {
        let clock = ManualClock()
        let store = MemoryTraceStore()
        let buffer = TraceBuffer(configuration: configuration(), decider: ErrorDecider(), clock: clock, store: store)
        _ = insert(buffer, [TestSpan(trace: tid(8), span: 1)])
        clock.advance(by: .seconds(5))
        let decidedAt = clock.now()
        #expect(buffer.decideExpired().count == 1)

        let i = try #require(buffer.inspect(tid(8)))
        #expect(i.state == .retainedAfterDrop)
        #expect(i.decision?.keep == false)
        #expect(i.retainedUntil == decidedAt + 300_000_000_000)
        #expect(i.summary?.trigger == .root && i.summary?.spanCount == 1)
        #expect(i.lateSpans == 0)

        // A late span that does not change the verdict stays with the retained trace.
        clock.advance(by: .seconds(1))
        let late = insert(buffer, [TestSpan(trace: tid(8), span: 2, parent: 1)])
        #expect(late.decided.isEmpty)
        let withLate = try #require(buffer.inspect(tid(8)))
        #expect(withLate.state == .retainedAfterDrop && withLate.lateSpans == 1 && withLate.summary?.spanCount == 2)

        // The window closes: only the remembered drop is left.
        clock.advance(by: .seconds(300))
        _ = buffer.decideExpired()
        #expect(buffer.inspect(tid(8))?.state == .dropped)
    }

    @Test func aTraceAggregatedUnderAnotherPlanIsReaggregatedForTheInspectionOnly() throws {
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: configuration(), decider: ErrorDecider(), clock: clock)
        _ = insert(buffer, [TestSpan(trace: tid(9), span: 2, parent: 1), TestSpan(trace: tid(9), span: 3, parent: 1)])
        #expect(buffer.inspect(tid(9))?.pending?.reaggregated == false)
        buffer.replaceDecider(ErrorDecider(planGeneration: 5))
        let i = try #require(buffer.inspect(tid(9)))
        #expect(i.pending?.reaggregated == true)
        #expect(i.summary?.bits == 0x102)  // recomputed from the two spans
        // The buffered summary itself is untouched (the decision re-aggregates it again).
        buffer.replaceDecider(ErrorDecider(planGeneration: 0))
        #expect(buffer.inspect(tid(9))?.summary?.bits == 0)
    }

    /// Keeps errors; a dropped trace with an error among its late spans is revised (kept).
    private struct RevisingDecider: TraceDecider {
        func decide(_ trace: TraceSummary) -> Decision { trace.has(.error) ? Decision(keep: true, policy: 0) : .noMatch }
        func revise(_ trace: TraceSummary) -> Decision? { trace.has(.error) ? Decision(keep: true, policy: 0) : nil }
    }

    @Test func aDecisionRemembersItsTriggerAndWhenItWasMade() throws {
        let clock = ManualClock()
        let store = MemoryTraceStore()
        var c = configuration()
        c.maxSpansPerTrace = 3
        let buffer = TraceBuffer(configuration: c, decider: RevisingDecider(), clock: clock, store: store)
        // Root: kept by trigger root, 5 s after the root arrived.
        _ = insert(buffer, [TestSpan(trace: tid(20), span: 1, status: .error)])
        // No root, a parent of unknown locality: dropped by trigger idle, remote_parent_timeout (60 s) after its span.
        _ = insert(buffer, [TestSpan(trace: tid(21), span: 2, parent: 1)])
        clock.advance(by: .seconds(5))
        let rootAt = clock.now()
        let first = buffer.decideExpired()
        #expect(first.count == 1 && first[0].decision.trigger == .root && first[0].decision.decidedAt == rootAt)
        clock.advance(by: .seconds(55))
        let idleAt = clock.now()
        let second = buffer.decideExpired()
        #expect(second.count == 1 && second[0].decision.trigger == .idle && second[0].decision.decidedAt == idleAt)

        let kept = try #require(buffer.inspect(tid(20)))
        #expect(kept.state == .kept && kept.decision?.trigger == .root && kept.decision?.decidedAt == rootAt)
        let dropped = try #require(buffer.inspect(tid(21)))
        #expect(dropped.state == .retainedAfterDrop && dropped.decision?.trigger == .idle && dropped.decision?.decidedAt == idleAt)

        // A late error revises the drop: the cache remembers the keep with trigger revised, at the revision.
        clock.advance(by: .seconds(2))
        let reviseAt = clock.now()
        let revised = insert(buffer, [TestSpan(trace: tid(21), span: 3, parent: 2, status: .error)])
        #expect(revised.decided.count == 1 && revised.decided[0].decision.trigger == .revised)
        let now = try #require(buffer.inspect(tid(21)))
        #expect(now.state == .kept && now.decision?.trigger == .revised && now.decision?.decidedAt == reviseAt)

        // The span limit decides at once, during the insert.
        let limited = insert(buffer, (1...3).map { TestSpan(trace: tid(22), span: UInt64($0), parent: $0 == 1 ? 0 : 1) })
        #expect(limited.decided.count == 1 && limited.decided[0].decision.trigger == .spanLimit)
        #expect(buffer.inspect(tid(22))?.decision?.trigger == .spanLimit)

        // A decision restored from the store after a restart carries no trigger and no time.
        buffer.restoreDecision(trace: tid(23), decision: Decision(keep: true, policy: 0))
        let restored = try #require(buffer.inspect(tid(23)))
        #expect(restored.state == .kept && restored.decision?.trigger == nil && restored.decision?.decidedAt == 0)

        // Equality is the verdict: when and why a decision was made do not make two decisions differ.
        var a = Decision(keep: true, policy: 0)
        a.trigger = .root
        a.decidedAt = 42
        #expect(a == Decision(keep: true, policy: 0))
        #expect(a != Decision(keep: false, policy: 0))
    }
}

@Suite struct SpilledTraceTests {
    /// A span reaching a spilled trace is checked against the stored spans' IDs kept in memory, without reading the
    /// trace back (under memory pressure an agent run is spilled again and again while its spans keep coming): a
    /// duplicate of a stored span is recognised, and a parent on disk is not waited for.
    @Test func spansReachingASpilledTraceDoNotReadItBack() throws {
        let clock = ManualClock()
        let store = MemoryTraceStore()
        let buffer = TraceBuffer(configuration: configuration(), decider: ErrorDecider(), clock: clock, store: store)
        _ = insert(buffer, [TestSpan(trace: tid(1), span: 2, parent: 1), TestSpan(trace: tid(1), span: 3, parent: 2)])
        clock.advance(by: .seconds(11))
        #expect(buffer.decideExpired().isEmpty)
        #expect(store.recordCount == 1 && buffer.inspect(tid(1))?.pending?.spansInMemory == 0)

        let out = insert(buffer, [TestSpan(trace: tid(1), span: 3, parent: 2), TestSpan(trace: tid(1), span: 4, parent: 3)])
        #expect(out.duplicates == 1 && out.buffered == 1)
        #expect(store.reads.load(ordering: .relaxed) == 0)
        // Spilled again, then the root: nothing is missing, so the trace is decided 5 s after the root (not at the
        // 120 s maximum age, as it would be if a stored parent counted as missing).
        clock.advance(by: .seconds(11))
        _ = buffer.decideExpired()
        #expect(store.recordCount == 2)
        _ = insert(buffer, [TestSpan(trace: tid(1), span: 1, status: .error)])
        #expect(store.reads.load(ordering: .relaxed) == 0)
        let p = try #require(buffer.inspect(tid(1))?.pending)
        #expect(p.missingLocal == 0 && p.missingUnknown == 0 && p.missingRemote == 0)
        clock.advance(by: .seconds(5))
        let decided = buffer.decideExpired()
        #expect(decided.count == 1 && decided.first?.summary.trigger == .root)
        #expect(decided.first?.spans?.count == 4)
    }
}
