/// Tasks parked until the state they share a lock with changes (the forwarder's workers waiting for a batch, its
/// flusher waiting for one to start). Kept under that lock; continuations are resumed outside it.
///
/// Cancellation-safe: a waiter first reserves an ID, then parks under a cancellation handler that `cancel`s the ID.
/// A parked waiter whose task is cancelled is handed back to be resumed, a waiter cancelled before it parked does not
/// park, and a waiter already woken is left alone: no continuation outlives its wait or is resumed twice.
struct WaiterList: Sendable {
    private enum Slot {
        case reserved
        case parked(CheckedContinuation<Void, Never>)
        case cancelled
    }

    private var slots: [UInt64: Slot] = [:]
    private var nextID: UInt64 = 0

    /// Waiters parked now.
    var parkedCount: Int { slots.values.reduce(0) { n, s in if case .parked = s { n + 1 } else { n } } }
    /// Reservations not yet released (parked or about to park): zero whenever nobody waits.
    var count: Int { slots.count }
    var isEmpty: Bool { slots.isEmpty }

    mutating func reserve() -> UInt64 {
        nextID &+= 1
        slots[nextID] = .reserved
        return nextID
    }

    /// Parks the waiter `id`; false when it was cancelled already (the caller resumes it at once).
    mutating func park(_ id: UInt64, _ continuation: CheckedContinuation<Void, Never>) -> Bool {
        guard case .reserved = slots[id] else {
            slots[id] = nil
            return false
        }
        slots[id] = .parked(continuation)
        return true
    }

    /// From the waiter's cancellation handler: the continuation to resume when it is parked.
    mutating func cancel(_ id: UInt64) -> CheckedContinuation<Void, Never>? {
        switch slots[id] {
        case .parked(let c):
            slots[id] = nil
            return c
        case .reserved:
            slots[id] = .cancelled
            return nil
        case .cancelled, nil:
            return nil
        }
    }

    /// After the wait: forgets what is left of the reservation.
    mutating func release(_ id: UInt64) {
        slots[id] = nil
    }

    /// The longest-parked waiter, to be resumed.
    mutating func takeOne() -> CheckedContinuation<Void, Never>? {
        var first: (UInt64, CheckedContinuation<Void, Never>)? = nil
        for (id, slot) in slots {
            if case .parked(let c) = slot, id < first?.0 ?? .max { first = (id, c) }
        }
        guard let (id, c) = first else { return nil }
        slots[id] = nil
        return c
    }

    /// Every parked waiter, to be resumed.
    mutating func takeAll() -> [CheckedContinuation<Void, Never>] {
        var all: [CheckedContinuation<Void, Never>] = []
        for (id, slot) in slots {
            if case .parked(let c) = slot {
                all.append(c)
                slots[id] = nil
            }
        }
        return all
    }
}
