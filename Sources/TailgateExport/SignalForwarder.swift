public import DequeModule
public import Logging
public import Synchronization

/// Why a relayed metrics or logs request was lost after it was accepted (a metric label).
public enum SignalDropReason: String, Sendable, CaseIterable {
    /// The downstream refused it for good (INVALID_ARGUMENT, 400, 401, 404, …): relayed requests are not split.
    case rejected = "rejected_by_downstream"
    /// The shutdown budget ran out before it was delivered.
    case shutdown = "shutdown_timeout"
}

/// Receives the relay's counts (implemented by the runtime's metrics).
public protocol SignalForwarderObserver: Sendable {
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
/// It shares the trace forwarder's downstream and neither runs nor closes it: stop this relay first.
public final class SignalForwarder: Sendable {
    struct Item: Sendable {
        var bytes: [UInt8]
        var signal: OTLPSignal
        var json: Bool
        /// Headers passed through from the agent's request.
        var headers: [(String, String)] = []
        var attempts = 0
        var notBefore: ContinuousClock.Instant? = nil
    }

    struct State: ~Copyable {
        var queue: Deque<Item> = []
        var queuedBytes = 0
        var inFlight = 0
        var finishing = false
        var deadline: ContinuousClock.Instant? = nil
        var waiters: Deque<CheckedContinuation<Void, Never>> = []
        var pausedUntil: ContinuousClock.Instant? = nil
        var consecutiveFailures = 0

        var drained: Bool { finishing && queue.isEmpty && inFlight == 0 }
    }

    public let downstream: any Downstream
    /// Most bytes of requests waiting (including those waiting for a retry).
    public let queueBytes: Int
    public let concurrency: Int
    public let initialBackoff: Duration
    public let maxBackoff: Duration
    private let observer: any SignalForwarderObserver
    private let logger: Logger
    private let state = Mutex(State())

    public init(downstream: any Downstream, queueBytes: Int, concurrency: Int = 2, initialBackoff: Duration = .milliseconds(100),
                maxBackoff: Duration = .seconds(5), observer: any SignalForwarderObserver, logger: Logger) {
        self.downstream = downstream
        self.queueBytes = queueBytes
        self.concurrency = max(1, concurrency)
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.observer = observer
        self.logger = logger
    }

    /// Bytes waiting.
    public var queuedBytes: Int { state.withLock { $0.queuedBytes } }

    /// Queues one request as it is; false (nothing queued) when it does not fit or the relay is finishing: the
    /// caller answers with a retryable error. A request larger than the whole queue is taken when the queue is empty.
    public func submit(_ bytes: [UInt8], signal: OTLPSignal, json: Bool, headers: [(String, String)] = []) -> Bool {
        let (accepted, queued, wake) = state.withLock { state -> (Bool, Int, CheckedContinuation<Void, Never>?) in
            guard !state.finishing, state.queue.isEmpty || state.queuedBytes + bytes.count <= queueBytes else {
                return (false, state.queuedBytes, nil)
            }
            state.queue.append(Item(bytes: bytes, signal: signal, json: json, headers: headers))
            state.queuedBytes += bytes.count
            return (true, state.queuedBytes, state.waiters.popFirst())
        }
        wake?.resume()
        if accepted { observer.signalQueued(bytes: queued) }
        return accepted
    }

