import Foundation
#if canImport(TailgateRecording)
package import TailgateRecording
#endif
package import TailgateBuffer
package import TailgatePolicies
package import TailgateWire

/// `tailgate explain TRACE_ID --recording FILE`: why a trace of a recording (`serve --record`) was kept or dropped,
/// answered offline. The recording's requests that hold spans of the trace are replayed, at their recorded arrival
/// times, through a real `TraceBuffer` on a `ManualClock` with the policies (as `tailgate simulate` does); the trace
/// is decided as the live proxy decides it (by the same triggers and deadlines), and the answer has the same fields
/// as `GET /debug/traces/{id}` for a decided trace, plus what only the replay knows: its spans at the decision and
/// every policy's verdict on them.
///
/// What the replay cannot see: the rest of the traffic (rate and bytes limiters only ever see the replayed requests),
/// memory pressure, and the store (no revise window: late spans follow the first decision).
package enum OfflineExplain {
    package struct Answer: Sendable {
        /// The trace has spans in the recording.
        package var found: Bool
        /// The answer as JSON (the shape of `GET /debug/traces/{id}`).
        package var json: String
    }

    /// `requests`: the whole recording, in any order. `policiesName`: what to call the policies in the answer.
    package static func explain(traceID: TraceID, requests: [RecordedRequest], policies: PolicySet, policiesName: String,
                               buffer configuration: BufferConfiguration = BufferConfiguration(), dryRun: Bool = false,
                               recordingName: String) -> Answer {
        let runtime = PolicyRuntime(policies, generation: 1, dryRun: dryRun)
        var config = configuration
        config.maxBufferedBytes = max(config.maxBufferedBytes, 4 << 30)  // the replay holds a few requests only
        config.shardSeed = 0

        // The requests that hold spans of the trace, in arrival order (stable for equal times).
        let sorted = requests.enumerated().sorted { ($0.element.arrival, $0.offset) < ($1.element.arrival, $1.offset) }.map(\.element)
        var scanned = ScannedRequest()
        var matching: [RecordedRequest] = []
        var invalid = 0
        var recordedSpans = 0
        for request in sorted {
            request.protobuf.withUnsafeBytes { raw in
                guard (try? runtime.scanner.scan(raw, into: &scanned)) != nil else {
                    invalid += 1
                    return
                }
                recordedSpans += scanned.spans.count
                if scanned.spans.contains(where: { $0.traceID == traceID }) { matching.append(request) }
            }
        }
        let source: DebugJSON = .object([
            ("recording", .string(recordingName)),
            ("requests", .int(requests.count)),
            ("requests_with_the_trace", .int(matching.count)),
            ("invalid_requests", .int(invalid)),
            ("policies", .string(policiesName)),
            ("policies_hash", .string(String(policies.sourceHash, radix: 16))),
        ])
        guard let base = matching.first?.arrival else {
            let text = "not in the recording (\(requests.count) requests, \(recordedSpans) spans"
                + (invalid > 0 ? ", \(invalid) not valid OTLP" : "") + ")"
            return Answer(found: false, json: DebugJSON.object([
                ("trace_id", .string(traceID.description)), ("state", .string("unknown")), ("text", .string(text)),
                ("source", source),
            ]).rendered + "\n")
        }

        let start: UInt64 = 1_000_000_000
        let clock = ManualClock(start: start)
        let buffer = TraceBuffer(configuration: config, decider: runtime, clock: clock)
        /// Unix nanoseconds of a clock reading (the first replayed request arrived at `base`).
        func wall(_ reading: UInt64) -> UInt64 { reading == 0 ? 0 : base &+ (reading &- min(reading, start)) }

        var decided: DecidedTrace? = nil
        var pending: TraceInspection.Pending? = nil
        var lateSpans = 0
        func capture(_ list: [DecidedTrace]) {
            for t in list where decided == nil && t.summary.traceID == traceID { decided = t }
        }
        /// Decides every trace whose deadline comes by `target`, each at its own deadline.
        func decide(until target: UInt64) {
            var steps = 0
            while let d = buffer.nextDeadline(), d <= target, steps < 1_000_000 {
                steps += 1
                if d > clock.now() { clock.advance(by: .nanoseconds(Int64(d - clock.now()))) }
                capture(buffer.decideExpired())
            }
            if target > clock.now() { clock.advance(by: .nanoseconds(Int64(target - clock.now()))) }
        }
        for request in matching {
            decide(until: start &+ (request.arrival &- base))
            request.protobuf.withUnsafeBytes { raw in
                guard (try? runtime.scanner.scan(raw, into: &scanned)) != nil else { return }
                let mine = scanned.spans.reduce(0) { $0 + ($1.traceID == traceID ? 1 : 0) }
                if decided != nil { lateSpans += mine }
                let outcome = buffer.insert(scanned, body: raw)
                capture(outcome.decided)
            }
            if decided == nil, let p = buffer.inspect(traceID)?.pending { pending = p }
        }
        // After the last request: the trace's window closes as it would have live (no more spans came).
        var steps = 0
        while decided == nil, let d = buffer.nextDeadline(), steps < 1_000_000 {
            steps += 1
            decide(until: d)
        }
        if decided == nil { capture(buffer.decideAll(trigger: .shutdown)) }
        guard let trace = decided else {
            // Cannot happen: every buffered trace is decided above.
            return Answer(found: false, json: DebugJSON.object([
                ("trace_id", .string(traceID.description)), ("state", .string("unknown")),
                ("text", .string("the replay did not decide the trace")), ("source", source),
            ]).rendered + "\n")
        }

        let summary = trace.summary
        let d = trace.decision
        let name = d.policy >= 0 ? runtime.policyName(d) : ""
        let explanation = policies.explain(summary)
        var fields: [(String, DebugJSON)] = [
            ("trace_id", .string(traceID.description)),
            ("state", .string(d.keep ? "kept" : "dropped")),
        ]
        fields += DebugRoutes.summaryFields(summary, pricing: policies.pricing)
        if let p = pending {
            fields += [
                ("complete", .bool(summary.complete)),
                ("missing_parents", .object([("local", .int(p.missingLocal)), ("remote", .int(p.missingRemote + p.missingUnknown)),
                                             ("of_which_unknown_locality", .int(p.missingUnknown))])),
                ("first_seen", .optional(p.firstSeen == 0 ? nil : DebugRoutes.rfc3339(wall(p.firstSeen)))),
                ("last_seen", .optional(p.lastSeen == 0 ? nil : DebugRoutes.rfc3339(wall(p.lastSeen)))),
                ("root_arrived", .optional(p.rootArrived == 0 ? nil : DebugRoutes.rfc3339(wall(p.rootArrived)))),
            ]
        }
        fields.append(("policies_evaluated", .string("at the decision")))
        fields.append(("policies", DebugRoutes.verdicts(explanation)))
        var would: [(String, DebugJSON)] = [
            ("keep", .bool(explanation.keep)),
            ("policy", .optional(explanation.decidingName)),
            ("weight", explanation.keep ? DebugRoutes.weight(explanation.weight) : .null),
            ("text", .string(explanation.text)),
        ]
        if !explanation.undetermined.isEmpty {
            would.append(("undetermined", .array(explanation.undetermined.map { .string(explanation.policies[$0].name) })))
        }
        fields.append(("would", .object(would)))
        let afterFirst = DebugRoutes.seconds(summary.decidedAt &- min(summary.firstSeenAt, summary.decidedAt))
        var decision: [(String, DebugJSON)] = [
            ("keep", .bool(d.keep)),
            ("policy", d.policy >= 0 ? .string(name) : .null),
            ("weight", d.keep ? DebugRoutes.weight(d.weight) : .null),
            ("trigger", .string(summary.trigger.rawValue)),
            ("decided_at", .string(DebugRoutes.rfc3339(wall(summary.decidedAt)))),
            ("decided_after_first_span_seconds", .number(afterFirst)),
        ]
        if let dry = d.dryRunKeep { decision.append(("dry_run_decision", .string(dry ? "keep" : "drop"))) }
        fields.append(("decision", .object(decision)))
        fields.append(("late_spans", .int(lateSpans)))
        fields.append(("source", source))
        let by = d.policy >= 0 ? "by policy '\(name)'" : "no policy matched"
        let when = "trigger: \(summary.trigger.rawValue), \(DebugRoutes.formatSeconds(afterFirst)) after the first span"
        var text = d.keep ? "kept \(by) (\(DebugRoutes.weightText(d.weight)); \(when))" : "dropped: \(by) (\(when))"
        if let dry = d.dryRunKeep { text += "; dry run: the policies said \(dry ? "keep" : "drop")" }
        text += "; replayed from the recording"
        if lateSpans > 0 { text += " (\(lateSpans) late span\(lateSpans == 1 ? "" : "s") followed the decision)" }
        fields.insert(("text", .string(text)), at: 2)
        return Answer(found: true, json: DebugJSON.object(fields).rendered + "\n")
    }
}
