import Foundation
import Testing
@testable import TailgateLoadtest

#if canImport(FoundationXML)
import FoundationXML
#endif

// MARK: - Fixtures

private func samples(_ count: Int, zero: Bool = false) -> [LoadtestSample] {
    var result: [LoadtestSample] = []
    for s in 0..<count {
        if zero {
            result.append(LoadtestSample(
                second: s, sentSpans: 0, ackedSpans: 0, rejectedSpans: 0, latencyP50Ms: 0, latencyP99Ms: 0, latencyMaxMs: 0))
            continue
        }
        let p50: Double = 0.8 + Double(s % 3) * 0.1
        let p99: Double = 3.1 + Double(s % 4)
        let maxMs: Double = 40 + Double(s % 9) * 20
        result.append(LoadtestSample(
            second: s, sentSpans: 100_000 + (s % 7) * 1_000, ackedSpans: 99_000 + (s % 5) * 1_000,
            rejectedSpans: s % 10 == 0 ? 500 : 0, latencyP50Ms: p50, latencyP99Ms: p99, latencyMaxMs: maxMs))
    }
    return result
}

private let failedVerification = LoadtestVerification(
    tracesSent: 3_000, tracesReceived: 1_187, incompleteTraces: 2, duplicateSpans: 1, unexpectedTraces: 0,
    categories: [
        .init(name: "errors", sent: 212, kept: 212, expectedKeepRate: 1),
        .init(name: "slow <llm> & \"calls\"", sent: 431, kept: 429, expectedKeepRate: 1),
        .init(name: "(dropped)", sent: 2_357, kept: 0, expectedKeepRate: 0),
        .init(name: "unchecked", sent: 0, kept: 0),
    ],
    passed: false,
    problems: ["2 kept trace(s) did not arrive", "trace abc <x>: 7 of 9 spans arrived"])

private func report(
    target: String = "grpc://127.0.0.1:4317", samples: [LoadtestSample] = samples(120),
    verification: LoadtestVerification? = failedVerification, errors: [String: Int] = ["UNAVAILABLE: connection refused": 3],
    rate: Double? = 100_000
) -> LoadtestReport {
    let sent = samples.reduce(0) { $0 + $1.sentSpans }
    let acked = samples.reduce(0) { $0 + $1.ackedSpans }
    let rejected = samples.reduce(0) { $0 + $1.rejectedSpans }
    return LoadtestReport(
        target: target, transport: "grpc", gzip: true, connections: 8, targetSpansPerSecond: rate,
        recording: ["loadtest/recordings/agents-3k.jsonl.gz"],
        startedAt: Date(timeIntervalSince1970: 1_750_000_000.25), durationSeconds: Double(max(samples.count, 1)),
        requestsSent: sent / 50, requestsAcked: acked / 50, requestsFailed: rejected / 50,
        spansSent: sent, spansAcked: acked, spansRejected: rejected, bytesSent: sent * 310,
        latencyMs: ["p50": 0.84, "p90": 2.1, "p99": 3.9, "p999": 18.4, "max": 212.7, "mean": 1.12],
        samples: samples, errors: errors, verification: verification,
        notes: ["proxy CPU 1.9 us/span (user+sys, 8 cores)"])
}

/// Every `<svg ...>...</svg>` block of a page.
private func svgBlocks(_ html: String) -> [Substring] {
    var blocks: [Substring] = []
    var rest = html[...]
    while let open = rest.range(of: "<svg"), let close = rest.range(of: "</svg>", range: open.upperBound..<rest.endIndex) {
        blocks.append(rest[open.lowerBound..<close.upperBound])
        rest = rest[close.upperBound...]
    }
    return blocks
}

private func occurrences(of needle: String, in text: some StringProtocol) -> Int {
    text.components(separatedBy: needle).count - 1
}

