import Logging
import Synchronization
import TailgateBuffer
import TailgateTestSupport
import TailgateWire
import Testing

@testable import TailgateExport

/// A downstream answering from a script: each request is given to `answer`, which says what happens to it.
final class ScriptedDownstream: Downstream {
    let target = "scripted"
    let delivered = Mutex<[DecodedSpan]>([])
    let attempts = Mutex(0)
    let answer: @Sendable (_ request: [UInt8], _ attempt: Int) -> SendOutcome

    init(_ answer: @escaping @Sendable (_ request: [UInt8], _ attempt: Int) -> SendOutcome = { _, _ in .delivered }) {
        self.answer = answer
    }

    func run() async throws {}  // like the file downstream: no connection task
    func close() {}

    /// The pass-through headers of each request.
    let headers = Mutex<[[String]]>([])

    func send(_ request: [UInt8], signal: OTLPSignal, json: Bool, headers: [(String, String)]) async -> SendOutcome {
        self.headers.withLock { $0.append(headers.map { "\($0.0)=\($0.1)" }) }
        return await send(request)
    }

    func send(_ request: [UInt8]) async -> SendOutcome {
        let n = attempts.withLock { $0 += 1; return $0 }
        let outcome = answer(request, n)
        if outcome == .delivered {
            let spans = (try? decodeRequest(request)) ?? []
            delivered.withLock { $0 += spans }
        }
        return outcome
    }

    var spanIDs: [UInt64] { delivered.withLock { $0.map(\.spanID) } }
}

final class CountingObserver: ForwarderObserver {
    let drops = Mutex<[ForwardDropReason: Int]>([:])
    let forwardedSpans = Mutex(0)
    func forwarded(spans: Int, requests: Int) { forwardedSpans.withLock { $0 += spans } }
    func dropped(spans: Int, reason: ForwardDropReason) { drops.withLock { $0[reason, default: 0] += spans } }
    func sendFailed(reason: String, willRetry: Bool) {}
    func queued(bytes: Int) {}
    var total: Int { drops.withLock { $0.values.reduce(0, +) } }
    var forwarded: Int { forwardedSpans.withLock { $0 } }
}

struct KeepAll: TraceDecider {
    func decide(_ trace: TraceSummary) -> Decision { Decision(keep: true, policy: 0) }
}

/// Buffered spans of `traces` traces with `spans` spans each (span IDs 1…), optionally padded to `padding` bytes.
func keptTraces(_ traces: Int, spans: Int, padding: Int = 0, name: (UInt64) -> String = { _ in "span" }) -> [BufferedSpans] {
    let buffer = TraceBuffer(configuration: BufferConfiguration(), decider: KeepAll())
    let scanner = OTLPScanner()
    var id: UInt64 = 0
    for t in 0..<traces {
        var list: [TestSpan] = []
        for _ in 0..<spans {
            id += 1
            list.append(TestSpan(trace: tid(UInt64(t + 1)), span: id, parent: 0, name: name(id),
                                 strings: padding > 0 ? [("pad", String(repeating: "x", count: padding))] : []))
        }
        let bytes = exportRequest(spans: list)
        var scanned = ScannedRequest()
        bytes.withUnsafeBytes { raw in
            try! scanner.scan(raw, into: &scanned)
            _ = buffer.insert(scanned, body: raw)
        }
    }
    return buffer.decideAll().compactMap(\.spans)
}

/// A forwarder on `clock` (a fresh test clock unless given) with short timeouts.
func forwarder(_ downstream: any Downstream, _ observer: CountingObserver = CountingObserver(), clock: TestClock = TestClock(),
               spool: (any BatchSpool)? = nil, headerSets: HeaderSets = HeaderSets(), shutdownBudget: Duration = .seconds(25),
               _ configure: (inout ForwarderConfiguration) -> Void = { _ in }) -> Forwarder {
    var c = ForwarderConfiguration()
    c.batchTimeout = .milliseconds(5)
    c.initialBackoff = .milliseconds(1)
    c.maxBackoff = .milliseconds(4)
    configure(&c)
    return Forwarder(configuration: c, downstream: downstream, observer: observer, logger: Logger(label: "test"), spool: spool,
                     headerSets: headerSets, clock: clock, shutdownBudget: { shutdownBudget })
}

/// Runs the forwarder over `traces`, finishes it with a long deadline and drives its clock until it returns.
func forwardAll(_ f: Forwarder, _ clock: TestClock, _ traces: [BufferedSpans]) async {
    let task = Task { await f.run() }
    for t in traces { f.submit(t) }
    f.finish(within: .seconds(120))
    await clock.drive(task)
}

