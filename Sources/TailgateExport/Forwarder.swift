public import DequeModule
public import Logging
public import Synchronization
public import TailgateBuffer
public import TailgateWire

/// Batching, queueing and retrying of kept spans. Every field has a documented default.
public struct ForwarderConfiguration: Sendable, Equatable {
    /// A batch is sent once it holds this many spans. Default 8,192.
    public var maxBatchSpans: Int = 8192
    /// … or would exceed this many span bytes with the next span (a single larger span goes alone). Default 3 MiB,
    /// under gRPC's usual 4 MiB message limit with room for resource and scope headers.
    public var maxBatchBytes: Int = 3 << 20
    /// … or when its first span has waited this long. Default 200 ms.
    public var batchTimeout: Duration = .milliseconds(200)
    /// Encoded batches waiting to be sent (including batches waiting for a retry), at most this many bytes; a new
    /// batch that does not fit is dropped and counted, and ingest pushes back until the queue drains. Default 256 MiB.
    public var queueBytes: Int = 256 << 20
    /// Concurrent requests to the downstream. Default 2.
    public var concurrency: Int = 2
    /// Compress requests with gzip. Default on (as the Collector's exporter does).
    public var gzip: Bool = true
    /// Per-request timeout. Default 10 s.
    public var timeout: Duration = .seconds(10)
    /// First retry delay; doubled per attempt with jitter up to `maxBackoff`. Default 100 ms.
    public var initialBackoff: Duration = .milliseconds(100)
    /// Default 5 s.
    public var maxBackoff: Duration = .seconds(5)

    public init() {}
}

/// Why forwarded spans were lost (a metric label).
public enum ForwardDropReason: String, Sendable, CaseIterable {
    case queueFull = "queue_full"
    case rejected = "rejected_by_downstream"
    /// A single span larger than the downstream accepts.
    case tooLarge = "too_large_for_downstream"
    case shutdown = "shutdown_timeout"
    /// A batch spooled to the store could not be read back (a damaged record).
    case storeDamaged = "store_damaged"
}

/// Receives the forwarder's counts (implemented by the runtime's metrics).
public protocol ForwarderObserver: Sendable {
    func forwarded(spans: Int, requests: Int)
    func dropped(spans: Int, reason: ForwardDropReason)
    func sendFailed(reason: String, willRetry: Bool)
    func queued(bytes: Int)
    /// One request to the downstream took this long (sent to answered, whatever the outcome).
    func requestFinished(after: Duration)
}

extension ForwarderObserver {
    public func requestFinished(after: Duration) {}
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
public final class Forwarder: Sendable {
    struct Batch: Sendable {
        var request: [UInt8]
        var spans: Int
        var attempts = 0
        /// Not to be retried before this instant.
        var notBefore: ContinuousClock.Instant? = nil
        /// Produced by bisecting a batch the downstream rejected as invalid.
        var bisected = false
        /// Its record in the spool (`request` is then empty while it waits, and read back to be sent).
        var spooled: SpillRef? = nil
        /// Run once the batch is in the spool (sync durability), or at once without one.
        var onDurable: [@Sendable () -> Void] = []
        /// Headers passed through from the agents' requests (`HeaderSets` ID; `.none` for none).
        var headers: UInt32 = HeaderSets.none
    }

    /// What a worker should do next.
    enum Work {
        case send(Batch)
        /// Batches are waiting for their retry time: look again at this instant.
        case waitUntil(ContinuousClock.Instant)
        /// Nothing queued: wait to be woken.
        case idle
        case stop
    }

    struct State: ~Copyable {
        var framer = RequestFramer()
        /// `onDurable` callbacks of the traces whose last span is in `framer`.
        var framerCallbacks: [@Sendable () -> Void] = []
        /// The pass-through headers of every span in `framer` (a batch goes to one tenant).
        var framerHeaders: UInt32 = HeaderSets.none
        var batchStarted: ContinuousClock.Instant? = nil
        var queue: Deque<Batch> = []
        var queuedBytes = 0
        var waiters: Deque<CheckedContinuation<Void, Never>> = []
        var finishing = false
        /// Set when a batch did not fit; cleared once the queue drained below half. While set, ingest pushes back.
        var overflowed = false
        /// Batches taken from the framer and being encoded (outside the lock), or being sent: workers must not stop
        /// while any is (a failed send may requeue it).
        var inFlight = 0
        var deadline: ContinuousClock.Instant? = nil
        /// After a transient failure the downstream is given a rest (backoff) before any batch is tried again, so an
        /// outage costs a request per backoff rather than one per queued batch; a success resets it.
        var pausedUntil: ContinuousClock.Instant? = nil
        var consecutiveFailures = 0