/// Structural checks every rendered page must pass.
private func checkPage(_ html: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(html.hasPrefix("<!DOCTYPE html>"), sourceLocation: sourceLocation)
    #expect(!html.contains("<script"), sourceLocation: sourceLocation)
    #expect(!html.contains("http://fonts") && !html.contains("https://"), sourceLocation: sourceLocation)
    #expect(occurrences(of: "<svg", in: html) == 2, sourceLocation: sourceLocation)
    #expect(occurrences(of: "</svg>", in: html) == 2, sourceLocation: sourceLocation)
    let svgs = svgBlocks(html)
    #expect(svgs.count == 2, sourceLocation: sourceLocation)
    for svg in svgs {
        for bad in ["NaN", "nan", "inf", "Inf"] {
            #expect(!svg.contains(bad), "SVG contains \(bad)", sourceLocation: sourceLocation)
        }
        // One path per series, three series per chart.
        #expect(occurrences(of: "<path class=\"series ", in: svg) == 3, sourceLocation: sourceLocation)
    }
    for series in ["sent", "acked", "rejected", "p50", "p99", "max"] {
        #expect(occurrences(of: "class=\"series series-\(series)\"", in: html) == 1, sourceLocation: sourceLocation)
    }
    #if canImport(FoundationXML) || os(macOS)
    #expect(wellFormed(html), "html() is not well-formed XML", sourceLocation: sourceLocation)
    do {
        let document = try XMLDocument(xmlString: html, options: [])
        #expect(document.rootElement()?.name == "html", sourceLocation: sourceLocation)
        let paths = try document.nodes(forXPath: "//*[local-name()='path']")
        #expect(paths.count == 6, sourceLocation: sourceLocation)
    } catch {
        Issue.record("html() is not well-formed XML: \(error)", sourceLocation: sourceLocation)
    }
    #endif
}

#if canImport(FoundationXML) || os(macOS)
/// Strict XML well-formedness. XMLDocument recovers from errors on Linux, and XMLParser.parse() can return true
/// after a recoverable one (a mismatched end tag), so any reported error counts.
private func wellFormed(_ text: String) -> Bool {
    final class Errors: NSObject, XMLParserDelegate {
        var count = 0
        func parser(_ parser: XMLParser, parseErrorOccurred parseError: any Error) { count += 1 }
    }
    let parser = XMLParser(data: Data(text.utf8))
    let errors = Errors()
    parser.delegate = errors
    let ok = parser.parse()
    return ok && parser.parserError == nil && errors.count == 0
}
#endif

/// The `d` attribute of one series' path.
private func pathData(_ html: String, series: String) -> String? {
    guard let start = html.range(of: "class=\"series series-\(series)\""),
          let d = html.range(of: " d=\"", range: start.upperBound..<html.endIndex),
          let end = html.range(of: "\"", range: d.upperBound..<html.endIndex) else { return nil }
    return String(html[d.upperBound..<end.lowerBound])
}

// MARK: - percentile

private let thousand: [Double] = (1...1000).map(Double.init)
private let percentileCases: [([Double], Double, Double)] = [
        ([Double](), 50.0, 0.0),
        ([7.0], 0.0, 7.0),
        ([7.0], 50.0, 7.0),
        ([7.0], 100.0, 7.0),
        ([1.0, 2, 3, 4], 50.0, 2.0),
        ([1.0, 2, 3, 4], 75.0, 3.0),
        ([1.0, 2, 3, 4], 76.0, 4.0),
        ([1.0, 2, 3, 4], 100.0, 4.0),
        ([1.0, 2, 3, 4], 0.0, 1.0),
        ([1.0, 2, 3, 4], 1.0, 1.0),
        ([1.0, 2, 3, 4], -5.0, 1.0),
        ([1.0, 2, 3, 4], 250.0, 4.0),
        ([15.0, 20, 35, 40, 50], 5.0, 15.0),
        ([15.0, 20, 35, 40, 50], 30.0, 20.0),
        ([15.0, 20, 35, 40, 50], 40.0, 20.0),
        ([15.0, 20, 35, 40, 50], 50.0, 35.0),
        ([15.0, 20, 35, 40, 50], 100.0, 50.0),
        (thousand, 99.0, 990.0),
        (thousand, 99.9, 999.0),
        (thousand, 99.95, 1000.0),
        (thousand, 50.0, 500.0),
        (thousand, 90.0, 900.0),
        (thousand, 0.1, 1.0),
]

struct LoadtestPercentileTests {
    @Test(arguments: percentileCases)
    func nearestRank(sorted: [Double], p: Double, expected: Double) {
        #expect(percentile(sorted, p) == expected)
    }

    @Test func nanPercentileIsTheMinimum() {
        #expect(percentile([1, 2, 3], .nan) == 1)
    }
}

// MARK: - JSON

