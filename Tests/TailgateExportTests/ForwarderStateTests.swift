import Testing

@testable import TailgateExport
import TailgateWire

/// The forwarder's decisions as a value: framing, the byte-bounded queue, retry pauses and the lifecycle, without
/// tasks, I/O or a clock (every instant is passed in).
@Suite struct ForwarderStateTests {
    func state(_ configure: (inout ForwarderConfiguration) -> Void = { _ in }) -> ForwarderState {
        var c = ForwarderConfiguration()
        c.maxBatchSpans = 4
        c.batchTimeout = .milliseconds(200)
        configure(&c)
        return ForwarderState(c)
    }

    /// Frames `spans` spans and queues what is sealed; returns the sealed batches' span counts.
    @discardableResult
    func submit(_ s: inout ForwarderState, spans: Int, headers: UInt32 = 0, at now: Duration = .zero) -> [Int] {
        let (sealed, _) = s.append(keptTraces(1, spans: spans)[0], annotation: nil, durable: nil, headers: headers, now: now)!
        for b in sealed { _ = s.offer(b.encoded(), encoded: true) }
        return sealed.map(\.framer.spanCount)
    }

    func sent(_ work: ForwarderState.Work) -> ForwardBatch? {
        if case .send(let b) = work { b } else { nil }
    }

    @Test func lifecycleRunsDrainsAndFinishes() {
        var s = state()
        #expect(s.phase == .running)
        submit(&s, spans: 6)  // one batch of 4 queued, 2 spans open
        #expect(sent(s.nextWork(now: .zero))?.spans == 4)
        #expect(s.inFlight == 1)
        let (sealed, wake) = s.beginDraining(deadline: .seconds(10))
        #expect(wake == .all)
        #expect(sealed?.framer.spanCount == 2)
        #expect(s.phase == .draining(deadline: .seconds(10)))
        // A later finish cannot push the deadline out; an earlier one brings it in.
        _ = s.beginDraining(deadline: .seconds(20))
        #expect(s.deadline == .seconds(10))
        _ = s.beginDraining(deadline: .seconds(5))
        #expect(s.deadline == .seconds(5))
        _ = s.offer(sealed!.encoded(), encoded: true)
        #expect(sent(s.nextWork(now: .seconds(1)))?.spans == 2)
        guard case .idle = s.nextWork(now: .seconds(1)) else { Issue.record("two batches in flight: idle"); return }
        #expect(s.finishedWith() == .none)
        #expect(s.finishedWith() == .all)  // drained: every worker must look
        guard case .stop = s.nextWork(now: .seconds(1)) else { Issue.record("expected stop"); return }
        #expect(s.phase == .finished)
        // Finished: nothing more is taken.
        #expect(s.append(keptTraces(1, spans: 1)[0], annotation: nil, durable: nil, headers: 0, now: .zero) == nil)
        #expect(s.adopt(ForwardBatch(request: [], spans: 1)) == nil)
        #expect(s.beginDraining(deadline: .zero).wake == .none)
    }

    @Test func batchesAreSealedBySpansBytesAndHeaderSet() {
        var s = state { $0.maxBatchSpans = 3 }
        #expect(submit(&s, spans: 7) == [3, 3])
        #expect(s.framedSpans == 1)
        #expect(submit(&s, spans: 1, headers: 9) == [1])  // another tenant: the open batch is sealed first
        #expect(s.framedSpans == 1)
        var b = state { $0.maxBatchBytes = 10 }
        #expect(submit(&b, spans: 3) == [1, 1, 1])  // each span is larger than the limit: it goes alone
        #expect(b.framedSpans == 0)
    }

    @Test func theFlusherSealsAtTheTimeout() {
        var s = state()
        guard case .waitForBatch = s.flushStep(now: .zero) else { Issue.record("no batch open"); return }
        let (_, opened) = s.append(keptTraces(1, spans: 1)[0], annotation: nil, durable: nil, headers: 0, now: .milliseconds(50))!
        #expect(opened)
        guard case .sleepUntil(let t) = s.flushStep(now: .milliseconds(100)) else { Issue.record("sleep expected"); return }
        #expect(t == .milliseconds(250))
        // Spans added to the open batch do not restart its timer.
        #expect(s.append(keptTraces(1, spans: 1)[0], annotation: nil, durable: nil, headers: 0, now: .milliseconds(120))!.opened == false)
        guard case .seal(let sealed) = s.flushStep(now: .milliseconds(250)) else { Issue.record("seal expected"); return }
        #expect(sealed.framer.spanCount == 2)
        #expect(s.inFlight == 1)
        _ = s.beginDraining(deadline: .seconds(1))
        guard case .stop = s.flushStep(now: .seconds(1)) else { Issue.record("stop expected"); return }
    }

    @Test func whileDrainingEverySubmitIsSealedAtOnce() {
        var s = state()
        _ = s.beginDraining(deadline: .seconds(1))
        #expect(submit(&s, spans: 1) == [1])
        #expect(s.framedSpans == 0)
        #expect(s.queue.count == 1)
    }

