import Logging
import Synchronization
import Testing
@testable import TailgateExport

@Suite struct DownstreamAddressTLSTests {
    @Test(arguments: [
        ("grpcs://collector.example.com:443", DownstreamAddress.grpcs(host: "collector.example.com", port: 443)),
        ("grpcs://[::1]:4317", .grpcs(host: "::1", port: 4317)),
        ("https://tempo:4318", .https(host: "tempo", port: 4318, path: "/v1/traces")),
        ("https://tempo:4318/", .https(host: "tempo", port: 4318, path: "/v1/traces")),
        ("https://10.0.0.1:443/otlp/v1/traces", .https(host: "10.0.0.1", port: 443, path: "/otlp/v1/traces")),
        ("grpc://127.0.0.1:4317", .grpc(host: "127.0.0.1", port: 4317)),
        ("http://h:80/x", .http(host: "h", port: 80, path: "/x")),
    ])
    func parses(text: String, expected: DownstreamAddress) {
        #expect(DownstreamAddress(text) == expected)
        #expect(DownstreamAddress(expected.description) == expected)
    }

    @Test(arguments: ["grpcs://nohost", "grpcs:/h:1", "tls://h:1", "httpss://h:1", "https://h:99999", "GRPCS://h:1", "grpcs://:1"])
    func rejects(text: String) {
        #expect(DownstreamAddress(text) == nil)
    }

    @Test func tlsSchemes() {
        #expect(DownstreamAddress("grpcs://h:1")!.isTLS)
        #expect(DownstreamAddress("https://h:1")!.isTLS)
        #expect(!DownstreamAddress("grpc://h:1")!.isTLS)
        #expect(!DownstreamAddress("file:x")!.isTLS)
        #expect(DownstreamAddress("https://[::1]:4318/a")!.description == "https://[::1]:4318/a")
    }

    @Test(arguments: [
        ("/v1/traces", "/v1/metrics", "/v1/logs"),
        ("/otlp/v1/traces", "/otlp/v1/metrics", "/otlp/v1/logs"),
        ("/ingest", "/metrics", "/logs"),
    ])
    func signalPathsSitNextToTheTracesPath(traces: String, metrics: String, logs: String) {
        #expect(OTLPSignal.traces.httpPath(tracesPath: traces) == traces)
        #expect(OTLPSignal.metrics.httpPath(tracesPath: traces) == metrics)
        #expect(OTLPSignal.logs.httpPath(tracesPath: traces) == logs)
    }

    @Test func grpcServices() {
        #expect(OTLPSignal.metrics.grpcService == "opentelemetry.proto.collector.metrics.v1.MetricsService")
        #expect(OTLPSignal.logs.grpcService == "opentelemetry.proto.collector.logs.v1.LogsService")
    }
}

/// A downstream answering from a script, recording what it was sent.
final class SignalScriptedDownstream: Downstream {
    let target = "scripted"
    let sent = Mutex<[(OTLPSignal, [UInt8], Bool)]>([])
    let script: @Sendable ([UInt8], Int) -> SendOutcome
    let attempts = Mutex(0)

    init(_ script: @escaping @Sendable ([UInt8], Int) -> SendOutcome) { self.script = script }

    func run() async throws {}
    func close() {}
    func send(_ request: [UInt8]) async -> SendOutcome { await send(request, signal: .traces, json: false) }
    func send(_ request: [UInt8], signal: OTLPSignal, json: Bool) async -> SendOutcome {
        let n = attempts.withLock { $0 += 1; return $0 }
        let outcome = script(request, n)
        if outcome == .delivered { sent.withLock { $0.append((signal, request, json)) } }
        return outcome
    }
}

final class SignalCounts: SignalForwarderObserver {
    let forwarded = Mutex<[String: Int]>([:])
    let dropped = Mutex<[String: Int]>([:])
    let failures = Mutex(0)
    func signalForwarded(_ signal: OTLPSignal, bytes: Int) { forwarded.withLock { $0[signal.rawValue, default: 0] += 1 } }
    func signalDropped(_ signal: OTLPSignal, reason: SignalDropReason) { dropped.withLock { $0[reason.rawValue, default: 0] += 1 } }
    func signalSendFailed(_ signal: OTLPSignal, reason: String, willRetry: Bool) { failures.withLock { $0 += 1 } }
    func signalQueued(bytes: Int) {}
}

