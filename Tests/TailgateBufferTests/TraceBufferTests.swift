import Dispatch
import Glibc
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
    c.remoteParentTimeout = .seconds(30)
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

    /// Spans without flags: their missing parent's locality is unknown, treated as remote.
    @Test func withoutRootTheTraceIsDecidedAfterRemoteParentTimeoutAndNewSpansExtendIt() {
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
        // Three requests from two services: the agent's two requests share one origin (origins are interned).
        #expect(decided[0].spans?.origins.count == 2)
        if let origins = decided[0].spans?.origins, origins.count == 2 {
            #expect(origins[0].resource !== origins[1].resource)
            #expect(origins[0].resource.header != origins[1].resource.header)
        }
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

    /// A request's spans for a shard whose lock is held (here by a decision blocked inside the decider) are inserted
    /// after the other shards' spans, not waited for first; then they are inserted too.
    @Test func aBusyShardIsInsertedAfterTheOthers() throws {
        var c = config(shards: 4)
        c.shardSeed = 42
        let clock = ManualClock()
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let blocking = Atomic<Bool>(true)
        let decider = RecordingDecider(keep: { _ in
            if blocking.exchange(false, ordering: .relaxed) {
                entered.signal()
                release.wait()
            }
            return true
        })
        let buffer = TraceBuffer(configuration: c, decider: decider, clock: clock)
        // Traces by shard: the held one is shard 0, which a request's inserts would reach first.
        var byShard: [Int: [TraceID]] = [:]
        for n in 1...400 { byShard[buffer.shardIndex(tid(UInt64(n))), default: []].append(tid(UInt64(n))) }
        let held = try #require(byShard[0]?.first)
        _ = insert(buffer, [TestSpan(trace: held, span: 1)])  // a root: due after wait_after_root
        clock.advance(by: .seconds(6))
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { _ = buffer.decideExpired() }
        entered.wait()  // shard 0's lock is held now, until `release`
        let others = (1..<4).map { byShard[$0]![0] }
        let newInHeld = byShard[0]![1]
        let request = ([newInHeld] + others).enumerated().map { TestSpan(trace: $1, span: UInt64(10 + $0), parent: 1) }
        let inserted = Mutex<InsertOutcome?>(nil)
        DispatchQueue.global().async(group: group) {
            let outcome = insert(buffer, request)
            inserted.withLock { $0 = outcome }
        }
        // The other shards' traces arrive while shard 0 is held (bounded wait; the old order blocked on shard 0 first).
        let deadline = ContinuousClock.now + .seconds(10)
        while buffer.bufferedTraces < 1 + others.count && ContinuousClock.now < deadline { sched_yield() }
        #expect(buffer.bufferedTraces == 1 + others.count)  // the held trace (being decided) and the three others
        #expect(inserted.withLock { $0 } == nil)  // still waiting for shard 0
        release.signal()
        group.wait()
        #expect(inserted.withLock { $0?.buffered } == 4)
        let all = buffer.decideAll()
        #expect(Set(all.map(\.summary.traceID)) == Set([newInHeld] + others))
    }

    @Test func decisionCacheForgetsTheOldestBeyondItsCapacity() {
        var cache = DecisionCache(capacity: 3)
        for i in 1...5 { cache.insert(tid(UInt64(i))) }
        #expect(!cache.contains(tid(1)) && !cache.contains(tid(2)))
        #expect(cache.contains(tid(3)) && cache.contains(tid(5)))
    }
}

/// Agent-length timing: a run that is visibly unfinished is not decided because it is quiet.
@Suite struct AgentTimingTests {
    static let local: UInt32 = 0x100   // the exporter says: the parent is in this process
    static let remote: UInt32 = 0x300  // … in another process

    func span(_ id: UInt64, parent: UInt64 = 0, flags: UInt32? = nil, end: UInt64 = 2_000, trace: UInt64 = 1) -> TestSpan {
        var s = TestSpan(trace: tid(trace), span: id, parent: parent, end: end)
        s.flags = flags
        return s
    }

