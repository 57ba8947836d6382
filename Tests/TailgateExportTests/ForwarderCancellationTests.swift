import Testing

@testable import TailgateExport

/// Cancelling the task that runs the forwarder, at every point it can wait: it returns, parks nothing, leaves nothing
/// registered on the clock, and accounts for every span (delivered, persisted or dropped with a reason).
@Suite struct ForwarderCancellationTests {
    @Test func cancelledWhileIdleReturnsAndLeavesNothingParked() async {
        let clock = TestClock()
        let f = forwarder(ScriptedDownstream(), clock: clock)
        let task = Task { await f.run() }
        // The workers park (nothing queued) and the flusher waits for a batch; none of them sleeps on the clock.
        while f.snapshot.parked < 3 { await Task.yield() }
        task.cancel()
        await task.value
        #expect(f.snapshot.phase == .finished)
        #expect(f.snapshot.reservations == 0)
        #expect(clock.registrations == 0)
    }

    @Test func cancelledMidSendWithADownstreamThatStopsAtOnce() async {
        let downstream = GatedDownstream(honoursCancellation: true)
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 4; $0.concurrency = 2 }
        for t in keptTraces(6, spans: 2) { f.submit(t) }  // three batches
        let task = Task { await f.run() }
        await downstream.waitForSend()
        task.cancel()
        await task.value
        #expect(observer.drops.withLock { $0 } == [.shutdown: 12])
        #expect(observer.forwarded == 0)
        #expect(f.snapshot.phase == .finished)
        #expect(f.snapshot.reservations == 0)
        #expect(downstream.waiting == 0)
        #expect(clock.registrations == 0)
    }

    /// A send that finishes despite the cancellation counts as delivered; the rest is dropped; run waits for it.
    @Test func cancelledMidSendWithADownstreamThatFinishesTheSend() async {
        let downstream = GatedDownstream(honoursCancellation: false)
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 4; $0.concurrency = 1 }
        for t in keptTraces(6, spans: 2) { f.submit(t) }  // three batches, one sent at a time
        let task = Task { await f.run() }
        await downstream.waitForSend()
        task.cancel()
        #expect(f.snapshot.phase != .finished)  // the send in progress holds it
        downstream.open(with: .delivered)
        await task.value
        #expect(observer.forwarded == 4)
        #expect(observer.drops.withLock { $0 } == [.shutdown: 8])
        #expect(f.snapshot.reservations == 0)
        #expect(clock.registrations == 0)
    }

    /// With a spool, what the cancellation cuts off is persisted (sent after the restart), not dropped.
    @Test func cancelledWithASpoolPersistsTheQueue() async {
        let downstream = ScriptedDownstream { _, _ in .retryable(reason: "unavailable", retryAfter: .seconds(30)) }
        let observer = CountingObserver()
        let spool = MemorySpool()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock, spool: spool) { $0.maxBatchSpans = 2 }
        for t in keptTraces(4, spans: 2) { f.submit(t) }
        let task = Task { await f.run() }
        await clock.drive(until: { clock.earliestDeadline.map { $0 >= .seconds(15) } == true })  // waiting out the pause
        task.cancel()
        await task.value
        #expect(observer.total == 0)
        #expect(f.persistedAtStop.spans == 8)
        #expect(f.persistedAtStop.batches == 4)
        #expect(spool.live == 4)
        #expect(clock.registrations == 0)
    }

    @Test func runOnACancelledTaskFinishesAtOnce() async {
        let observer = CountingObserver()
        let f = forwarder(ScriptedDownstream(), observer) { $0.maxBatchSpans = 3 }
        for t in keptTraces(3, spans: 2) { f.submit(t) }  // two batches queued, the last span still open
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await f.run()
        }
        await task.value
        #expect(observer.drops.withLock { $0 } == [.shutdown: 6])
        #expect(f.snapshot.reservations == 0)
    }

    /// Bug fixed with the state machine: spans submitted after the forwarder finished sat in a batch nobody sent.
    @Test func spansSubmittedAfterTheForwarderFinishedAreCounted() async {
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(ScriptedDownstream(), observer, clock: clock)
        let task = Task { await f.run() }
        f.finish(within: .seconds(1))
        await clock.drive(task)
        let ran = Mutex(false)
        f.submit(keptTraces(1, spans: 3)[0], durable: { ran.withLock { $0 = true } })
        #expect(observer.drops.withLock { $0 } == [.shutdown: 3])
        #expect(ran.withLock { $0 })
    }

    /// Spans submitted while draining are sealed at once (nobody times batches any more) and delivered.
    @Test func spansSubmittedWhileDrainingAreDelivered() async {
        let downstream = GatedDownstream(honoursCancellation: true)
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock) { $0.maxBatchSpans = 2; $0.concurrency = 1 }
        f.submit(keptTraces(1, spans: 2)[0])
        let task = Task { await f.run() }
        await downstream.waitForSend()
        f.finish(within: .seconds(60))
        f.submit(keptTraces(1, spans: 1)[0])
        downstream.open(with: .delivered)
        await clock.drive(task)
        #expect(observer.forwarded == 3)
        #expect(observer.total == 0)
    }
}

import Synchronization
