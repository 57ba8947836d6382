import Logging
import Synchronization
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgateExport
@testable import TailgatePolicies
@testable import TailgateRuntime
@testable import TailgateWire

/// A downstream that records requests; the first `failures` sends answer with a retryable error.
final class RecordingDownstream: Downstream {
    let target = "memory"
    let requests = Mutex<[[UInt8]]>([])
    let failuresLeft: Mutex<Int>
    let permanent: Bool

    init(failures: Int = 0, permanent: Bool = false) {
        failuresLeft = Mutex(failures)
        self.permanent = permanent
    }

    func run() async throws {}
    func close() {}

    func send(_ request: [UInt8]) async -> SendOutcome {
        let fail = failuresLeft.withLock { n -> Bool in
            if n > 0 { n -= 1; return true }
            return false
        }
        if fail {
            return permanent ? .permanent(reason: "invalid_argument: no") : .retryable(reason: "unavailable: try later", retryAfter: nil)
        }
        requests.withLock { $0.append(request) }
        return .delivered
    }

    var spans: [DecodedSpan] {
        requests.withLock { $0 }.flatMap { try! decodeRequest($0) }
    }
}

func testPipeline(
    policies: String = PolicySet.defaultYAML, downstream: RecordingDownstream = RecordingDownstream(),
    clock: ManualClock = ManualClock(), forwarder configure: (inout ForwarderConfiguration) -> Void = { _ in }
) throws -> (Pipeline, RecordingDownstream, ManualClock) {
    var buffer = BufferConfiguration()
    buffer.waitAfterRoot = .seconds(2)
    buffer.idleTimeout = .seconds(10)
    var fc = ForwarderConfiguration()
    fc.batchTimeout = .milliseconds(10)
    fc.initialBackoff = .milliseconds(1)
    fc.maxBackoff = .milliseconds(5)
    configure(&fc)
    let metrics = TailgateMetrics()
    let logger = Logger(label: "test")
    let forwarder = Forwarder(configuration: fc, downstream: downstream, observer: metrics, logger: logger)
    let pipeline = Pipeline(policies: try PolicySet.parse(policies, file: "test.yaml"), buffer: buffer,
                            forwarder: forwarder, metrics: metrics, clock: clock, logger: logger)
    return (pipeline, downstream, clock)
}

/// Runs the forwarder while `body` runs, then finishes it (flushing everything). The whole suite shares two
/// cooperative threads with CPU-heavy tests; a short shutdown bound could expire before the forwarder's workers even
/// run (the drop would be counted, as in production, but fail the test), hence the long deadline.
func withForwarder(_ pipeline: Pipeline, _ body: () async throws -> Void) async rethrows {
    let task = Task { await pipeline.forwarder.run() }
    try await body()
    pipeline.forwarder.finish(deadline: .now + .seconds(300))
    await task.value
}

func ingest(_ pipeline: Pipeline, _ bytes: [UInt8]) -> TailgateIngest.IngestResult {
    bytes.withUnsafeBytes { pipeline.ingest($0, transport: .grpc) }
}

import TailgateIngest
import TailgateConfig

func metricValue(_ pipeline: Pipeline, _ line: String) -> Double? {
    let text = String(decoding: pipeline.metrics.exposition(), as: UTF8.self)
    for l in text.split(separator: "\n") where l.hasPrefix(line + " ") {
        return Double(l.dropFirst(line.count + 1))
    }
    return nil
}

@Suite struct PipelineTests {
    /// An agent trace from two services: agent.run → llm.call → tool.execute (tools) ...
    func agentTrace(_ id: TraceID, error: Bool = false, tokens: Int64 = 100) -> ([UInt8], [UInt8]) {
        let root = TestSpan(trace: id, span: 1, name: "agent.run", start: 0, end: 100)
        let llm = TestSpan(trace: id, span: 2, parent: 1, name: "llm.call", ints: [("gen_ai.usage.input_tokens", tokens)])
        let tool = TestSpan(trace: id, span: 3, parent: 2, name: "tool.execute", status: error ? .error : .ok)
        return (exportRequest(service: "agent", spans: [llm, root]), exportRequest(service: "tools", spans: [tool]))
    }

