import Logging
import TailgateBuffer
import TailgateExport
import TailgateIngest
import TailgatePolicies
import TailgateWire

/// The path of every span: scan → buffer → decide → forward. Implements the ingest handler for both receivers.
public final class Pipeline: TraceIngestHandler, Sendable {
    public let buffer: TraceBuffer
    public let forwarder: Forwarder
    public let metrics: TailgateMetrics
    let scanner: OTLPScanner
    let policyNames: [String]
    let logger: Logger

    public init(policies: PolicySet, buffer configuration: BufferConfiguration, forwarder: Forwarder,
                metrics: TailgateMetrics, clock: any NanoClock = SystemClock(), logger: Logger) {
        scanner = OTLPScanner(plan: policies.plan)
        policyNames = policies.policies.map(\.name)
        buffer = TraceBuffer(configuration: configuration, decider: PolicyEngine(policies), clock: clock)
        self.forwarder = forwarder
        self.metrics = metrics
        self.logger = logger
    }

    public func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
        if forwarder.isSaturated {
            metrics.refused(transport, "overloaded")
            return .overloaded(retryAfterSeconds: 1, message: "Tailgate's forward queue is full (the downstream is slow or down); retry later")
        }
        var scanned = ScannedRequest()
        do {
            try scanner.scan(body, into: &scanned)
        } catch {
            metrics.refused(transport, "invalid")
            return .invalid(error.description)
        }
        metrics.spansReceived[transport]?.increment(by: scanned.spans.count + scanned.rejectedSpans)
        metrics.requestsAccepted[transport]?.increment()
        let outcome = buffer.insert(scanned, body: body)
        if !outcome.lateKept.isEmpty {
            metrics.spansKept.increment(by: outcome.lateKept.count)
            forwarder.submit(outcome.lateKept)
        }
        metrics.dropped(outcome.lateDropped, .lateDropped)
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

    public func refused(transport: IngestTransport, reason: RefusalReason) {
        metrics.refused(transport, reason.rawValue)
    }

    /// Decides the traces whose window closed (called by the decision ticker).
    public func tick() {
        handle(buffer.decideExpired())
        updateGauges()
    }

    /// Decides every buffered trace by policy (shutdown).
    public func decideAll() {
        let decided = buffer.decideAll(trigger: .shutdown)
        handle(decided)
        updateGauges()
        if !decided.isEmpty {
            logger.info("decided buffered traces on shutdown", metadata: ["traces": "\(decided.count)"])
        }
    }

    private func handle(_ decided: [DecidedTrace]) {
        for trace in decided {
            metrics.tracesDecidedByTrigger[trace.summary.trigger]?.increment()
            let policy = trace.decision.policy >= 0 ? policyNames[trace.decision.policy] : "none"
            metrics.decided(policy: policy, keep: trace.decision.keep)
            if let spans = trace.spans, trace.decision.keep {
                metrics.spansKept.increment(by: spans.count)
                forwarder.submit(spans)
            } else {
                metrics.dropped(trace.summary.spanCount, .policy)
            }
        }
    }

    private func updateGauges() {
        metrics.tracesBuffered.record(buffer.bufferedTraces)
        metrics.bytesBuffered.record(buffer.bufferedBytes)
    }
}