struct LoadtestReportJSONTests {
    @Test func roundTrip() throws {
        let original = report()
        let data = try original.json()
        let decoded = try LoadtestReport.decode(data)
        #expect(decoded.target == original.target)
        #expect(decoded.transport == original.transport)
        #expect(decoded.gzip == original.gzip)
        #expect(decoded.connections == original.connections)
        #expect(decoded.targetSpansPerSecond == original.targetSpansPerSecond)
        #expect(decoded.recording == original.recording)
        #expect(decoded.startedAt == original.startedAt)
        #expect(decoded.durationSeconds == original.durationSeconds)
        #expect(decoded.requestsSent == original.requestsSent)
        #expect(decoded.requestsAcked == original.requestsAcked)
        #expect(decoded.requestsFailed == original.requestsFailed)
        #expect(decoded.spansSent == original.spansSent)
        #expect(decoded.spansAcked == original.spansAcked)
        #expect(decoded.spansRejected == original.spansRejected)
        #expect(decoded.bytesSent == original.bytesSent)
        #expect(decoded.latencyMs == original.latencyMs)
        #expect(decoded.samples == original.samples)
        #expect(decoded.errors == original.errors)
        #expect(decoded.verification == original.verification)
        #expect(decoded.notes == original.notes)
        // Re-encoding gives the same bytes.
        #expect(try decoded.json() == data)
    }

    @Test func prettySortedISO8601() throws {
        let text = String(decoding: try report().json(), as: UTF8.self)
        #expect(text.contains("\n  \"bytesSent\""))
        #expect(text.contains("\"startedAt\" : \"2025-06-15T15:06:40.250Z\""))
        let keys = ["bytesSent", "connections", "durationSeconds", "errors", "gzip", "latencyMs", "notes"]
        let positions = keys.compactMap { text.range(of: "\n  \"\($0)\"")?.lowerBound }
        #expect(positions.count == keys.count)
        #expect(positions == positions.sorted())
    }

    @Test func optionalsAndEmptyCollectionsRoundTrip() throws {
        let original = report(samples: [], verification: nil, errors: [:], rate: nil)
        let decoded = try LoadtestReport.decode(try original.json())
        #expect(decoded.targetSpansPerSecond == nil)
        #expect(decoded.verification == nil)
        #expect(decoded.samples.isEmpty)
        #expect(decoded.errors.isEmpty)
    }

    @Test func datesWithoutFractionalSecondsDecode() throws {
        var text = String(decoding: try report().json(), as: UTF8.self)
        text = text.replacingOccurrences(of: "2025-06-15T15:06:40.250Z", with: "2025-06-15T15:06:40Z")
        let decoded = try LoadtestReport.decode(Data(text.utf8))
        #expect(decoded.startedAt == Date(timeIntervalSince1970: 1_750_000_000))
    }

    @Test func nonFiniteLatencyDoesNotBreakJSON() throws {
        var r = report()
        r.latencyMs["max"] = .infinity
        let decoded = try LoadtestReport.decode(try r.json())
        #expect(decoded.latencyMs["max"] == .infinity)
    }

    @Test func garbageFailsToDecode() {
        #expect(throws: (any Error).self) { try LoadtestReport.decode(Data("{\"target\": 1}".utf8)) }
    }

    @Test func spansPerSecond() {
        var r = report()
        r.spansAcked = 1_000_000
        r.durationSeconds = 8
        #expect(r.spansPerSecond == 125_000)
        r.durationSeconds = 0
        #expect(r.spansPerSecond == 0)
    }
}

// MARK: - Terminal output

struct LoadtestTableTests {
    @Test func containsKeyFigures() {
        let r = report()
        let table = r.table()
        #expect(table.contains("grpc://127.0.0.1:4317"))
        #expect(table.contains("gzip"))
        #expect(table.contains("8 connections"))
        #expect(table.contains("target 100,000 spans/s"))
        #expect(table.contains("120.0 s"))
        #expect(table.contains(grouped(r.spansSent)))
        #expect(table.contains(grouped(r.spansAcked)))
        #expect(table.contains(grouped(r.spansRejected)))
        #expect(table.contains(grouped(r.requestsSent)))
        #expect(table.contains(grouped(r.bytesSent)))
        #expect(table.contains(formatRate(r.spansPerSecond)))
        #expect(table.contains("p99.9"))
        #expect(table.contains("212.7"))
        #expect(table.contains("UNAVAILABLE: connection refused"))
        #expect(table.contains("proxy CPU 1.9 us/span"))
        #expect(table.contains("agents-3k.jsonl.gz"))
    }

