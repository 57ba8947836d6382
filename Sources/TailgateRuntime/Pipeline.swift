import Foundation
package import Logging
import Synchronization
package import TailgateBuffer
package import TailgateExport
package import TailgateIngest
package import TailgatePolicies
package import TailgateStore
import TailgateWire

/// The path of every span: scan → buffer → decide → forward. Implements the ingest handler for both receivers.
package final class Pipeline: TraceIngestHandler, Sendable {
    package let buffer: TraceBuffer
    package let forwarder: Forwarder
    package let metrics: TailgateMetrics
    /// Exact GenAI metrics over all traffic (counted at each trace's decision, before sampling).
    package let genAIMetrics: GenAIMetrics
    let logger: Logger
    /// Mark forwarded spans with the policy that kept them (and the sampling probability).
    let annotate: Bool
    let dryRun: Bool
    /// Tee of accepted requests (`serve --record`).
    let recorder: RecordingWriter?
    /// The durable store (`data_dir`), if any.
    package let store: DiskTraceStore?
    private let syncDurability: Bool
    /// Lowercased names of request headers passed through to the downstream (`downstream_headers_from_request`).
    package let passThroughHeaders: [String]

    struct Policies {
        var runtime: PolicyRuntime
    }

    private let policies: Mutex<Policies>

    package init(policies set: PolicySet, buffer configuration: BufferConfiguration, forwarder: Forwarder,
                metrics: TailgateMetrics, clock: any NanoClock = SystemClock(), logger: Logger,
                annotate: Bool = true, dryRun: Bool = false, recorder: RecordingWriter? = nil, store: DiskTraceStore? = nil,
                passThroughHeaders: [String] = [], genAIMaxLabelValues: Int = 200) {
        self.recorder = recorder
        genAIMetrics = GenAIMetrics(registry: metrics.registry, maxLabelValues: genAIMaxLabelValues)
        self.passThroughHeaders = passThroughHeaders.map { $0.lowercased() }
        self.store = store
        syncDurability = store?.configuration.durability == .sync
        let runtime = PolicyRuntime(set, generation: 1, dryRun: dryRun)
        policies = Mutex(Policies(runtime: runtime))
        buffer = TraceBuffer(configuration: configuration, decider: runtime, clock: clock, store: store, headerSets: forwarder.headerSets)
        self.forwarder = forwarder
        self.metrics = metrics
        self.logger = logger
        self.annotate = annotate
        self.dryRun = dryRun
        metrics.policiesLoaded(hash: set.sourceHash)
    }

    /// The policies in use.
    package var policySet: PolicySet { policies.withLock { $0.runtime.policySet } }

    /// Applies a new policy set to every trace decided from now on; buffered traces are kept (and re-aggregated
    /// under the new attribute plan when they are decided).
    package func reload(_ set: PolicySet) {
        let runtime = policies.withLock { p -> PolicyRuntime in
            let generation = p.runtime.generation + 1
            // An unchanged attribute plan (thresholds or rates edited): buffered and stored traces keep their
            // aggregates, and nothing is read back from the store to re-aggregate it.
            let samePlan = set.plan == p.runtime.policySet.plan
            let runtime = PolicyRuntime(set, generation: generation, dryRun: dryRun,
                                        planGeneration: samePlan ? p.runtime.planGeneration : generation)
            p.runtime = runtime
            // Swapped under the same lock: two quick reloads cannot leave the buffer with the older of the two.
            buffer.replaceDecider(runtime)
            return runtime
        }
        metrics.policiesLoaded(hash: runtime.policySet.sourceHash)
    }

    package func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
        ingest(body, transport: transport, headers: [])
    }

    package func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport, headers: [(String, String)]) -> IngestResult {
        if forwarder.isSaturated {
            metrics.refused(transport, "overloaded")
            return .overloaded(retryAfterSeconds: 1, message: "Tailgate's forward queue is full (the downstream is slow or down); retry later")
        }
        let scanner = policies.withLock { $0.runtime.scanner }
        var scanned = ScannedRequest()
        do {
            try scanner.scan(body, into: &scanned)
        } catch {
            metrics.refused(transport, "invalid")
            return .invalid(error.description)
        }
        recorder?.record(body, arrival: wallClockNanos())
        // Sync durability: acknowledged means written ahead and made durable.
        let headerSet = buffer.headerSets.id(headers)
        if syncDurability, let store, !scanned.spans.isEmpty, !store.writeAhead(body, headers: headers) {
            metrics.storeUnsyncedRequests.increment()
        }
        metrics.spansReceived[transport]?.increment(by: scanned.spans.count + scanned.rejectedSpans)
        metrics.requestsAccepted[transport]?.increment()
        let outcome = buffer.insert(scanned, body: body, headers: headerSet)
        for late in outcome.lateKept {
            metrics.spansKept.increment(by: late.spans.count)
            forwarder.submit(late.spans, annotation: annotation(late.decision), headers: late.headers)
        }
        metrics.dropped(outcome.lateDropped, .lateDropped)
        metrics.dropped(outcome.duplicates, .duplicate)
        if !outcome.lateGenAI.isEmpty { genAIMetrics.recordLate(outcome.lateGenAI, pricing: policySet.pricing) }
        handle(outcome.decided)
        updateGauges()
        if scanned.rejectedSpans > 0 {
            metrics.spansRejected[transport]?.increment(by: scanned.rejectedSpans)
            metrics.dropped(scanned.rejectedSpans, .invalidSpan)
            return .partiallyAccepted(
                rejectedSpans: Int64(scanned.rejectedSpans),
                message: "\(scanned.rejectedSpans) span(s) rejected: \(scanned.rejectionMessage ?? "invalid span")")
        }
        return .accepted
    }

    package func refused(transport: IngestTransport, reason: RefusalReason) {
        metrics.refused(transport, reason.rawValue)
    }

    /// Decides the traces whose window closed (called by the decision ticker).
    package func tick() {
        handle(buffer.decideExpired())
        updateGauges()
    }

    /// Graceful stop with a store (`on_shutdown: persist`): undecided traces are written to the store instead of
    /// being decided (those it has no room for are decided and flushed).
    package func persistAll() {
        let (persisted, decided) = buffer.persistAll()
        handle(decided)
        updateGauges()
        logger.info("persisted undecided traces for the next start", metadata: [
            "traces": "\(persisted)", "decided_for_lack_of_room": "\(decided.count)",
            "data_dir": "\(store?.configuration.directory ?? "")"])
    }

    /// Start with a store: rebuilds undecided traces, remembered decisions and the forward queue from it.
    package func recover() {
        guard let store else { return }
        let runtime = policies.withLock { $0.runtime }
        let report = store.recover(
            into: buffer,
            scan: { body, scanned in (try? runtime.scanner.scan(body, into: &scanned)) != nil },
            decision: { keep, weight, name in
                var d = Decision(keep: keep, policy: runtime.policyNames.firstIndex(of: name) ?? -1, weight: weight,
                                 generation: runtime.generation)
                d.policyName = name
                return d
            },
            forward: { ref, spans, headers in self.forwarder.adopt(ref, spans: spans, headers: self.buffer.headerSets.id(headers)) },
            lateKept: { spans, decision, headers in
                self.metrics.spansKept.increment(by: spans.count)
                self.forwarder.submit(spans, annotation: self.annotation(decision), headers: self.buffer.headerSets.id(headers))
            },
            planKey: runtime.policySet.sourceHash)
        metrics.storeRecoveredTraces.record(report.traces)
        metrics.storeRecoveredRecords.record(report.records)
        metrics.storeRecoverySeconds.record(report.seconds)
        updateGauges()
        logger.info("trace store recovered", metadata: [
            "traces": "\(report.traces)", "records": "\(report.records)", "bytes": "\(report.bytes)",
            "decisions": "\(report.decisions)", "forward_batches": "\(report.forwardBatches)",
            "late_kept_spans": "\(report.lateKeptSpans)",
            "damaged_records": "\(report.damagedRecords)", "seconds": "\(String(format: "%.3f", report.seconds))",
            "from": "\(report.fromIndex ? "index of the last stop" : "records")",
            "data_dir": "\(store.configuration.directory)"])
    }

    private let evictionsSeen = Mutex(0)

    /// Upkeep about every second: the decision cache's early evictions are counted; the store writes records out and
    /// deletes dead segments.
    package func maintainStore() {
        let evictions = buffer.decisionCacheEarlyEvictions
        let delta = evictionsSeen.withLock { seen -> Int in defer { seen = evictions }; return evictions - seen }
        if delta > 0 {
            metrics.decisionCacheEarlyEvictions.increment(by: delta)
            logger.warning("decision cache full: decisions forgotten before their traces' late spans can no longer come; raise buffer.decision_cache_size", metadata: [
                "evicted": "\(delta)", "decision_cache_size": "\(buffer.configuration.decisionCacheSize)"])
        }
        guard let store else { return }
        store.maintain(buffer: buffer)
        metrics.storeDiskBytes.record(store.diskBytes)
    }

    /// Closes the store at the end of a graceful stop, with the remembered decisions.
    package func closeStore() {
        guard let store else { return }
        let decisions = buffer.rememberedDecisions().map { ($0.0, $0.1, policyName($0.1)) }
        // The index lets the next start restore the undecided traces without scanning their records.
        store.close(decisions: decisions, index: buffer.exportIndex(), planKey: policySet.sourceHash)
    }

    /// Decides every buffered trace by policy (shutdown).
    package func decideAll() {
        let decided = buffer.decideAll(trigger: .shutdown)
        handle(decided)
        updateGauges()
        if !decided.isEmpty {
            logger.info("decided buffered traces on shutdown", metadata: ["traces": "\(decided.count)"])
        }
    }

    /// The name a decision is reported under: its policy's, "none" for a drop no policy made.
    func policyName(_ decision: Decision) -> String {
        guard decision.policy >= 0 else { return "none" }
        return decision.policyName.isEmpty ? "unknown" : decision.policyName
    }

    /// What kept spans say about their trace's decision; `summary` is nil for late spans (they follow a decision
    /// already annotated on the trace's other spans).
    private func annotation(_ decision: Decision, _ summary: TraceSummary? = nil) -> KeepAnnotation? {
        guard annotate || decision.dryRunKeep != nil else { return nil }
        let name = decision.policy >= 0 ? policyName(decision) : ""
        return KeepAnnotation(policy: name, weight: annotate ? decision.weight : .certain, dryRunKeep: decision.dryRunKeep,
                              trigger: annotate ? summary?.trigger.rawValue : nil,
                              incomplete: annotate && summary.map { !$0.complete } ?? false)
    }

    private func handle(_ decided: [DecidedTrace]) {
        if decided.isEmpty { return }
        rememberRecent(decided)  // the status page's last decisions (RecentDecisions.swift)
        let pricing = policySet.pricing
        for trace in decided {
            let summary = trace.summary
            // A revised trace was counted when it was dropped (its late spans as they arrived).
            if let ledger = summary.genAI, summary.trigger != .revised { genAIMetrics.record(ledger, pricing: pricing) }
            metrics.decided(trigger: summary.trigger, complete: summary.complete,
                            latencyNanos: summary.decidedAt &- summary.firstSeenAt)
            metrics.decidedShape(spans: summary.spanCount, durationNanos: summary.durationNanos)
            let policy = policyName(trace.decision)
            metrics.decided(policy: policy, keep: trace.decision.dryRunKeep ?? trace.decision.keep)
            if trace.unreadableSpans > 0 { metrics.dropped(spans: trace.unreadableSpans, reason: .storeDamaged) }
            if let spans = trace.spans, trace.decision.keep {
                metrics.spansKept.increment(by: spans.count)
                var durable: (@Sendable () -> Void)? = nil
                if syncDurability, let store {
                    // The keep is recorded once its spans are in the durable forward queue (see TraceBuffer.decide).
                    let (id, decision, name) = (summary.traceID, trace.decision, policy)
                    durable = { store.decided(trace: id, decision: decision, policyName: name, stored: true) }
                }
                forwarder.submit(spans, annotation: annotation(trace.decision, summary), durable: durable, headers: trace.headers)
            } else {
                metrics.dropped(trace.summary.spanCount, .policy)
            }
        }
    }

    private func updateGauges() {
        metrics.tracesBuffered.record(buffer.bufferedTraces)
        metrics.bytesBuffered.record(buffer.bufferedBytes)
        if store != nil {
            metrics.storeTraces.record(buffer.storedTraces)
            metrics.storeColdTraces.record(buffer.coldTraces)
            metrics.storeTraceBytes.record(buffer.storedBytes)
        }
    }
}

#if canImport(Glibc)
import Glibc
import CoreMetrics
import CoreFoundation
package import TailgateRecording
#endif

/// Unix time in nanoseconds.
func wallClockNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
