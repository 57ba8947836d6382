import DequeModule
import TailgateBuffer
import TailgateWire

/// An encoded batch in the forward queue (or being sent).
struct ForwardBatch: Sendable {
    var request: [UInt8]
    var spans: Int
    var attempts = 0
    /// Not to be retried before this instant (forwarder clock).
    var notBefore: Duration? = nil
    /// Produced by bisecting a batch the downstream rejected as invalid.
    var bisected = false
    /// Its record in the spool (`request` is then empty while it waits, and read back to be sent).
    var spooled: SpillRef? = nil
    /// Run once the batch is in the spool (sync durability), or at once without one.
    var onDurable: [@Sendable () -> Void] = []
    /// Headers passed through from the agents' requests (`HeaderSets` ID; `.none` for none).
    var headers: UInt32 = HeaderSets.none
}

/// A batch taken from the framer, to be encoded outside the lock (it counts as in flight meanwhile).
struct SealedBatch: Sendable {
    var framer: RequestFramer
    /// `onDurable` callbacks of the traces whose last span is in it.
    var callbacks: [@Sendable () -> Void]
    var headers: UInt32

    func encoded() -> ForwardBatch {
        ForwardBatch(request: framer.encode(), spans: framer.spanCount, onDurable: callbacks, headers: headers)
    }
}

/// Everything the forwarder decides, as a value: framing into batches, the byte-bounded queue, retry pauses, and the
/// lifecycle. No I/O and no clock: every instant is passed in (durations since the forwarder clock's origin), and each
/// change says which parked tasks to wake. `Forwarder` holds it under a lock and does the sending.
///
/// Lifecycle:
/// ```
/// running ──finish(deadline)──▶ draining(deadline) ──queue empty, nothing in flight──▶ finished
///    └──────────cancellation (= finish with the deadline now)──┘
/// ```
/// - `running`: spans are framed; a batch is sealed at `maxBatchSpans`, before `maxBatchBytes`, or `batchTimeout`
///   after its first span; sealed batches queue (at most `queueBytes`) and are sent.
/// - `draining`: the current batch was sealed and every later submit is sealed at once; queued batches are sent until
///   the deadline (the earliest asked for); past it every batch is handed out to be persisted (spool) or dropped.
/// - `finished`: workers stop; spans submitted now are refused (the caller counts them as dropped).
struct ForwarderState: Sendable {
    enum Phase: Equatable, Sendable {
        case running
        case draining(deadline: Duration)
        case finished
    }

    /// Which parked workers a change concerns.
    enum Wake: Equatable, Sendable {
        case none
        /// A batch was queued: one worker is enough.
        case one
        /// Several may have work, or must stop.
        case all
    }

    /// What a worker does next.
    enum Work: Sendable {
        case send(ForwardBatch)
        /// Past the shutdown deadline: into the spool, or dropped (counted).
        case persist(ForwardBatch)
        /// Batches wait for their retry time (or the downstream's pause): look again at this instant, or when
        /// `generation` changed.
        case waitUntil(Duration, generation: UInt64)
        /// Nothing queued: wait until `generation` changes.
        case idle(generation: UInt64)
        case stop
    }

    /// What the flusher (the batch timeout's timer) does next.
    enum FlushStep: Sendable {
        case seal(SealedBatch)
        case sleepUntil(Duration)
        /// No batch is open: wait until one starts.
        case waitForBatch
        case stop
    }

    let maxBatchSpans: Int
    let maxBatchBytes: Int
    let batchTimeout: Duration
    let queueBytes: Int

    private(set) var phase: Phase = .running
    /// Bumped by every change that can give a parked worker something to do.
    private(set) var generation: UInt64 = 0

    private var framer = RequestFramer()
    /// `onDurable` callbacks of the traces whose last span is in `framer`.
    private var framerCallbacks: [@Sendable () -> Void] = []
    /// The pass-through headers of every span in `framer` (a batch goes to one tenant).
    private var framerHeaders: UInt32 = HeaderSets.none
    /// When the open batch's first span came.
    private(set) var batchStarted: Duration? = nil