/// A relay on `clock` (a fresh test clock unless given) with short backoff.
func relay(_ downstream: any Downstream, queueBytes: Int = 1 << 20, concurrency: Int = 1, observer: SignalCounts,
           clock: TestClock = TestClock(), initialBackoff: Duration = .milliseconds(5), maxBackoff: Duration = .milliseconds(20),
           shutdownBudget: Duration = .seconds(25)) -> SignalForwarder {
    SignalForwarder(downstream: downstream, queueBytes: queueBytes, concurrency: concurrency, initialBackoff: initialBackoff,
                    maxBackoff: maxBackoff, observer: observer, logger: Logger(label: "test"), clock: clock,
                    shutdownBudget: { shutdownBudget })
}

@Suite struct SignalForwarderTests {

    @Test func relaysBytesUnchangedAfterRetries() async {
        let downstream = SignalScriptedDownstream { _, attempt in
            attempt <= 2 ? .retryable(reason: "unavailable", retryAfter: nil) : .delivered
        }
        let counts = SignalCounts()
        let clock = TestClock()
        let forwarder = relay(downstream, observer: counts, clock: clock)
        #expect(forwarder.submit([1, 2, 3], signal: .metrics, json: false))
        #expect(forwarder.submit([4], signal: .logs, json: true))
        let task = Task { await forwarder.run() }
        forwarder.finish(within: .seconds(300))
        await clock.drive(task)
        let sent = downstream.sent.withLock { $0 }
        #expect(sent.map(\.1).sorted { $0.count > $1.count } == [[1, 2, 3], [4]])
        #expect(sent.contains { $0.0 == .logs && $0.2 })
        #expect(counts.forwarded.withLock { $0 } == ["metrics": 1, "logs": 1])
        #expect(counts.failures.withLock { $0 } == 2)
    }

    @Test func permanentFailuresAreDroppedAndCounted() async {
        let downstream = SignalScriptedDownstream { _, _ in .permanent(reason: "HTTP 404") }
        let counts = SignalCounts()
        let clock = TestClock()
        let forwarder = relay(downstream, observer: counts, clock: clock)
        #expect(forwarder.submit([9], signal: .logs, json: false))
        let task = Task { await forwarder.run() }
        forwarder.finish(within: .seconds(300))
        await clock.drive(task)
        #expect(counts.dropped.withLock { $0 } == [SignalDropReason.rejected.rawValue: 1])
    }

    @Test func aFullQueueRefusesInsteadOfDropping() {
        let counts = SignalCounts()
        let forwarder = relay(SignalScriptedDownstream { _, _ in .delivered }, queueBytes: 10, observer: counts)
        #expect(forwarder.submit([UInt8](repeating: 0, count: 50), signal: .metrics, json: false))  // an empty queue takes any size
        #expect(!forwarder.submit([1], signal: .metrics, json: false))
        #expect(forwarder.queuedBytes == 50)
        #expect(counts.dropped.withLock { $0 }.isEmpty)
    }

    @Test func whatIsUndeliveredAtTheDeadlineIsDroppedAsShutdown() async {
        let counts = SignalCounts()
        let clock = TestClock()
        let forwarder = relay(SignalScriptedDownstream { _, _ in .retryable(reason: "unavailable", retryAfter: nil) }, observer: counts,
                              clock: clock)
        #expect(forwarder.submit([1], signal: .metrics, json: false))
        let task = Task { await forwarder.run() }
        forwarder.finish(within: .milliseconds(200))
        await clock.drive(task)
        #expect(counts.dropped.withLock { $0 } == [SignalDropReason.shutdown.rawValue: 1])
        #expect(clock.now.offset <= .milliseconds(200))
    }

    @Test func downstreamsThatKnowOnlyTracesRefuseOtherSignals() async throws {
        final class TracesOnly: Downstream {
            let target = "traces-only"
            func run() async throws {}
            func close() {}
            func send(_ request: [UInt8]) async -> SendOutcome { .delivered }
        }
        let d = TracesOnly()
        #expect(await d.send([1], signal: .traces, json: false) == .delivered)
        if case .permanent = await d.send([1], signal: .metrics, json: false) {} else { Issue.record("metrics accepted") }
        #expect(!d.acceptsJSON)
        let https = try HTTPDownstream(host: "127.0.0.1", port: 1, path: "/v1/traces", gzip: false, timeout: .seconds(1),
                                       tls: DownstreamTLS())
        #expect(https.target == "https://127.0.0.1:1/v1/traces")
        #expect(https.acceptsJSON)
        https.close()
    }
}
