public import Foundation

// The result of `tailgate loadtest`: the data model (Codable, written as JSON next to the HTML page) and its three
// renderings: the live progress line, the final terminal table and a self-contained HTML page with SVG charts.

// MARK: - Model

/// What happened during one second of a run.
public struct LoadtestSample: Codable, Sendable, Equatable {
    /// Seconds since start (0-based).
    public var second: Int
    /// Spans sent during this second.
    public var sentSpans: Int
    /// Spans acknowledged (accepted) during this second.
    public var ackedSpans: Int
    /// Spans in requests answered with an error (any retryable or final error).
    public var rejectedSpans: Int
    /// Ack latency of the requests completed during this second; all three are 0 when none completed.
    public var latencyP50Ms: Double
    public var latencyP99Ms: Double
    public var latencyMaxMs: Double

    public init(
        second: Int, sentSpans: Int, ackedSpans: Int, rejectedSpans: Int,
        latencyP50Ms: Double, latencyP99Ms: Double, latencyMaxMs: Double
    ) {
        self.second = second
        self.sentSpans = sentSpans
        self.ackedSpans = ackedSpans
        self.rejectedSpans = rejectedSpans
        self.latencyP50Ms = latencyP50Ms
        self.latencyP99Ms = latencyP99Ms
        self.latencyMaxMs = latencyMaxMs
    }

    /// Whether any request completed in this second (otherwise the latencies carry no information).
    var hasLatency: Bool { latencyP50Ms > 0 || latencyP99Ms > 0 || latencyMaxMs > 0 }
}

/// What a downstream received, checked against what was sent and what the policies must keep.
public struct LoadtestVerification: Codable, Sendable, Equatable {
    public var tracesSent: Int
    public var tracesReceived: Int
    /// Traces received with fewer spans than sent.
    public var incompleteTraces: Int
    public var duplicateSpans: Int
    /// Traces received but never sent.
    public var unexpectedTraces: Int

    /// Traces by deciding policy (or "(dropped)"): how many were sent and how many arrived.
    public struct Category: Codable, Sendable, Equatable {
        public var name: String
        public var sent: Int
        public var kept: Int
        /// The fraction (0...1) of this category's traces that should arrive; nil when there is no expectation.
        public var expectedKeepRate: Double?

        public init(name: String, sent: Int, kept: Int, expectedKeepRate: Double? = nil) {
            self.name = name
            self.sent = sent
            self.kept = kept
            self.expectedKeepRate = expectedKeepRate
        }

        /// kept / sent, nil when nothing was sent.
        var keepRate: Double? { sent > 0 ? Double(kept) / Double(sent) : nil }
    }

    public var categories: [Category]
    public var passed: Bool
    public var problems: [String]

    public init(
        tracesSent: Int, tracesReceived: Int, incompleteTraces: Int = 0, duplicateSpans: Int = 0,
        unexpectedTraces: Int = 0, categories: [Category] = [], passed: Bool, problems: [String] = []
    ) {
        self.tracesSent = tracesSent
        self.tracesReceived = tracesReceived
        self.incompleteTraces = incompleteTraces
        self.duplicateSpans = duplicateSpans
        self.unexpectedTraces = unexpectedTraces
        self.categories = categories
        self.passed = passed
        self.problems = problems
    }
}

/// Everything measured by one `tailgate loadtest` run.
public struct LoadtestReport: Codable, Sendable {
    /// e.g. "grpc://127.0.0.1:4317".
    public var target: String
    /// "grpc" | "http" (| "file").
    public var transport: String
    public var gzip: Bool
    public var connections: Int
    /// nil = as fast as possible.
    public var targetSpansPerSecond: Double?
    public var recording: [String]
    public var startedAt: Date
    public var durationSeconds: Double
    public var requestsSent: Int
    public var requestsAcked: Int
    public var requestsFailed: Int
    public var spansSent: Int
    public var spansAcked: Int
    public var spansRejected: Int
    public var bytesSent: Int
    /// Keys "p50", "p90", "p99", "p999", "max", "mean", over all requests.
    public var latencyMs: [String: Double]
    public var samples: [LoadtestSample]
    /// Error description → count.
    public var errors: [String: Int]
    public var verification: LoadtestVerification?
    /// Free text lines (e.g. proxy CPU per span measured by the harness).
    public var notes: [String]

    public init(
        target: String, transport: String, gzip: Bool, connections: Int, targetSpansPerSecond: Double? = nil,
        recording: [String] = [], startedAt: Date, durationSeconds: Double,
        requestsSent: Int, requestsAcked: Int, requestsFailed: Int,
        spansSent: Int, spansAcked: Int, spansRejected: Int, bytesSent: Int,
        latencyMs: [String: Double] = [:], samples: [LoadtestSample] = [], errors: [String: Int] = [:],
        verification: LoadtestVerification? = nil, notes: [String] = []
    ) {
        self.target = target
        self.transport = transport
        self.gzip = gzip
        self.connections = connections
        self.targetSpansPerSecond = targetSpansPerSecond
        self.recording = recording
        self.startedAt = startedAt
        self.durationSeconds = durationSeconds
        self.requestsSent = requestsSent
        self.requestsAcked = requestsAcked
        self.requestsFailed = requestsFailed
        self.spansSent = spansSent
        self.spansAcked = spansAcked
        self.spansRejected = spansRejected
        self.bytesSent = bytesSent
        self.latencyMs = latencyMs
        self.samples = samples
        self.errors = errors
        self.verification = verification
        self.notes = notes
    }

