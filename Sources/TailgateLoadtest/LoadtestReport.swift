public import Foundation

// The result of `tailgate loadtest`: the data model (Codable, written as JSON next to the HTML page) and its three
// renderings: the live progress line and the final terminal table (LoadtestReport+Terminal.swift), and a
// self-contained HTML page (LoadtestReport+HTML.swift) with SVG charts (SVGChart.swift). The JSON form is in
// LoadtestReport+JSON.swift, number and text formatting in Formatting.swift.

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
}

// MARK: - Percentile

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
