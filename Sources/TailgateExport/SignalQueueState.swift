import DequeModule

/// Everything the metrics/logs relay decides, as a value (the counterpart of `ForwarderState` for requests relayed
/// unchanged): the byte-bounded queue, retry pauses and the drain deadline. No I/O and no clock: every instant is
/// passed in (durations since the relay clock's origin), and each change says which parked workers to wake.
/// `SignalForwarder` holds it under a lock and does the sending.
///
/// Lifecycle: running until `finish(deadline:)`; then no request is taken, queued ones are sent until the deadline
/// (the earliest asked for) and handed out to be dropped past it; workers stop once the queue is empty and nothing is
/// in flight.
struct SignalQueueState: Sendable {
    /// One relayed request, as received.
    struct Item: Sendable {
        var bytes: [UInt8]
        var signal: OTLPSignal
        var json: Bool
        /// Headers passed through from the agent's request.
        var headers: [(String, String)] = []
        var attempts = 0
        /// Not to be retried before this instant (relay clock).
        var notBefore: Duration? = nil
    }

    /// What a worker does next.
    enum Work: Sendable {
        case send(Item)
        /// Past the shutdown deadline: dropped (counted).
        case drop(Item)
        /// Requests wait for their retry time (or the downstream's pause): look again at this instant, or when
        /// `generation` changed.
        case waitUntil(Duration, generation: UInt64)
        /// Nothing queued: wait until `generation` changes.
        case idle(generation: UInt64)
        case stop
    }

    typealias Wake = ForwarderState.Wake

    /// Most bytes of requests waiting (a request larger than that is taken when the queue is empty).
    let queueBytes: Int

    private(set) var queue: Deque<Item> = []
    private(set) var queuedBytes = 0
    /// Requests taken by a worker and being sent: workers must not stop while any is (a failed send may requeue it).
    private(set) var inFlight = 0
    /// Set by `finish`: nothing more is taken.
    private(set) var deadline: Duration? = nil
    /// Bumped by every change that can give a parked worker something to do.
    private(set) var generation: UInt64 = 0
    /// After a transient failure the downstream rests (backoff) before any request is tried again; a success ends it.
    private(set) var pausedUntil: Duration? = nil
    private(set) var consecutiveFailures = 0

    init(queueBytes: Int) {
        self.queueBytes = queueBytes
    }

    var isFinishing: Bool { deadline != nil }

    /// Finishing, and nothing left or coming: workers may stop.
    var isDrained: Bool { isFinishing && queue.isEmpty && inFlight == 0 }

    private mutating func changed(_ wake: Wake) -> Wake {
        if wake != .none { generation &+= 1 }
        return wake
    }

    /// Queues a request; false (nothing queued) when it does not fit or the relay is finishing.
    mutating func offer(_ item: Item) -> (accepted: Bool, wake: Wake) {
        guard !isFinishing, queue.isEmpty || queuedBytes + item.bytes.count <= queueBytes else { return (false, .none) }
        queue.append(item)
        queuedBytes += item.bytes.count
        return (true, changed(.one))
    }

    /// Stops taking requests; the queue drains until `deadline` (the earliest of every call's).
    mutating func finish(deadline: Duration) -> Wake {
        self.deadline = min(self.deadline ?? deadline, deadline)
        return changed(.all)
    }

    mutating func nextWork(now: Duration) -> Work {
        func take(_ i: Int) -> Item {
            let item = queue.remove(at: i)
            queuedBytes -= item.bytes.count
            inFlight += 1
            return item
        }
        guard !queue.isEmpty else { return isDrained ? .stop : .idle(generation: generation) }
        if let deadline, now >= deadline { return .drop(take(queue.startIndex)) }
        var earliest: Duration? = nil
        if let p = pausedUntil, p > now {
            earliest = p
        } else {
            // The first request that is due; requests waiting for their retry are passed over.
            for i in queue.indices {
                guard let t = queue[i].notBefore, t > now else { return .send(take(i)) }
                earliest = min(earliest ?? t, t)
            }
        }
        if let deadline, let e = earliest { earliest = min(e, deadline) }
        return .waitUntil(earliest ?? now, generation: generation)
    }

    /// The downstream took a request: the failure streak and any pause end (workers waiting it out wake).
    mutating func delivered() -> Wake {
        consecutiveFailures = 0
        let paused = pausedUntil != nil
        pausedUntil = nil
        inFlight -= 1
        return changed(paused || isDrained ? .all : .none)
    }

    /// A worker is finished with a request it took (dropped).
    mutating func finishedWith() -> Wake {
        inFlight -= 1
        return changed(isDrained ? .all : .none)
    }

    /// A transient failure: the failure streak so far (the backoff grows with it).
    mutating func failedTransiently() -> Int {
        consecutiveFailures += 1
        return consecutiveFailures
    }

    /// Requeues a request that failed transiently, to be tried again at `retryAt`; the downstream rests until then.
    mutating func retry(_ item: Item, at retryAt: Duration, now: Duration) -> Wake {
        var item = item
        item.notBefore = retryAt
        pausedUntil = max(pausedUntil ?? now, retryAt)
        queue.append(item)
        queuedBytes += item.bytes.count
        inFlight -= 1
        return changed(.all)
    }
}
