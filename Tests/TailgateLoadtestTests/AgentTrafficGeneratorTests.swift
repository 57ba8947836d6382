import Foundation
import TailgateLoadtest
import TailgateWire
import Testing

private typealias Generator = AgentTrafficGenerator

/// One generation of 20,000 traces, shared by the tests below (generated once, timed).
private struct Generated: Sendable {
    var requests: [Generator.Request]
    var traces: [Generator.Trace]
    var seconds: Double
}

private let large: Generated = {
    var options = Generator.Options()
    options.traces = 20_000
    options.seed = 42
    let clock = ContinuousClock()
    let start = clock.now
    let (requests, traces) = Generator(options).generate()
    let elapsed = clock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    return Generated(requests: requests, traces: traces, seconds: seconds)
}()

/// What the scanner reads back, with a plan that computes per-span tokens and a few counters.
private struct Probe: Sendable {
    let scanner: OTLPScanner
    let input: Int, output: Int, chats: Int, truncated: Int, toolErrors: Int, errorTypes: Int

    init() throws {
        var plan = AttributePlan()
        input = try plan.slot(.firstOf(keys: ["gen_ai.usage.input_tokens"], condition: nil))
        output = try plan.slot(.firstOf(keys: ["gen_ai.usage.output_tokens"], condition: nil))
        let chatBit = try plan.bit(key: "gen_ai.operation.name", .strings(["chat"]))
        chats = try plan.slot(.count(bit: chatBit))
        let truncatedBit = try plan.bit(key: "gen_ai.response.finish_reasons", .strings(["length", "content_filter"]))
        truncated = try plan.slot(.count(bit: truncatedBit))
        let toolBit = try plan.bit(key: "gen_ai.operation.name", .strings(["execute_tool"]))
        let errorTypeBit = try plan.bit(key: "error.type", .exists)
        errorTypes = try plan.slot(.count(bit: errorTypeBit))
        toolErrors = try plan.slot(.count(bit: try plan.bit(allOf: [toolBit, errorTypeBit])))
        scanner = OTLPScanner(plan: plan)
    }
}

private struct Analysis: Sendable {
    /// Per trace (same order as `traces`): its spans.
    var spans: [[ScannedSpanBox]]
    var scopesPerRequest: [Int]
    var tracesPerRequest: [Int]
    var resourceHeaders: [[[UInt8]]]
}

private struct ScannedSpanBox: Sendable {
    var traceID: TraceID
    var spanID: UInt64
    var parent: UInt64
    var start: UInt64
    var end: UInt64
    var status: StatusCode
    var sums: SIMD8<Int64>
    var service: String
    var request: Int
    var size: Int
}

private let probe = try! Probe()

private func analyze(_ generated: Generated) throws -> Analysis {
    var index: [TraceID: Int] = [:]
    for (i, t) in generated.traces.enumerated() { index[t.id] = i }
    var spans = Array(repeating: [ScannedSpanBox](), count: generated.traces.count)
    var scopesPerRequest: [Int] = []
    var tracesPerRequest: [Int] = []
    var resourceHeaders: [[[UInt8]]] = []
    var result = ScannedRequest()
    for (r, request) in generated.requests.enumerated() {
        try request.protobuf.withUnsafeBytes { try probe.scanner.scan($0, into: &result) }
        #expect(result.rejectedSpans == 0, "request \(r): \(result.rejectionMessage ?? "")")
        #expect(result.spans.count == request.spans)
        scopesPerRequest.append(result.scopes.count)
        var headers: [[UInt8]] = []
        for scope in result.scopes where !headers.contains(scope.resource.header) { headers.append(scope.resource.header) }
        resourceHeaders.append(headers)
        var traceIDs = Set<TraceID>()
        for f in result.spans {
            guard let t = index[f.traceID] else {
                Issue.record("span of unknown trace \(f.traceID)")
                continue
            }
            traceIDs.insert(f.traceID)
            spans[t].append(ScannedSpanBox(
                traceID: f.traceID, spanID: f.spanID, parent: f.parentSpanID, start: f.startTime, end: f.endTime,
                status: f.status, sums: f.sums, service: request.service, request: r, size: f.bytes.count))
        }
        tracesPerRequest.append(traceIDs.count)
    }
    return Analysis(spans: spans, scopesPerRequest: scopesPerRequest, tracesPerRequest: tracesPerRequest,
                    resourceHeaders: resourceHeaders)
}