    func buffer(_ clock: ManualClock, _ configure: (inout BufferConfiguration) -> Void = { _ in }) -> TraceBuffer {
        var c = config()
        c.idleTimeout = .seconds(30)
        c.remoteParentTimeout = .seconds(120)
        c.maxTraceAge = .seconds(1800)
        configure(&c)
        return TraceBuffer(configuration: c, decider: RecordingDecider(), clock: clock)
    }

    /// Advances in 1 s steps up to `seconds`, collecting decisions (a decision tick).
    func run(_ buffer: TraceBuffer, _ clock: ManualClock, seconds: Int) -> [DecidedTrace] {
        var out: [DecidedTrace] = []
        for _ in 0..<seconds {
            clock.advance(by: .seconds(1))
            out += buffer.decideExpired()
        }
        return out
    }

    @Test func aLocalParentStillOpenHoldsTheTraceOverLongGaps() {
        let clock = ManualClock()
        let b = buffer(clock)
        // Retrieval and a first LLM call end; the root (agent run) is still open in the same process.
        _ = insert(b, [span(2, parent: 1, flags: Self.local), span(3, parent: 1, flags: Self.local)])
        // A reasoning-model call of 45 s, then another of 10 min: far beyond idle_timeout.
        #expect(run(b, clock, seconds: 45).isEmpty)
        _ = insert(b, [span(4, parent: 1, flags: Self.local)])
        #expect(run(b, clock, seconds: 600).isEmpty)
        // The final call fails and the root ends: decided wait_after_root later, complete.
        _ = insert(b, [span(5, parent: 1, flags: Self.local), span(1)])
        let decided = run(b, clock, seconds: 10)
        #expect(decided.map(\.summary.trigger) == [.root])
        #expect(decided.first?.summary.spanCount == 5)
        #expect(decided.first?.summary.complete == true)
    }

    @Test func aLocalParentThatNeverComesIsDecidedAtMaxTraceAge() {
        let clock = ManualClock()
        let b = buffer(clock)
        _ = insert(b, [span(2, parent: 1, flags: Self.local)])
        #expect(run(b, clock, seconds: 1799).isEmpty)
        let decided = run(b, clock, seconds: 1)
        #expect(decided.map(\.summary.trigger) == [.maxAge])
        #expect(decided.first?.summary.complete == false)
    }

    @Test(arguments: [Self.remote, nil])
    func onlyRemoteOrUnknownParentsMissingIsDecidedAfterRemoteParentTimeout(flags: UInt32?) {
        let clock = ManualClock()
        let b = buffer(clock)
        // A tool service whose caller (a gateway, another service) exports elsewhere, or not at all.
        _ = insert(b, [span(2, parent: 1, flags: flags), span(3, parent: 2, flags: Self.local)])
        #expect(run(b, clock, seconds: 119).isEmpty)
        let decided = run(b, clock, seconds: 1)
        #expect(decided.map(\.summary.trigger) == [.idle])
        #expect(decided.first?.summary.spanCount == 2)
        #expect(decided.first?.summary.complete == false)
    }

    @Test func aRemoteParentThatArrivesMakesTheTreeCompleteAndItsOwnRootCounts() {
        let clock = ManualClock()
        let b = buffer(clock)
        _ = insert(b, [span(3, parent: 2, flags: Self.remote)])  // service B first
        #expect(run(b, clock, seconds: 60).isEmpty)
        _ = insert(b, [span(2, parent: 1, flags: Self.local), span(1)])  // service A: the client span and the root
        let decided = run(b, clock, seconds: 5)
        #expect(decided.map(\.summary.trigger) == [.root])
        #expect(decided.first?.summary.complete == true)
    }

    @Test func aParentNamedRemoteFirstAndLocalLaterIsLocal() {
        let clock = ManualClock()
        let b = buffer(clock)
        // The tool service (its parent, the agent's root, is remote to it) exports before the agent's own children.
        _ = insert(b, [span(5, parent: 1, flags: Self.remote)])
        _ = insert(b, [span(2, parent: 1, flags: Self.local)])
        #expect(run(b, clock, seconds: 600).isEmpty)  // the root is still open in the agent: no remote-parent timeout
        _ = insert(b, [span(1)])
        #expect(run(b, clock, seconds: 5).map(\.summary.trigger) == [.root])
    }