        /// Finishing, and nothing left or coming: workers may stop.
        var drained: Bool { finishing && queue.isEmpty && inFlight == 0 }
    }

    public let configuration: ForwarderConfiguration
    public let downstream: any Downstream
    private let observer: any ForwarderObserver
    private let logger: Logger
    private let state = Mutex(State())
    /// Disk for the queue's overflow and for what is undelivered at the shutdown deadline (nil: none).
    public let spool: (any BatchSpool)?
    /// Resolves the pass-through header IDs of batches.
    public let headerSets: HeaderSets
    private let persisted = Atomic<Int>(0)
    private let persistedBatches = Atomic<Int>(0)

    public init(configuration: ForwarderConfiguration, downstream: any Downstream, observer: any ForwarderObserver, logger: Logger,
                spool: (any BatchSpool)? = nil, headerSets: HeaderSets = HeaderSets()) {
        self.spool = spool
        self.headerSets = headerSets
        self.configuration = configuration
        self.downstream = downstream
        self.observer = observer
        self.logger = logger
    }

    /// True when the queue is nearly full, or recently overflowed: ingest should push back (retryable errors)
    /// instead of accepting more.
    public var isSaturated: Bool {
        let spooling = spool != nil
        return state.withLock { $0.overflowed || (!spooling && $0.queuedBytes >= configuration.queueBytes / 10 * 9) }
    }

    /// Spans (and batches) written to the spool at the shutdown deadline instead of being dropped: sent after the
    /// restart.
    public var persistedAtStop: (spans: Int, batches: Int) {
        (persisted.load(ordering: .relaxed), persistedBatches.load(ordering: .relaxed))
    }

    /// Recovery: a batch found in the spool at start, queued to be sent.
    public func adopt(_ ref: SpillRef, spans: Int, headers: UInt32 = HeaderSets.none) {
        let wake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.queue.append(Batch(request: [], spans: spans, spooled: ref, headers: headers))
            return state.waiters.popFirst().map { [$0] } ?? []
        }
        for w in wake { w.resume() }
    }

    /// Bytes of encoded batches waiting (including those waiting for a retry).
    public var queuedBytes: Int { state.withLock { $0.queuedBytes } }

    /// Adds a kept trace's spans to the current batch (non-blocking), each marked with `annotation` when given.
    /// A batch is sealed before a span that would take it over `maxBatchBytes` or at `maxBatchSpans`.
    ///
    /// `durable` runs once the batch holding the trace's last span is in the spool (sync durability: a kept trace's
    /// decision may be recorded only then), or as soon as it is queued without a spool.
    /// `headers`: pass-through headers (`HeaderSets` ID) the spans go with; a batch holds spans of one set only.
    public func submit(_ spans: BufferedSpans, annotation: KeepAnnotation? = nil, durable: (@Sendable () -> Void)? = nil,
                       headers: UInt32 = HeaderSets.none) {
        guard !spans.isEmpty else { durable?(); return }
        let maxBytes = configuration.maxBatchBytes, maxSpans = configuration.maxBatchSpans
        let sealed = state.withLock { state -> [(RequestFramer, [@Sendable () -> Void], UInt32)] in
            var sealed: [(RequestFramer, [@Sendable () -> Void], UInt32)] = []
            if !state.framer.isEmpty && state.framerHeaders != headers, let s = takeBatch(&state) { sealed.append(s) }
            state.framerHeaders = headers
            if state.framer.isEmpty { state.batchStarted = .now }
            spans.forEach { scope, bytes in
                if !state.framer.isEmpty && state.framer.spanBytes + bytes.count > maxBytes, let s = takeBatch(&state) {
                    sealed.append(s)
                    state.batchStarted = .now
                }
                state.framer.append(scope: scope, span: bytes, annotation: annotation)
                if state.framer.spanCount >= maxSpans || state.framer.spanBytes >= maxBytes, let s = takeBatch(&state) {
                    sealed.append(s)
                }
            }
            if !state.framer.isEmpty && state.batchStarted == nil { state.batchStarted = .now }
            if let durable {
                if !state.framer.isEmpty { state.framerCallbacks.append(durable) }
                else if !sealed.isEmpty { sealed[sealed.count - 1].1.append(durable) }
            }
            return sealed
        }
        for (framer, callbacks, headers) in sealed {
            enqueue(Batch(request: framer.encode(), spans: framer.spanCount, onDurable: callbacks, headers: headers), encoded: true)
        }
    }

