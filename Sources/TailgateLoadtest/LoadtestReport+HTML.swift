import Foundation

// MARK: - HTML

extension LoadtestReport {
    /// A self-contained HTML page (inline CSS + inline SVG, no scripts) with: a header (target, settings, totals),
    /// a throughput-over-time chart (sent / acked / rejected spans per second, lines with axes, ticks and labels),
    /// a latency-over-time chart (p50 / p99 / max ms per second, log-ish or linear scale with labelled ticks),
    /// the summary table, the verification table with pass/fail colouring, errors and notes.
    ///
    /// The page is also well-formed XML (XHTML syntax), so it can be checked by an XML parser.
    package func html() -> String {
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
