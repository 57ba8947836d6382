import Foundation

// MARK: - Progress line

/// One live progress line, printed once per second during a run, e.g.
/// "  12s  sent 101,234 spans/s  acked 100,998/s  rejected 0/s  ack p50 0.8 ms  p99 3.1 ms"
package func progressLine(_ sample: LoadtestSample, elapsed: Double) -> String {
    let seconds = elapsed.isFinite ? max(0, Int(elapsed.rounded())) : 0
    var line = leftPad(grouped(seconds), 4) + "s"
    line += "  sent " + leftPad(grouped(sample.sentSpans), 7) + " spans/s"
    line += "  acked " + leftPad(grouped(sample.ackedSpans), 7) + "/s"
    line += "  rejected " + grouped(sample.rejectedSpans) + "/s"
    if sample.hasLatency {
        line += "  ack p50 " + formatMs(sample.latencyP50Ms) + " ms  p99 " + formatMs(sample.latencyP99Ms) + " ms"
    } else {
        line += "  ack p50 -  p99 -"
    }
    return line
}

// MARK: - Terminal table

extension LoadtestReport {
    /// The final table printed to the terminal (aligned, plain ASCII, ~80 columns), including verification when present.
    package func table() -> String {
        var out: [String] = []
        let width = 80

        out.append(clip("Tailgate loadtest  " + plain(target), width))
        out.append("  settings    " + settingsLine)
        if !recording.isEmpty {
            out.append(clip("  recording   " + recording.map(plain).joined(separator: ", "), width))
        }
        out.append("  started     " + iso8601(startedAt, fractional: false) + ", ran " + formatSeconds(durationSeconds))
        out.append("")

        // Totals: label column of 12, three right-aligned columns of 15.
        func row(_ label: String, _ cells: [String], _ suffix: String = "") -> String {
            var s = "  " + label.padding(toLength: 12, withPad: " ", startingAt: 0)
            for cell in cells { s += leftPad(cell, 15) }
            return suffix.isEmpty ? s : s + "  " + suffix
        }
        out.append(row("", ["sent", "acked", "failed"]))
        out.append(row("requests", [grouped(requestsSent), grouped(requestsAcked), grouped(requestsFailed)],
                       requestsUnanswered > 0 ? "\(grouped(requestsUnanswered)) unanswered" : ""))
        out.append(row("spans", [grouped(spansSent), grouped(spansAcked), grouped(spansRejected)]))
        out.append(row("spans/s", [formatRate(sentSpansPerSecond), formatRate(spansPerSecond),
                                   formatRate(durationSeconds > 0 ? Double(spansRejected) / durationSeconds : 0)]))
        out.append(row("bytes", [grouped(bytesSent)], "(" + formatBytes(bytesSent)
            + (spansSent > 0 ? ", " + grouped(Int((Double(bytesSent) / Double(spansSent)).rounded())) + " B/span" : "") + ")"))
        if let stats = perSecondStats {
            out.append("")
            out.append(row("acked/s", ["min", "median", "max"], "over \(grouped(stats.count)) s"))
            out.append(row("", [grouped(stats.min), grouped(stats.median), grouped(stats.max)]))
        }

        // Latency over all requests.
        out.append("")
        let keys = latencyKeys
        var header = "  " + "ack latency".padding(toLength: 12, withPad: " ", startingAt: 0)
        var values = "  " + "ms".padding(toLength: 12, withPad: " ", startingAt: 0)
        if keys.isEmpty {
            values += "no requests completed"
            out.append(header)
            out.append(values)
        } else {
            // Wrap to a second block if there are unusually many keys.
            var lineKeys = 0
            for key in keys {
                if lineKeys == 7 {
                    out.append(header); out.append(values)
                    header = String(repeating: " ", count: 14); values = header; lineKeys = 0
                }
                let value = formatMs(latencyMs[key] ?? 0)
                let cellWidth = max(9, value.count + 1, latencyLabel(key).count + 1)
                header += leftPad(latencyLabel(key), cellWidth)
                values += leftPad(value, cellWidth)
                lineKeys += 1
            }
            out.append(header)
            out.append(values)
        }

        if let verification {
            out.append("")
            out.append(contentsOf: verificationTable(verification, width: width))
        }

        if !errors.isEmpty {
            out.append("")
            out.append("  errors")
            for (message, count) in sortedErrors {
                out.append(clip(leftPad(grouped(count), 12) + "  " + plain(message), width))
            }
        }

        if !notes.isEmpty {
            out.append("")
            out.append("  notes")
            for note in notes {
                out.append(contentsOf: wrap(plain(note), width: width, indent: "    "))
            }
        }
        return out.map { $0.trailingSpacesRemoved }.joined(separator: "\n") + "\n"
    }