    private func takeBatch(_ state: inout State) -> (RequestFramer, [@Sendable () -> Void], UInt32)? {
        guard !state.framer.isEmpty else { return nil }
        var out = RequestFramer()
        swap(&out, &state.framer)
        let callbacks = state.framerCallbacks
        state.framerCallbacks = []
        state.batchStarted = nil
        state.inFlight += 1
        return (out, callbacks, state.framerHeaders)
    }

    /// Queues a new batch (`encoded`: it was counted in `inFlight` while being encoded). Dropped and counted when
    /// the queue has no room.
    private func enqueue(_ batch: Batch, encoded: Bool) {
        var batch = batch
        // Beyond the memory queue, batches wait in the spool (if any) while the disk budget lasts; with sync
        // durability every batch is written there first.
        if let spool {
            let overflow = state.withLock { $0.queuedBytes + batch.request.count > configuration.queueBytes }
            if overflow || spool.spoolsEveryBatch,
               let ref = spool.write(batch.request, spans: batch.spans, headers: headerSets.pairs(batch.headers)) {
                batch.spooled = ref
                if overflow { batch.request = [] }
            }
        }
        let callbacks = batch.onDurable
        batch.onDurable = []
        for callback in callbacks { callback() }
        let (accepted, queued, wake) = state.withLock { state -> (Bool, Int, [CheckedContinuation<Void, Never>]) in
            if encoded { state.inFlight -= 1 }
            guard state.queuedBytes + batch.request.count <= configuration.queueBytes else {
                state.overflowed = true
                return (false, state.queuedBytes, state.drained ? Array(state.waiters.drain()) : [])
            }
            state.queue.append(batch)
            state.queuedBytes += batch.request.count
            return (true, state.queuedBytes, state.waiters.popFirst().map { [$0] } ?? [])
        }
        for w in wake { w.resume() }
        if !accepted {
            observer.dropped(spans: batch.spans, reason: .queueFull)
            logger.warning("forward queue full: batch dropped", metadata: ["spans": "\(batch.spans)"])
        }
        observer.queued(bytes: queued)
    }

    /// Puts batches that were being sent back in the queue (retry, split halves). They were accepted already, so
    /// they are never dropped for room; `front` puts them first (split halves keep their turn).
    private func requeue(_ batches: [Batch], front: Bool) {
        let (queued, wake) = state.withLock { state -> (Int, [CheckedContinuation<Void, Never>]) in
            for b in front ? batches.reversed() : batches {
                if front { state.queue.prepend(b) } else { state.queue.append(b) }
                state.queuedBytes += b.request.count
            }
            state.inFlight -= 1
            return (state.queuedBytes, Array(state.waiters.drain()))
        }
        for w in wake { w.resume() }
        observer.queued(bytes: queued)
    }