@Suite struct ForwarderTests {
    /// Defect: a downstream whose run() returns at once (the file downstream) was closed while a worker still wrote.
    @Test func downstreamWithoutConnectionTaskGetsEverythingAtShutdown() async {
        for _ in 0..<20 {
            let downstream = ScriptedDownstream()
            let observer = CountingObserver()
            let clock = TestClock()
            let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 16 }
            await forwardAll(f, clock, keptTraces(50, spans: 4))
            #expect(downstream.spanIDs.count == 200)
            #expect(Set(downstream.spanIDs).count == 200)
            #expect(observer.total == 0)
        }
    }

    /// Defect: batches ignored max_batch_bytes for large traces.
    @Test func batchesAreSplitByBytesAtSpanGranularity() async {
        let sizes = Mutex<[Int]>([])
        let downstream = ScriptedDownstream { request, _ in
            sizes.withLock { $0.append(request.count) }
            return .delivered
        }
        let clock = TestClock()
        let f = forwarder(downstream, clock: clock) { $0.maxBatchBytes = 8 << 10 }
        await forwardAll(f, clock, keptTraces(3, spans: 40, padding: 1000))
        #expect(downstream.spanIDs.count == 120)
        // 8 KiB of span bytes, plus resource/scope framing (a few dozen bytes).
        #expect(sizes.withLock { $0.allSatisfy { $0 <= (8 << 10) + 256 } })
        #expect(sizes.withLock { $0.count } >= 15)
    }

    /// Defect: "too large" was retried as if transient, then dropped with unrelated traces.
    @Test func tooLargeIsSplitAndResent() async {
        let downstream = ScriptedDownstream { request, _ in
            request.count > 5_000 ? .tooLarge(reason: "resourceExhausted: Received message larger than max") : .delivered
        }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock)
        await forwardAll(f, clock, keptTraces(4, spans: 30, padding: 300))
        #expect(downstream.spanIDs.sorted() == Array(1...120))
        #expect(observer.total == 0)
    }

    @Test func aSingleSpanTooLargeIsDroppedAloneAndCounted() async {
        let downstream = ScriptedDownstream { request, _ in
            request.count > 3_000 ? .tooLarge(reason: "HTTP 413") : .delivered
        }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock)
        let big = keptTraces(1, spans: 1, padding: 5_000)
        await forwardAll(f, clock, big + keptTraces(2, spans: 3))
        #expect(downstream.spanIDs.count == 6)
        #expect(observer.drops.withLock { $0[.tooLarge] } == 1)
    }

    /// Defect 8: one bad span dropped everyone's batch. A batch rejected as invalid is bisected.
    @Test func invalidBatchIsBisectedToTheOffendingSpan() async {
        let downstream = ScriptedDownstream { request, _ in
            let spans = (try? decodeRequest(request)) ?? []
            return spans.contains { $0.spanID == 37 } ? .invalid(reason: "invalidArgument: bad UTF-8") : .delivered
        }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 1000 }
        await forwardAll(f, clock, keptTraces(10, spans: 10))
        #expect(downstream.spanIDs.sorted() == Array(1...100).filter { $0 != 37 })
        #expect(observer.drops.withLock { $0[.rejected] } == 1)
    }

    @Test func permanentFailuresOtherThanContentDropTheBatchWithoutBisecting() async {
        let downstream = ScriptedDownstream { _, _ in .permanent(reason: "unauthenticated: no token") }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 1000 }
        await forwardAll(f, clock, keptTraces(10, spans: 10))
        #expect(downstream.attempts.withLock { $0 } == 1)
        #expect(observer.drops.withLock { $0[.rejected] } == 100)
    }

    @Test func partialSuccessDeliversTheRestAndCountsTheRejected() async {
        let downstream = ScriptedDownstream { _, _ in .partial(rejected: 3, message: "3 spans too old") }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 1000 }
        await forwardAll(f, clock, keptTraces(2, spans: 5))
        #expect(observer.forwarded == 7)
        #expect(observer.drops.withLock { $0 } == [.rejected: 3])
    }

    /// Defect 10: an outage as long as max_retry_time dropped batches though the queue was nearly empty.
    @Test func anOutageTheQueueHoldsLosesNothing() async {
        let downstream = ScriptedDownstream { _, attempt in
            attempt <= 60 ? .retryable(reason: "unavailable: down", retryAfter: nil) : .delivered
        }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 10 }
        await forwardAll(f, clock, keptTraces(20, spans: 5))
        #expect(downstream.spanIDs.sorted() == Array(1...100))
        #expect(observer.total == 0)
    }

    @Test func aBatchThatKeepsFailingDoesNotBlockTheOthers() async {
        // Requests holding span 1 fail (transiently) until everything else was delivered.
        let downstream = ScriptedDownstream { request, _ in
            let spans = (try? decodeRequest(request)) ?? []
            return spans.contains { $0.spanID == 1 } ? .retryable(reason: "unavailable", retryAfter: nil) : .delivered
        }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 5 }
        let task = Task { await f.run() }
        for t in keptTraces(10, spans: 5) { f.submit(t) }
        await clock.drive(until: { downstream.spanIDs.count >= 45 })
        #expect(downstream.spanIDs.sorted() == Array(6...50))
        f.finish(within: .zero)
        await clock.drive(task)
        #expect(observer.drops.withLock { $0[.shutdown] } == 5)
    }

    /// Defect 4: a cancelled forwarder spun at 100 % CPU and never returned.
    @Test func cancellationEndsRunAndCountsWhatWasQueued() async {
        let downstream = ScriptedDownstream { _, _ in .retryable(reason: "unavailable", retryAfter: .seconds(60)) }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock)
        let task = Task { await f.run() }
        for t in keptTraces(3, spans: 2) { f.submit(t) }
        // Until the batch (sealed at its timeout) was tried once and its retry waits a minute.
        await clock.drive(until: { downstream.attempts.withLock { $0 } > 0 && clock.earliestDeadline.map { $0 >= .seconds(60) } == true })
        task.cancel()
        await task.value  // returns: the test would hang otherwise
        #expect(observer.total == 6)
        #expect(downstream.spanIDs.isEmpty)
        #expect(f.snapshot.reservations == 0)
        #expect(clock.registrations == 0)
    }

    /// Defect 12 (the forwarder's part): what the deadline cuts off is counted as shutdown_timeout.
    @Test func deadlineDropsAreCounted() async {
        let downstream = ScriptedDownstream { _, _ in .retryable(reason: "unavailable", retryAfter: nil) }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock)
        let task = Task { await f.run() }
        for t in keptTraces(5, spans: 3) { f.submit(t) }
        f.finish(within: .milliseconds(50))
        await clock.drive(task)
        #expect(observer.drops.withLock { $0[.shutdown] } == 15)
        // Nothing waited past the deadline.
        #expect(clock.now.offset <= .milliseconds(50))
    }

    @Test func queueFullDropsAreCountedAndSaturate() async {
        let downstream = ScriptedDownstream { _, _ in .retryable(reason: "unavailable", retryAfter: nil) }
        let observer = CountingObserver()
        let f = forwarder(downstream, observer) { $0.queueBytes = 2_000; $0.maxBatchSpans = 1 }
        // Not running: batches accumulate in the queue.
        for t in keptTraces(10, spans: 2, padding: 200) { f.submit(t) }
        #expect(f.isSaturated)
        #expect(observer.drops.withLock { $0[.queueFull] ?? 0 } > 0)
        #expect(f.queuedBytes <= 2_000)
    }

    /// The batch timeout is the injected clock's: a batch is sealed exactly `batchTimeout` after its first span.
    @Test func aBatchIsSentAtItsTimeoutOnTheInjectedClock() async {
        let downstream = ScriptedDownstream()
        let clock = TestClock()
        let f = forwarder(downstream, clock: clock) { $0.batchTimeout = .seconds(3) }
        let task = Task { await f.run() }
        clock.advance(by: .seconds(1))
        for t in keptTraces(2, spans: 2) { f.submit(t) }
        await clock.waitForSleeper()
        #expect(clock.earliestDeadline == .seconds(4))  // the flusher's timer: first span at 1 s, plus 3 s
        #expect(downstream.attempts.withLock { $0 } == 0)
        await clock.drive(until: { downstream.spanIDs.count == 4 })
        #expect(clock.now.offset == .seconds(4))
        f.finish(within: .seconds(1))
        await clock.drive(task)
    }

    /// Retry-After is honoured on the injected clock (never below the backoff), and the downstream rests meanwhile.
    @Test func retriesWaitTheBackoffOrRetryAfter() async {
        let clock = TestClock()
        let times = Mutex<[Duration]>([])
        let downstream = ScriptedDownstream { _, attempt in
            times.withLock { $0.append(clock.now.offset) }
            return attempt == 1 ? .retryable(reason: "unavailable", retryAfter: .seconds(2)) : .delivered
        }
        let f = forwarder(downstream, clock: clock) { $0.maxBatchSpans = 4 }
        for t in keptTraces(2, spans: 2) { f.submit(t) }  // one batch, sealed by size
        let task = Task { await f.run() }
        f.finish(within: .seconds(60))
        await clock.drive(task)
        #expect(downstream.spanIDs.count == 4)
        let t = times.withLock { $0 }
        #expect(t.count == 2)
        #expect(t[1] - t[0] >= .seconds(2))
    }

    /// With a spool, batches beyond the memory queue wait on disk and are read back to be sent: nothing is dropped.
    @Test func overflowGoesToTheSpoolAndIsSentFromIt() async {
        let downstream = ScriptedDownstream()
        let observer = CountingObserver()
        let spool = MemorySpool()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock, spool: spool) { $0.queueBytes = 2_000; $0.maxBatchSpans = 1 }
        for t in keptTraces(10, spans: 2, padding: 200) { f.submit(t) }
        #expect(f.queuedBytes <= 2_000)
        #expect(spool.written > 0)
        let task = Task { await f.run() }
        f.finish(within: .seconds(60))
        await clock.drive(task)
        #expect(downstream.spanIDs.sorted() == Array(1...20))
        #expect(observer.total == 0)
        #expect(spool.live == 0)  // every record released once delivered
    }

    /// Sync durability: a trace's `durable` callback runs only once its batch is in the spool.
    @Test func durableRunsOnceTheBatchIsSpooled() async {
        let spool = MemorySpool(everyBatch: true)
        let clock = TestClock()
        let f = forwarder(ScriptedDownstream(), clock: clock, spool: spool) { $0.maxBatchSpans = 2 }
        let seen = Mutex<[Int]>([])
        for t in keptTraces(3, spans: 2) { f.submit(t, durable: { seen.withLock { $0.append(spool.written) } }) }
        #expect(seen.withLock { $0 } == [1, 2, 3])
    }

    /// A batch holds spans of one header set (one tenant) only.
    @Test func batchesAreSealedWhenTheHeaderSetChanges() async {
        let downstream = ScriptedDownstream()
        let clock = TestClock()
        let sets = HeaderSets()
        let a = sets.id([("x-scope-orgid", "a")]), b = sets.id([("x-scope-orgid", "b")])
        let f = forwarder(downstream, clock: clock, headerSets: sets)
        for (t, h) in zip(keptTraces(5, spans: 1), [a, a, b, b, a]) { f.submit(t, headers: h) }
        let task = Task { await f.run() }
        f.finish(within: .seconds(60))
        await clock.drive(task)
        #expect(downstream.headers.withLock { $0 } == [["x-scope-orgid=a"], ["x-scope-orgid=b"], ["x-scope-orgid=a"]])
        #expect(downstream.spanIDs.count == 5)
    }
}