    private func verificationTable(_ v: LoadtestVerification, width: Int) -> [String] {
        var out: [String] = []
        out.append("  verification  " + (v.passed ? "PASS" : "FAIL"))
        func pair(_ l1: String, _ v1: Int?, _ l2: String, _ v2: Int) -> String {
            "    " + l1.padding(toLength: 18, withPad: " ", startingAt: 0) + leftPad(v1.map(grouped) ?? "", 12)
                + "      " + l2.padding(toLength: 20, withPad: " ", startingAt: 0) + leftPad(grouped(v2), 10)
        }
        out.append(pair("traces sent", v.tracesSent, "incomplete traces", v.incompleteTraces))
        out.append(pair("traces received", v.tracesReceived, "duplicate spans", v.duplicateSpans))
        out.append(pair("", nil, "unexpected traces", v.unexpectedTraces))
        if !v.categories.isEmpty {
            out.append("")
            let nameWidth = min(30, max(12, v.categories.map { $0.name.count }.max() ?? 0))
            func catRow(_ c: [String]) -> String {
                "    " + c[0].padding(toLength: nameWidth, withPad: " ", startingAt: 0)
                    + leftPad(c[1], 11) + leftPad(c[2], 11) + leftPad(c[3], 11) + leftPad(c[4], 11)
            }
            out.append(catRow(["category", "sent", "kept", "keep rate", "expected"]))
            for c in v.categories {
                out.append(catRow([
                    clip(plain(c.name), nameWidth), grouped(c.sent), grouped(c.kept),
                    c.keepRate.map(formatPercent) ?? "-", c.expectedKeepRate.map(formatPercent) ?? "-",
                ]))
            }
        }
        if !v.problems.isEmpty {
            out.append("")
            out.append("    problems")
            for problem in v.problems {
                out.append(contentsOf: wrap("- " + plain(problem), width: width, indent: "      ", continuation: "        "))
            }
        }
        return out
    }

    var settingsLine: String {
        var parts = [transport.isEmpty ? "?" : plain(transport), gzip ? "gzip" : "no gzip",
                     connections == 1 ? "1 connection" : "\(grouped(connections)) connections"]
        if let rate = targetSpansPerSecond, rate > 0, rate.isFinite {
            parts.append("target " + formatRate(rate) + " spans/s")
        } else {
            parts.append("as fast as possible")
        }
        return parts.joined(separator: ", ")
    }

    /// Latency keys in display order: the known ones first, then any others alphabetically.
    var latencyKeys: [String] {
        let known = ["p50", "p90", "p99", "p999", "max", "mean"]
        return known.filter { latencyMs[$0] != nil } + latencyMs.keys.filter { !known.contains($0) }.sorted()
    }

    var sortedErrors: [(String, Int)] {
        errors.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Min / median / max of acked spans per second over the samples (nil without samples).
    var perSecondStats: (count: Int, min: Int, median: Int, max: Int)? {
        guard !samples.isEmpty else { return nil }
        let acked = samples.map(\.ackedSpans).sorted()
        return (acked.count, acked[0], acked[(acked.count - 1) / 2], acked[acked.count - 1])
    }
}