    /// A worker finished with a batch it took (delivered or dropped).
    private func done() {
        let wake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.inFlight -= 1
            return state.drained ? Array(state.waiters.drain()) : []
        }
        for w in wake { w.resume() }
    }

    private func nextWork() -> Work {
        let now = ContinuousClock.now
        return state.withLock { state -> Work in
            func take(_ i: Int) -> Work {
                let b = state.queue.remove(at: i)
                state.queuedBytes -= b.request.count
                if state.queuedBytes < configuration.queueBytes / 2 { state.overflowed = false }
                state.inFlight += 1
                return .send(b)
            }
            guard !state.queue.isEmpty else { return state.drained ? .stop : .idle }
            // Past the shutdown deadline every batch is handed out at once (and dropped, counted, by the worker).
            if let deadline = state.deadline, now >= deadline { return take(state.queue.startIndex) }
            var earliest: ContinuousClock.Instant? = nil
            if let p = state.pausedUntil, p > now {
                earliest = p
            } else {
                // The first batch that is due; batches waiting for their retry are passed over.
                for i in state.queue.indices {
                    guard let t = state.queue[i].notBefore, t > now else { return take(i) }
                    earliest = min(earliest ?? t, t)
                }
            }
            if let deadline = state.deadline, let e = earliest { earliest = min(e, deadline) }
            return .waitUntil(earliest ?? now)
        }
    }

    /// Waits until a batch is queued, the forwarder drains, or (`until`) a retry is due.
    private func wait(until: ContinuousClock.Instant?) async {
        if let until {
            // Retry waits poll at a short interval so that fresh batches are not held behind a failing one.
            try? await Task.sleep(until: min(until, .now + .milliseconds(25)), clock: .continuous)
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if !state.queue.isEmpty || state.drained { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Sends until `finish(deadline:)` was called and the queue is drained (or the deadline passed). Cancelling the
    /// calling task finishes at once: what is still queued is dropped and counted.
    public func run() async {
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
            self.finish(deadline: .now)
        }
    }

    /// Seals the current batch, stops once the queue is empty, and drops (counted) what is not delivered by
    /// `deadline`.
    public func finish(deadline: ContinuousClock.Instant) {
        let sealed = state.withLock { state in takeBatch(&state) }
        if let (framer, callbacks, headers) = sealed {
            enqueue(Batch(request: framer.encode(), spans: framer.spanCount, onDurable: callbacks, headers: headers), encoded: true)
        }
        let toWake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.finishing = true
            state.deadline = min(state.deadline ?? deadline, deadline)
            return Array(state.waiters.drain())
        }
        for w in toWake { w.resume() }
    }

    private var pastDeadline: Bool {
        state.withLock { state in state.deadline.map { ContinuousClock.now >= $0 } ?? false }
    }

    private func flushLoop() async {
        while !state.withLock({ $0.finishing }) {
            try? await Task.sleep(for: configuration.batchTimeout / 2)
            let sealed = state.withLock { state -> (RequestFramer, [@Sendable () -> Void], UInt32)? in
                guard let started = state.batchStarted, ContinuousClock.now - started >= configuration.batchTimeout else { return nil }
                return takeBatch(&state)
            }
            if let (framer, callbacks, headers) = sealed {
                enqueue(Batch(request: framer.encode(), spans: framer.spanCount, onDurable: callbacks, headers: headers), encoded: true)
            }
        }
    }

    private func worker() async {
        while true {
            switch nextWork() {
            case .stop:
                return
            case .idle:
                await wait(until: nil)
            case .waitUntil(let t):
                await wait(until: t)
            case .send(let batch):
                if pastDeadline {
                    persistOrDrop(batch)
                    done()
                } else {
                    await deliver(batch)
                }
            }
        }
    }

    /// At the shutdown deadline: an undelivered batch goes to the spool (sent after the restart), or is dropped and
    /// counted without one.
    private func persistOrDrop(_ batch: Batch) {
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
    private func released(_ batch: Batch) {
        if let ref = batch.spooled { spool?.release(ref) }
    }

    /// One attempt at a batch taken from the queue; afterwards it is delivered, dropped (counted) or requeued.
    private func deliver(_ taken: Batch) async {
        var batch = taken
        if let ref = batch.spooled, batch.request.isEmpty {
            guard let request = spool?.read(ref) else {
                observer.dropped(spans: batch.spans, reason: .storeDamaged)
                logger.error("a forward batch could not be read back from the store: dropped", metadata: ["spans": "\(batch.spans)"])
                spool?.release(ref)
                done()
                return
            }
            batch.request = request
        }
        let sent = ContinuousClock.now
        let outcome = await downstream.send(batch.request, signal: .traces, json: false, headers: headerSets.pairs(batch.headers))
        observer.requestFinished(after: .now - sent)
        if case .retryable = outcome {} else { released(batch) }
        switch outcome {
        case .delivered:
            observer.forwarded(spans: batch.spans, requests: 1)
            state.withLock { state in
                state.consecutiveFailures = 0
                state.pausedUntil = nil
            }
            done()
        case .partial(let rejected, let message):
            // Delivered; the downstream refused some spans (OTLP partial_success): counted as dropped, logged.
            let refused = min(rejected, batch.spans)
            observer.forwarded(spans: batch.spans - refused, requests: 1)
            observer.dropped(spans: refused, reason: .rejected)
            logger.warning("downstream accepted a batch partly (partial_success): rejected spans dropped", metadata: [
                "rejected_spans": "\(rejected)", "spans": "\(batch.spans)", "message": "\(message)"])
            state.withLock { state in
                state.consecutiveFailures = 0
                state.pausedUntil = nil
            }
            done()
        case .tooLarge(let reason):
            observer.sendFailed(reason: reason, willRetry: batch.spans > 1)
            if let (a, b) = RequestSplitter.split(batch.request) {
                logger.info("downstream found a batch too large: split in two", metadata: ["spans": "\(batch.spans)", "bytes": "\(batch.request.count)"])
                requeue([Batch(request: a.request, spans: a.spans, bisected: batch.bisected, headers: batch.headers),
                         Batch(request: b.request, spans: b.spans, bisected: batch.bisected, headers: batch.headers)], front: true)
            } else {
                observer.dropped(spans: batch.spans, reason: .tooLarge)
                logger.error("downstream rejected a span as too large", metadata: [
                    "reason": "\(reason)", "bytes": "\(batch.request.count)", "trace_ids": "\(RequestSplitter.traceIDs(batch.request))"])
                done()
            }
        case .invalid(let reason):
            observer.sendFailed(reason: reason, willRetry: batch.spans > 1)
            // Find the spans the downstream objects to, so that the rest of the batch (other clients' spans) arrives.
            if let (a, b) = RequestSplitter.split(batch.request) {
                if !batch.bisected {
                    logger.warning("downstream rejected a batch as invalid: bisecting to find the offending spans", metadata: [
                        "reason": "\(reason)", "spans": "\(batch.spans)"])
                }
                requeue([Batch(request: a.request, spans: a.spans, bisected: true, headers: batch.headers),
                         Batch(request: b.request, spans: b.spans, bisected: true, headers: batch.headers)], front: true)
            } else {
                observer.dropped(spans: batch.spans, reason: .rejected)
                logger.error("downstream rejected a span as invalid: dropped", metadata: [
                    "reason": "\(reason)", "trace_ids": "\(RequestSplitter.traceIDs(batch.request))"])
                done()
            }
        case .permanent(let reason):
            observer.sendFailed(reason: reason, willRetry: false)
            observer.dropped(spans: batch.spans, reason: .rejected)
            logger.error("downstream rejected a batch", metadata: [
                "reason": "\(reason)", "spans": "\(batch.spans)", "trace_ids": "\(RequestSplitter.traceIDs(batch.request))"])
            done()
        case .retryable(let reason, let retryAfter):
            let now = ContinuousClock.now
            batch.attempts += 1
            let failures = state.withLock { state in
                state.consecutiveFailures += 1
                return state.consecutiveFailures
            }
            let delay = retryDelay.delay(attempt: max(batch.attempts, failures), retryAfter: retryAfter)
            if let deadline = state.withLock({ $0.deadline }), now + delay > deadline {
                observer.sendFailed(reason: reason, willRetry: false)
                persistOrDrop(batch)
                done()
                return
            }
            if batch.spooled != nil { batch.request = [] }  // waits on disk again
            observer.sendFailed(reason: reason, willRetry: true)
            if batch.attempts == 1 || batch.attempts % 10 == 0 {
                logger.warning("downstream unavailable, batch requeued for retry", metadata: [
                    "reason": "\(reason)", "attempt": "\(batch.attempts)", "retry_in": "\(delay)"])
            }
            batch.notBefore = now + delay
            state.withLock { state in state.pausedUntil = max(state.pausedUntil ?? now, now + delay) }
            requeue([batch], front: false)
        }
    }

    private var retryDelay: RetryDelay { RetryDelay(initial: configuration.initialBackoff, max: configuration.maxBackoff) }
}

extension Deque {
    /// Removes and returns every element.
    mutating func drain() -> Deque {
        defer { removeAll() }
        return self
    }
}
