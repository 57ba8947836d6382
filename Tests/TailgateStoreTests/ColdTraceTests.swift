import Foundation
import Logging
import Synchronization
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgateStore
import TailgateWire

/// `ErrorKeeper` that can rescan records (as the real policies can), so that spilled traces may go cold.
final class RescanningErrorKeeper: TraceDecider {
    let inner = ErrorKeeper()
    let scanner = OTLPScanner(plan: AttributePlan())
    func decide(_ trace: TraceSummary) -> Decision { inner.decide(trace) }
    func policyName(_ decision: Decision) -> String { inner.policyName(decision) }
    func rescan(_ body: UnsafeRawBufferPointer, into request: inout ScannedRequest) -> Bool {
        (try? scanner.scan(body, into: &request)) != nil
    }
    var canRescan: Bool { true }
}

/// Spilled traces beyond the memory bound go cold (only their records' places and timers stay in memory) instead of
/// being decided early, and decide as they would have.
@Suite struct ColdTraceTests {
    /// 400 waiting runs of 3 spans (~1 KiB of summary each when spilled) in 128 KiB: the summaries alone are ~3× the
    /// bound; cold, ~250 B each, they fit.
    func fillWithWaitingRuns(_ f: Fixture, traces: UInt64 = 400) -> Int {
        var early = 0
        for t in 1...traces {
            // Each span's parent is of its own process and has not arrived: the run goes on until max_trace_age.
            let spans = (2...4 as ClosedRange<UInt64>).map {
                var s = span(t, $0, parent: 1, error: t % 10 == 0 && $0 == 3, bytes: 300)
                s.flags = 0x100
                return s
            }
            early += f.insert(spans).decided.count
        }
        return early
    }

    func isCold(_ f: Fixture, _ id: TraceID) -> Bool {
        f.buffer.shards[f.buffer.shardIndex(id)].state.withLock { $0.cold[id] != nil }
    }

    @Test func spilledTracesGoColdInsteadOfBeingDecidedEarly() throws {
        let f = try Fixture(memory: 128 << 10, decider: RescanningErrorKeeper())
        #expect(fillWithWaitingRuns(f) == 0)
        #expect(f.buffer.bufferedTraces == 400)
        #expect(f.buffer.coldTraces > 300, "cold \(f.buffer.coldTraces), bytes \(f.buffer.bufferedBytes)")
        #expect(f.buffer.bufferedBytes <= 128 << 10)
        #expect(f.buffer.storedTraces == 400)
        // Nothing is due before max_trace_age (each run's parent is local and has not arrived).
        f.clock.advance(by: .seconds(599))
        #expect(f.buffer.decideExpired().isEmpty)
        f.clock.advance(by: .seconds(2))
        let decided = f.buffer.decideExpired()
        #expect(decided.count == 400)
        for d in decided {
            let t = d.summary.traceID
            let hasError = (1...400 as ClosedRange<UInt64>).contains { tid($0) == t && $0 % 10 == 0 }
            #expect(d.summary.spanCount == 3)
            #expect(d.summary.trigger == .maxAge)
            #expect(d.decision.keep == hasError)
            if d.decision.keep {
                #expect(spanIDs(d.spans) == [2, 3, 4])
                #expect(d.unreadableSpans == 0)
            }
        }
        #expect(f.buffer.bufferedTraces == 0 && f.buffer.coldTraces == 0)
        #expect(f.buffer.storedTraces == 0 && f.buffer.storedBytes == 0)
    }

    /// Without a decider that can rescan records, the old behaviour holds: the oldest are decided early.
    @Test func withoutRescanningTheOldestAreDecidedEarly() throws {
        let f = try Fixture(memory: 128 << 10)
        #expect(fillWithWaitingRuns(f) > 200)
        #expect(f.buffer.coldTraces == 0)
    }

    @Test func aSpanReachingAColdTraceBringsItBackAndTheRunCarriesOn() throws {
        let f = try Fixture(memory: 128 << 10, decider: RescanningErrorKeeper())
        _ = fillWithWaitingRuns(f)
        let firsts = f.buffer.shards.compactMap { $0.state.withLock { $0.coldArrival.first?.0 } }
        let first = try #require(firsts.first)
        #expect(isCold(f, first) && f.buffer.coldTraces > 300)
        // A duplicate of a stored span is recognised; a new span and then the root (with an error) join the run.
        let id = first.hi & 0x0000_FFFF_FFFF_FFFF
        #expect(tid(id) == first)
        #expect(f.insert([span(id, 3, parent: 1)]).duplicates == 1)
        #expect(!isCold(f, first))
        #expect(f.insert([span(id, 5, parent: 2)]).buffered == 1)
        #expect(f.insert([span(id, 1, error: true)]).decided.isEmpty)
        f.clock.advance(by: .seconds(5))
        let decided = f.buffer.decideExpired()
        let d = try #require(decided.first { $0.summary.traceID == first })
        #expect(d.summary.trigger == .root)
        #expect(d.decision.keep)
        #expect(d.summary.spanCount == 5)
        #expect(spanIDs(d.spans) == [1, 2, 3, 4, 5])
        // The inspection of a cold trace rebuilds its summary without warming it.
        let others = f.buffer.shards.compactMap { $0.state.withLock { $0.cold.keys.first } }
        let other = try #require(others.first)
        let coldNow = f.buffer.coldTraces
        let look = try #require(f.buffer.inspect(other))
        #expect(look.state == .spilled)
        #expect(look.summary?.spanCount == 3)
        #expect(look.pending?.trigger == .maxAge)
        #expect(f.buffer.coldTraces == coldNow)
    }

