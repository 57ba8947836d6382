/// The forwarder's time — batch timeouts, retry backoff, the shutdown deadline — as durations since the injected
/// clock's reading when the forwarder was made. Production injects the continuous clock; tests inject a clock that
/// moves only when told to, so no test of the forwarder sleeps.
///
/// Any `Clock` measured in `Duration` fits; it is erased here so that `Forwarder` stays one concrete type for the
/// pipeline to hold.
struct ForwarderClock: Sendable {
    private let reading: @Sendable () -> Duration
    private let sleeping: @Sendable (Duration) async throws -> Void

    init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let origin = clock.now
        reading = { origin.duration(to: clock.now) }
        sleeping = { deadline in try await clock.sleep(until: origin.advanced(by: deadline), tolerance: nil) }
    }

    /// Time since the origin.
    var now: Duration { reading() }

    /// Sleeps until `deadline` (since the origin); throws `CancellationError` when the task is cancelled first.
    func sleep(until deadline: Duration) async throws {
        try await sleeping(deadline)
    }
}