    @Test func anIntermediateParentStillOpenHoldsTheTraceAfterTheRoot() {
        let clock = ManualClock()
        let b = buffer(clock)
        // Root first (its service exported it), while a span of another process waits for a local parent.
        _ = insert(b, [span(1), span(4, parent: 3, flags: Self.local)])
        #expect(run(b, clock, seconds: 300).isEmpty)
        _ = insert(b, [span(3, parent: 1, flags: Self.remote)])
        let decided = run(b, clock, seconds: 5)
        #expect(decided.map(\.summary.trigger) == [.root])
    }

    @Test func aRootThatHasNotEndedDoesNotCountAsTheRoot() {
        let clock = ManualClock()
        let b = buffer(clock)
        // A streaming exporter sends the root at its start (end time 0), then children as they end.
        _ = insert(b, [span(1, end: 0), span(2, parent: 1, flags: Self.local)])
        #expect(run(b, clock, seconds: 20).isEmpty)  // not decided at root + wait_after_root
        _ = insert(b, [span(3, parent: 1, flags: Self.local)])
        let decided = run(b, clock, seconds: 31)
        // No ended root, nothing missing (the root is there): idle applies.
        #expect(decided.map(\.summary.trigger) == [.idle])
    }

    @Test func severalRootsAndCompleteTrees() {
        let clock = ManualClock()
        let b = buffer(clock)
        _ = insert(b, [span(1), span(2), span(3, parent: 1, flags: Self.local)])
        let decided = run(b, clock, seconds: 5)
        #expect(decided.map(\.summary.trigger) == [.root])
        #expect(decided.first?.summary.complete == true)
    }

    @Test func duplicateDeliveriesAreDroppedAndCountOnce() {
        let clock = ManualClock()
        let b = buffer(clock)
        let first = insert(b, [span(2, parent: 1, flags: Self.local), span(1)])
        let again = insert(b, [span(2, parent: 1, flags: Self.local), span(1), span(3, parent: 1, flags: Self.local)])
        #expect(first.buffered == 2 && first.duplicates == 0)
        #expect(again.buffered == 1 && again.duplicates == 2)
        let decided = run(b, clock, seconds: 5)
        #expect(decided.first?.summary.spanCount == 3)
        #expect(decided.first?.spans?.count == 3)
    }

    @Test func decisionLatencyIsMeasuredFromTheFirstSpan() {
        let clock = ManualClock()
        let b = buffer(clock)
        _ = insert(b, [span(2, parent: 1, flags: Self.local)])
        clock.advance(by: .seconds(40))
        _ = insert(b, [span(1)])
        let decided = run(b, clock, seconds: 5)
        let s = decided[0].summary
        #expect(s.decidedAt - s.firstSeenAt == 45_000_000_000)
    }
}