    @Test func keptTracesArriveCompleteAndDroppedOnesDoNot() async throws {
        let (pipeline, downstream, clock) = try testPipeline()
        // Find IDs in and out of the 10% sample, so the expectation follows the documented hash rule.
        let baseline = ProbabilisticPolicy(percentage: 10)
        var sampled: TraceID? = nil, unsampled: [TraceID] = []
        var n: UInt64 = 1
        while sampled == nil || unsampled.count < 2 {
            let id = tid(n); n += 1
            var s = TraceSummary(traceID: id); s.spanCount = 1
            if baseline.evaluate(s).isSample { sampled = sampled ?? id } else if unsampled.count < 2 { unsampled.append(id) }
        }
        let errorTrace = unsampled[0], expensive = unsampled[1]
        await withForwarder(pipeline) {
            for (id, err, tokens) in [(errorTrace, true, Int64(10)), (expensive, false, 10_000), (sampled!, false, 10)] {
                let (a, t) = agentTrace(id, error: err, tokens: tokens)
                #expect(ingest(pipeline, t) == .accepted)
                #expect(ingest(pipeline, a) == .accepted)
            }
            // An ordinary unsampled trace with 9,999 tokens: dropped.
            var dropped = TraceID(hi: 0, lo: 0)
            n += 100
            repeat { dropped = tid(n); n += 1 } while baseline.evaluate({ var s = TraceSummary(traceID: dropped); s.spanCount = 1; return s }()).isSample
            let (a, t) = agentTrace(dropped, tokens: 9_999)
            _ = ingest(pipeline, a); _ = ingest(pipeline, t)

            clock.advance(by: .seconds(2))
            pipeline.tick()
            #expect(pipeline.buffer.bufferedTraces == 0)
            // Late span of the dropped trace: dropped and counted; of a kept one: forwarded.
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: dropped, span: 9, parent: 1)]))
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: errorTrace, span: 9, parent: 1)]))
        }
        let spans = downstream.spans
        let byTrace = Dictionary(grouping: spans, by: \.traceID)
        #expect(Set(byTrace.keys) == [errorTrace, expensive, sampled!])
        #expect(byTrace[expensive]?.map(\.spanID).sorted() == [1, 2, 3])
        #expect(byTrace[sampled!]?.map(\.spanID).sorted() == [1, 2, 3])
        #expect(byTrace[errorTrace]?.map(\.spanID).sorted() == [1, 2, 3, 9])
        #expect(Set(byTrace[expensive]?.map(\.service) ?? []) == ["agent", "tools"])
        #expect(spans.count == Set(spans.map { [$0.traceID.hi, $0.traceID.lo, $0.spanID] }).count)  // no duplicates
        #expect(metricValue(pipeline, #"tailgate_traces_decided_total{policy="errors",decision="keep"}"#) == 1)
        #expect(metricValue(pipeline, #"tailgate_traces_decided_total{policy="expensive",decision="keep"}"#) == 1)
        #expect(metricValue(pipeline, #"tailgate_traces_decided_total{policy="baseline",decision="keep"}"#) == 1)
        #expect(metricValue(pipeline, #"tailgate_traces_decided_total{policy="none",decision="drop"}"#) == 1)
        #expect(metricValue(pipeline, #"tailgate_spans_dropped_total{reason="policy"}"#) == 3)
        #expect(metricValue(pipeline, #"tailgate_spans_dropped_total{reason="late_span_of_dropped_trace"}"#) == 1)
        #expect(metricValue(pipeline, #"tailgate_spans_received_total{transport="grpc"}"#) == 14)
        #expect(metricValue(pipeline, "tailgate_spans_forwarded_total") == 10)
    }

    @Test func malformedRequestIsInvalidAndHarmsNothing() async throws {
        let (pipeline, downstream, _) = try testPipeline(policies: "policies: [{name: all, type: always_sample}]")
        await withForwarder(pipeline) {
            let (a, _) = agentTrace(tid(5))
            guard case .invalid(let message) = ingest(pipeline, Array(a.prefix(a.count - 3))) else {
                Issue.record("expected invalid"); return
            }
            #expect(message.hasPrefix("malformed protobuf:"))
            #expect(ingest(pipeline, a) == .accepted)
            pipeline.decideAll()
        }
        #expect(downstream.spans.map(\.spanID).sorted() == [1, 2])
    }

    @Test func invalidSpansArePartialSuccess() throws {
        let (pipeline, _, _) = try testPipeline()
        let bad = TestSpan(trace: TraceID(hi: 0, lo: 0), span: 1)
        let good = TestSpan(trace: tid(1), span: 2)
        guard case .partiallyAccepted(let rejected, let message) = ingest(pipeline, exportRequest(spans: [bad, good])) else {
            Issue.record("expected partial success"); return
        }
        #expect(rejected == 1)
        #expect(message.contains("trace_id"))
        #expect(pipeline.buffer.bufferedTraces == 1)
    }

    @Test func retryableFailuresAreRetriedUntilDelivered() async throws {
        let (pipeline, downstream, _) = try testPipeline(
            policies: "policies: [{name: all, type: always_sample}]", downstream: RecordingDownstream(failures: 3))
        await withForwarder(pipeline) {
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: tid(1), span: 1)]))
            pipeline.decideAll()
        }
        #expect(downstream.spans.count == 1, "\(String(decoding: pipeline.metrics.exposition(), as: UTF8.self))")
        #expect(metricValue(pipeline, #"tailgate_forward_failures_total{reason="unavailable",retried="true"}"#) == 3)
    }

    @Test func permanentFailuresAreCountedAsDrops() async throws {
        let (pipeline, downstream, _) = try testPipeline(
            policies: "policies: [{name: all, type: always_sample}]", downstream: RecordingDownstream(failures: 1, permanent: true))
        await withForwarder(pipeline) {
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: tid(1), span: 1), TestSpan(trace: tid(1), span: 2, parent: 1)]))
            pipeline.decideAll()
        }
        #expect(downstream.spans.isEmpty)
        #expect(metricValue(pipeline, #"tailgate_spans_dropped_total{reason="rejected_by_downstream"}"#) == 2)
    }

    @Test func fullQueuePushesBackWithARetryableAnswer() throws {
        // No forwarder running: batches pile up in a tiny queue.
        let (pipeline, _, _) = try testPipeline(policies: "policies: [{name: all, type: always_sample}]") {
            $0.queueBytes = 1000
            $0.maxBatchSpans = 1
        }
        var overloaded = false
        for i in 1...50 where !overloaded {
            let r = ingest(pipeline, exportRequest(spans: [TestSpan(trace: tid(UInt64(i)), span: 1, name: String(repeating: "x", count: 200))]))
            pipeline.decideAll()
            if case .overloaded(let seconds, _) = r { overloaded = true; #expect(seconds >= 1) }
        }
        #expect(overloaded)
        #expect((metricValue(pipeline, #"tailgate_requests_refused_total{transport="grpc",reason="overloaded"}"#) ?? 0) >= 1)
    }
}

