package import Logging
import ServiceLifecycle
import Synchronization

/// Why a relayed metrics or logs request was lost after it was accepted (a metric label).
package enum SignalDropReason: String, Sendable, CaseIterable {
    /// The downstream refused it for good (INVALID_ARGUMENT, 400, 401, 404, …): relayed requests are not split.
    case rejected = "rejected_by_downstream"
    /// The shutdown budget ran out before it was delivered.
    case shutdown = "shutdown_timeout"
}

/// Receives the relay's counts (implemented by the runtime's metrics).
package protocol SignalForwarderObserver: Sendable {
    func signalForwarded(_ signal: OTLPSignal, bytes: Int)
    func signalDropped(_ signal: OTLPSignal, reason: SignalDropReason)
    func signalSendFailed(_ signal: OTLPSignal, reason: String, willRetry: Bool)
    func signalQueued(bytes: Int)
}

/// Relays metrics and logs export requests to the downstream unchanged (bytes in, bytes out; never sampled), through
/// a bounded queue of raw requests with the trace forwarder's delivery rules: a transient failure is retried with
/// exponential backoff (or the `Retry-After` asked for) for as long as the queue holds the request, a permanent one
/// drops it (counted), and at shutdown the queue is flushed until the deadline. When the queue is full `submit`
/// answers false and the receiver pushes back (UNAVAILABLE / 503 with Retry-After), so nothing is dropped for room.
///
/// Structure, as the trace forwarder's: every decision is made by `SignalQueueState` (a value) under one lock;
/// `concurrency` workers send, and park in a `WaiterList` (cancellation-safe) when there is nothing to do — a submit
/// wakes one, nothing polls. Retry delays and the shutdown deadline are on the injected clock. It is a
/// swift-service-lifecycle `Service`: graceful shutdown calls `finish(within: shutdownBudget())`, cancellation
/// finishes at once (what is queued is dropped and counted).
///
/// It shares the trace forwarder's downstream and neither runs nor closes it: stop this relay first.
package final class SignalForwarder: Service, Sendable {
    struct Core: Sendable {
        var state: SignalQueueState
        /// Workers with nothing to send (or waiting for a retry time).
        var workers = WaiterList()
    }

    package let downstream: any Downstream
    /// Most bytes of requests waiting (including those waiting for a retry).
    package let queueBytes: Int
    package let concurrency: Int
    package let initialBackoff: Duration
    package let maxBackoff: Duration
    private let observer: any SignalForwarderObserver
    private let logger: Logger
    private let clock: ForwarderClock
    /// On graceful shutdown: how long from then the relay may flush before it drops what is left.
    private let shutdownBudget: @Sendable () -> Duration
    private let core: Mutex<Core>

    /// `clock` times retry backoff and the shutdown deadline (the continuous clock unless a test drives it);
    /// `shutdownBudget` is asked when graceful shutdown begins how long the relay may still flush (by default 25 s,
    /// the default `shutdown_timeout`; serve passes what is left of its one shutdown budget).
    package init(downstream: any Downstream, queueBytes: Int, concurrency: Int = 2, initialBackoff: Duration = .milliseconds(100),
                maxBackoff: Duration = .seconds(5), observer: any SignalForwarderObserver, logger: Logger,
                clock: any Clock<Duration> = ContinuousClock(),
                shutdownBudget: @escaping @Sendable () -> Duration = { .seconds(25) }) {
        self.downstream = downstream
        self.queueBytes = queueBytes
        self.concurrency = max(1, concurrency)
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.observer = observer
        self.logger = logger
        self.clock = ForwarderClock(clock)
        self.shutdownBudget = shutdownBudget
        core = Mutex(Core(state: SignalQueueState(queueBytes: queueBytes)))
    }

    /// Bytes waiting.
    package var queuedBytes: Int { core.withLock { $0.state.queuedBytes } }

    /// Requests queued, in flight, and workers parked (tests and diagnostics).
    var snapshot: (queued: Int, inFlight: Int, parked: Int, reservations: Int, finishing: Bool) {
        core.withLock { ($0.state.queue.count, $0.state.inFlight, $0.workers.parkedCount, $0.workers.count, $0.state.isFinishing) }
    }

    /// Queues one request as it is; false (nothing queued) when it does not fit or the relay is finishing: the
    /// caller answers with a retryable error. A request larger than the whole queue is taken when the queue is empty.
    /// An accepted request wakes one parked worker.
    package func submit(_ bytes: [UInt8], signal: OTLPSignal, json: Bool, headers: [(String, String)] = []) -> Bool {
        let item = SignalQueueState.Item(bytes: bytes, signal: signal, json: json, headers: headers)
        let (accepted, queued) = update { state in
            let (accepted, wake) = state.offer(item)
            return ((accepted, state.queuedBytes), wake)
        }
        if accepted { observer.signalQueued(bytes: queued) }
        return accepted
    }

    /// Sends until `finish` was called and the queue is drained (or the deadline passed). Graceful shutdown (run in a
    /// `ServiceGroup`) is `finish(within: shutdownBudget())`. Cancelling the calling task finishes at once: what is
    /// still queued is dropped and counted; a send in progress is cancelled with the task, and its request is
    /// delivered or dropped by what the downstream answers. No task stays parked.
    package func run() async {
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<concurrency { group.addTask { await self.worker() } }
                }
            } onCancel: {
                self.finish(within: .zero)
            }
        } onGracefulShutdown: {
            self.finish(within: self.shutdownBudget())
        }
    }

    /// Stops taking requests; workers stop once the queue is empty, and drop (counted) what is left `budget` from now
    /// (by the relay's clock). Later calls can only bring the deadline nearer.
    package func finish(within budget: Duration) {
        let deadline = clock.now + budget
        update { ((), $0.finish(deadline: deadline)) }
    }

    /// `finish(within:)` with a deadline on the continuous clock (the shutdown budget's).
    package func finish(deadline: ContinuousClock.Instant) {
        finish(within: ContinuousClock.now.duration(to: deadline))
    }

    /// Applies a change to the state and wakes the workers it concerns.
    @discardableResult
    private func update<R>(_ change: (inout SignalQueueState) -> (R, SignalQueueState.Wake)) -> R {
        let (result, wake) = core.withLock { core -> (R, [CheckedContinuation<Void, Never>]) in
            let (result, wake) = change(&core.state)
            switch wake {
            case .none: return (result, [])
            case .one: return (result, core.workers.takeOne().map { [$0] } ?? [])
            case .all: return (result, core.workers.takeAll())
            }
        }
        for w in wake { w.resume() }
        return result
    }

    // MARK: Workers

    private func worker() async {
        var cancelled = false
        while true {
            if !cancelled && Task.isCancelled {
                // The run task's cancellation handler does the same; this worker may see the cancellation first.
                cancelled = true
                finish(within: .zero)
            }
            switch core.withLock({ $0.state.nextWork(now: clock.now) }) {
            case .stop:
                return
            case .idle(let generation):
                // Not cancellable: after a cancellation a worker may still have to wait for another's send to end,
                // and is woken when it does (or when anything is queued).
                await park(cancellable: false) { $0.state.generation == generation }
            case .waitUntil(let t, let generation):
                await sleep(until: t) { $0.state.generation == generation }
            case .drop(let item):
                observer.signalDropped(item.signal, reason: .shutdown)
                update { ((), $0.finishedWith()) }
            case .send(let item):
                await deliver(item)
            }
        }
    }

    /// Parks the calling task unless `stillWaiting` is already false (checked under the lock, so no wake is missed).
    /// `cancellable`: the task's cancellation ends the wait (its continuation is resumed by the handler).
    private func park(cancellable: Bool, while stillWaiting: @escaping @Sendable (borrowing Core) -> Bool) async {
        let id = core.withLock { $0.workers.reserve() }
        let wait = {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let parked = self.core.withLock { core in
                    stillWaiting(core) ? core.workers.park(id, continuation) : false
                }
                if !parked { continuation.resume() }
            }
        }
        if cancellable {
            await withTaskCancellationHandler {
                await wait()
            } onCancel: {
                self.core.withLock { $0.workers.cancel(id) }?.resume()
            }
        } else {
            await wait()
        }
        core.withLock { $0.workers.release(id) }
    }

    /// Sleeps until `deadline` on the relay's clock, or until woken (unless `stillWaiting` is false).
    private func sleep(until deadline: Duration, while stillWaiting: @escaping @Sendable (borrowing Core) -> Bool) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await self.clock.sleep(until: deadline) }
            group.addTask { await self.park(cancellable: true, while: stillWaiting) }
            await group.next()
            group.cancelAll()
        }
    }

    // MARK: Delivery

    private func deliver(_ taken: SignalQueueState.Item) async {
        var item = taken
        let outcome = await downstream.send(item.bytes, signal: item.signal, json: item.json, headers: item.headers)
        switch outcome {
        case .delivered, .partial:
            observer.signalForwarded(item.signal, bytes: item.bytes.count)
            update { ((), $0.delivered()) }
        case .invalid(let reason), .tooLarge(let reason), .permanent(let reason):
            observer.signalSendFailed(item.signal, reason: reason, willRetry: false)
            observer.signalDropped(item.signal, reason: .rejected)
            logger.error("downstream rejected a relayed \(item.signal.rawValue) request", metadata: [
                "reason": "\(reason)", "bytes": "\(item.bytes.count)"])
            update { ((), $0.finishedWith()) }
        case .retryable(let reason, let retryAfter):
            let now = clock.now
            item.attempts += 1
            let (failures, deadline) = core.withLock { ($0.state.failedTransiently(), $0.state.deadline) }
            let delay = RetryDelay(initial: initialBackoff, max: maxBackoff).delay(attempt: max(item.attempts, failures), retryAfter: retryAfter)
            if let deadline, now + delay > deadline {
                observer.signalSendFailed(item.signal, reason: reason, willRetry: false)
                observer.signalDropped(item.signal, reason: .shutdown)
                update { ((), $0.finishedWith()) }
                return
            }
            observer.signalSendFailed(item.signal, reason: reason, willRetry: true)
            if item.attempts == 1 || item.attempts % 10 == 0 {
                logger.warning("downstream unavailable, relayed \(item.signal.rawValue) request requeued for retry", metadata: [
                    "reason": "\(reason)", "attempt": "\(item.attempts)", "retry_in": "\(delay)"])
            }
            let queued = update { state in
                let wake = state.retry(item, at: now + delay, now: now)
                return (state.queuedBytes, wake)
            }
            observer.signalQueued(bytes: queued)
        }
    }
}