private let largeAnalysis: Analysis = try! analyze(large)

private func nearestRank(_ sorted: [Int], _ p: Double) -> Int {
    sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

@Suite struct AgentTrafficGeneratorTests {
    @Test func sameSeedGivesIdenticalBytes() {
        var options = Generator.Options()
        options.traces = 400
        options.seed = 7
        let a = Generator(options).generate()
        let b = Generator(options).generate()
        #expect(a.requests.count == b.requests.count)
        #expect(a.requests.map(\.protobuf) == b.requests.map(\.protobuf))
        #expect(a.requests.map(\.time) == b.requests.map(\.time))
        #expect(a.requests.map(\.service) == b.requests.map(\.service))
        #expect(a.traces.map(\.id) == b.traces.map(\.id))
        #expect(a.traces.map(\.category) == b.traces.map(\.category))
        #expect(a.traces.map(\.totalTokens) == b.traces.map(\.totalTokens))

        options.seed = 8
        let c = Generator(options).generate()
        #expect(c.requests.map(\.protobuf) != a.requests.map(\.protobuf))
        #expect(Set(c.traces.map(\.id)).isDisjoint(with: a.traces.map(\.id)))
    }

    @Test func requestsReassembleToTheTraceRecords() throws {
        let analysis = largeAnalysis
        #expect(large.traces.count == 20_000)
        for (i, trace) in large.traces.enumerated() {
            let spans = analysis.spans[i]
            #expect(trace.id.isValid)
            #expect(spans.count == trace.spans, "trace \(trace.id)")
            #expect(Set(spans.map(\.service)) == trace.services, "trace \(trace.id)")
            let ids = Set(spans.map(\.spanID))
            #expect(ids.count == spans.count, "duplicate span IDs in \(trace.id)")
            #expect(!ids.contains(0))
            let roots = spans.filter { $0.parent == 0 }
            #expect(roots.count == 1, "trace \(trace.id) has \(roots.count) roots")
            for s in spans where s.parent != 0 {
                #expect(ids.contains(s.parent), "dangling parent in \(trace.id)")
                #expect(s.start >= roots.first?.start ?? 0 && s.end <= roots.first?.end ?? .max)
            }
            guard let root = roots.first else { continue }
            #expect(root.service == "agent")
            #expect(root.end - root.start == trace.durationNanos)
            #expect(spans.allSatisfy { $0.end >= $0.start })
        }
        // Each request holds one resource (its service's), spans grouped by scope.
        #expect(analysis.resourceHeaders.allSatisfy { $0.count == 1 })
        for (r, request) in large.requests.enumerated() {
            let header = analysis.resourceHeaders[r][0]
            let needle = Array("service.name".utf8) + [0x12, UInt8(request.service.utf8.count + 2), 0x0A,
                                                        UInt8(request.service.utf8.count)] + Array(request.service.utf8)
            #expect(containsBytes(header, needle), "request \(r) resource is not \(request.service)")
        }
        #expect(analysis.scopesPerRequest.max() ?? 0 >= 3)
    }

    @Test func categorySharesTokensAndErrors() {
        let analysis = largeAnalysis
        let targets: [Generator.Category: Double] = [
            .error: 0.03, .expensive: 0.04, .longRunning: 0.02, .runaway: 0.01, .toolFailure: 0.02, .truncated: 0.02,
            .ordinary: 0.86,
        ]
        var counts: [Generator.Category: Int] = [:]
        for t in large.traces { counts[t.category, default: 0] += 1 }
        for category in Generator.Category.allCases {
            let share = Double(counts[category] ?? 0) / Double(large.traces.count)
            #expect(abs(share - targets[category]!) < 0.006, "\(category): \(share)")
        }

        var errorOnlyInTools = 0
        var retriedWithoutError = 0
        for (i, trace) in large.traces.enumerated() {
            let spans = analysis.spans[i]
            var sums = SIMD8<Int64>()
            for s in spans { sums &+= s.sums }
            let tokens = sums[probe.input] + sums[probe.output]
            let errorSpans = spans.filter { $0.status == .error }
            #expect(tokens == trace.totalTokens, "trace \(trace.id)")
            #expect(trace.hasError == !errorSpans.isEmpty, "trace \(trace.id)")
            let minutes = Double(trace.durationNanos) / 60e9
            switch trace.category {
            case .ordinary:
                #expect(trace.totalTokens < 10_000 && !trace.hasError && sums[probe.truncated] == 0)
                #expect(minutes < 2)
                if sums[probe.errorTypes] > 0 { retriedWithoutError += 1 }
            case .error:
                #expect(trace.hasError && trace.totalTokens < 10_000)
                if errorSpans.allSatisfy({ $0.service == "tools" }) { errorOnlyInTools += 1 }
            case .expensive:
                #expect(trace.totalTokens >= 10_000 && !trace.hasError)
            case .longRunning:
                #expect(minutes >= 2 && minutes <= 20 && !trace.hasError && trace.totalTokens < 10_000)
            case .runaway:
                #expect(sums[probe.chats] >= 30 && sums[probe.chats] <= 140 && !trace.hasError, "\(sums[probe.chats]) chats")
                #expect(trace.spans >= 60)
            case .toolFailure:
                #expect(trace.hasError && sums[probe.toolErrors] == 1 && trace.totalTokens < 10_000)
            case .truncated:
                #expect(sums[probe.truncated] == 1 && !trace.hasError && trace.totalTokens < 10_000)
            }
            if trace.category != .toolFailure { #expect(sums[probe.toolErrors] == 0) }
        }
        #expect(errorOnlyInTools > 50, "errors only in tools: \(errorOnlyInTools)")
        #expect(retriedWithoutError > 100, "retried failures without ERROR: \(retriedWithoutError)")
        print("categories:", Generator.Category.allCases.map { "\($0.rawValue)=\(counts[$0] ?? 0)" }.joined(separator: " "),
              "| error traces with ERROR only in tools: \(errorOnlyInTools)",
              "| ordinary traces with retried failures: \(retriedWithoutError)")
    }

    @Test func requestsArriveInOrderAfterTheirSpansEnd() {
        let analysis = largeAnalysis
        let times = large.requests.map(\.time)
        #expect(times == times.sorted())
        #expect(large.requests.allSatisfy { $0.spans > 0 && $0.spans <= 512 })
        for (i, trace) in large.traces.enumerated() {
            let spans = analysis.spans[i]
            for s in spans { #expect(s.end <= large.requests[s.request].time) }
            // The root ends last, so it is exported with or after every span of its own service.
            if let root = spans.first(where: { $0.parent == 0 }) {
                #expect(spans.allSatisfy { $0.service != "agent" || $0.request <= root.request }, "trace \(trace.id)")
            }
        }
        // Requests interleave many traces.
        let perRequest = analysis.tracesPerRequest.sorted()
        #expect(nearestRank(perRequest, 0.5) >= 10)
        let first = large.requests.first!.time, last = large.requests.last!.time
        print("requests: \(large.requests.count) (agent \(large.requests.filter { $0.service == "agent" }.count),",
              "tools \(large.requests.filter { $0.service == "tools" }.count)) over \(Double(last - first) / 1e9) s;",
              "traces per request p50 \(nearestRank(perRequest, 0.5)), max \(perRequest.last!);",
              "spans per request mean \(Double(large.requests.map(\.spans).reduce(0, +)) / Double(large.requests.count))")
    }

    @Test func fullBatchesAreExportedAtOnce() {
        var options = Generator.Options()
        options.traces = 2000
        options.maxBatchSpans = 64
        options.flushInterval = 5
        options.tracesPerSecond = 200
        let (requests, traces) = Generator(options).generate()
        #expect(requests.allSatisfy { $0.spans <= 64 })
        // At 200 runs/s the agent's queue fills long before its 5 s timer: most of its spans go in full requests
        // (the long runs still open after the arrivals stop trickle out in small ones).
        let agent = requests.filter { $0.service == "agent" }
        let inFull = agent.filter { $0.spans == 64 }.map(\.spans).reduce(0, +)
        #expect(Double(inFull) > 0.8 * Double(agent.map(\.spans).reduce(0, +)))
        #expect(requests.map(\.spans).reduce(0, +) == traces.map(\.spans).reduce(0, +))
        #expect(requests.map(\.time) == requests.map(\.time).sorted())
    }

    @Test func edgeOptions() throws {
        var options = Generator.Options()
        options.traces = 0
        let empty = Generator(options).generate()
        #expect(empty.requests.isEmpty && empty.traces.isEmpty)

        options.traces = 30
        options.maxBatchSpans = 1
        options.flushInterval = 0.05
        let (requests, traces) = Generator(options).generate()
        #expect(requests.allSatisfy { $0.spans == 1 })
        #expect(requests.count == traces.map(\.spans).reduce(0, +))
        var result = ScannedRequest()
        for request in requests {
            try request.protobuf.withUnsafeBytes { try probe.scanner.scan($0, into: &result) }
            #expect(result.spans.count == 1 && result.scopes.count == 1)
            #expect(result.spans[0].endTime <= request.time)
        }
    }

    @Test func statistics() {
        let analysis = largeAnalysis
        let spans = analysis.spans.joined()
        let payload = spans.map(\.size).reduce(0, +)
        let total = large.requests.map(\.protobuf.count).reduce(0, +)
        let meanSpan = Double(payload) / Double(spans.count)
        let perTrace = large.traces.map(\.spans).sorted()
        let durations = large.traces.map { Double($0.durationNanos) / 1e9 }.sorted()
        let tokens = large.traces.map(\.totalTokens).sorted()
        print(String(format: "bytes/span: mean span payload %.0f, request bytes/span %.0f (%d spans, %.1f MB)",
                     meanSpan, Double(total) / Double(spans.count), spans.count, Double(total) / 1e6))
        print("spans/trace: p50 \(nearestRank(perTrace, 0.5)) p90 \(nearestRank(perTrace, 0.9))",
              "p99 \(nearestRank(perTrace, 0.99)) max \(perTrace.last!)",
              "| share 3–12: \(Double(perTrace.filter { (3...12).contains($0) }.count) / Double(perTrace.count))")
        print(String(format: "duration s: p50 %.1f p99 %.1f max %.1f | tokens: p50 %lld p99 %lld max %lld",
                     durations[durations.count / 2], durations[durations.count * 99 / 100], durations.last!,
                     tokens[tokens.count / 2], tokens[tokens.count * 99 / 100], tokens.last!))
        print(String(format: "generation: %.2f s for %d spans = %.0f spans/s (build configuration decides)",
                     large.seconds, spans.count, Double(spans.count) / large.seconds))
        #expect(meanSpan > 300 && meanSpan < 900)
        #expect(nearestRank(perTrace, 0.5) >= 3 && nearestRank(perTrace, 0.5) <= 12)
        #expect(perTrace.last! >= 100)
    }
}

private func containsBytes(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard needle.count <= haystack.count else { return false }
    for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
        if Array(haystack[i..<(i + needle.count)]) == needle { return true }
    }
    return false
}