    /// Acknowledged spans per second over the whole run (0 for a zero or invalid duration).
    public var spansPerSecond: Double {
        durationSeconds > 0 && durationSeconds.isFinite ? Double(spansAcked) / durationSeconds : 0
    }

    /// Sent spans per second over the whole run.
    var sentSpansPerSecond: Double {
        durationSeconds > 0 && durationSeconds.isFinite ? Double(spansSent) / durationSeconds : 0
    }

    /// Requests that got neither an acknowledgement nor an error (still in flight when the run ended).
    var requestsUnanswered: Int { max(0, requestsSent - requestsAcked - requestsFailed) }

    // MARK: JSON

    /// Pretty-printed JSON with sorted keys and ISO-8601 dates (millisecond precision). Non-finite numbers are
    /// written as the strings "inf", "-inf" and "nan" rather than failing the whole report.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(iso8601(date, fractional: true))
        }
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(self)
    }

    /// Reads what `json()` wrote (dates with or without fractional seconds).
    public static func decode(_ data: Data) throws -> LoadtestReport {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            for fractional in [true, false] {
                let formatter = ISO8601DateFormatter()
                formatter.formatOptions = fractional ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
                if let date = formatter.date(from: text) { return date }
            }
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an ISO-8601 date: \(text)")
        }
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try decoder.decode(LoadtestReport.self, from: data)
    }
}

// MARK: - Progress line and percentile

/// One live progress line, printed once per second during a run, e.g.
/// "  12s  sent 101,234 spans/s  acked 100,998/s  rejected 0/s  ack p50 0.8 ms  p99 3.1 ms"
public func progressLine(_ sample: LoadtestSample, elapsed: Double) -> String {
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

/// Percentile `p` (in percent, 0...100) of an ascending array by the nearest-rank method; 0 for an empty array.
/// p <= 0 gives the smallest element, p >= 100 the largest.
public func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    guard p.isFinite, p > 0 else { return p.isNaN || p <= 0 ? sorted[0] : sorted[sorted.count - 1] }
    // The tolerance keeps binary rounding from bumping an exact rank (99.9% of 1,000 is 999, not 999.000...1).
    let exact = p / 100 * Double(sorted.count)
    let rank = Int((exact - 1e-9 * max(1, exact)).rounded(.up))
    return sorted[min(max(rank, 1), sorted.count) - 1]
}

// MARK: - Terminal table

