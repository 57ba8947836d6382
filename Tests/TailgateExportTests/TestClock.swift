import Synchronization

/// A `Clock` that moves only when told to: the forwarder's tests run on it and never sleep.
///
/// Sleepers wait until `advance` passes their deadline (or their task is cancelled: `sleep` throws, and the sleeper
/// is gone). `drive(until:)` moves time as a test needs it: each time some task sleeps, it jumps to the earliest
/// sleeper's deadline.
final class TestClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration

        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    private enum Slot<C> {
        case reserved
        case parked(C)
        case cancelled
    }

    private struct State {
        var now: Duration = .zero
        /// Sleepers by ID: deadline and slot.
        var sleepers: [UInt64: (deadline: Duration, slot: Slot<CheckedContinuation<Void, any Error>>)] = [:]
        var watchers: [UInt64: Slot<CheckedContinuation<Void, Never>>] = [:]
        var nextID: UInt64 = 0

        var parkedDeadlines: [Duration] {
            sleepers.values.compactMap { if case .parked = $0.slot { $0.deadline } else { nil } }
        }

        /// Watchers to resume: a task sleeps.
        mutating func takeWatchers() -> [CheckedContinuation<Void, Never>] {
            var out: [CheckedContinuation<Void, Never>] = []
            for (id, slot) in watchers { if case .parked(let c) = slot { out.append(c); watchers[id] = nil } }
            return out
        }
    }

    private let state = Mutex(State())

    var now: Instant { Instant(offset: state.withLock { $0.now }) }
    var minimumResolution: Duration { .zero }

    /// Tasks sleeping now.
    var sleepers: Int { state.withLock { $0.parkedDeadlines.count } }
    /// The deadline of the earliest sleeper.
    var earliestDeadline: Duration? { state.withLock { $0.parkedDeadlines.min() } }
    /// Registrations left behind (sleepers and `waitForSleeper` calls): zero when nothing waits.
    var registrations: Int { state.withLock { $0.sleepers.count + $0.watchers.count } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = state.withLock { s -> UInt64 in
            s.nextID += 1
            s.sleepers[s.nextID] = (deadline.offset, .reserved)
            return s.nextID
        }
        defer { state.withLock { _ = $0.sleepers.removeValue(forKey: id) } }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let (outcome, watchers) = state.withLock { s -> (Result<Void, any Error>?, [CheckedContinuation<Void, Never>]) in
                    guard case .reserved = s.sleepers[id]?.slot else { return (.failure(CancellationError()), []) }
                    if deadline.offset <= s.now { return (.success(()), []) }
                    s.sleepers[id]?.slot = .parked(c)
                    return (nil, s.takeWatchers())
                }
                for w in watchers { w.resume() }
                if let outcome { c.resume(with: outcome) }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let sleeper = s.sleepers[id] else { return nil }
                s.sleepers[id]?.slot = .cancelled
                if case .parked(let c) = sleeper.slot { return c }
                return nil
            }
            c?.resume(throwing: CancellationError())
        }
    }

    /// Moves the clock to `instant` (never back) and wakes the sleepers it passed.
    func advance(to instant: Duration) {
        let due = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
            s.now = max(s.now, instant)
            var due: [CheckedContinuation<Void, any Error>] = []
            for (id, sleeper) in s.sleepers where sleeper.deadline <= s.now {
                if case .parked(let c) = sleeper.slot {
                    due.append(c)
                    s.sleepers[id]?.slot = .cancelled  // resumed: nothing more to do for it
                }
            }
            return due
        }
        for c in due { c.resume() }
    }

    func advance(by duration: Duration) { advance(to: state.withLock { $0.now } + duration) }

    /// Returns once some task sleeps on this clock (at once if one does); cancellable.
    func waitForSleeper() async {
        let id = state.withLock { s -> UInt64 in
            s.nextID += 1
            s.watchers[s.nextID] = .reserved
            return s.nextID
        }
        defer { state.withLock { _ = $0.watchers.removeValue(forKey: id) } }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let parked = state.withLock { s -> Bool in
                    guard case .reserved = s.watchers[id], s.parkedDeadlines.isEmpty else { return false }
                    s.watchers[id] = .parked(c)
                    return true
                }
                if !parked { c.resume() }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
                guard let slot = s.watchers[id] else { return nil }
                s.watchers[id] = .cancelled
                if case .parked(let c) = slot { return c }
                return nil
            }
            c?.resume()
        }
    }

    /// Moves time forward until `done` holds: whenever a task sleeps, to the earliest sleeper's deadline. `done` may
    /// become true without anyone sleeping (work done on other tasks): it is checked again after each yield.
    func drive(until done: () -> Bool) async {
        while !done() && !Task.isCancelled {
            if let next = earliestDeadline { advance(to: next) }
            await Task.yield()
        }
    }

    /// Moves time forward until cancelled, parking (not spinning) while nobody sleeps.
    private func driveUntilCancelled() async {
        while !Task.isCancelled {
            await waitForSleeper()
            if let next = earliestDeadline { advance(to: next) }
            await Task.yield()
        }
    }

    /// Drives time until `task` returns.
    func drive(_ task: Task<Void, Never>) async {
        let driver = Task { await self.driveUntilCancelled() }
        await task.value
        driver.cancel()
        await driver.value
    }
}