@Suite struct RequestSplitterTests {
    @Test func halvesHoldEverySpanOnceWithTheirHeaders() throws {
        let a = exportRequest([
            TestResource(service: "a", scopes: [(name: "s1", spans: (1...3).map { TestSpan(trace: tid(1), span: $0) }),
                                                (name: "s2", spans: (4...5).map { TestSpan(trace: tid(1), span: $0) })]),
            TestResource(service: "b", spans: (6...9).map { TestSpan(trace: tid(2), span: $0) }),
        ])
        let (x, y) = try #require(RequestSplitter.split(a))
        #expect(x.spans == 4 && y.spans == 5)
        let all = try decodeRequest(x.request) + decodeRequest(y.request)
        #expect(all.map(\.spanID).sorted() == Array(1...9))
        #expect(try decodeRequest(a).sorted { $0.spanID < $1.spanID } == all.sorted { $0.spanID < $1.spanID })
    }

    @Test func oneSpanCannotBeSplit() {
        #expect(RequestSplitter.split(exportRequest(spans: [TestSpan(trace: tid(1), span: 1)])) == nil)
    }

    @Test func traceIDsAreListed() {
        let r = exportRequest(spans: [TestSpan(trace: tid(1), span: 1), TestSpan(trace: tid(2), span: 2)])
        #expect(RequestSplitter.traceIDs(r) == "\(tid(1)),\(tid(2))")
    }
}

@Suite struct RetryAfterTests {
    @Test(arguments: [
        ("5", 1_000, Duration.seconds(5)),
        ("-3", 1_000, .seconds(0)),        // negative: no wait, never a negative sleep
        ("0", 1_000, .seconds(0)),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770, .seconds(7)),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_800, .seconds(0)),  // in the past
    ])
    func parses(value: String, now: Int64, expected: Duration) {
        #expect(RetryAfter.parse(value, now: now) == expected)
    }

    @Test(arguments: ["soon", "", "Sunday, 06-Nov-94 08:49:37 GMT", "1.5"])
    func ignoresWhatDoesNotParse(value: String) {
        #expect(RetryAfter.parse(value, now: 0) == nil)
    }
}

@Suite struct DownstreamClassificationTests {
    @Test func sizeRefusalsAreTooLargeOtherExhaustionIsRetryable() {
        #expect(GRPCDownstream.isAboutSize("Received message larger than max (6291456 vs. 4194304)"))
        #expect(!GRPCDownstream.isAboutSize("memory limiter: data refused"))
    }
}
