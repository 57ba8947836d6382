import Logging
import ServiceLifecycleTestKit
import Synchronization
import Testing

@testable import TailgateExport

/// The metrics/logs relay on the test clock: nothing sleeps, time moves only when a test moves it.
@Suite struct SignalForwarderLifecycleTests {
    /// Idle workers park (no timer polls the queue); a submit wakes one at once, the clock standing still.
    @Test func enqueueWakesTheSender() async {
        let clock = TestClock()
        let downstream = GatedDownstream(honoursCancellation: true)
        let counts = SignalCounts()
        let r = relay(downstream, concurrency: 2, observer: counts, clock: clock)
        let task = Task { await r.run() }
        while r.snapshot.parked < 2 { await Task.yield() }
        #expect(clock.registrations == 0)
        #expect(r.submit([1, 2, 3], signal: .metrics, json: false))
        await downstream.waitForSend()
        #expect(clock.now.offset == .zero)
        #expect(r.snapshot.inFlight == 1)
        downstream.open(with: .delivered)
        r.finish(within: .seconds(1))
        await clock.drive(task)
        #expect(counts.forwarded.withLock { $0 } == ["metrics": 1])
        #expect(counts.dropped.withLock { $0 }.isEmpty)
        #expect(r.snapshot.reservations == 0)
        #expect(clock.registrations == 0)
    }

    /// A full queue refuses (the receivers answer UNAVAILABLE / 503, retryable) and drops nothing; room comes back
    /// as the sender takes requests; once finishing, everything is refused.
    @Test func aFullQueueAnswersOverloaded() async {
        let clock = TestClock()
        let downstream = GatedDownstream(honoursCancellation: true)
        let counts = SignalCounts()
        let r = relay(downstream, queueBytes: 10, observer: counts, clock: clock)
        let six = [UInt8](repeating: 6, count: 6)
        #expect(r.submit(six, signal: .metrics, json: false))
        #expect(!r.submit(six, signal: .logs, json: false))
        #expect(r.submit([1, 2, 3, 4], signal: .logs, json: false))
        #expect(r.queuedBytes == 10)
        let task = Task { await r.run() }
        await downstream.waitForSend()  // the first request is taken: its bytes leave the queue
        #expect(r.queuedBytes == 4)
        #expect(r.submit(six, signal: .metrics, json: false))
        #expect(!r.submit([1], signal: .metrics, json: false))
        r.finish(within: .seconds(60))
        #expect(!r.submit([1], signal: .metrics, json: false))
        downstream.open(with: .delivered)
        await clock.drive(task)
        #expect(counts.forwarded.withLock { $0 } == ["metrics": 2, "logs": 1])
        #expect(counts.dropped.withLock { $0 }.isEmpty)
    }

    /// After a transient failure the request waits on the clock for the downstream's Retry-After (or the backoff),
    /// and is sent again when the clock gets there, not before.
    @Test func aRetryWaitsForTheClocksDelay() async {
        let clock = TestClock()
        let downstream = SignalScriptedDownstream { _, attempt in
            attempt == 1 ? .retryable(reason: "unavailable", retryAfter: .seconds(3)) : .delivered
        }
        let counts = SignalCounts()
        let r = relay(downstream, observer: counts, clock: clock, initialBackoff: .milliseconds(100), maxBackoff: .seconds(1))
        let task = Task { await r.run() }
        #expect(r.submit([7], signal: .logs, json: false))
        await clock.waitForSleeper()
        #expect(clock.earliestDeadline == .seconds(3))
        #expect(counts.failures.withLock { $0 } == 1)
        clock.advance(to: .seconds(2))
        for _ in 0..<100 { await Task.yield() }
        #expect(downstream.attempts.withLock { $0 } == 1)
        clock.advance(to: .seconds(3))
        while downstream.sent.withLock({ $0.count }) < 1 { await Task.yield() }
        #expect(downstream.attempts.withLock { $0 } == 2)
        r.finish(within: .zero)
        await clock.drive(task)
        #expect(counts.forwarded.withLock { $0 } == ["logs": 1])
        #expect(clock.now.offset == .seconds(3))
    }

    /// Without a Retry-After, the delay is the backoff (half to all of the initial backoff on the first failure).
    @Test func aRetryWithoutRetryAfterWaitsForTheBackoff() async {
        let clock = TestClock()
        let downstream = SignalScriptedDownstream { _, attempt in
            attempt == 1 ? .retryable(reason: "unavailable", retryAfter: nil) : .delivered
        }
        let counts = SignalCounts()
        let r = relay(downstream, observer: counts, clock: clock, initialBackoff: .seconds(2), maxBackoff: .seconds(8))
        let task = Task { await r.run() }
        #expect(r.submit([7], signal: .metrics, json: false))
        await clock.waitForSleeper()
        let retryAt = clock.earliestDeadline ?? .zero
        #expect(retryAt >= .seconds(1) && retryAt <= .seconds(2))
        r.finish(within: .seconds(60))
        await clock.drive(task)
        #expect(counts.forwarded.withLock { $0 } == ["metrics": 1])
        #expect(clock.now.offset == retryAt)
    }

