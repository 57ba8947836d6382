import Foundation
package import TailgateBuffer
package import TailgatePolicies
package import TailgateWire
package import TailgateRecording

/// Replays recordings through the real buffer and policy engine on a virtual clock: what a policies file would
/// keep, per policy, and how much per day at the recorded rate. With a second policy set, compares decisions.
package struct Simulator {
    package struct PolicyRow: Sendable, Equatable {
        package var policy: String
        package var traces = 0
        package var spans = 0
        package var bytes = 0
    }

    package struct Report: Sendable {
        package var policies: [String]
        /// Per policy that kept traces, in file order, then "(dropped)".
        package var rows: [PolicyRow]
        package var traces = 0
        package var spans = 0
        package var bytes = 0
        package var keptTraces = 0
        package var keptSpans = 0
        package var keptBytes = 0
        /// Requests of the recording that are not valid OTLP (skipped).
        package var invalidRequests = 0
        /// Span of the recording in seconds (first to last request).
        package var recordedSeconds: Double = 0
        /// Keep/drop per trace.
        package var decisions: [TraceID: (keep: Bool, policy: String)] = [:]

        package var keptBytesPerDay: Double { recordedSeconds > 0 ? Double(keptBytes) / recordedSeconds * 86_400 : 0 }
    }

    package struct Difference: Sendable {
        /// "keep (errors) → drop", with how many traces and example trace IDs.
        package var category: String
        package var count: Int
        package var examples: [TraceID]
    }

    let buffer: BufferConfiguration

    package init(buffer: BufferConfiguration = BufferConfiguration()) {
        var b = buffer
        b.maxBufferedBytes = max(b.maxBufferedBytes, 4 << 30)
        self.buffer = b
    }

    /// Runs `requests` (in arrival order) through each policy set in one pass.
    package func run(_ requests: [RecordedRequest], policySets: [PolicySet]) -> [Report] {
        let sorted = requests.sorted { $0.arrival < $1.arrival }
        let start = sorted.first?.arrival ?? 0
        let clock = ManualClock(start: 1_000_000_000)
        let runtimes = policySets.map { PolicyRuntime($0) }
        let buffers = runtimes.map { TraceBuffer(configuration: buffer, decider: $0, clock: clock) }
        var reports = policySets.map { set in
            Report(policies: set.policies.map(\.name), rows: set.policies.map { PolicyRow(policy: $0.name) } + [PolicyRow(policy: "(dropped)")])
        }
        var scanned = ScannedRequest()
        var lastArrival = start
        for request in sorted {
            if request.arrival > lastArrival {
                clock.advance(by: .nanoseconds(Int64(request.arrival - lastArrival)))
                lastArrival = request.arrival
            }
            for (i, runtime) in runtimes.enumerated() {
                Self.account(buffers[i].decideExpired(), &reports[i])
                request.protobuf.withUnsafeBytes { raw in
                    guard (try? runtime.scanner.scan(raw, into: &scanned)) != nil else {
                        reports[i].invalidRequests += 1
                        return
                    }
                    let outcome = buffers[i].insert(scanned, body: raw)
                    Self.account(outcome.decided, &reports[i])
                    for late in outcome.lateKept { reports[i].keptSpans += late.spans.count; reports[i].spans += late.spans.count }
                    reports[i].spans += outcome.lateDropped
                }
            }
        }
        // Everything still buffered is decided as at the end of the recording.
        for i in runtimes.indices {
            clock.advance(by: buffer.maxTraceAge)
            Self.account(buffers[i].decideExpired(), &reports[i])
            Self.account(buffers[i].decideAll(), &reports[i])
            reports[i].recordedSeconds = Double(lastArrival - start) / 1e9
        }
        return reports
    }

    static func account(_ decided: [DecidedTrace], _ report: inout Report) {
        for t in decided {
            let row = t.decision.keep && t.decision.policy >= 0 ? t.decision.policy : report.rows.count - 1
            report.rows[row].traces += 1
            report.rows[row].spans += t.summary.spanCount
            report.rows[row].bytes += t.summary.spanBytes
            report.traces += 1
            report.spans += t.summary.spanCount
            report.bytes += t.summary.spanBytes
            if t.decision.keep {
                report.keptTraces += 1
                report.keptSpans += t.summary.spanCount
                report.keptBytes += t.summary.spanBytes
            }
            report.decisions[t.summary.traceID] = (t.decision.keep, t.decision.policy >= 0 ? report.rows[row].policy : "none")
        }
    }

    /// Traces whose decision differs between two reports, by category.
    package static func compare(_ a: Report, _ b: Report, examples: Int = 3) -> [Difference] {
        var categories: [String: (Int, [TraceID])] = [:]
        for (id, da) in a.decisions {
            guard let db = b.decisions[id], da.keep != db.keep else { continue }
            let key = "\(da.keep ? "keep (\(da.policy))" : "drop") → \(db.keep ? "keep (\(db.policy))" : "drop")"
            var entry = categories[key] ?? (0, [])
            entry.0 += 1
            entry.1.append(id)
            categories[key] = entry
        }
        return categories.map { key, value in
            Difference(category: key, count: value.0, examples: Array(value.1.sorted().prefix(examples)))
        }.sorted { ($0.count, $1.category) > ($1.count, $0.category) }
    }

    // MARK: Formatting

    package static func bytes(_ n: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = n
        var u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(Int(v)) B" : String(format: "%.1f %@", v, units[u])
    }

    package static func percent(_ part: Int, _ whole: Int) -> String {
        whole == 0 ? "-" : String(format: "%.1f%%", Double(part) * 100 / Double(whole))
    }

    package static func table(_ report: Report, title: String) -> String {
        var lines: [[String]] = [["policy", "traces", "spans", "bytes"]]
        for row in report.rows where row.traces > 0 || row.policy != "(dropped)" {
            lines.append([row.policy, "\(row.traces)", "\(row.spans)", bytes(Double(row.bytes))])
        }
        lines.append(["total", "\(report.traces)", "\(report.spans)", bytes(Double(report.bytes))])
        let widths = (0..<4).map { c in lines.map { $0[c].count }.max() ?? 0 }
        var out = "\(title)\n"
        for (i, l) in lines.enumerated() {
            out += l.enumerated().map { c, v in c == 0 ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0) : String(repeating: " ", count: widths[c] - v.count) + v }
                .joined(separator: "  ") + "\n"
            if i == 0 || i == lines.count - 2 { out += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n" }
        }
        out += "kept: \(report.keptTraces) of \(report.traces) traces (\(percent(report.keptTraces, report.traces))), "
        out += "\(report.keptSpans) of \(report.spans) spans (\(percent(report.keptSpans, report.spans))), "
        out += "\(bytes(Double(report.keptBytes))) of \(bytes(Double(report.bytes))) (\(percent(report.keptBytes, report.bytes)))\n"
        if report.invalidRequests > 0 {
            out += "skipped \(report.invalidRequests) malformed request(s) of the recording\n"
        }
        if report.recordedSeconds > 0 {
            out += String(format: "recorded over %.1f s: kept volume at this rate %@/day\n", report.recordedSeconds, bytes(report.keptBytesPerDay))
        }
        return out
    }
}
