package import Logging
import ServiceLifecycle
import Synchronization
package import TailgateBuffer
package import TailgateWire

/// Batching, queueing and retrying of kept spans. Every field has a documented default.
package struct ForwarderConfiguration: Sendable, Equatable {
    /// A batch is sent once it holds this many spans. Default 8,192.
    package var maxBatchSpans: Int = 8192
    /// … or would exceed this many span bytes with the next span (a single larger span goes alone). Default 3 MiB,
    /// under gRPC's usual 4 MiB message limit with room for resource and scope headers.
    package var maxBatchBytes: Int = 3 << 20
    /// … or when its first span has waited this long. Default 200 ms.
    package var batchTimeout: Duration = .milliseconds(200)
    /// Encoded batches waiting to be sent (including batches waiting for a retry), at most this many bytes; a new
    /// batch that does not fit is dropped and counted, and ingest pushes back until the queue drains. Default 256 MiB.
    package var queueBytes: Int = 256 << 20
    /// Concurrent requests to the downstream. Default 2.
    package var concurrency: Int = 2
    /// Compress requests with gzip. Default on (as the Collector's exporter does).
    package var gzip: Bool = true
    /// gzip level, 1 (fastest) to 9 (smallest), of libdeflate. Default 1: on OTLP batches of generated agent traffic it
    /// compresses at 406 MB/s to 5.5 : 1, against 94 MB/s to 5.8 : 1 for zlib's default level 6 (what a general
    /// gRPC client uses).
    package var compressionLevel: Int = 1
    /// Per-request timeout. Default 10 s.
    package var timeout: Duration = .seconds(10)
    /// First retry delay; doubled per attempt with jitter up to `maxBackoff`. Default 100 ms.
    package var initialBackoff: Duration = .milliseconds(100)
    /// Default 5 s.
    package var maxBackoff: Duration = .seconds(5)

    package init() {}
}

/// Why forwarded spans were lost (a metric label).
package enum ForwardDropReason: String, Sendable, CaseIterable {
    case queueFull = "queue_full"
    case rejected = "rejected_by_downstream"
    /// A single span larger than the downstream accepts.
    case tooLarge = "too_large_for_downstream"
    case shutdown = "shutdown_timeout"
    /// A batch spooled to the store could not be read back (a damaged record).
    case storeDamaged = "store_damaged"
}

/// Receives the forwarder's counts (implemented by the runtime's metrics).
package protocol ForwarderObserver: Sendable {
    func forwarded(spans: Int, requests: Int)
    func dropped(spans: Int, reason: ForwardDropReason)
    func sendFailed(reason: String, willRetry: Bool)
    func queued(bytes: Int)
    /// One request to the downstream took this long (sent to answered, whatever the outcome).
    func requestFinished(after: Duration)
}

extension ForwarderObserver {
    package func requestFinished(after: Duration) {}
}

