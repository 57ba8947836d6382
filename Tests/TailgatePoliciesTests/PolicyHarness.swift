import Foundation
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire
import TailgateConfig

/// Runs one trace (the spans of `resources`, all with the same trace ID) through the real scanner, buffer and
/// engine of a policies file given as flow-style YAML list items, and returns the decision.
func decide(_ policies: String, _ resources: [TestResource], preamble: String = "", advance: Duration = .zero) throws -> Decision {
    let set = try PolicySet.parse(preamble + "policies: [" + policies + "]", file: "test.yaml")
    return run(PolicyRuntime(set), resources)
}

func run(_ runtime: PolicyRuntime, _ resources: [TestResource]) -> Decision {
    let clock = ManualClock()
    let buffer = TraceBuffer(configuration: BufferConfiguration(), decider: runtime, clock: clock)
    let body = exportRequest(resources)
    var scanned = ScannedRequest()
    body.withUnsafeBytes { raw in
        try! runtime.scanner.scan(raw, into: &scanned)
        _ = buffer.insert(scanned, body: raw)
    }
    let decided = buffer.decideAll()
    precondition(decided.count == 1, "expected one trace")
    return decided[0].decision
}

/// Spans of one trace in one service.
func trace(_ spans: [TestSpan], resource: [(String, TestValue)] = []) -> [TestResource] {
    [TestResource(service: "agent", spans: spans, attributes: resource)]
}

func span(_ id: UInt64, parent: UInt64 = 1, status: StatusCode? = nil, _ attributes: [(String, TestValue)] = [],
          traceState: String? = nil, start: UInt64 = 1_000, end: UInt64 = 2_000) -> TestSpan {
    TestSpan(trace: tid(77), span: id, parent: id == 1 ? 0 : parent, status: status, attributes: attributes,
             traceState: traceState)
}

func summary(_ id: TraceID = tid(1), status: [StatusCode] = [], tokensIn: Int64 = 0, tokensOut: Int64 = 0,
             start: UInt64 = 0, end: UInt64 = 0, spans: Int = 1, bytes: Int = 100, at: UInt64 = 0) -> TraceSummary {
    var s = TraceSummary(traceID: id)
    s.spanCount = spans
    s.spanBytes = bytes
    s.statusMask = status.reduce(0) { $0 | $1.bit }
    if tokensIn != 0 || tokensOut != 0 {
        var ledger = GenAILedger(spans: [GenAISpan(spanID: 2, parentSpanID: 1, role: .inference, operation: "chat",
                                                   tokens: SIMD8(tokensIn, tokensOut, 0, 0, 0, 0, 0, 0))])
        ledger.resolve()
        s.genAI = ledger
    }
    s.earliestStart = start
    s.latestEnd = end
    s.decidedAt = at
    return s
}

/// Diagnostics of a policies text as "line:column: severity: message".
func diagnostics(_ text: String) -> [String] {
    do {
        let set = try PolicySet.parse(text, file: "p.yaml")
        return set.warnings.map { "\($0.line):\($0.column): \($0.severity.rawValue): \($0.message)" }
    } catch {
        return error.diagnostics.map { "\($0.line):\($0.column): \($0.severity.rawValue): \($0.message)" }
    }
}
