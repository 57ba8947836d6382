/// How long a forwarder waits before trying the downstream again: exponential backoff with jitter (a random delay
/// between half and all of min(max, initial × 2^(attempt-1))), or the `Retry-After` the downstream asked for (never
/// below the backoff, at most 5 minutes). Shared by the trace forwarder and the metrics/logs relay.
struct RetryDelay: Sendable {
    var initial: Duration
    var max: Duration

    func backoff(attempt: Int) -> Duration {
        let base = initial * (1 << Swift.min(Swift.max(attempt, 1) - 1, 20))
        return Swift.min(base, max) * Double.random(in: 0.5...1.0)
    }

    func delay(attempt: Int, retryAfter: Duration?) -> Duration {
        let delay = backoff(attempt: attempt)
        guard let retryAfter else { return delay }
        return Swift.min(Swift.max(retryAfter, delay), .seconds(300))
    }
}