    @Test func theQueueIsBoundedByBytesAndSaturates() {
        var s = state { $0.queueBytes = 1_000; $0.maxBatchSpans = 1 }
        var accepted = 0, refused = 0
        for t in keptTraces(10, spans: 1, padding: 200) {
            let (sealed, _) = s.append(t, annotation: nil, durable: nil, headers: 0, now: .zero)!
            for b in sealed { if s.offer(b.encoded(), encoded: true).accepted { accepted += 1 } else { refused += 1 } }
        }
        #expect(accepted + refused == 10 && refused > 0)
        #expect(s.queuedBytes <= 1_000)
        #expect(s.isSaturated(spooling: true))  // overflowed, even with a spool
        // Taking batches until the queue is below half clears the overflow.
        while s.queuedBytes >= 500 { _ = s.nextWork(now: .zero) }
        #expect(!s.isSaturated(spooling: true))
        #expect(s.inFlight == accepted - s.queue.count)
        // Without a spool, 90 % full is saturated already.
        var t = state { $0.queueBytes = 1_000 }
        _ = t.offer(ForwardBatch(request: [UInt8](repeating: 0, count: 900), spans: 1), encoded: false)
        #expect(t.isSaturated(spooling: false) && !t.isSaturated(spooling: true))
    }

    @Test func aTransientFailurePausesTheDownstreamAndASuccessEndsThePause() {
        var s = state { $0.maxBatchSpans = 1 }
        submit(&s, spans: 3)  // batches A, B, C
        let a = sent(s.nextWork(now: .zero))!
        #expect(s.failedTransiently() == 1)
        #expect(s.retry(a, at: .seconds(2), now: .zero) == .all)
        // Paused: nothing is sent before the pause ends, fresh batches included.
        guard case .waitUntil(let t, _) = s.nextWork(now: .seconds(1)) else { Issue.record("paused"); return }
        #expect(t == .seconds(2))
        // After it: queue order, A behind the others.
        let b = sent(s.nextWork(now: .seconds(2)))!
        #expect(b.notBefore == nil)
        let c = sent(s.nextWork(now: .seconds(2)))!
        #expect(c.notBefore == nil)
        #expect(sent(s.nextWork(now: .seconds(2)))?.notBefore == .seconds(2))
        // A fails again (the backoff grows with the streak) while B and C are out; C's success ends the pause early
        // and wakes every worker waiting it out.
        #expect(s.failedTransiently() == 2)
        _ = s.retry(a, at: .seconds(9), now: .seconds(2))
        #expect(s.pausedUntil == .seconds(9))
        #expect(s.delivered() == .all)
        #expect(s.pausedUntil == nil && s.consecutiveFailures == 0)
        guard case .waitUntil(let u, _) = s.nextWork(now: .seconds(3)) else { Issue.record("A waits for its time"); return }
        #expect(u == .seconds(9))
        #expect(s.delivered() == .none)  // B: no pause to end, not drained
    }

    @Test func pastTheDeadlineEveryBatchIsHandedOutToPersist() {
        var s = state { $0.maxBatchSpans = 1 }
        submit(&s, spans: 2)
        let b = sent(s.nextWork(now: .zero))!
        _ = s.retry(b, at: .seconds(60), now: .zero)
        _ = s.beginDraining(deadline: .seconds(5))
        // Before the deadline: the wait is cut at the deadline.
        guard case .waitUntil(let t, _) = s.nextWork(now: .seconds(1)) else { Issue.record("waiting"); return }
        #expect(t == .seconds(5))
        var persisted = 0
        while case .persist(let batch) = s.nextWork(now: .seconds(5)) {
            persisted += batch.spans
            _ = s.finishedWith()
        }
        #expect(persisted == 2)
        guard case .stop = s.nextWork(now: .seconds(5)) else { Issue.record("stop"); return }
    }

    @Test func everyChangeThatCanGiveWorkBumpsTheGeneration() {
        var s = state { $0.maxBatchSpans = 1 }
        let g0 = s.generation
        submit(&s, spans: 1)
        #expect(s.generation != g0)
        let g1 = s.generation
        guard case .send(let b) = s.nextWork(now: .zero) else { Issue.record("send"); return }
        #expect(s.generation == g1)  // taking work changes nothing for the others
        _ = s.requeue([b], front: true)
        #expect(s.generation != g1)
    }
}

/// The parking list's cancellation protocol, step by step.
@Suite struct WaiterListTests {
    @Test func aWaiterCancelledBeforeItParksDoesNotPark() async {
        var list = WaiterList()
        let id = list.reserve()
        #expect(list.cancel(id) == nil)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let parked = list.park(id, c)
            #expect(!parked)  // refused: the caller resumes it at once
            c.resume()
        }
        list.release(id)
        #expect(list.isEmpty)
    }

    @Test func aParkedWaiterIsHandedBackOnceByCancelOrWake() async {
        var list = WaiterList()
        let a = list.reserve(), b = list.reserve()
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            let parked = list.park(a, k)
            #expect(parked && list.parkedCount == 1)
            let handed = list.cancel(a)  // the cancellation handler resumes it
            #expect(list.cancel(a) == nil)  // once only
            handed?.resume()
        }
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            let parked = list.park(b, k)
            let woken = list.takeAll()
            #expect(parked && woken.count == 1)
            #expect(list.cancel(b) == nil)  // woken already: the cancellation does nothing
            for w in woken { w.resume() }
        }
        list.release(a)
        list.release(b)
        #expect(list.isEmpty)
    }
}