extension LoadtestReport {
    /// The final table printed to the terminal (aligned, plain ASCII, ~80 columns), including verification when present.
    public func table() -> String {
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

private func latencyLabel(_ key: String) -> String {
    key == "p999" ? "p99.9" : key
}

// MARK: - HTML

extension LoadtestReport {
    /// A self-contained HTML page (inline CSS + inline SVG, no scripts) with: a header (target, settings, totals),
    /// a throughput-over-time chart (sent / acked / rejected spans per second, lines with axes, ticks and labels),
    /// a latency-over-time chart (p50 / p99 / max ms per second, log-ish or linear scale with labelled ticks),
    /// the summary table, the verification table with pass/fail colouring, errors and notes.
    ///
    /// The page is also well-formed XML (XHTML syntax), so it can be checked by an XML parser.
    public func html() -> String {
        var h = ""
        h += "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n"
        h += "<meta charset=\"utf-8\"/>\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n"
        h += "<title>Tailgate loadtest: \(esc(target))</title>\n<style>\n\(pageCSS)</style>\n</head>\n<body>\n<main>\n"

        // Header.
        h += "<header>\n<h1>Tailgate loadtest</h1>\n"
        h += "<p class=\"target\"><span class=\"muted\">target</span> <code>\(esc(target))</code>"
        if let verification {
            h += " <span class=\"badge \(verification.passed ? "pass" : "fail")\">verification \(verification.passed ? "PASS" : "FAIL")</span>"
        }
        h += "</p>\n<p class=\"settings\">\(esc(settingsLine)) <span class=\"muted\">|</span> started \(esc(iso8601(startedAt, fractional: false))), ran \(esc(formatSeconds(durationSeconds)))</p>\n"
        if !recording.isEmpty {
            h += "<p class=\"settings\"><span class=\"muted\">recording</span> "
                + recording.map { "<code>\(esc($0))</code>" }.joined(separator: ", ") + "</p>\n"
        }
        h += "<div class=\"cards\">\n"
        func card(_ label: String, _ value: String, _ detail: String, _ cls: String = "") {
            h += "<div class=\"card\(cls.isEmpty ? "" : " " + cls)\"><div class=\"label\">\(esc(label))</div><div class=\"value\">\(esc(value))</div><div class=\"detail\">\(esc(detail))</div></div>\n"
        }
        card("acked spans/s", formatRate(spansPerSecond), "sent " + formatRate(sentSpansPerSecond) + "/s")
        card("spans acked", grouped(spansAcked), "of " + grouped(spansSent) + " sent")
        card("spans rejected", grouped(spansRejected), "in " + grouped(requestsFailed) + " failed requests",
             spansRejected > 0 || requestsFailed > 0 ? "bad" : "")
        card("ack latency p50", latencyMs["p50"].map { formatMs($0) + " ms" } ?? "-",
             "p99 " + (latencyMs["p99"].map { formatMs($0) + " ms" } ?? "-"))
        card("sent", formatBytes(bytesSent), grouped(requestsSent) + " requests")
        h += "</div>\n</header>\n"

        // Charts.
        let sorted = samples.sorted { $0.second < $1.second }
        let buckets = Bucketed(sorted, maxPoints: 600)
        h += "<section>\n<h2>Throughput</h2>\n"
        h += throughputChart(buckets)
        h += "<p class=\"caption\">Spans per second sent, acknowledged and rejected"
            + (buckets.bucketSize > 1 ? "; each point averages \(buckets.bucketSize) s" : "") + ".</p>\n</section>\n"
        h += "<section>\n<h2>Acknowledgement latency</h2>\n"
        let (latencySVG, logScale) = latencyChart(buckets)
        h += latencySVG
        h += "<p class=\"caption\">Latency of the requests completed in each second, in ms"
            + (logScale ? " (logarithmic scale)" : "")
            + (buckets.bucketSize > 1 ? "; each point covers \(buckets.bucketSize) s (p50 averaged, p99 and max the highest)" : "")
            + "; seconds without completed requests are left blank.</p>\n</section>\n"

        // Summary table.
        h += "<section>\n<h2>Summary</h2>\n<table class=\"summary\">\n"
        h += "<thead><tr><th></th><th>sent</th><th>acked</th><th>failed</th></tr></thead>\n<tbody>\n"
        func tr(_ label: String, _ cells: [String], _ classes: [String] = []) {
            h += "<tr><th>\(esc(label))</th>"
            for (i, cell) in cells.enumerated() {
                let cls = i < classes.count && !classes[i].isEmpty ? " class=\"\(classes[i])\"" : ""
                h += "<td\(cls)>\(esc(cell))</td>"
            }
            h += "</tr>\n"
        }
        tr("requests", [grouped(requestsSent), grouped(requestsAcked), grouped(requestsFailed)],
           ["", "", requestsFailed > 0 ? "bad" : ""])
        tr("spans", [grouped(spansSent), grouped(spansAcked), grouped(spansRejected)],
           ["", "", spansRejected > 0 ? "bad" : ""])
        tr("spans/s", [formatRate(sentSpansPerSecond), formatRate(spansPerSecond),
                       formatRate(durationSeconds > 0 ? Double(spansRejected) / durationSeconds : 0)])
        tr("bytes", [grouped(bytesSent) + " (" + formatBytes(bytesSent) + ")", "", ""])
        if requestsUnanswered > 0 { tr("unanswered requests", [grouped(requestsUnanswered), "", ""], ["bad"]) }
        if let stats = perSecondStats {
            tr("acked/s min / median / max", [grouped(stats.min), grouped(stats.median), grouped(stats.max)])
        }
        h += "</tbody>\n</table>\n"
        let keys = latencyKeys
        if !keys.isEmpty {
            h += "<table class=\"summary latency\">\n<thead><tr><th>ack latency</th>"
            for key in keys { h += "<th>\(esc(latencyLabel(key)))</th>" }
            h += "</tr></thead>\n<tbody><tr><th>ms</th>"
            for key in keys { h += "<td>\(esc(formatMs(latencyMs[key] ?? 0)))</td>" }
            h += "</tr></tbody>\n</table>\n"
        }
        h += "</section>\n"

        if let verification { h += verificationHTML(verification) }

        if !errors.isEmpty {
            h += "<section>\n<h2>Errors</h2>\n<table class=\"errors\">\n<thead><tr><th>count</th><th class=\"text\">error</th></tr></thead>\n<tbody>\n"
            for (message, count) in sortedErrors {
                h += "<tr><td>\(esc(grouped(count)))</td><td class=\"text\"><code>\(esc(message))</code></td></tr>\n"
            }
            h += "</tbody>\n</table>\n</section>\n"
        }
        if !notes.isEmpty {
            h += "<section>\n<h2>Notes</h2>\n<ul class=\"notes\">\n"
            for note in notes { h += "<li>\(esc(note))</li>\n" }
            h += "</ul>\n</section>\n"
        }
        h += "<footer>Generated by tailgate loadtest.</footer>\n</main>\n</body>\n</html>\n"
        return h
    }

    private func verificationHTML(_ v: LoadtestVerification) -> String {
        var h = "<section>\n<h2>Verification <span class=\"badge \(v.passed ? "pass" : "fail")\">\(v.passed ? "PASS" : "FAIL")</span></h2>\n"
        h += "<table class=\"summary verification\">\n<tbody>\n"
        func tr(_ label: String, _ value: Int, good: Bool?) {
            let cls = good.map { $0 ? " class=\"ok\"" : " class=\"bad\"" } ?? ""
            h += "<tr\(cls)><th>\(esc(label))</th><td>\(esc(grouped(value)))</td></tr>\n"
        }
        tr("traces sent", v.tracesSent, good: nil)
        tr("traces received", v.tracesReceived, good: nil)
        tr("incomplete traces", v.incompleteTraces, good: v.incompleteTraces == 0)
        tr("duplicate spans", v.duplicateSpans, good: v.duplicateSpans == 0)
        tr("unexpected traces", v.unexpectedTraces, good: v.unexpectedTraces == 0)
        h += "</tbody>\n</table>\n"
        if !v.categories.isEmpty {
            h += "<table class=\"summary categories\">\n<thead><tr><th>category</th><th>sent</th><th>kept</th><th>keep rate</th><th>expected</th></tr></thead>\n<tbody>\n"
            for c in v.categories {
                // A category is off when its keep rate misses the expectation by more than one trace's worth.
                var cls = ""
                if let expected = c.expectedKeepRate, let rate = c.keepRate {
                    cls = abs(rate - expected) * Double(c.sent) > 1 ? " class=\"bad\"" : " class=\"ok\""
                }
                h += "<tr\(cls)><th><code>\(esc(c.name))</code></th><td>\(esc(grouped(c.sent)))</td><td>\(esc(grouped(c.kept)))</td>"
                h += "<td>\(esc(c.keepRate.map(formatPercent) ?? "-"))</td><td>\(esc(c.expectedKeepRate.map(formatPercent) ?? "-"))</td></tr>\n"
            }
            h += "</tbody>\n</table>\n"
        }
        if !v.problems.isEmpty {
            h += "<h3>Problems</h3>\n<ul class=\"problems\">\n"
            for problem in v.problems { h += "<li>\(esc(problem))</li>\n" }
            h += "</ul>\n"
        }
        return h + "</section>\n"
    }

    private func throughputChart(_ b: Bucketed) -> String {
        var reference: [Chart.Reference] = []
        if let rate = targetSpansPerSecond, rate > 0, rate.isFinite {
            reference.append(.init(value: rate, label: "target " + compactNumber(rate) + "/s", color: "#4b5563"))
        }
        let maxValue = max(b.points.map { max($0.sent, $0.acked, $0.rejected) }.max() ?? 0, reference.map(\.value).max() ?? 0)
        let chart = Chart(
            label: "Spans per second over time",
            xMax: b.xMax,
            scale: .linear(maxValue),
            yTitle: "spans/s",
            yFormat: compactNumber,
            series: [
                // Acked is drawn wide and sent thin on top, so both stay visible where they coincide.
                .init(name: "acked", color: "#22c55e", segments: [b.points.map { ($0.x, $0.acked) }], width: 3),
                .init(name: "sent", color: "#1d4ed8", segments: [b.points.map { ($0.x, $0.sent) }], width: 1.3),
                .init(name: "rejected", color: "#dc2626", segments: [b.points.map { ($0.x, $0.rejected) }], width: 1.6),
            ],
            references: reference)
        return chart.svg()
    }

    private func latencyChart(_ b: Bucketed) -> (String, Bool) {
        // Split each series where seconds have no completed requests (or there is a gap in the samples).
        func segments(_ value: (Bucketed.Point) -> Double) -> [[(Double, Double)]] {
            var result: [[(Double, Double)]] = []
            var current: [(Double, Double)] = []
            var lastX: Double?
            for p in b.points {
                if p.hasLatency, let lastX, p.x - lastX > Double(b.bucketSize) * 1.5 {
                    result.append(current); current = []
                }
                if p.hasLatency {
                    current.append((p.x, value(p)))
                    lastX = p.x
                } else if !current.isEmpty {
                    result.append(current); current = []; lastX = nil
                }
            }
            if !current.isEmpty { result.append(current) }
            return result
        }
        let values = b.points.filter(\.hasLatency).flatMap { [$0.p50, $0.p99, $0.max] }.filter { $0.isFinite }
        let maxValue = values.max() ?? 0
        let minPositive = values.filter { $0 > 0 }.min() ?? 0
        // Logarithmic when the values span more than a factor of 20 (p50 and max then stay readable together).
        let logScale = minPositive > 0 && maxValue / minPositive > 20
        let chart = Chart(
            label: "Acknowledgement latency over time",
            xMax: b.xMax,
            scale: logScale ? .log(minPositive, maxValue) : .linear(maxValue),
            yTitle: "ms",
            yFormat: tickNumber,
            series: [
                .init(name: "p50", color: "#0891b2", segments: segments(\.p50)),
                .init(name: "p99", color: "#ea580c", segments: segments(\.p99)),
                .init(name: "max", color: "#9333ea", segments: segments(\.max)),
            ],
            references: [])
        return (chart.svg(), logScale)
    }
}

private let pageCSS = """
    :root { color-scheme: light; }
    body { margin: 0; background: #f5f6f8; color: #1f2328; font: 14px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
    main { max-width: 920px; margin: 0 auto; padding: 20px 16px 40px; }
    h1 { font-size: 22px; margin: 0 0 6px; }
    h2 { font-size: 17px; margin: 0 0 10px; }
    h3 { font-size: 14px; margin: 14px 0 6px; }
    header, section { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 16px 18px; margin-bottom: 16px; }
    p { margin: 4px 0; }
    code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 12.5px; word-break: break-all; }
    .muted, .caption, footer { color: #656d76; }
    .caption { font-size: 12.5px; margin-top: 6px; }
    footer { font-size: 12px; text-align: center; }
    .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; vertical-align: middle; }
    .badge.pass { background: #dafbe1; color: #116329; border: 1px solid #4ac26b; }
    .badge.fail { background: #ffebe9; color: #a40e26; border: 1px solid #ff8182; }
    .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin-top: 12px; }
    .card { border: 1px solid #d8dee4; border-radius: 6px; padding: 8px 10px; background: #fafbfc; }
    .card .label { font-size: 12px; color: #656d76; }
    .card .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
    .card .detail { font-size: 12px; color: #656d76; }
    .card.bad .value { color: #cf222e; }
    svg.chart { display: block; width: 100%; height: auto; }
    svg.chart text { font-family: inherit; font-size: 11px; fill: #57606a; }
    svg.chart .legend text { font-size: 12px; fill: #1f2328; }
    svg.chart .grid line { stroke: #eaeef2; stroke-width: 1; }
    svg.chart .axis line { stroke: #8c959f; stroke-width: 1; }
    svg.chart .series { fill: none; stroke-linejoin: round; stroke-linecap: round; }
    svg.chart .empty { font-size: 13px; }
    table { border-collapse: collapse; margin: 4px 0 12px; font-variant-numeric: tabular-nums; }
    th, td { padding: 4px 12px; border-bottom: 1px solid #eaeef2; text-align: right; }
    th:first-child { text-align: left; }
    thead th { color: #656d76; font-weight: 600; font-size: 12.5px; }
    tbody th { font-weight: 500; }
    td.text, th.text { text-align: left; }
    td.bad, tr.bad td, tr.bad th { color: #cf222e; }
    tr.bad { background: #fff5f5; }
    tr.ok td { color: #116329; }
    table.errors { width: 100%; }
    table.errors th:first-child, table.errors td:first-child { width: 80px; text-align: right; }
    ul { margin: 4px 0; padding-left: 20px; }
    ul.problems li { color: #a40e26; }

    """

// MARK: - Downsampling

/// Samples grouped into at most `maxPoints` buckets of whole seconds: throughput averaged per bucket, p50 averaged
/// over the seconds with completed requests, p99 and max the highest of the bucket. A sample covers its second
/// [s, s + 1), so it is placed at s + 0.5 on an axis running to the end of the last second.
struct Bucketed {
    struct Point {
        var x: Double
        var sent: Double, acked: Double, rejected: Double
        var p50: Double, p99: Double, max: Double
        var hasLatency: Bool
    }
    var points: [Point] = []
    var bucketSize = 1
    var xMax: Double = 1

    init(_ sorted: [LoadtestSample], maxPoints: Int) {
        guard let first = sorted.first, let last = sorted.last else { return }
        let lo = min(0, first.second)
        let span = last.second - lo + 1
        bucketSize = max(1, (span + maxPoints - 1) / maxPoints)
        xMax = Double(max(1, last.second + 1))
        var i = 0
        while i < sorted.count {
            let bucket = (sorted[i].second - lo) / bucketSize
            var j = i
            var sum = (x: 0.0, sent: 0.0, acked: 0.0, rejected: 0.0, p50: 0.0)
            var latencyCount = 0
            var p99 = 0.0, mx = 0.0
            while j < sorted.count, (sorted[j].second - lo) / bucketSize == bucket {
                let s = sorted[j]
                sum.x += Double(s.second)
                sum.sent += Double(s.sentSpans)
                sum.acked += Double(s.ackedSpans)
                sum.rejected += Double(s.rejectedSpans)
                if s.hasLatency {
                    latencyCount += 1
                    sum.p50 += finite(s.latencyP50Ms)
                    p99 = Swift.max(p99, finite(s.latencyP99Ms))
                    mx = Swift.max(mx, finite(s.latencyMaxMs))
                }
                j += 1
            }
            let n = Double(j - i)
            points.append(Point(
                x: sum.x / n + 0.5, sent: sum.sent / n, acked: sum.acked / n, rejected: sum.rejected / n,
                p50: latencyCount > 0 ? sum.p50 / Double(latencyCount) : 0, p99: p99, max: mx,
                hasLatency: latencyCount > 0))
            i = j
        }
    }
}

private func finite(_ v: Double) -> Double { v.isFinite ? v : 0 }

// MARK: - SVG charts

/// A line chart over elapsed seconds, rendered as inline SVG with axes, grid, labelled ticks and a legend.
/// Every series is exactly one `<path class="series ...">` (gaps are separate subpaths); coordinates are always finite.
struct Chart {
    struct Series {
        var name: String
        var color: String
        var segments: [[(Double, Double)]]
        var width = 1.6
    }
    struct Reference {
        var value: Double
        var label: String
        var color: String
    }
    enum Scale {
        case linear(Double)         // data maximum
        case log(Double, Double)    // smallest positive value, largest value
    }

    var label: String
    var xMax: Double
    var scale: Scale
    var yTitle: String
    var yFormat: (Double) -> String
    var series: [Series]
    var references: [Reference]

    static let width = 880.0, height = 300.0
    static let left = 62.0, right = 18.0, top = 34.0, bottom = 40.0
    var plotWidth: Double { Self.width - Self.left - Self.right }
    var plotHeight: Double { Self.height - Self.top - Self.bottom }

    func svg() -> String {
        let xTicks = timeTicks(max: xMax)
        let domainX = xTicks.end
        let yAxis = YAxis(scale)
        func px(_ x: Double) -> Double { Self.left + (finite(x) / domainX).clamped(0, 1) * plotWidth }
        func py(_ y: Double) -> Double { Self.top + plotHeight - yAxis.fraction(finite(y)).clamped(0, 1) * plotHeight }

        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 \(n(Self.width)) \(n(Self.height))\" role=\"img\" aria-label=\"\(esc(label))\">\n"
        // Grid and y tick labels.
        s += "<g class=\"grid\">"
        for tick in yAxis.ticks {
            let y = py(tick)
            s += "<line x1=\"\(n(Self.left))\" y1=\"\(n(y))\" x2=\"\(n(Self.left + plotWidth))\" y2=\"\(n(y))\"/>"
        }
        s += "</g>\n<g class=\"axis\">"
        for tick in yAxis.ticks {
            let y = py(tick)
            s += "<line x1=\"\(n(Self.left - 4))\" y1=\"\(n(y))\" x2=\"\(n(Self.left))\" y2=\"\(n(y))\"/>"
            s += "<text x=\"\(n(Self.left - 7))\" y=\"\(n(y + 3.5))\" text-anchor=\"end\">\(esc(yFormat(tick)))</text>"
        }
        for tick in xTicks.values {
            let x = px(tick)
            let y = Self.top + plotHeight
            s += "<line x1=\"\(n(x))\" y1=\"\(n(y))\" x2=\"\(n(x))\" y2=\"\(n(y + 4))\"/>"
            s += "<text x=\"\(n(x))\" y=\"\(n(y + 16))\" text-anchor=\"middle\">\(esc(xTicks.format(tick)))</text>"
        }
        // Axis lines and titles.
        s += "<line x1=\"\(n(Self.left))\" y1=\"\(n(Self.top))\" x2=\"\(n(Self.left))\" y2=\"\(n(Self.top + plotHeight))\"/>"
        s += "<line x1=\"\(n(Self.left))\" y1=\"\(n(Self.top + plotHeight))\" x2=\"\(n(Self.left + plotWidth))\" y2=\"\(n(Self.top + plotHeight))\"/>"
        s += "<text x=\"\(n(Self.left + plotWidth))\" y=\"\(n(Self.height - 4))\" text-anchor=\"end\">elapsed\(esc(xTicks.unit))</text>"
        s += "<text x=\"\(n(Self.left - 7))\" y=\"\(n(Self.top - 10))\" text-anchor=\"end\">\(esc(yTitle))</text>"
        s += "</g>\n"

        // Reference lines (e.g. the target rate).
        for ref in references {
            let y = py(ref.value)
            s += "<line class=\"reference\" x1=\"\(n(Self.left))\" y1=\"\(n(y))\" x2=\"\(n(Self.left + plotWidth))\" y2=\"\(n(y))\" stroke=\"\(ref.color)\" stroke-width=\"1\" stroke-dasharray=\"5 4\"/>\n"
        }

        // Series: one path each; points get markers when there are few of them (a single point has no line).
        let pointCount = series.map { $0.segments.reduce(0) { $0 + $1.count } }.max() ?? 0
        for serie in series {
            var d = ""
            for segment in serie.segments where !segment.isEmpty {
                for (i, p) in segment.enumerated() {
                    d += (i == 0 ? (d.isEmpty ? "M" : " M") : " L") + n(px(p.0)) + " " + n(py(p.1))
                }
            }
            s += "<path class=\"series series-\(esc(serie.name))\" stroke=\"\(serie.color)\" stroke-width=\"\(n(serie.width))\" d=\"\(d)\"><title>\(esc(serie.name))</title></path>\n"
            let isolated = serie.segments.filter { $0.count == 1 }.flatMap { $0 }
            let markers = pointCount <= 40 ? serie.segments.flatMap { $0 } : isolated
            if !markers.isEmpty {
                // Sized by line width, so a wide series' marker still shows around a thin one at the same spot.
                let r = n(Swift.max(2.5, serie.width + 0.8))
                s += "<g class=\"markers\" fill=\"\(serie.color)\">"
                for p in markers { s += "<circle cx=\"\(n(px(p.0)))\" cy=\"\(n(py(p.1)))\" r=\"\(r)\"/>" }
                s += "</g>\n"
            }
        }
        if pointCount == 0 {
            s += "<text class=\"empty\" x=\"\(n(Self.left + plotWidth / 2))\" y=\"\(n(Self.top + plotHeight / 2))\" text-anchor=\"middle\">no data</text>\n"
        }

        // Legend above the plot, left-aligned.
        s += "<g class=\"legend\">"
        var x = Self.left + 4
        for serie in series {
            s += "<line x1=\"\(n(x))\" y1=\"14\" x2=\"\(n(x + 18))\" y2=\"14\" stroke=\"\(serie.color)\" stroke-width=\"3\" stroke-linecap=\"round\"/>"
            s += "<text x=\"\(n(x + 24))\" y=\"18\">\(esc(serie.name))</text>"
            x += 24 + Double(serie.name.count) * 7.5 + 18
        }
        for ref in references {
            s += "<line x1=\"\(n(x))\" y1=\"14\" x2=\"\(n(x + 18))\" y2=\"14\" stroke=\"\(ref.color)\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>"
            s += "<text x=\"\(n(x + 24))\" y=\"18\">\(esc(ref.label))</text>"
            x += 24 + Double(ref.label.count) * 7.5 + 18
        }
        s += "</g>\n</svg>\n"
        return s
    }
}

/// A y axis: where a value falls (0 = bottom, 1 = top) and which ticks to label.
struct YAxis {
    var ticks: [Double]
    var fraction: (Double) -> Double

    init(_ scale: Chart.Scale) {
        switch scale {
        case .linear(let maxValue):
            let (top, ticks) = linearTicks(maxValue)
            self.ticks = ticks
            self.fraction = { $0 / top }
        case .log(let minValue, let maxValue):
            let (lo, hi, ticks) = logTicks(minValue, maxValue)
            let l = log10(lo), range = log10(hi) - log10(lo)
            self.ticks = ticks
            self.fraction = { v in v <= lo ? 0 : (log10(v) - l) / range }
        }
    }
}

/// Nice round ticks from 0 to at least `maxValue` (about five intervals); an empty or zero range becomes 0...1.
func linearTicks(_ maxValue: Double, target: Int = 5) -> (top: Double, ticks: [Double]) {
    let m = maxValue.isFinite && maxValue > 0 ? maxValue : 1
    let step = niceStep(m / Double(target))
    let count = Swift.max(1, Int((m / step - 1e-9).rounded(.up)))
    let ticks = (0...count).map { Double($0) * step }
    return (Double(count) * step, ticks)
}

/// 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
func niceStep(_ raw: Double) -> Double {
    guard raw.isFinite, raw > 0 else { return 1 }
    let magnitude = pow(10, (log10(raw)).rounded(.down))
    let f = raw / magnitude
    let nice: Double = f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 2.5 + 1e-9 ? 2.5 : f <= 5 + 1e-9 ? 5 : 10
    return nice * magnitude
}

/// A log range from a 1-2-5 value at or below `minValue` to one at or above `maxValue`, with 1-2-5 ticks when the
/// range is narrow and powers of ten (plus the ends) when it is wide.
func logTicks(_ minValue: Double, _ maxValue: Double) -> (lo: Double, hi: Double, ticks: [Double]) {
    let lo125 = oneTwoFive(atMost: minValue)
    var hi125 = oneTwoFive(atLeast: maxValue)
    if hi125 <= lo125 { hi125 = lo125 * 10 }
    var all: [Double] = []
    var decade = pow(10, log10(lo125).rounded(.down))
    while decade <= hi125 * 1.000001 {
        for f in [1.0, 2, 5] {
            let v = f * decade
            if v >= lo125 * 0.999999 && v <= hi125 * 1.000001 { all.append(v) }
        }
        decade *= 10
    }
    if all.count <= 9 { return (lo125, hi125, all) }
    // Wide: decades, plus the ends when they are not too close to a decade.
    let decades = all.filter { isPowerOfTen($0) }
    var ticks = decades
    let span = log10(hi125 / lo125)
    for end in [lo125, hi125] where !ticks.contains(where: { abs(log10($0 / end)) < span * 0.06 }) {
        ticks.append(end)
    }
    return (lo125, hi125, ticks.sorted())
}

private func isPowerOfTen(_ v: Double) -> Bool {
    let l = log10(v)
    return abs(l - l.rounded()) < 1e-9
}

private func oneTwoFive(atMost v: Double) -> Double {
    let decade = pow(10, log10(v).rounded(.down))
    for f in [5.0, 2, 1] where f * decade <= v * (1 + 1e-9) { return f * decade }
    return decade
}

private func oneTwoFive(atLeast v: Double) -> Double {
    let decade = pow(10, log10(v).rounded(.down))
    for f in [1.0, 2, 5, 10] where f * decade >= v * (1 - 1e-9) { return f * decade }
    return decade * 10
}

/// Ticks along the elapsed-time axis on whole seconds, minutes or hours, with labels to match.
/// The axis runs from 0 to `end`, the first tick at or after `max`.
func timeTicks(max: Double) -> (values: [Double], end: Double, format: (Double) -> String, unit: String) {
    let m = max.isFinite && max > 0 ? max : 1
    let steps: [Double] = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
    let step = steps.first { m / $0 <= 8 } ?? niceStep(m / 8)
    let count = Swift.max(1, Int((m / step - 1e-9).rounded(.up)))
    let values = (0...count).map { Double($0) * step }
    let end = Double(count) * step
    if end <= 120 {
        return (values, end, { String(Int($0.rounded())) }, " (s)")
    }
    if end <= 3600 {
        return (values, end, { v in let t = Int(v.rounded()); return "\(t / 60):" + twoDigits(t % 60) }, " (m:ss)")
    }
    // Longer than an hour: the step is at least ten minutes.
    return (values, end, { v in let t = Int(v.rounded()); return "\(t / 3600):" + twoDigits((t % 3600) / 60) }, " (h:mm)")
}

private func twoDigits(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

/// A coordinate: one decimal, always finite.
private func n(_ v: Double) -> String {
    guard v.isFinite else { return "0" }
    let r = (v * 10).rounded() / 10
    if r == r.rounded() { return String(Int(r)) }
    return String(format: "%.1f", r)
}

// MARK: - Text helpers

/// Escapes text for HTML/XML content and attribute values, dropping characters XML does not allow.
func esc(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
        default:
            let v = scalar.value
            if v < 0x20 || v == 0x7F || (0xFFFE...0xFFFF).contains(v) { out += "\u{FFFD}" } else { out.unicodeScalars.append(scalar) }
        }
    }
    return out
}

/// Text for one terminal line: control characters (newlines included) become spaces.
private func plain(_ text: String) -> String {
    String(String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : $0 }))
}

