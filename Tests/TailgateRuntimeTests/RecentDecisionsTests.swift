import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateRuntime
@testable import TailgateWire

/// The status page's "last decisions": a ring fed by `Pipeline.handle`, one per pipeline.
@Suite struct RecentDecisionsTests {
    func decided(_ n: UInt64, keep: Bool = false) -> DecidedTrace {
        var summary = TraceSummary(traceID: TraceID(hi: 0, lo: n))
        summary.spanCount = Int(n)
        summary.trigger = .idle
        var decision = Decision(keep: keep, policy: keep ? 0 : -1)
        decision.trigger = .root
        return DecidedTrace(summary: summary, decision: decision, spans: nil)
    }

    @Test func theRingKeepsTheLastDecisionsNewestFirst() {
        let ring = RecentDecisions(capacity: 3)
        #expect(ring.newestFirst.isEmpty)
        ring.record([decided(1, keep: true), decided(2)], policyName: { $0.policy >= 0 ? "errors" : "none" }, at: 10)
        #expect(ring.newestFirst.map(\.traceID.lo) == [2, 1])
        #expect(ring.newestFirst.last == RecentDecisions.Entry(traceID: TraceID(hi: 0, lo: 1), keep: true, dryRunKeep: nil,
                                                               policy: "errors", trigger: .root, spans: 1, at: 10))
        ring.record([decided(3), decided(4)], policyName: { _ in "none" }, at: 20)
        #expect(ring.newestFirst.map(\.traceID.lo) == [4, 3, 2])
        // A batch larger than the ring: its last ones stay.
        ring.record((5...9).map { decided($0) }, policyName: { _ in "none" }, at: 30)
        #expect(ring.newestFirst.map(\.traceID.lo) == [9, 8, 7])
        #expect(ring.total == 9)
    }

    @Test func aPipelineRemembersWhatItDecidedWithPolicyAndTrigger() throws {
        let (pipeline, _, clock) = try testPipeline()
        let (other, _, _) = try testPipeline()
        let error = TraceID(hi: 1, lo: 1)
        let ordinary = TraceID(hi: 1, lo: 2)
        _ = ingest(pipeline, exportRequest(service: "svc", spans: [
            TestSpan(trace: error, span: 1, status: .error), TestSpan(trace: error, span: 2, parent: 1),
            TestSpan(trace: ordinary, span: 3),
        ]))
        #expect(pipeline.recentDecisions.newestFirst.isEmpty)
        clock.advance(by: .seconds(2))  // wait_after_root
        pipeline.tick()
        let recent = pipeline.recentDecisions.newestFirst
        #expect(recent.count == 2)
        let kept = try #require(recent.first { $0.traceID == error })
        #expect(kept.keep && kept.policy == "errors" && kept.trigger == .root && kept.spans == 2 && kept.at > 0)
        let dropped = try #require(recent.first { $0.traceID == ordinary })
        let ordinaryKept = dropped.keep  // the baseline policy keeps 10 % by trace-ID hash
        #expect(dropped.policy == (ordinaryKept ? "baseline" : "none") && dropped.trigger == .root && dropped.spans == 1)
        // Each pipeline has its own ring; asking again gives the same one.
        #expect(other.recentDecisions.newestFirst.isEmpty)
        #expect(pipeline.recentDecisions === pipeline.recentDecisions)
    }
}