    /// Sends until `finish(deadline:)` was called and the queue is drained (or the deadline passed).
    public func run() async {
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<concurrency { group.addTask { await self.worker() } }
            }
        } onCancel: {
            self.finish(deadline: .now)
        }
    }

    /// Stops taking requests; workers stop once the queue is empty, and drop (counted) what is left at `deadline`.
    public func finish(deadline: ContinuousClock.Instant) {
        let wake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.finishing = true
            state.deadline = min(state.deadline ?? deadline, deadline)
            return Array(state.waiters.drain())
        }
        for w in wake { w.resume() }
    }

    enum Work {
        case send(Item)
        case drop(Item)
        case waitUntil(ContinuousClock.Instant)
        case idle
        case stop
    }

    private func nextWork() -> Work {
        let now = ContinuousClock.now
        return state.withLock { state -> Work in
            func take(_ i: Int) -> Item {
                let item = state.queue.remove(at: i)
                state.queuedBytes -= item.bytes.count
                state.inFlight += 1
                return item
            }
            guard !state.queue.isEmpty else { return state.drained ? .stop : .idle }
            if let deadline = state.deadline, now >= deadline { return .drop(take(state.queue.startIndex)) }
            var earliest: ContinuousClock.Instant? = nil
            if let p = state.pausedUntil, p > now {
                earliest = p
            } else {
                for i in state.queue.indices {
                    guard let t = state.queue[i].notBefore, t > now else { return .send(take(i)) }
                    earliest = min(earliest ?? t, t)
                }
            }
            if let deadline = state.deadline, let e = earliest { earliest = min(e, deadline) }
            return .waitUntil(earliest ?? now)
        }
    }

    private func worker() async {
        while true {
            switch nextWork() {
            case .stop:
                return
            case .idle:
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let now = state.withLock { state -> Bool in
                        if !state.queue.isEmpty || state.drained { return true }
                        state.waiters.append(continuation)
                        return false
                    }
                    if now { continuation.resume() }
                }
            case .waitUntil(let t):
                try? await Task.sleep(until: min(t, .now + .milliseconds(25)), clock: .continuous)
            case .drop(let item):
                observer.signalDropped(item.signal, reason: .shutdown)
                done()
            case .send(let item):
                await deliver(item)
            }
        }
    }

    private func done() {
        let wake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.inFlight -= 1
            return state.drained ? Array(state.waiters.drain()) : []
        }
        for w in wake { w.resume() }
    }

    private func deliver(_ taken: Item) async {
        var item = taken
        let outcome = await downstream.send(item.bytes, signal: item.signal, json: item.json, headers: item.headers)
        switch outcome {
        case .delivered, .partial:
            observer.signalForwarded(item.signal, bytes: item.bytes.count)
            state.withLock { state in
                state.consecutiveFailures = 0
                state.pausedUntil = nil
            }
            done()
        case .invalid(let reason), .tooLarge(let reason), .permanent(let reason):
            observer.signalSendFailed(item.signal, reason: reason, willRetry: false)
            observer.signalDropped(item.signal, reason: .rejected)
            logger.error("downstream rejected a relayed \(item.signal.rawValue) request", metadata: [
                "reason": "\(reason)", "bytes": "\(item.bytes.count)"])
            done()
        case .retryable(let reason, let retryAfter):
            let now = ContinuousClock.now
            item.attempts += 1
            let failures = state.withLock { state in
                state.consecutiveFailures += 1
                return state.consecutiveFailures
            }
            let delay = RetryDelay(initial: initialBackoff, max: maxBackoff).delay(attempt: max(item.attempts, failures), retryAfter: retryAfter)
            if let deadline = state.withLock({ $0.deadline }), now + delay > deadline {
                observer.signalSendFailed(item.signal, reason: reason, willRetry: false)
                observer.signalDropped(item.signal, reason: .shutdown)
                done()
                return
            }
            observer.signalSendFailed(item.signal, reason: reason, willRetry: true)
            if item.attempts == 1 || item.attempts % 10 == 0 {
                logger.warning("downstream unavailable, relayed \(item.signal.rawValue) request requeued for retry", metadata: [
                    "reason": "\(reason)", "attempt": "\(item.attempts)", "retry_in": "\(delay)"])
            }
            item.notBefore = now + delay
            let (queued, wake) = state.withLock { state -> (Int, [CheckedContinuation<Void, Never>]) in
                state.pausedUntil = max(state.pausedUntil ?? now, now + delay)
                state.queue.append(item)
                state.queuedBytes += item.bytes.count
                state.inFlight -= 1
                return (state.queuedBytes, Array(state.waiters.drain()))
            }
            for w in wake { w.resume() }
            observer.signalQueued(bytes: queued)
        }
    }

}