/// Cuts a line to `width` characters, ending in "..." when it was longer.
private func clip(_ text: String, _ width: Int) -> String {
    text.count <= width ? text : String(text.prefix(width - 3)) + "..."
}

/// Word-wraps `text` to `width` columns; the first line starts with `indent`, the others with `continuation`.
private func wrap(_ text: String, width: Int, indent: String, continuation: String? = nil) -> [String] {
    let next = continuation ?? indent
    var lines: [String] = []
    var line = indent
    var empty = true
    for word in text.split(separator: " ") {
        var w = Substring(word)
        if !empty && line.count + 1 + w.count > width {
            lines.append(line)
            line = next
            empty = true
        }
        // A word longer than a whole line is cut into pieces.
        while empty && line.count + w.count > width && line.count < width {
            let room = width - line.count
            lines.append(line + w.prefix(room))
            w = w.dropFirst(room)
            line = next
        }
        guard !w.isEmpty else { continue }
        line += (empty ? "" : " ") + w
        empty = false
    }
    if !empty || lines.isEmpty { lines.append(line) }
    return lines
}

private func leftPad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

extension String {
    fileprivate var trailingSpacesRemoved: String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}

extension Double {
    fileprivate func clamped(_ lo: Double, _ hi: Double) -> Double {
        Swift.min(Swift.max(self, lo), hi)
    }
}

