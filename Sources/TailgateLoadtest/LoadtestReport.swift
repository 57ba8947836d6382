package import Foundation

// The result of `tailgate loadtest`: the data model (Codable, written as JSON next to the HTML page) and its three
// renderings: the live progress line and the final terminal table (LoadtestReport+Terminal.swift), and a
// self-contained HTML page (LoadtestReport+HTML.swift) with SVG charts (SVGChart.swift). The JSON form is in
// LoadtestReport+JSON.swift, number and text formatting in Formatting.swift.

// MARK: - Model

/// What happened during one second of a run.
package struct LoadtestSample: Codable, Sendable, Equatable {
    /// Seconds since start (0-based).
    package var second: Int
    /// Spans sent during this second.
    package var sentSpans: Int
    /// Spans acknowledged (accepted) during this second.
    package var ackedSpans: Int
    /// Spans in requests answered with an error (any retryable or final error).
    package var rejectedSpans: Int
    /// Ack latency of the requests completed during this second; all three are 0 when none completed.
    package var latencyP50Ms: Double
    package var latencyP99Ms: Double
    package var latencyMaxMs: Double

    package init(
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
package struct LoadtestVerification: Codable, Sendable, Equatable {
    package var tracesSent: Int
    package var tracesReceived: Int
    /// Traces received with fewer spans than sent.
    package var incompleteTraces: Int
    package var duplicateSpans: Int
    /// Traces received but never sent.
    package var unexpectedTraces: Int

    /// Traces by deciding policy (or "(dropped)"): how many were sent and how many arrived.
    package struct Category: Codable, Sendable, Equatable {
        package var name: String
        package var sent: Int
        package var kept: Int
        /// The fraction (0...1) of this category's traces that should arrive; nil when there is no expectation.
        package var expectedKeepRate: Double?

        package init(name: String, sent: Int, kept: Int, expectedKeepRate: Double? = nil) {
            self.name = name
            self.sent = sent
            self.kept = kept
            self.expectedKeepRate = expectedKeepRate
        }

        /// kept / sent, nil when nothing was sent.
        var keepRate: Double? { sent > 0 ? Double(kept) / Double(sent) : nil }
    }

    package var categories: [Category]
    package var passed: Bool
    package var problems: [String]

    package init(
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
package struct LoadtestReport: Codable, Sendable {
    /// e.g. "grpc://127.0.0.1:4317".
    package var target: String
    /// "grpc" | "http" (| "file").
    package var transport: String
    package var gzip: Bool
    package var connections: Int
    /// nil = as fast as possible.
    package var targetSpansPerSecond: Double?
    package var recording: [String]
    package var startedAt: Date
    package var durationSeconds: Double
    package var requestsSent: Int
    package var requestsAcked: Int
    package var requestsFailed: Int
    package var spansSent: Int
    package var spansAcked: Int
    package var spansRejected: Int
    package var bytesSent: Int
    /// Keys "p50", "p90", "p99", "p999", "max", "mean", over all requests.
    package var latencyMs: [String: Double]
    package var samples: [LoadtestSample]
    /// Error description → count.
    package var errors: [String: Int]
    package var verification: LoadtestVerification?
    /// Free text lines (e.g. proxy CPU per span measured by the harness).
    package var notes: [String]

    package init(
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
    package var spansPerSecond: Double {
        durationSeconds > 0 && durationSeconds.isFinite ? Double(spansAcked) / durationSeconds : 0
    }

    /// Sent spans per second over the whole run.
    var sentSpansPerSecond: Double {
        durationSeconds > 0 && durationSeconds.isFinite ? Double(spansSent) / durationSeconds : 0
    }

    /// Requests that got neither an acknowledgement nor an error (still in flight when the run ended).
    var requestsUnanswered: Int { max(0, requestsSent - requestsAcked - requestsFailed) }
}

// MARK: - Percentile

/// Percentile `p` (in percent, 0...100) of an ascending array by the nearest-rank method; 0 for an empty array.
/// p <= 0 gives the smallest element, p >= 100 the largest.
package func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    guard p.isFinite, p > 0 else { return p.isNaN || p <= 0 ? sorted[0] : sorted[sorted.count - 1] }
    // The tolerance keeps binary rounding from bumping an exact rank (99.9% of 1,000 is 999, not 999.000...1).
    let exact = p / 100 * Double(sorted.count)
    let rank = Int((exact - 1e-9 * max(1, exact)).rounded(.up))
    return sorted[min(max(rank, 1), sorted.count) - 1]
}