    /// Graceful shutdown (as a service) drains what the downstream takes within the shutdown budget.
    @Test func gracefulShutdownDrainsWithinTheBudget() async {
        let clock = TestClock()
        let downstream = SignalScriptedDownstream { _, attempt in
            attempt == 1 ? .retryable(reason: "unavailable", retryAfter: .seconds(2)) : .delivered
        }
        let counts = SignalCounts()
        let r = relay(downstream, concurrency: 2, observer: counts, clock: clock, shutdownBudget: .seconds(5))
        await testGracefulShutdown { trigger in
            for i in 0..<3 { #expect(r.submit([UInt8(i)], signal: .metrics, json: false)) }
            let task = Task { await r.run() }
            trigger.triggerGracefulShutdown()
            await clock.drive(task)
        }
        #expect(counts.forwarded.withLock { $0 } == ["metrics": 3])
        #expect(counts.dropped.withLock { $0 }.isEmpty)
        #expect(clock.now.offset == .seconds(2))
        #expect(!r.submit([9], signal: .metrics, json: false))
        #expect(clock.registrations == 0)
    }

    /// What is undelivered when the shutdown budget runs out is dropped and counted, and run returns by the deadline.
    @Test func gracefulShutdownDropsWhatIsLeftAtTheDeadline() async {
        let clock = TestClock()
        let downstream = SignalScriptedDownstream { _, _ in .retryable(reason: "unavailable", retryAfter: nil) }
        let counts = SignalCounts()
        let r = relay(downstream, observer: counts, clock: clock, initialBackoff: .seconds(1), maxBackoff: .seconds(1),
                      shutdownBudget: .seconds(5))
        await testGracefulShutdown { trigger in
            let task = Task { await r.run() }
            for i in 0..<3 { #expect(r.submit([UInt8(i)], signal: .logs, json: false)) }
            trigger.triggerGracefulShutdown()
            await clock.drive(task)
        }
        #expect(counts.forwarded.withLock { $0 }.isEmpty)
        #expect(counts.dropped.withLock { $0 } == [SignalDropReason.shutdown.rawValue: 3])
        #expect(clock.now.offset <= .seconds(5))
        #expect(r.snapshot.reservations == 0)
        #expect(clock.registrations == 0)
    }

    @Test func cancelledWhileIdleReturnsAndLeavesNothingParked() async {
        let clock = TestClock()
        let r = relay(GatedDownstream(honoursCancellation: true), concurrency: 2, observer: SignalCounts(), clock: clock)
        let task = Task { await r.run() }
        while r.snapshot.parked < 2 { await Task.yield() }
        task.cancel()
        await task.value
        #expect(r.snapshot.finishing)
        #expect(r.snapshot.reservations == 0)
        #expect(clock.registrations == 0)
    }

    /// Cancelled while two requests are being sent and one waits: everything is accounted for.
    @Test func cancelledMidSendAccountsForEverything() async {
        let clock = TestClock()
        let downstream = GatedDownstream(honoursCancellation: true)
        let counts = SignalCounts()
        let r = relay(downstream, concurrency: 2, observer: counts, clock: clock)
        for i in 0..<3 { #expect(r.submit([UInt8(i)], signal: .metrics, json: false)) }
        let task = Task { await r.run() }
        await downstream.waitForSend()
        await downstream.waitForSend()
        task.cancel()
        await task.value
        // The cancelled sends answer retryable, past the deadline: dropped, as is the request still queued.
        #expect(counts.dropped.withLock { $0 } == [SignalDropReason.shutdown.rawValue: 3])
        #expect(downstream.waiting == 0)
        #expect(r.snapshot.reservations == 0)
        #expect(clock.registrations == 0)
    }
}

/// The trace forwarder as a service: graceful shutdown finishes it within its shutdown budget.
@Suite struct ForwarderServiceTests {
    @Test func gracefulShutdownFlushesTheOpenBatch() async {
        let downstream = ScriptedDownstream()
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock, shutdownBudget: .seconds(10)) { $0.batchTimeout = .seconds(60) }
        await testGracefulShutdown { trigger in
            let task = Task { await f.run() }
            for t in keptTraces(2, spans: 3) { f.submit(t) }
            trigger.triggerGracefulShutdown()
            await task.value  // sealed at shutdown, not at the batch timeout: the clock need not move
        }
        #expect(observer.forwarded == 6)
        #expect(observer.total == 0)
        #expect(clock.now.offset == .zero)
        #expect(f.snapshot.phase == .finished)
        #expect(f.snapshot.reservations == 0)
    }

    @Test func gracefulShutdownDropsWhatIsUndeliveredAtTheBudgetsEnd() async {
        let downstream = ScriptedDownstream { _, _ in .retryable(reason: "unavailable", retryAfter: .seconds(30)) }
        let observer = CountingObserver()
        let clock = TestClock()
        let f = forwarder(downstream, observer, clock: clock, shutdownBudget: .seconds(10)) { $0.maxBatchSpans = 4; $0.concurrency = 1 }
        await testGracefulShutdown { trigger in
            for t in keptTraces(2, spans: 2) { f.submit(t) }  // one batch
            let task = Task { await f.run() }
            await clock.waitForSleeper()
            #expect(clock.earliestDeadline == .seconds(30))  // the downstream asked for a 30 s pause
            trigger.triggerGracefulShutdown()
            // The worker looks again at the shutdown deadline (its 30 s sleep is cancelled first).
            while clock.earliestDeadline != .seconds(10) { await Task.yield() }
            await clock.drive(task)
        }
        #expect(observer.forwarded == 0)
        #expect(observer.drops.withLock { $0 } == [.shutdown: 4])
        #expect(clock.now.offset == .seconds(10))
        #expect(f.snapshot.reservations == 0)
        #expect(clock.registrations == 0)
    }
}