/// An integer with thousands separators: 1234567 → "1,234,567".
func grouped(_ v: Int) -> String {
    let digits = String(v.magnitude)
    var out = ""
    out.reserveCapacity(digits.count + digits.count / 3 + 1)
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return v < 0 ? "-" + out : out
}

/// A number with `decimals` decimals and thousands separators: 12345.678, 1 → "12,345.7".
func grouped(_ v: Double, decimals: Int) -> String {
    guard v.isFinite else { return v.isNaN ? "-" : (v > 0 ? "inf" : "-inf") }
    var text = String(format: "%.\(max(0, decimals))f", abs(v))
    var fraction = ""
    if let dot = text.firstIndex(of: ".") {
        fraction = String(text[dot...])
        text = String(text[..<dot])
    }
    var out = ""
    for (i, c) in text.enumerated() {
        if i > 0 && (text.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    let isZero = !(out + fraction).contains { $0 >= "1" && $0 <= "9" }
    return (v < 0 && !isZero ? "-" : "") + out + fraction
}

/// Milliseconds: 0.05 → "0.05", 3.14 → "3.1", 1234.5 → "1,235".
func formatMs(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    let a = abs(v)
    if a == 0 { return "0" }
    if a < 0.1 { return grouped(v, decimals: 2) }
    if a < 1000 { return grouped(v, decimals: 1) }
    return grouped(v, decimals: 0)
}

/// A rate: whole numbers from 100 up, one decimal below.
func formatRate(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    return abs(v) >= 100 || v == 0 ? grouped(v, decimals: 0) : grouped(v, decimals: 1)
}

/// Seconds with one decimal: "120.0 s".
func formatSeconds(_ v: Double) -> String {
    v.isFinite ? grouped(v, decimals: 1) + " s" : "- s"
}

/// A fraction as a percentage: 0.9876 → "98.8%".
func formatPercent(_ fraction: Double) -> String {
    fraction.isFinite ? grouped(fraction * 100, decimals: 1) + "%" : "-"
}

/// Bytes in binary units: "117.7 MiB".
func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var v = Double(bytes)
    var unit = 0
    while abs(v) >= 1024 && unit < units.count - 1 {
        v /= 1024
        unit += 1
    }
    return unit == 0 ? grouped(bytes) + " B" : grouped(v, decimals: 1) + " " + units[unit]
}

/// Axis labels for counts: 0, 500, 1.5k, 20k, 1.2M, 3G.
func compactNumber(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    let a = abs(v)
    for (limit, suffix) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] where a >= limit {
        return tickNumber(v / limit) + suffix
    }
    return tickNumber(v)
}

/// Axis labels for tick values: as few decimals as needed (at most 3), thousands separators.
func tickNumber(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    for decimals in 0...3 {
        let scale = pow(10, Double(decimals))
        if abs((v * scale).rounded() - v * scale) < 1e-6 * Swift.max(1, abs(v * scale)) {
            return grouped(v, decimals: decimals)
        }
    }
    return grouped(v, decimals: 3)
}

/// ISO-8601 in UTC, e.g. "2025-06-01T12:00:00Z" (or "...:00.123Z" with fractional seconds).
func iso8601(_ date: Date, fractional: Bool) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = fractional ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
    return formatter.string(from: date)
}