    private(set) var queue: Deque<ForwardBatch> = []
    /// Bytes of encoded batches in `queue` (spooled ones waiting on disk count nothing).
    private(set) var queuedBytes = 0
    /// Set when a batch did not fit; cleared once the queue drained below half. While set, ingest pushes back.
    private(set) var overflowed = false
    /// Batches sealed and being encoded, or taken and being sent: workers must not stop while any is (a failed send
    /// may requeue it).
    private(set) var inFlight = 0
    /// After a transient failure the downstream is given a rest (backoff) before any batch is tried again, so an
    /// outage costs a request per backoff rather than one per queued batch; a success ends it.
    private(set) var pausedUntil: Duration? = nil
    private(set) var consecutiveFailures = 0

    init(_ configuration: ForwarderConfiguration) {
        maxBatchSpans = configuration.maxBatchSpans
        maxBatchBytes = configuration.maxBatchBytes
        batchTimeout = configuration.batchTimeout
        queueBytes = configuration.queueBytes
    }

    var deadline: Duration? {
        if case .draining(let d) = phase { d } else { nil }
    }

    func isPastDeadline(_ now: Duration) -> Bool { deadline.map { now >= $0 } ?? false }

    /// Finishing, and nothing left or coming: workers may stop.
    var isDrained: Bool { phase != .running && queue.isEmpty && inFlight == 0 }

    var framedSpans: Int { framer.spanCount }

    /// True when the queue is nearly full (without a spool to overflow to), or recently overflowed.
    func isSaturated(spooling: Bool) -> Bool {
        overflowed || (!spooling && queuedBytes >= queueBytes / 10 * 9)
    }

    private mutating func changed(_ wake: Wake) -> Wake {
        if wake != .none { generation &+= 1 }
        return wake
    }

    // MARK: Framing

    /// Frames a kept trace's spans. Returns the batches sealed on the way (each in flight until `offer`ed) and
    /// whether a batch was opened (the flusher must time it); nil when finished (nothing was taken).
    mutating func append(_ spans: BufferedSpans, annotation: KeepAnnotation?, durable: (@Sendable () -> Void)?,
                         headers: UInt32, now: Duration) -> (sealed: [SealedBatch], opened: Bool)? {
        guard phase != .finished else { return nil }
        let before = batchStarted
        var sealed: [SealedBatch] = []
        if !framer.isEmpty && framerHeaders != headers, let s = seal() { sealed.append(s) }
        framerHeaders = headers
        if framer.isEmpty { batchStarted = now }
        // The framer holds the trace's bytes until the batch is encoded, which writes each span once.
        let source = spans.bytes
        spans.forEachRange { scope, offset, length in
            if !framer.isEmpty && framer.spanBytes + length > maxBatchBytes, let s = seal() {
                sealed.append(s)
                batchStarted = now
            }
            framer.append(scope: scope, source: source, offset: offset, length: length, annotation: annotation)
            if framer.spanCount >= maxBatchSpans || framer.spanBytes >= maxBatchBytes, let s = seal() {
                sealed.append(s)
            }
        }
        if !framer.isEmpty && batchStarted == nil { batchStarted = now }
        if let durable {
            if !framer.isEmpty { framerCallbacks.append(durable) }
            else if !sealed.isEmpty { sealed[sealed.count - 1].callbacks.append(durable) }
        }
        // Nobody times batches any more: what comes while draining is sealed at once.
        if phase != .running, let s = seal() { sealed.append(s) }
        return (sealed, batchStarted != nil && (before == nil || !sealed.isEmpty))
    }

    /// Seals the open batch (nil when there is none); it counts as in flight until offered.
    mutating func seal() -> SealedBatch? {
        guard !framer.isEmpty else { return nil }
        var out = RequestFramer()
        swap(&out, &framer)
        let callbacks = framerCallbacks
        framerCallbacks = []
        batchStarted = nil
        inFlight += 1
        return SealedBatch(framer: out, callbacks: callbacks, headers: framerHeaders)
    }

    mutating func flushStep(now: Duration) -> FlushStep {
        guard phase == .running else { return .stop }
        guard let started = batchStarted else { return .waitForBatch }
        guard now - started >= batchTimeout else { return .sleepUntil(started + batchTimeout) }
        return seal().map(FlushStep.seal) ?? .waitForBatch
    }

    // MARK: The queue