    @Test func verificationFailAndPass() {
        let failing = report().table()
        #expect(failing.contains("verification  FAIL"))
        #expect(failing.contains("3,000"))
        #expect(failing.contains("1,187"))
        #expect(failing.contains("99.5%"))
        #expect(failing.contains("2 kept trace(s) did not arrive"))

        let ok = LoadtestVerification(tracesSent: 10, tracesReceived: 10, passed: true)
        let passing = report(verification: ok).table()
        #expect(passing.contains("verification  PASS"))
        #expect(!passing.contains("FAIL"))

        #expect(!report(verification: nil).table().contains("verification"))
    }

    @Test func plainASCIIAndAboutEightyColumns() {
        var r = report(errors: ["a very long error \n with a newline " + String(repeating: "x", count: 200): 1])
        r.notes.append(String(repeating: "word ", count: 60))
        let table = r.table()
        #expect(table.unicodeScalars.allSatisfy { $0.isASCII })
        for line in table.split(separator: "\n") {
            #expect(line.count <= 80, "too wide: \(line)")
            #expect(!line.hasSuffix(" "))
        }
        #expect(!table.contains("\t"))
    }

    @Test func asFastAsPossibleAndNoSamples() {
        let table = report(samples: [], verification: nil, errors: [:], rate: nil).table()
        #expect(table.contains("as fast as possible"))
        #expect(!table.contains("errors"))
    }

    @Test func progressLineMatchesTheDocumentedFormat() {
        let sample = LoadtestSample(
            second: 11, sentSpans: 101_234, ackedSpans: 100_998, rejectedSpans: 0,
            latencyP50Ms: 0.8, latencyP99Ms: 3.1, latencyMaxMs: 12)
        #expect(progressLine(sample, elapsed: 12) ==
            "  12s  sent 101,234 spans/s  acked 100,998/s  rejected 0/s  ack p50 0.8 ms  p99 3.1 ms")
    }

    @Test func progressLineWithoutCompletedRequests() {
        let sample = LoadtestSample(second: 0, sentSpans: 0, ackedSpans: 0, rejectedSpans: 0, latencyP50Ms: 0, latencyP99Ms: 0, latencyMaxMs: 0)
        let line = progressLine(sample, elapsed: .nan)
        #expect(line.hasPrefix("   0s  sent       0 spans/s"))
        #expect(line.hasSuffix("ack p50 -  p99 -"))
        let big = LoadtestSample(second: 3599, sentSpans: 12_345_678, ackedSpans: 1, rejectedSpans: 2_000, latencyP50Ms: 0.046, latencyP99Ms: 1234.6, latencyMaxMs: 5000)
        #expect(progressLine(big, elapsed: 3600.4) ==
            "3,600s  sent 12,345,678 spans/s  acked       1/s  rejected 2,000/s  ack p50 0.05 ms  p99 1,235 ms")
    }

    @Test(arguments: [
        (0, "0"), (7, "7"), (999, "999"), (1_000, "1,000"), (-1_234_567, "-1,234,567"), (Int.min, "-9,223,372,036,854,775,808"),
    ])
    func thousandsSeparators(value: Int, expected: String) {
        #expect(grouped(value) == expected)
    }

    @Test func numberFormats() {
        #expect(grouped(12_345.678, decimals: 1) == "12,345.7")
        #expect(grouped(-0.01, decimals: 1) == "0.0")
        #expect(formatMs(0.8) == "0.8")
        #expect(formatMs(0.046) == "0.05")
        #expect(formatMs(1_234.6) == "1,235")
        #expect(formatSeconds(120) == "120.0 s")
        #expect(formatBytes(1_023) == "1,023 B")
        #expect(formatBytes(3 * 1_048_576) == "3.0 MiB")
        #expect(formatPercent(0.995) == "99.5%")
        #expect(compactNumber(125_000) == "125k")
        #expect(compactNumber(2_500_000) == "2.5M")
        #expect(tickNumber(0.2) == "0.2")
        #expect(tickNumber(2_000) == "2,000")
    }
}

// MARK: - Axes