@Suite struct SmallIDMapTests {
    /// The same answers below and above the switch from the array to the dictionary.
    @Test(arguments: [5, 32, 33, 200])
    func behavesLikeADictionary(count: Int) {
        var map = SmallIDMap<Int>()
        var reference: [UInt64: Int] = [:]
        for i in 0..<count {
            let id = UInt64(i) &* 0x9E37_79B9_7F4A_7C15 | 1
            map.set(id, i)
            reference[id] = i
            if i % 3 == 0 { map.set(id, -i); reference[id] = -i }
            if i % 7 == 0 { #expect(map.remove(id) == reference.removeValue(forKey: id)) }
        }
        for (id, value) in reference { #expect(map[id] == value) }
        #expect(map[12345] == nil && map.remove(12345) == nil)
        #expect(map.isEmpty == reference.isEmpty)
        #expect(map.accountedBytes > 0)
        // The accounting is kept up to date by each change: it equals a fresh count of the storage.
        var recount = map
        recount.updateAllocation()
        #expect(map.accountedBytes == recount.accountedBytes)
    }
}

@Suite struct AllocationAccountingTests {
    /// `BufferedSpans.accountedBytes` is maintained by every append; it must match a recount of the storage after
    /// each kind of change (one span, a raw payload, another trace's spans, a new scope).
    @Test func bufferedSpansAccountingFollowsEveryAppend() {
        let resource = ResourceOrigin(header: [0x0A, 0x00])
        let scopes = (0..<3).map { _ in ScopeOrigin(resource: resource, header: [0x0A, 0x00]) }
        var spans = BufferedSpans()
        func check(_ s: BufferedSpans) {
            var recount = s
            recount.updateAllocation()
            #expect(s.accountedBytes == recount.accountedBytes)
            #expect(s.accountedBytes > 0)
        }
        let payload = [UInt8](repeating: 7, count: 300)
        for i in 0..<40 {
            payload.withUnsafeBytes { spans.appendRaw(scope: scopes[i % 3], bytes: UnsafeRawBufferPointer(rebasing: $0[0..<(50 + i * 5)])) }
            check(spans)
        }
        var other = BufferedSpans()
        payload.withUnsafeBytes { other.appendRaw(scope: scopes[0], bytes: $0) }
        spans.append(contentsOf: other)
        check(spans)
    }

    @Test func ledgerAccountingFollowsAppendsAndResolution() {
        var ledger = GenAILedger()
        var previous = 0
        for i in 0..<20 {
            ledger.append(GenAISpan(spanID: UInt64(i + 1), role: .inference, operation: "chat", tokens: SIMD8(10, 1, 0, 0, 0, 0, 0, 0)))
            // Held encoded: IDs 16 bytes, flags 1, names index 1, duration 1, the lane mask and two one-byte lanes 3;
            // plus spare capacity (at least `initialEncodedCapacity`, then growing by half) and the names array, each
            // with its header.
            let encoded = 22 * (i + 1)
            #expect(ledger.accountedBytes >= encoded + 2 * arrayAllocationOverhead)
            #expect(ledger.accountedBytes <= max(GenAILedger.initialEncodedCapacity, encoded * 3 / 2) + 2 * arrayAllocationOverhead + 64, "\(i): \(ledger.accountedBytes)")
            #expect(ledger.accountedBytes >= previous)
            previous = ledger.accountedBytes
        }
        ledger.resolve()
        // Decoded for the decision: a `GenAISpan` and a counted lane vector per span.
        #expect(ledger.accountedBytes == GenAILedger(spans: ledger.spans).accountedBytes + ledger.counted.capacity * 64 + arrayAllocationOverhead)
        #expect(ledger.accountedBytes >= 20 * (MemoryLayout<GenAISpan>.stride + 64))
    }
}

@Suite struct DecisionCacheTests {
    @Test func decisionsAreRememberedForTheRetentionAndEarlyEvictionsAreCounted() {
        var cache = DecisionCache(capacity: 3, retention: 100)
        for i in 1...3 as ClosedRange<UInt64> { cache.insert(tid(i), Decision(keep: true, policy: 0), now: i) }
        #expect(cache.earlyEvictions == 0)
        cache.insert(tid(4), Decision(keep: true, policy: 0), now: 10)  // over capacity, the oldest is 9 ns old
        #expect(cache.earlyEvictions == 1)
        #expect(!cache.contains(tid(1)) && cache.contains(tid(4)))
        // Past the retention, old entries go by age, and that is not an early eviction.
        cache.insert(tid(5), Decision(keep: true, policy: 0), now: 500)
        #expect(cache.earlyEvictions == 1)
        #expect(cache.entries.map(\.0) == [tid(5)])
    }

    @Test func theBufferRemembersDecisionsForMaxTraceAgePlusAMargin() {
        var c = BufferConfiguration()
        c.shardCount = 1
        c.decisionCacheSize = 2
        c.maxTraceAge = .seconds(60)
        c.waitAfterRoot = .seconds(1)
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: c, decider: RecordingDecider(keep: { _ in false }), clock: clock)
        for t in 1...3 as ClosedRange<UInt64> { _ = insert(buffer, [TestSpan(trace: tid(t), span: 1)]) }
        clock.advance(by: .seconds(2))
        #expect(buffer.decideExpired().count == 3)
        #expect(buffer.decisionCacheEarlyEvictions == 1)  // three dropped traces, room for two
    }
}
