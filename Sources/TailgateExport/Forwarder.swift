import DequeModule
import Logging
import Synchronization
import TailgateBuffer
import TailgateWire

/// Batching, queueing and retrying of kept spans. Every field has a documented default.
public struct ForwarderConfiguration: Sendable, Equatable {
    /// A batch is sent once it holds this many spans. Default 8,192.
    public var maxBatchSpans: Int = 8192
    /// … or this many span bytes. Default 4 MiB (gRPC's usual message limit, with room for framing).
    public var maxBatchBytes: Int = 3 << 20
    /// … or when its first span has waited this long. Default 200 ms.
    public var batchTimeout: Duration = .milliseconds(200)
    /// Encoded batches waiting to be sent, at most this many bytes; beyond it batches are dropped and counted.
    /// Default 256 MiB.
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
    /// Give up on a batch after retrying this long (dropped and counted). Default 60 s.
    public var maxRetryTime: Duration = .seconds(60)
    /// On shutdown, keep sending queued batches at most this long. Default 10 s.
    public var shutdownTimeout: Duration = .seconds(10)

    public init() {}
}

/// Why forwarded spans were lost (a metric label).
public enum ForwardDropReason: String, Sendable, CaseIterable {
    case queueFull = "queue_full"
    case retriesExhausted = "retries_exhausted"
    case rejected = "rejected_by_downstream"
    case shutdown = "shutdown_timeout"
}

/// Receives the forwarder's counts (implemented by the runtime's metrics).
public protocol ForwarderObserver: Sendable {
    func forwarded(spans: Int, requests: Int)
    func dropped(spans: Int, reason: ForwardDropReason)
    func sendFailed(reason: String, willRetry: Bool)
    func queued(bytes: Int)
}

/// Takes kept traces, frames them into ExportTraceServiceRequests and delivers them downstream.
public final class Forwarder: Sendable {
    struct Batch: Sendable {
        var request: [UInt8]
        var spans: Int
    }

    struct State: ~Copyable {
        var framer = RequestFramer()
        var batchStarted: ContinuousClock.Instant? = nil
        var queue: Deque<Batch> = []
        var queuedBytes = 0
        var waiters: Deque<CheckedContinuation<Batch?, Never>> = []
        var finishing = false
        /// Set when a batch did not fit; cleared once the queue drained below half. While set, ingest pushes back.
        var overflowed = false
        /// Batches taken from the framer and being encoded (outside the lock): workers must not stop while any is.
        var encoding = 0

        /// Finishing, and nothing left or coming: idle workers may stop.
        var drained: Bool { finishing && queue.isEmpty && encoding == 0 }
        var deadline: ContinuousClock.Instant? = nil
    }

    public let configuration: ForwarderConfiguration
    public let downstream: any Downstream
    private let observer: any ForwarderObserver
    private let logger: Logger
    private let state = Mutex(State())

    public init(configuration: ForwarderConfiguration, downstream: any Downstream, observer: any ForwarderObserver, logger: Logger) {
        self.configuration = configuration
        self.downstream = downstream
        self.observer = observer
        self.logger = logger
    }

    /// True when the queue is nearly full, or recently overflowed: ingest should push back (retryable errors)
    /// instead of accepting more.
    public var isSaturated: Bool {
        state.withLock { $0.overflowed || $0.queuedBytes >= configuration.queueBytes / 10 * 9 }
    }

    /// Adds a kept trace's spans to the current batch (non-blocking), each marked with `annotation` when given.
    public func submit(_ spans: BufferedSpans, annotation: KeepAnnotation? = nil) {
        guard !spans.isEmpty else { return }
        let sealed = state.withLock { state -> RequestFramer? in
            if state.framer.isEmpty { state.batchStarted = .now }
            spans.forEach { scope, bytes in state.framer.append(scope: scope, span: bytes, annotation: annotation) }
            if state.framer.spanCount >= configuration.maxBatchSpans || state.framer.spanBytes >= configuration.maxBatchBytes {
                return takeBatch(&state)
            }
            return nil
        }
        if let sealed { enqueue(sealed) }
    }

    private func takeBatch(_ state: inout State) -> RequestFramer? {
        guard !state.framer.isEmpty else { return nil }
        var out = RequestFramer()
        swap(&out, &state.framer)
        state.batchStarted = nil
        state.encoding += 1
        return out
    }

    private func enqueue(_ framer: RequestFramer) {
        let batch = Batch(request: framer.encode(), spans: framer.spanCount)
        let (waiter, accepted, queued, idle) = state.withLock { state -> (CheckedContinuation<Batch?, Never>?, Bool, Int, [CheckedContinuation<Batch?, Never>]) in
            state.encoding -= 1
            if let w = state.waiters.popFirst() {
                return (w, true, state.queuedBytes, state.drained ? Array(state.waiters.drain()) : [])
            }
            guard state.queuedBytes + batch.request.count <= configuration.queueBytes else {
                state.overflowed = true
                return (nil, false, state.queuedBytes, state.drained ? Array(state.waiters.drain()) : [])
            }
            state.queue.append(batch)
            state.queuedBytes += batch.request.count
            return (nil, true, state.queuedBytes, [])
        }
        for w in idle { w.resume(returning: nil) }
        if let waiter {
            waiter.resume(returning: batch)
        } else if !accepted {
            observer.dropped(spans: batch.spans, reason: .queueFull)
            logger.warning("forward queue full: batch dropped", metadata: ["spans": "\(batch.spans)"])
        }
        observer.queued(bytes: queued)
    }

