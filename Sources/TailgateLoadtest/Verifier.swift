import TailgateBuffer
package import TailgatePolicies
package import TailgateWire
import TailgateRecording

/// Checks what a downstream received against what was sent and what the policies must keep: every trace the
/// policies keep arrives complete, no trace they drop arrives, nothing is duplicated.
package enum Verifier {
    struct TraceInfo {
        var summary: TraceSummary
        var requests: [Int]
        /// Span ID → parent, for the GenAI token rule (as the buffer walks it).
        var parents: [UInt64: UInt64] = [:]
    }

    package static func verify(
        recording: PreparedRecording, sent: SentLog, policies: PolicySet, received: [TraceID: [UInt64]]
    ) -> LoadtestVerification {
        let runtime = PolicyRuntime(policies)
        // One pass's traces, aggregated as the proxy aggregates them.
        var traces: [TraceID: TraceInfo] = [:]
        var scanned = ScannedRequest()
        for (index, request) in recording.requests.enumerated() {
            let ok = request.protobuf.withUnsafeBytes { (try? runtime.scanner.scan($0, into: &scanned)) != nil }
            guard ok else { continue }
            for span in scanned.spans {
                traces[span.traceID, default: TraceInfo(summary: TraceSummary(traceID: span.traceID), requests: [])]
                    .summary.add(span, genAI: scanned.genAI(of: span))
                traces[span.traceID]!.parents[span.spanID] = span.parentSpanID
                if traces[span.traceID]!.requests.last != index { traces[span.traceID]!.requests.append(index) }
            }
        }
        let n = recording.count
        let passes = n == 0 ? 0 : (sent.taken + n - 1) / n
        var categories: [String: (sent: Int, kept: Int)] = [:]
        var order: [String] = policies.policies.map(\.name) + ["(dropped)"]
        var tracesSent = 0, tracesReceived = 0, incomplete = 0, duplicates = 0, unexpected = 0
        var missing = 0, wronglyKept = 0
        var problems: [String] = []
        var accounted = Set<TraceID>()
        func note(_ s: String) { if problems.count < 20 { problems.append(s) } }

        for pass in 0..<passes {
            for (id, info) in traces {
                let seqs = info.requests.map { pass * n + $0 }
                let mapped = PreparedRecording.traceID(id, pass: pass)
                guard seqs.contains(where: sent.sent) else { continue }
                accounted.insert(mapped)
                guard seqs.allSatisfy(sent.accepted) else { continue }  // partly sent or refused: not verifiable
                tracesSent += 1
                var summary = info.summary
                summary.traceID = mapped
                let parents = info.parents
                summary.genAI?.resolve { parents[$0] }
                let decision = runtime.decide(summary)
                let category = decision.keep ? policies.policies[decision.policy].name : "(dropped)"
                categories[category, default: (0, 0)].sent += 1
                let got = received[mapped]
                if let got {
                    tracesReceived += 1
                    categories[category, default: (0, 0)].kept += 1
                    let distinct = Set(got).count
                    if distinct != got.count {
                        duplicates += got.count - distinct
                        note("trace \(mapped): \(got.count - distinct) duplicate span(s)")
                    }
                    if distinct < summary.spanCount {
                        incomplete += 1
                        note("trace \(mapped) (\(category)): \(distinct) of \(summary.spanCount) spans arrived")
                    }
                    if !decision.keep {
                        wronglyKept += 1
                        note("trace \(mapped) arrived although no policy keeps it")
                    }
                } else if decision.keep {
                    missing += 1
                    note("trace \(mapped) (\(category)) did not arrive")
                }
            }
        }
        for id in received.keys where !accounted.contains(id) {
            unexpected += 1
            note("trace \(id) arrived but was never sent")
        }
        if !order.contains(where: { categories[$0] != nil }) { order = Array(categories.keys).sorted() }
        let rows = order.compactMap { name -> LoadtestVerification.Category? in
            guard let c = categories[name] else { return nil }
            return LoadtestVerification.Category(name: name, sent: c.sent, kept: c.kept, expectedKeepRate: name == "(dropped)" ? 0 : 1)
        }
        if missing > 0 { problems.insert("\(missing) kept trace(s) did not arrive", at: 0) }
        if wronglyKept > 0 { problems.insert("\(wronglyKept) dropped trace(s) arrived", at: 0) }
        let passed = missing == 0 && wronglyKept == 0 && incomplete == 0 && duplicates == 0 && unexpected == 0
        return LoadtestVerification(
            tracesSent: tracesSent, tracesReceived: tracesReceived, incompleteTraces: incomplete,
            duplicateSpans: duplicates, unexpectedTraces: unexpected, categories: rows, passed: passed, problems: problems)
    }
}