    @Test func shutdownDecidesColdTracesWhole() throws {
        let f = try Fixture(memory: 128 << 10, decider: RescanningErrorKeeper())
        _ = fillWithWaitingRuns(f)
        #expect(f.buffer.coldTraces > 0)
        let decided = f.buffer.decideAll()
        #expect(decided.count == 400)
        #expect(decided.allSatisfy { $0.summary.trigger == .shutdown && $0.summary.spanCount == 3 })
        #expect(decided.filter(\.decision.keep).count == 40)
        #expect(decided.filter(\.decision.keep).allSatisfy { spanIDs($0.spans) == [2, 3, 4] })
    }

    @Test func coldTracesResumeAfterAGracefulRestartWithTheirTimers() throws {
        let f = try Fixture(memory: 128 << 10, decider: RescanningErrorKeeper())
        _ = fillWithWaitingRuns(f)
        let cold = f.buffer.coldTraces
        #expect(cold > 300)
        f.clock.advance(by: .seconds(100))
        let (persisted, decidedAtStop) = f.buffer.persistAll()
        #expect(persisted == 400 && decidedAtStop.isEmpty)
        f.pipelineClose(index: true)
        let g = try Fixture(dir: f.dir, memory: 128 << 10, decider: RescanningErrorKeeper())
        g.clock.advance(by: .seconds(1000))  // a process up for a while (times before its start cannot be told)
        let report = g.store.recover(
            into: g.buffer, scan: { body, scanned in (try? OTLPScanner(plan: g.plan).scan(body, into: &scanned)) != nil },
            decision: { keep, weight, _ in Decision(keep: keep, policy: keep ? 0 : 1, weight: weight) },
            forward: { _, _, _ in }, planKey: 7)
        g.buffer.finishRestore()
        #expect(report.fromIndex)
        #expect(report.traces == 400)
        #expect(g.buffer.bufferedTraces == 400)
        #expect(g.buffer.coldTraces == cold)
        // Their deadlines came back with them: none is read back before it is due.
        #expect(g.buffer.decideExpired().isEmpty)
        #expect(g.buffer.coldTraces == cold)
        // max_trace_age (600 s) counts from each run's first span: 100 s passed before the stop.
        g.clock.advance(by: .seconds(499))
        #expect(g.buffer.decideExpired().isEmpty)
        g.clock.advance(by: .seconds(2))
        let decided = g.buffer.decideExpired()
        #expect(decided.count == 400)
        #expect(decided.allSatisfy { $0.summary.spanCount == 3 && $0.summary.trigger == .maxAge })
        #expect(decided.filter(\.decision.keep).allSatisfy { spanIDs($0.spans) == [2, 3, 4] })
        #expect(decided.filter(\.decision.keep).count == 40)
    }

    @Test func coldTracesPinTheirSegmentsAndAreConsolidated() throws {
        let f = try Fixture(segmentBytes: 64 << 10, memory: 128 << 10, decider: RescanningErrorKeeper())
        _ = fillWithWaitingRuns(f, traces: 200)
        #expect(f.buffer.coldTraces > 50)
        let pinned = try #require(f.buffer.oldestPinnedSegment())
        let coldFirst = f.buffer.shards.compactMap { $0.state.withLock { $0.cold.values.compactMap { $0.refs.first?.segment }.min() } }.min()
        #expect(coldFirst == pinned)
        let last = f.store.traceLog.segmentCount
        #expect(last > 3)
        let written = f.buffer.consolidate(below: UInt64.max, maxBytes: .max)
        #expect(written > 0)
        #expect(try #require(f.buffer.oldestPinnedSegment()) > pinned)
        f.clock.advance(by: .seconds(601))
        let decided = f.buffer.decideExpired()
        #expect(decided.count == 200)
        #expect(decided.filter(\.decision.keep).allSatisfy { spanIDs($0.spans) == [2, 3, 4] && $0.unreadableSpans == 0 })
        #expect(f.buffer.storedBytes == 0)
    }
}