/// Takes kept traces, frames them into ExportTraceServiceRequests and delivers them downstream.
///
/// Delivery: a batch that fails transiently goes to the back of the queue and is retried, after a backoff (or the
/// `Retry-After` the downstream asked for), for as long as the queue holds it — there is no retry time limit, so an
/// outage the queue can absorb loses nothing, and one failing batch never blocks the others; a batch the downstream
/// finds too large is split in two and resent; a batch it rejects as invalid is bisected so that only the offending
/// spans are dropped. Spans are dropped only when the queue is full, a failure is permanent, or the shutdown budget
/// ran out — always counted with the reason. Ordering: none across batches (concurrency and retries reorder them);
/// a trace's spans may arrive in several requests.
///
/// Structure: every decision is made by `ForwarderState` (a value, tested without I/O) under one lock; this class
/// runs the tasks that act on them — `concurrency` workers that send, a flusher that seals a batch at its timeout —
/// and parks them in `WaiterList`s (cancellation-safe) when there is nothing to do. Time comes from the injected
/// clock. Lifecycle: `run()` until `finish` and drained (or the deadline passed), or until its task is cancelled.
/// It is a swift-service-lifecycle `Service`: graceful shutdown calls `finish(within:)` with what `shutdownBudget`
/// answers then (the runtime's `ShutdownBudget`), and cancellation finishes at once.
package final class Forwarder: Service, Sendable {
    struct Core: Sendable {
        var state: ForwarderState
        /// Workers with nothing to send (or waiting for a retry time).
        var workers = WaiterList()
        /// The flusher, waiting for a batch to open (or the phase to change).
        var flusher = WaiterList()
    }

    enum Waiters { case workers, flusher }

    package let configuration: ForwarderConfiguration
    package let downstream: any Downstream
    private let observer: any ForwarderObserver
    private let logger: Logger
    private let core: Mutex<Core>
    private let clock: ForwarderClock
    /// On graceful shutdown: how long from then the forwarder may flush before it persists or drops what is left.
    private let shutdownBudget: @Sendable () -> Duration
    /// Disk for the queue's overflow and for what is undelivered at the shutdown deadline (nil: none).
    package let spool: (any BatchSpool)?
    /// Resolves the pass-through header IDs of batches.
    package let headerSets: HeaderSets
    private let persisted = Atomic<Int>(0)
    private let persistedBatches = Atomic<Int>(0)

    /// `clock` times batches, retry backoff and the shutdown deadline (the continuous clock unless a test drives it).
    /// `shutdownBudget` is asked when graceful shutdown begins how long the forwarder may still flush (by default
    /// 25 s, the default `shutdown_timeout`; serve passes what is left of its one shutdown budget).
    package init(configuration: ForwarderConfiguration, downstream: any Downstream, observer: any ForwarderObserver, logger: Logger,
                spool: (any BatchSpool)? = nil, headerSets: HeaderSets = HeaderSets(),
                clock: any Clock<Duration> = ContinuousClock(),
                shutdownBudget: @escaping @Sendable () -> Duration = { .seconds(25) }) {
        self.shutdownBudget = shutdownBudget
        self.spool = spool
        self.headerSets = headerSets
        self.configuration = configuration
        self.downstream = downstream
        self.observer = observer
        self.logger = logger
        self.clock = ForwarderClock(clock)
        core = Mutex(Core(state: ForwarderState(configuration)))
    }

    /// True when the queue is nearly full, or recently overflowed: ingest should push back (retryable errors)
    /// instead of accepting more.
    package var isSaturated: Bool {
        let spooling = spool != nil
        return core.withLock { $0.state.isSaturated(spooling: spooling) }
    }

    /// Spans (and batches) written to the spool at the shutdown deadline instead of being dropped: sent after the
    /// restart.
    package var persistedAtStop: (spans: Int, batches: Int) {
        (persisted.load(ordering: .relaxed), persistedBatches.load(ordering: .relaxed))
    }

    /// Bytes of encoded batches waiting (including those waiting for a retry).
    package var queuedBytes: Int { core.withLock { $0.state.queuedBytes } }

    /// The lifecycle phase, batches in flight and parked tasks (tests and diagnostics).
    var snapshot: (phase: ForwarderState.Phase, queued: Int, inFlight: Int, parked: Int, reservations: Int) {
        core.withLock { ($0.state.phase, $0.state.queue.count, $0.state.inFlight,
                         $0.workers.parkedCount + $0.flusher.parkedCount, $0.workers.count + $0.flusher.count) }
    }

    /// Recovery: a batch found in the spool at start, queued to be sent.
    package func adopt(_ ref: SpillRef, spans: Int, headers: UInt32 = HeaderSets.none) {
        let wake = core.withLock { core in
            core.state.adopt(ForwardBatch(request: [], spans: spans, spooled: ref, headers: headers)).map { core.take($0) } ?? []
        }
        for w in wake { w.resume() }
    }

    /// Adds a kept trace's spans to the current batch (non-blocking), each marked with `annotation` when given.
    /// A batch is sealed before a span that would take it over `maxBatchBytes` or at `maxBatchSpans`.
    ///
    /// `durable` runs once the batch holding the trace's last span is in the spool (sync durability: a kept trace's
    /// decision may be recorded only then), or as soon as it is queued without a spool.
    /// `headers`: pass-through headers (`HeaderSets` ID) the spans go with; a batch holds spans of one set only.
    /// Once the forwarder has finished, the spans are dropped (counted as `shutdown_timeout`).
    package func submit(_ spans: BufferedSpans, annotation: KeepAnnotation? = nil, durable: (@Sendable () -> Void)? = nil,
                       headers: UInt32 = HeaderSets.none) {
        guard !spans.isEmpty else { durable?(); return }
        let now = clock.now
        let (taken, flusher) = core.withLock { core -> ((sealed: [SealedBatch], opened: Bool)?, [CheckedContinuation<Void, Never>]) in
            let taken = core.state.append(spans, annotation: annotation, durable: durable, headers: headers, now: now)
            return (taken, taken?.opened == true ? core.flusher.takeAll() : [])
        }
        for w in flusher { w.resume() }
        guard let taken else {
            durable?()
            observer.dropped(spans: spans.count, reason: .shutdown)
            logger.error("kept spans submitted after the forwarder finished: dropped", metadata: ["spans": "\(spans.count)"])
            return
        }
        for batch in taken.sealed { enqueue(batch.encoded(), encoded: true) }
    }

    /// Queues a new batch (`encoded`: it was counted in flight while being encoded). Dropped and counted when
    /// the queue has no room.
    private func enqueue(_ batch: ForwardBatch, encoded: Bool) {
        var batch = batch
        // Beyond the memory queue, batches wait in the spool (if any) while the disk budget lasts; with sync
        // durability every batch is written there first.
        if let spool {
            let overflow = core.withLock { $0.state.overflows(adding: batch.request.count) }
            if overflow || spool.spoolsEveryBatch,
               let ref = spool.write(batch.request, spans: batch.spans, headers: headerSets.pairs(batch.headers)) {
                batch.spooled = ref
                if overflow { batch.request = [] }
            }
        }
        let callbacks = batch.onDurable
        batch.onDurable = []
        for callback in callbacks { callback() }
        let (accepted, queued, wake) = core.withLock { core -> (Bool, Int, [CheckedContinuation<Void, Never>]) in
            let (accepted, wake) = core.state.offer(batch, encoded: encoded)
            return (accepted, core.state.queuedBytes, core.take(wake))
        }
        for w in wake { w.resume() }
        if !accepted {
            observer.dropped(spans: batch.spans, reason: .queueFull)
            logger.warning("forward queue full: batch dropped", metadata: ["spans": "\(batch.spans)"])
        }
        observer.queued(bytes: queued)
    }

    /// Applies a change to the state and wakes the workers it concerns.
    private func update<R>(_ change: (inout ForwarderState) -> (R, ForwarderState.Wake)) -> R {
        let (result, wake) = core.withLock { core -> (R, [CheckedContinuation<Void, Never>]) in
            let (result, wake) = change(&core.state)
            return (result, core.take(wake))
        }
        for w in wake { w.resume() }
        return result
    }

    /// Sends until `finish` was called and the queue is drained (or the deadline passed). Graceful shutdown (run in a
    /// `ServiceGroup`) is `finish(within: shutdownBudget())`. Cancelling the calling task finishes at once: what is
    /// still queued goes to the spool, or is dropped and counted; a send in progress is cancelled with the task, and
    /// its batch is delivered or accounted for the same way by what the downstream answers. No task stays parked.
    package func run() async {
        await withGracefulShutdownHandler {
            await send()
        } onGracefulShutdown: {
            self.finish(within: self.shutdownBudget())
        }
    }

    private func send() async {
        let workers = max(1, configuration.concurrency)
        await withTaskCancellationHandler {
            await withTaskGroup(of: Bool.self) { group in
                group.addTask { [downstream, logger] in
                    do { try await downstream.run() } catch {
                        logger.error("downstream connection ended", metadata: ["error": "\(error)"])
                    }
                    return false
                }
                group.addTask { await self.flushLoop(); return true }
                for _ in 0..<workers {
                    group.addTask { await self.worker(); return true }
                }
                // Workers and the flusher return once drained; the downstream's connection task may end earlier
                // (the file downstream has none) and does not count.
                var remaining = workers + 1
                while remaining > 0, let isWorker = await group.next() {
                    if isWorker { remaining -= 1 }
                }
                downstream.close()
            }
        } onCancel: {
            self.finish(within: .zero)
        }
    }

    /// Seals the current batch, stops once the queue is empty, and persists or drops (counted) what is not
    /// delivered within `budget` of now (by the forwarder's clock). Later calls can only bring the deadline nearer.
    package func finish(within budget: Duration) {
        let deadline = clock.now + budget
        let (sealed, flusher) = core.withLock { core -> (SealedBatch?, [CheckedContinuation<Void, Never>]) in
            // Sealed batches count as in flight, so the workers wait for this one to be encoded and queued.
            let (sealed, wake) = core.state.beginDraining(deadline: deadline)
            return (sealed, core.take(wake) + core.flusher.takeAll())
        }
        for w in flusher { w.resume() }
        if let sealed { enqueue(sealed.encoded(), encoded: true) }
    }

    /// `finish(within:)` with a deadline on the continuous clock (the shutdown budget's).
    package func finish(deadline: ContinuousClock.Instant) {
        finish(within: ContinuousClock.now.duration(to: deadline))
    }

    // MARK: Tasks

    /// Seals the open batch once its first span has waited `batchTimeout`; ends when the forwarder stops running.
    private func flushLoop() async {
        while !Task.isCancelled {
            switch core.withLock({ $0.state.flushStep(now: clock.now) }) {
            case .stop:
                return
            case .seal(let sealed):
                enqueue(sealed.encoded(), encoded: true)
            case .waitForBatch:
                await park(.flusher, cancellable: true) { $0.state.batchStarted == nil && $0.state.phase == .running }
            case .sleepUntil(let t):
                await sleep(until: t, orWake: .flusher) { $0.state.phase == .running }
            }
        }
    }

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
                await park(.workers, cancellable: false) { $0.state.generation == generation }
            case .waitUntil(let t, let generation):
                await sleep(until: t, orWake: .workers) { $0.state.generation == generation }
            case .persist(let batch):
                persistOrDrop(batch)
                update { ((), $0.finishedWith()) }
            case .send(let batch):
                await deliver(batch)
            }
        }
    }

    /// Parks the calling task in `list` unless `stillWaiting` is already false (checked under the lock, so no wake is
    /// missed). `cancellable`: the task's cancellation ends the wait (its continuation is resumed by the handler).
    private func park(_ list: Waiters, cancellable: Bool, while stillWaiting: @escaping @Sendable (borrowing Core) -> Bool) async {
        let id = core.withLock { $0[list].reserve() }
        let wait = {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let parked = self.core.withLock { core in
                    stillWaiting(core) ? core[list].park(id, continuation) : false
                }
                if !parked { continuation.resume() }
            }
        }
        if cancellable {
            await withTaskCancellationHandler {
                await wait()
            } onCancel: {
                self.core.withLock { $0[list].cancel(id) }?.resume()
            }
        } else {
            await wait()
        }
        core.withLock { $0[list].release(id) }
    }

    /// Sleeps until `deadline` on the forwarder's clock, or until woken in `list` (unless `stillWaiting` is false).
    private func sleep(until deadline: Duration, orWake list: Waiters,
                       while stillWaiting: @escaping @Sendable (borrowing Core) -> Bool) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await self.clock.sleep(until: deadline) }
            group.addTask { await self.park(list, cancellable: true, while: stillWaiting) }
            await group.next()
            group.cancelAll()
        }
    }

    // MARK: Delivery

    /// At the shutdown deadline: an undelivered batch goes to the spool (sent after the restart), or is dropped and
    /// counted without one.
    private func persistOrDrop(_ batch: ForwardBatch) {
        if let spool {
            if batch.spooled != nil || spool.write(batch.request, spans: batch.spans, headers: headerSets.pairs(batch.headers)) != nil {
                persisted.add(batch.spans, ordering: .relaxed)
                persistedBatches.add(1, ordering: .relaxed)
                return
            }
        }
        observer.dropped(spans: batch.spans, reason: .shutdown)
        if let ref = batch.spooled { spool?.release(ref) }
    }

    /// The batch is finished with (delivered, dropped or replaced by its halves): its spool record is dead.
    private func released(_ batch: ForwardBatch) {
        if let ref = batch.spooled { spool?.release(ref) }
    }

    /// One attempt at a batch taken from the queue; afterwards it is delivered, dropped (counted) or requeued.
    private func deliver(_ taken: ForwardBatch) async {
        var batch = taken
        if let ref = batch.spooled, batch.request.isEmpty {
            guard let request = spool?.read(ref) else {
                observer.dropped(spans: batch.spans, reason: .storeDamaged)
                logger.error("a forward batch could not be read back from the store: dropped", metadata: ["spans": "\(batch.spans)"])
                spool?.release(ref)
                update { ((), $0.finishedWith()) }
                return
            }
            batch.request = request
        }
        let sent = clock.now
        let outcome = await downstream.send(batch.request, signal: .traces, json: false, headers: headerSets.pairs(batch.headers))
        observer.requestFinished(after: clock.now - sent)
        if case .retryable = outcome {} else { released(batch) }
        switch outcome {
        case .delivered:
            observer.forwarded(spans: batch.spans, requests: 1)
            update { ((), $0.delivered()) }
        case .partial(let rejected, let message):
            // Delivered; the downstream refused some spans (OTLP partial_success): counted as dropped, logged.
            let refused = min(rejected, batch.spans)
            observer.forwarded(spans: batch.spans - refused, requests: 1)
            observer.dropped(spans: refused, reason: .rejected)
            logger.warning("downstream accepted a batch partly (partial_success): rejected spans dropped", metadata: [
                "rejected_spans": "\(rejected)", "spans": "\(batch.spans)", "message": "\(message)"])
            update { ((), $0.delivered()) }
        case .tooLarge(let reason):
            observer.sendFailed(reason: reason, willRetry: batch.spans > 1)
            if let (a, b) = RequestSplitter.split(batch.request) {
                logger.info("downstream found a batch too large: split in two", metadata: ["spans": "\(batch.spans)", "bytes": "\(batch.request.count)"])
                requeue([ForwardBatch(request: a.request, spans: a.spans, bisected: batch.bisected, headers: batch.headers),
                         ForwardBatch(request: b.request, spans: b.spans, bisected: batch.bisected, headers: batch.headers)])
            } else {
                observer.dropped(spans: batch.spans, reason: .tooLarge)
                logger.error("downstream rejected a span as too large", metadata: [
                    "reason": "\(reason)", "bytes": "\(batch.request.count)", "trace_ids": "\(RequestSplitter.traceIDs(batch.request))"])
                update { ((), $0.finishedWith()) }
            }
        case .invalid(let reason):
            observer.sendFailed(reason: reason, willRetry: batch.spans > 1)
            // Find the spans the downstream objects to, so that the rest of the batch (other clients' spans) arrives.
            if let (a, b) = RequestSplitter.split(batch.request) {
                if !batch.bisected {
                    logger.warning("downstream rejected a batch as invalid: bisecting to find the offending spans", metadata: [
                        "reason": "\(reason)", "spans": "\(batch.spans)"])
                }
                requeue([ForwardBatch(request: a.request, spans: a.spans, bisected: true, headers: batch.headers),
                         ForwardBatch(request: b.request, spans: b.spans, bisected: true, headers: batch.headers)])
            } else {
                observer.dropped(spans: batch.spans, reason: .rejected)
                logger.error("downstream rejected a span as invalid: dropped", metadata: [
                    "reason": "\(reason)", "trace_ids": "\(RequestSplitter.traceIDs(batch.request))"])
                update { ((), $0.finishedWith()) }
            }
        case .permanent(let reason):
            observer.sendFailed(reason: reason, willRetry: false)
            observer.dropped(spans: batch.spans, reason: .rejected)
            logger.error("downstream rejected a batch", metadata: [
                "reason": "\(reason)", "spans": "\(batch.spans)", "trace_ids": "\(RequestSplitter.traceIDs(batch.request))"])
            update { ((), $0.finishedWith()) }
        case .retryable(let reason, let retryAfter):
            let now = clock.now
            batch.attempts += 1
            let (failures, deadline) = core.withLock { ($0.state.failedTransiently(), $0.state.deadline) }
            let delay = retryDelay.delay(attempt: max(batch.attempts, failures), retryAfter: retryAfter)
            if let deadline, now + delay > deadline {
                observer.sendFailed(reason: reason, willRetry: false)
                persistOrDrop(batch)
                update { ((), $0.finishedWith()) }
                return
            }
            if batch.spooled != nil { batch.request = [] }  // waits on disk again
            observer.sendFailed(reason: reason, willRetry: true)
            if batch.attempts == 1 || batch.attempts % 10 == 0 {
                logger.warning("downstream unavailable, batch requeued for retry", metadata: [
                    "reason": "\(reason)", "attempt": "\(batch.attempts)", "retry_in": "\(delay)"])
            }
            let queued = update { state in
                let wake = state.retry(batch, at: now + delay, now: now)
                return (state.queuedBytes, wake)
            }
            observer.queued(bytes: queued)
        }
    }

    /// Split halves go back to the front of the queue (they keep their turn).
    private func requeue(_ batches: [ForwardBatch]) {
        let queued = update { state in
            let wake = state.requeue(batches, front: true)
            return (state.queuedBytes, wake)
        }
        observer.queued(bytes: queued)
    }

    private var retryDelay: RetryDelay { RetryDelay(initial: configuration.initialBackoff, max: configuration.maxBackoff) }
}

extension Forwarder.Core {
    subscript(list: Forwarder.Waiters) -> WaiterList {
        get { list == .workers ? workers : flusher }
        set { if list == .workers { workers = newValue } else { flusher = newValue } }
    }

    /// The parked workers a change wakes (taken out, to be resumed outside the lock).
    mutating func take(_ wake: ForwarderState.Wake) -> [CheckedContinuation<Void, Never>] {
        switch wake {
        case .none: []
        case .one: workers.takeOne().map { [$0] } ?? []
        case .all: workers.takeAll()
        }
    }
}