struct LoadtestAxisTests {
    @Test(arguments: [
        (0.0, 1.0), (-3.0, 1.0), (Double.nan, 1.0), (0.3, 0.3), (1.0, 1.0), (7.0, 8.0),
        (99.0, 100.0), (101_234.0, 125_000.0), (3_600_000.0, 4_000_000.0),
    ])
    func linearTicksAreRoundAndCoverTheData(maxValue: Double, top: Double) {
        let axis = linearTicks(maxValue)
        #expect(abs(axis.top - top) < 1e-9 * top)
        #expect(axis.ticks.first == 0)
        #expect(axis.ticks.last == axis.top)
        #expect((2...11).contains(axis.ticks.count))
        if maxValue.isFinite && maxValue > 0 { #expect(axis.top >= maxValue) }
    }

    @Test func logTicks() {
        let narrow = TailgateLoadtest.logTicks(0.7, 4.2)
        #expect(narrow.lo == 0.5 && narrow.hi == 5)
        #expect(narrow.ticks == [0.5, 1, 2, 5])
        let wide = TailgateLoadtest.logTicks(0.03, 4_000)
        #expect(wide.lo == 0.02 && wide.hi == 5_000)
        #expect(wide.ticks.contains(0.1) && wide.ticks.contains(1) && wide.ticks.contains(1_000))
        #expect(wide.ticks.first == 0.02 && wide.ticks.last == 5_000)
        #expect(wide.ticks.count <= 9)
    }

    @Test func timeTicksUseRoundSteps() {
        let short = timeTicks(max: 119)
        #expect(short.values == [0, 15, 30, 45, 60, 75, 90, 105, 120])
        #expect(short.end == 120)
        #expect(short.format(45) == "45")
        let hour = timeTicks(max: 3_599)
        #expect(hour.end == 3_600)
        #expect(hour.format(600) == "10:00")
        #expect(hour.format(3_600) == "60:00")
        #expect(hour.unit == " (m:ss)")
        #expect(hour.values.count <= 9)
        let day = timeTicks(max: 86_000)
        #expect(day.end == 86_400)
        #expect(day.format(7_200) == "2:00")
        #expect(day.unit == " (h:mm)")
        let one = timeTicks(max: 0)
        #expect(one.values == [0, 1])
    }
}

// MARK: - HTML

struct LoadtestHTMLTests {
    @Test func wellFormedWithChartsAndSections() {
        let html = report().html()
        checkPage(html)
        #expect(html.contains("Throughput"))
        #expect(html.contains("Acknowledgement latency"))
        #expect(html.contains("Summary"))
        #expect(html.contains("Verification"))
        #expect(html.contains("class=\"badge fail\""))
        #expect(html.contains("UNAVAILABLE: connection refused"))
        #expect(html.contains("proxy CPU 1.9 us/span"))
        #expect(html.contains("target 100k/s"))
        // 120 seconds: every sample plotted, x axis labelled up to 120.
        #expect(pathData(html, series: "sent")?.split(separator: "L").count == 120)
        #expect(html.contains(">120</text>"))
        #expect(html.contains("elapsed (s)"))
    }

    @Test func passBadge() {
        let html = report(verification: LoadtestVerification(tracesSent: 1, tracesReceived: 1, passed: true)).html()
        checkPage(html)
        #expect(html.contains("class=\"badge pass\""))
        #expect(!html.contains("class=\"badge fail\""))
    }

    @Test func escapesInjectedText() {
        let evil = "grpc://h<script>alert('x')</script>&\"q\""
        var r = report(target: evil, errors: ["<img src=x onerror=alert(1)> & \"boom\"": 2, "nul\u{0}byte": 1])
        r.notes = ["</li></ul><b>injected</b>"]
        r.recording = ["a<b>.tgrec"]
        let html = r.html()
        checkPage(html)
        #expect(!html.contains("<script"))
        #expect(!html.contains("<img"))
        #expect(!html.contains("<b>"))
        #expect(!html.contains("\u{0}"))
        #expect(html.contains("grpc://h&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;"))
        #expect(html.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;boom&quot;"))
        #expect(html.contains("slow &lt;llm&gt; &amp; &quot;calls&quot;"))
        #expect(html.contains("&lt;/li&gt;&lt;/ul&gt;&lt;b&gt;injected&lt;/b&gt;"))
    }

