package import TailgateWire
import Synchronization

/// Where one trace is in the buffer and why, for `GET /debug/traces/{id}` (`TraceBuffer.inspect`). A read-only
/// snapshot taken under the trace's shard lock: nothing is decided, spilled or forgotten by looking.
package struct TraceInspection: Sendable {
    package enum State: String, Sendable, CaseIterable {
        /// Undecided, every span in memory.
        case buffered
        /// Undecided, spans (some or all) moved to the store; the summary stays in memory.
        case spilled
        /// Dropped, its spans kept in the store for the revise window (a late error may still keep it).
        case retainedAfterDrop = "retained_after_drop"
        /// Kept; remembered in the decision cache (late spans follow the keep).
        case kept
        /// Dropped; remembered in the decision cache (late spans are dropped).
        case dropped
    }

    /// An undecided trace: its timing, its tree and when it will be decided.
    package struct Pending: Sendable, Equatable {
        /// Clock readings (the buffer's clock) of the first and last span, and of the finished root (0: none yet).
        package var firstSeen: UInt64
        package var lastSeen: UInt64
        package var rootArrived: UInt64
        /// Spans held in memory (the rest are in the store).
        package var spansInMemory: Int
        /// Memory the trace holds, as the buffer accounts it against `max_buffered_bytes`.
        package var memoryBytes: Int
        /// Bytes of the trace's records in the store, and how many records.
        package var storedBytes: Int
        package var storedRecords: Int
        /// Parents named by spans of the trace that have not arrived, by where they live.
        package var missingLocal: Int
        package var missingRemote: Int
        /// The exporter did not say where the parent lives (treated like remote).
        package var missingUnknown: Int
        /// When the trace will be decided (clock reading) and what will close its window, as things stand.
        package var deadline: UInt64
        package var trigger: DecisionTrigger
        /// A root has arrived and no span waits for a parent.
        package var complete: Bool
        /// The summary's aggregates were recomputed from the spans for the current policies (they were aggregated
        /// under another policies file's attribute plan).
        package var reaggregated: Bool
    }

    package var state: State
    package var traceID: TraceID
    /// Clock reading when the snapshot was taken.
    package var now: UInt64
    /// What the trace's spans add up to (undecided and retained traces; nil for decisions remembered alone). For an
    /// undecided trace its `decidedAt` is `now`, `trigger` the trigger it would be decided by and `complete` its
    /// present state, so that policies can be evaluated on it as if it were decided now.
    package var summary: TraceSummary?
    /// Undecided traces only.
    package var pending: Pending?
    /// Decided traces: the decision remembered (its `generation` tells which policies file `policy` indexes into),
    /// with its `trigger` and `decidedAt` (nil and 0 for a decision restored from the store after a restart).
    package var decision: Decision?
    /// Retained dropped traces: when the revise window closes (clock reading), and late spans received since the drop.
    package var retainedUntil: UInt64?
    package var lateSpans: Int = 0
}

extension TraceBuffer {
    /// Where a trace is and why: undecided (in memory or spilled), dropped but retained for the revise window, or a
    /// remembered keep or drop; nil when the buffer has never seen the trace or has forgotten its decision.
    ///
    /// Read-only. For an undecided trace aggregated under another attribute plan (a policies reload since its first
    /// span), the summary is recomputed from its spans (read back from the store if spilled) with the current decider,
    /// as the decision will be.
    package func inspect(_ id: TraceID) -> TraceInspection? {
        let now = clock.now()
        let decider = self.decider
        return shards[shardIndex(id)].state.withLock { state -> TraceInspection? in
            // A cold trace is rebuilt from its records for the look (it stays cold).
            if let entry = state.traces[id] ?? state.cold[id].map({ state.rebuild(id, $0, decider) }) {
                var summary = entry.summary
                let (deadline, trigger) = entry.deadline(state.timing)
                var reaggregated = false
                if entry.planGeneration != decider.planGeneration {
                    var spans = BufferedSpans()
                    if let store = state.store, !entry.diskRefs.isEmpty { _ = store.read(entry.diskRefs, into: &spans) }
                    spans.append(contentsOf: entry.spans)
                    decider.reaggregate(&summary, spans: spans)
                    reaggregated = true
                }
                if summary.genAI != nil {
                    // The token rule as the decision will apply it (a spilled trace's links on disk are not read back:
                    // its spans' own parent links are used).
                    let seen = entry.seen
                    summary.genAI!.resolve { seen[$0] }
                }
                summary.decidedAt = now
                summary.firstSeenAt = entry.firstSeen
                summary.trigger = trigger
                summary.complete = entry.isComplete
                var local = 0, remote = 0, unknown = 0
                for (_, locality) in entry.missing.entries {
                    switch locality {
                    case .local: local += 1
                    case .remote: remote += 1
                    case .unknown: unknown += 1
                    }
                }
                let pending = TraceInspection.Pending(
                    firstSeen: entry.firstSeen, lastSeen: entry.lastSeen, rootArrived: entry.rootArrived,
                    spansInMemory: entry.spans.count, memoryBytes: entry.accountedBytes, storedBytes: entry.storedBytes,
                    storedRecords: entry.diskRefs.count, missingLocal: local, missingRemote: remote, missingUnknown: unknown,
                    deadline: deadline, trigger: trigger, complete: entry.isComplete, reaggregated: reaggregated)
                return TraceInspection(state: entry.diskRefs.isEmpty ? .buffered : .spilled, traceID: id, now: now,
                                       summary: summary, pending: pending)
            }
            if let decision = state.kept[id] {
                return TraceInspection(state: .kept, traceID: id, now: now, decision: decision)
            }
            if let decision = state.dropped[id] {
                if let r = state.retained[id], r.expires > now {
                    return TraceInspection(state: .retainedAfterDrop, traceID: id, now: now, summary: state.retainedSummary(id, r, decider),
                                           decision: decision, retainedUntil: r.expires, lateSpans: r.late.count)
                }
                return TraceInspection(state: .dropped, traceID: id, now: now, decision: decision)
            }
            return nil
        }
    }

    /// How long a decision is remembered at most (`max_trace_age` + 5 min), for "not seen (or forgotten after …)".
    package var decisionRetention: Duration {
        configuration.maxTraceAge + .seconds(300)
    }
}
