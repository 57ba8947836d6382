import Synchronization
package import TailgateBuffer
package import TailgateWire

/// The last decisions a pipeline made (a small ring, newest last), for the status page and `GET /debug/status`:
/// trace ID, keep or drop, the deciding policy, the trigger, span count and when. Trace metadata only.
package final class RecentDecisions: Sendable {
    package struct Entry: Sendable, Equatable {
        package var traceID: TraceID
        package var keep: Bool
        /// Dry run: what the policies decided (every trace is forwarded).
        package var dryRunKeep: Bool?
        /// The deciding policy's name ("none": no policy matched).
        package var policy: String
        package var trigger: DecisionTrigger
        package var spans: Int
        /// Unix nanoseconds of the decision.
        package var at: UInt64
    }

    package static let defaultCapacity = 50

    package let capacity: Int
    private let ring: Mutex<(entries: [Entry], next: Int, total: Int)>

    package init(capacity: Int = RecentDecisions.defaultCapacity) {
        self.capacity = max(1, capacity)
        ring = Mutex(([], 0, 0))
    }

    /// Adds decisions in the order they were made.
    func record(_ decided: [DecidedTrace], policyName: (Decision) -> String, at wall: UInt64) {
        guard !decided.isEmpty else { return }
        // Only the last `capacity` of a large batch can stay; names are looked up outside the lock.
        let entries = decided.suffix(capacity).map { t in
            Entry(traceID: t.summary.traceID, keep: t.decision.keep, dryRunKeep: t.decision.dryRunKeep,
                  policy: policyName(t.decision), trigger: t.decision.trigger ?? t.summary.trigger,
                  spans: t.summary.spanCount, at: wall)
        }
        ring.withLock { r in
            r.total += decided.count
            for e in entries {
                if r.entries.count < capacity {
                    r.entries.append(e)
                } else {
                    r.entries[r.next] = e
                }
                r.next = (r.next + 1) % capacity
            }
        }
    }

    /// The remembered decisions, newest first.
    package var newestFirst: [Entry] {
        ring.withLock { r in
            guard r.entries.count == capacity else { return r.entries.reversed() }
            return Array((r.entries[r.next...] + r.entries[..<r.next]).reversed())
        }
    }

    /// Decisions recorded since start.
    package var total: Int { ring.withLock { $0.total } }
}

// Each pipeline's ring, found by the pipeline (its `handle` feeds it; the admin listener reads it).
private let rings = Mutex<[ObjectIdentifier: (owner: WeakPipeline, ring: RecentDecisions)]>([:])

private struct WeakPipeline: @unchecked Sendable {
    weak var pipeline: Pipeline?
}

extension Pipeline {
    /// The last decisions of this pipeline (see `RecentDecisions`).
    package var recentDecisions: RecentDecisions {
        let key = ObjectIdentifier(self)
        return rings.withLock { map in
            if let found = map[key], found.owner.pipeline === self { return found.ring }
            // A new pipeline (or a stale entry of a pipeline gone at the same address): forget the gone ones.
            map = map.filter { $0.value.owner.pipeline != nil && $0.key != key }
            let ring = RecentDecisions()
            map[key] = (WeakPipeline(pipeline: self), ring)
            return ring
        }
    }

    /// Called by `handle` with every batch of decided traces.
    func rememberRecent(_ decided: [DecidedTrace]) {
        recentDecisions.record(decided, policyName: { policyName($0) }, at: wallClockNanos())
    }
}