    private func next() async -> Batch? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Batch?, Never>) in
            let immediate = state.withLock { state -> Batch?? in
                if let b = state.queue.popFirst() {
                    state.queuedBytes -= b.request.count
                    if state.queuedBytes < configuration.queueBytes / 2 { state.overflowed = false }
                    return .some(b)
                }
                if state.drained { return .some(nil) }
                state.waiters.append(continuation)
                return nil
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
    }

    /// Sends until `finish()` was called and the queue is drained (or the shutdown timeout passed).
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [downstream, logger] in
                do { try await downstream.run() } catch {
                    logger.error("downstream connection ended", metadata: ["error": "\(error)"])
                }
            }
            group.addTask { await self.flushLoop() }
            for _ in 0..<max(1, configuration.concurrency) {
                group.addTask { await self.worker() }
            }
            // Workers and the flusher return once finishing; then close the downstream.
            var remaining = max(1, configuration.concurrency) + 1
            while remaining > 0, await group.next() != nil { remaining -= 1 }
            downstream.close()
        }
    }

    /// Seals the current batch, stops taking new work once the queue is empty, and bounds the time spent.
    public func finish() {
        let sealed = state.withLock { state in takeBatch(&state) }
        if let sealed { enqueue(sealed) }
        let toWake = state.withLock { state -> [CheckedContinuation<Batch?, Never>] in
            state.finishing = true
            state.deadline = .now + configuration.shutdownTimeout
            // Batches still being encoded will be handed to these waiters; otherwise they can stop now.
            return state.drained ? Array(state.waiters.drain()) : []
        }
        for w in toWake { w.resume(returning: nil) }
    }

    private var pastDeadline: Bool {
        state.withLock { state in state.deadline.map { ContinuousClock.now >= $0 } ?? false }
    }

    private func flushLoop() async {
        while !state.withLock({ $0.finishing }) {
            try? await Task.sleep(for: configuration.batchTimeout / 2)
            let sealed = state.withLock { state -> RequestFramer? in
                guard let started = state.batchStarted, ContinuousClock.now - started >= configuration.batchTimeout else { return nil }
                return takeBatch(&state)
            }
            if let sealed { enqueue(sealed) }
        }
    }

    private func worker() async {
        while let batch = await next() {
            if pastDeadline {
                observer.dropped(spans: batch.spans, reason: .shutdown)
                continue
            }
            await deliver(batch)
        }
    }

    private func deliver(_ batch: Batch) async {
        let started = ContinuousClock.now
        var attempt = 0
        while true {
            let outcome = await downstream.send(batch.request)
            switch outcome {
            case .delivered:
                observer.forwarded(spans: batch.spans, requests: 1)
                return
            case .permanent(let reason):
                observer.sendFailed(reason: reason, willRetry: false)
                observer.dropped(spans: batch.spans, reason: .rejected)
                logger.error("downstream rejected a batch", metadata: ["reason": "\(reason)", "spans": "\(batch.spans)"])
                return
            case .retryable(let reason, let retryAfter):
                attempt += 1
                let delay = retryAfter ?? backoff(attempt: attempt)
                if ContinuousClock.now - started + delay > configuration.maxRetryTime {
                    observer.sendFailed(reason: reason, willRetry: false)
                    observer.dropped(spans: batch.spans, reason: .retriesExhausted)
                    logger.error("giving up on a batch after retries", metadata: ["reason": "\(reason)", "spans": "\(batch.spans)"])
                    return
                }
                if let deadline = state.withLock({ $0.deadline }), ContinuousClock.now + delay > deadline {
                    observer.sendFailed(reason: reason, willRetry: false)
                    observer.dropped(spans: batch.spans, reason: .shutdown)
                    return
                }
                observer.sendFailed(reason: reason, willRetry: true)
                if attempt == 1 || attempt % 10 == 0 {
                    logger.warning("downstream unavailable, retrying", metadata: ["reason": "\(reason)", "attempt": "\(attempt)"])
                }
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// Exponential backoff with jitter: a random delay between half and all of min(max, initial × 2^(attempt-1)).
    func backoff(attempt: Int) -> Duration {
        let base = configuration.initialBackoff * (1 << min(attempt - 1, 20))
        let capped = min(base, configuration.maxBackoff)
        return capped * Double.random(in: 0.5...1.0)
    }
}

extension Deque {
    /// Removes and returns every element.
    mutating func drain() -> Deque {
        defer { removeAll() }
        return self
    }
}