    @Test func allZeroData() {
        let r = LoadtestReport(
            target: "http://127.0.0.1:4318", transport: "http", gzip: false, connections: 1,
            startedAt: Date(timeIntervalSince1970: 0), durationSeconds: 0,
            requestsSent: 0, requestsAcked: 0, requestsFailed: 0, spansSent: 0, spansAcked: 0, spansRejected: 0, bytesSent: 0,
            latencyMs: ["p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0, "mean": 0], samples: samples(30, zero: true))
        let html = r.html()
        checkPage(html)
        #expect(!html.contains("NaN"))
        // Throughput lines lie on the x axis; latency has nothing to draw.
        #expect(pathData(html, series: "sent")?.isEmpty == false)
        #expect(pathData(html, series: "p50") == "")
        #expect(html.contains(">no data</text>"))
        let table = r.table()
        #expect(table.contains("as fast as possible"))
        #expect(!table.contains("nan") && !table.contains("inf"))
    }

    @Test func noSamples() {
        let html = report(samples: [], verification: nil, errors: [:], rate: nil).html()
        checkPage(html)
        #expect(occurrences(of: ">no data</text>", in: html) == 2)
    }

    @Test func singleSample() {
        let html = report(samples: [samples(1)[0]]).html()
        checkPage(html)
        // One point per series: a move without a line, plus a visible marker.
        let d = pathData(html, series: "acked") ?? ""
        #expect(d.hasPrefix("M") && !d.contains("L"))
        #expect(html.contains("<circle"))
    }

    @Test func anHourIsDownsampled() {
        let html = report(samples: samples(3_600)).html()
        checkPage(html)
        for series in ["sent", "acked", "rejected", "p50", "p99", "max"] {
            let d = pathData(html, series: series) ?? ""
            let points = d.split(separator: " ").filter { $0 == "L" || $0.hasPrefix("M") || $0.hasPrefix("L") }.count
            #expect(points > 100 && points <= 600, "\(series): \(points) points")
        }
        #expect(!html.contains("<circle"))
        #expect(html.contains("each point averages 6 s"))
        #expect(html.contains(">60:00</text>"))
        #expect(html.contains("elapsed (m:ss)"))
        #expect(html.utf8.count < 200_000)
    }

    @Test func latencySpreadSwitchesToLogScale() {
        var s = samples(60)
        for i in s.indices { s[i].latencyMaxMs = 2_000 }
        let html = report(samples: s).html()
        checkPage(html)
        #expect(html.contains("logarithmic scale"))
        let flat = samples(60).map { sample -> LoadtestSample in
            var x = sample
            x.latencyP50Ms = 1; x.latencyP99Ms = 2; x.latencyMaxMs = 3
            return x
        }
        #expect(!report(samples: flat).html().contains("logarithmic scale"))
    }

    @Test func gapsInLatencySplitThePath() {
        var s = samples(20)
        for i in 8..<12 { s[i].latencyP50Ms = 0; s[i].latencyP99Ms = 0; s[i].latencyMaxMs = 0 }
        let html = report(samples: s).html()
        checkPage(html)
        let d = pathData(html, series: "p99") ?? ""
        #expect(d.split(separator: "M").count == 2)
    }

    @Test func pointsAreMappedIntoThePlot() throws {
        // Two samples: second 0 → 0 spans/s, second 1 → 100 spans/s. The x axis covers both seconds (0...2), each
        // point sits mid-second; the y axis runs 0...100. So the acked path rises from the bottom at a quarter of the
        // plot's width to the top at three quarters.
        let two = [
            LoadtestSample(second: 0, sentSpans: 0, ackedSpans: 0, rejectedSpans: 0, latencyP50Ms: 1, latencyP99Ms: 1, latencyMaxMs: 1),
            LoadtestSample(second: 1, sentSpans: 100, ackedSpans: 100, rejectedSpans: 0, latencyP50Ms: 1, latencyP99Ms: 1, latencyMaxMs: 1),
        ]
        let html = report(samples: two, rate: nil).html()
        checkPage(html)
        let left = Chart.left, right = Chart.width - Chart.right
        let top = Chart.top, bottom = Chart.height - Chart.bottom
        func f(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(v) }
        let quarter = left + (right - left) / 4, threeQuarters = left + (right - left) * 3 / 4
        #expect(pathData(html, series: "acked") == "M\(f(quarter)) \(f(bottom)) L\(f(threeQuarters)) \(f(top))")
        #expect(html.contains(">2</text>"))
    }
}

#if canImport(FoundationXML) || os(macOS)
extension LoadtestHTMLTests {
    /// The well-formedness check above means something: the parser rejects a mis-nested page.
    @Test func xmlParserRejectsMalformedMarkup() {
        #expect(!wellFormed("<html><svg></html>"))
        #expect(!wellFormed("<p>a & b</p>"))
        #expect(!wellFormed("<p>&nbsp;</p>"))
        #expect(!wellFormed("<p a=\"1\" a=\"2\"/>"))
        #expect(wellFormed("<!DOCTYPE html>\n<html><p>&amp;&#160;</p></html>"))
    }
}
#endif