    /// Whether a batch of `bytes` would overflow the memory queue now (it then waits in the spool, if any).
    func overflows(adding bytes: Int) -> Bool { queuedBytes + bytes > queueBytes }

    /// Queues a new batch (`encoded`: it was sealed here and counted in flight). Refused, and the queue marked
    /// overflowed, when it has no room.
    mutating func offer(_ batch: ForwardBatch, encoded: Bool) -> (accepted: Bool, wake: Wake) {
        if encoded { inFlight -= 1 }
        guard queuedBytes + batch.request.count <= queueBytes else {
            overflowed = true
            return (false, changed(isDrained ? .all : .none))
        }
        queue.append(batch)
        queuedBytes += batch.request.count
        return (true, changed(.one))
    }

    /// A batch found in the spool at start. False when finished (it stays in the spool for the next start).
    mutating func adopt(_ batch: ForwardBatch) -> Wake? {
        guard phase != .finished else { return nil }
        queue.append(batch)
        return changed(.one)
    }

    /// Puts batches taken by a worker back (retry, split halves): accepted already, so never refused for room;
    /// `front` puts them first (split halves keep their turn).
    mutating func requeue(_ batches: [ForwardBatch], front: Bool) -> Wake {
        for b in front ? batches.reversed() : batches {
            if front { queue.prepend(b) } else { queue.append(b) }
            queuedBytes += b.request.count
        }
        inFlight -= 1
        return changed(.all)
    }

    /// A worker is finished with a batch it took (delivered, dropped or persisted).
    mutating func finishedWith() -> Wake {
        inFlight -= 1
        return changed(isDrained ? .all : .none)
    }

    mutating func nextWork(now: Duration) -> Work {
        func take(_ i: Int) -> ForwardBatch {
            let b = queue.remove(at: i)
            queuedBytes -= b.request.count
            if queuedBytes < queueBytes / 2 { overflowed = false }
            inFlight += 1
            return b
        }
        guard !queue.isEmpty else {
            guard isDrained else { return .idle(generation: generation) }
            phase = .finished
            return .stop
        }
        // Past the shutdown deadline every batch is handed out at once (to be persisted or dropped, counted).
        if isPastDeadline(now) { return .persist(take(queue.startIndex)) }
        var earliest: Duration? = nil
        if let p = pausedUntil, p > now {
            earliest = p
        } else {
            // The first batch that is due; batches waiting for their retry are passed over.
            for i in queue.indices {
                guard let t = queue[i].notBefore, t > now else { return .send(take(i)) }
                earliest = min(earliest ?? t, t)
            }
        }
        if let deadline, let e = earliest { earliest = min(e, deadline) }
        return .waitUntil(earliest ?? now, generation: generation)
    }

    // MARK: Outcomes

    /// The downstream took a batch a worker sent (whole or in part): the failure streak and any pause end (workers
    /// waiting out the pause wake), and the worker is finished with it.
    mutating func delivered() -> Wake {
        consecutiveFailures = 0
        let paused = pausedUntil != nil
        pausedUntil = nil
        inFlight -= 1
        return changed(paused || isDrained ? .all : .none)
    }

    /// A transient failure: the failure streak so far (the backoff grows with it).
    mutating func failedTransiently() -> Int {
        consecutiveFailures += 1
        return consecutiveFailures
    }

    /// Requeues a batch that failed transiently, to be tried again at `retryAt`; the downstream rests until then.
    mutating func retry(_ batch: ForwardBatch, at retryAt: Duration, now: Duration) -> Wake {
        var batch = batch
        batch.notBefore = retryAt
        pausedUntil = max(pausedUntil ?? now, retryAt)
        return requeue([batch], front: false)
    }

    // MARK: Lifecycle

    /// Stops taking time-based batches: seals the open batch (to be encoded and offered) and drains until `deadline`
    /// (the earliest of every call's). Nothing happens once finished.
    mutating func beginDraining(deadline: Duration) -> (sealed: SealedBatch?, wake: Wake) {
        guard phase != .finished else { return (nil, .none) }
        let sealed = seal()
        phase = .draining(deadline: min(self.deadline ?? deadline, deadline))
        return (sealed, changed(.all))
    }
}