@Suite struct ConfigurationTests {
    @Test func parsesEveryKey() throws {
        let c = try TailgateConfiguration.parse("""
            grpc_listen: 127.0.0.1:5317
            http_listen: off
            metrics_listen: "[::1]:9000"
            downstream: grpc://127.0.0.1:14317
            limits: {max_request_bytes: 1MiB}
            buffer:
              shards: 8
              wait_after_root: 300ms
              idle_timeout: 2s
              max_trace_age: 1m
              max_spans_per_trace: 500
              max_buffered_bytes: 64MiB
              decision_cache_size: 10
              decision_tick: 50ms
            forwarder: {batch_timeout: 100ms, compression: none, concurrency: 4, queue_bytes: 8MiB}
            """, file: "c.yaml")
        #expect(c.grpcListen == "127.0.0.1:5317")
        #expect(c.httpListen == nil)
        #expect(c.metricsListen == "[::1]:9000")
        #expect(c.downstream == .grpc(host: "127.0.0.1", port: 14317))
        #expect(c.maxRequestBytes == 1 << 20)
        #expect(c.buffer.shardCount == 8 && c.buffer.waitAfterRoot == .milliseconds(300) && c.buffer.idleTimeout == .seconds(2))
        #expect(c.buffer.maxTraceAge == .seconds(60) && c.buffer.maxSpansPerTrace == 500 && c.buffer.maxBufferedBytes == 64 << 20)
        #expect(c.buffer.decisionCacheSize == 10 && c.decisionTick == .milliseconds(50))
        #expect(c.forwarder.batchTimeout == .milliseconds(100) && !c.forwarder.gzip && c.forwarder.concurrency == 4)
        #expect(c.forwarder.queueBytes == 8 << 20)
    }

    @Test func emptyFileMeansDefaults() throws {
        #expect(try TailgateConfiguration.parse("", file: "c.yaml") == TailgateConfiguration())
    }

    @Test func mistakesAreReportedWithPositions() {
        do {
            _ = try TailgateConfiguration.parse("buffer:\n  idle_timout: 5s\ndownstream: tcp://x\n", file: "c.yaml")
            Issue.record("expected errors")
        } catch {
            let d = error.diagnostics.map(\.description)
            #expect(d.count == 2)
            #expect(d[0] == "c.yaml:2:3: error: unknown key 'idle_timout' in buffer; did you mean 'idle_timeout'?")
            #expect(d[1].hasPrefix("c.yaml:3:13: error: downstream must be"))
        }
    }

    @Test(arguments: [
        ("grpc://127.0.0.1:4317", DownstreamAddress.grpc(host: "127.0.0.1", port: 4317)),
        ("http://localhost:4318", .http(host: "localhost", port: 4318, path: "/v1/traces")),
        ("http://[::1]:4318/otlp/v1/traces", .http(host: "::1", port: 4318, path: "/otlp/v1/traces")),
        ("file:out.jsonl", .file(path: "out.jsonl")),
    ])
    func downstreamAddresses(text: String, expected: DownstreamAddress) {
        #expect(DownstreamAddress(text) == expected)
    }

    @Test(arguments: ["grpc://nohost", "tcp://1.2.3.4:1", "file:", "http://h:99999"])
    func badDownstreamAddresses(text: String) { #expect(DownstreamAddress(text) == nil) }
}
