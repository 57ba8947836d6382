import Foundation
import Logging
import NIOHTTP1
import Testing
import TailgateHTTPServer
@testable import TailgateExport
@testable import TailgateLoadtest
@testable import TailgatePolicies
@testable import TailgateRuntime
@testable import TailgateWire

private func generated(traces: Int, seed: UInt64 = 3) throws -> PreparedRecording {
    var options = AgentTrafficGenerator.Options()
    options.traces = traces
    options.seed = seed
    options.tracesPerSecond = 200
    let (requests, _) = AgentTrafficGenerator(options).generate()
    return try PreparedRecording(requests.map { RecordedRequest(arrival: $0.time, protobuf: $0.protobuf) })
}

@Suite struct PreparedRecordingTests {
    @Test func passesGetFreshConsistentTraceIDs() throws {
        let recording = try generated(traces: 50)
        var original: [TraceID: Int] = [:], second: [TraceID: Int] = [:]
        for i in 0..<recording.count {
            for (pass, bucket) in [(0, 0), (1, 1)] {
                var scanned = ScannedRequest()
                recording.request(i, pass: pass).withUnsafeBytes { try! OTLPScanner().scan($0, into: &scanned) }
                for s in scanned.spans {
                    if bucket == 0 { original[s.traceID, default: 0] += 1 } else { second[s.traceID, default: 0] += 1 }
                }
            }
        }
        #expect(original.count == 50 && second.count == 50)
        #expect(Set(original.keys).isDisjoint(with: second.keys))
        // Each trace maps to exactly one new ID, with the same number of spans.
        for (id, count) in original { #expect(second[PreparedRecording.traceID(id, pass: 1)] == count) }
        #expect(recording.request(0, pass: 0) == recording.requests[0].protobuf)
    }
}

@Suite(.serialized) struct ReplayTests {
    /// Replays straight into the built-in receiver (no proxy): with "keep everything" the verification passes; with
    /// the default policies it must fail (traces the policies drop arrived), which shows the verifier can fail.
    @Test func replayIntoTheReceiverAndVerify() async throws {
        let recording = try generated(traces: 300)
        let receiver = RecordingReceiver(host: "127.0.0.1", port: 0)
        let serving = Task { try await receiver.server.serve() }
        var port: Int? = nil
        for _ in 0..<100 where port == nil {
            port = await receiver.server.listeningPort
            if port == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let bound = try #require(port)
        var options = ReplayOptions(target: .grpc(host: "127.0.0.1", port: bound))
        options.connections = 2
        options.maxSpans = recording.spans * 2  // two passes
        let replayer = Replayer(recording: recording, options: options)
        let seconds = Mutex(0)
        let (report, sent) = try await replayer.run { _, _ in seconds.withLock { $0 += 1 } }
        #expect(report.spansSent == recording.spans * 2)
        #expect(report.spansAcked == report.spansSent)
        #expect(report.requestsFailed == 0)
        #expect(receiver.spansReceived == recording.spans * 2)

        let keepAll = try PolicySet.parse("policies: [{name: all, type: always_sample}]", file: "all.yaml")
        let ok = Verifier.verify(recording: recording, sent: sent, policies: keepAll, received: receiver.traces())
        #expect(ok.passed, "\(ok.problems)")
        #expect(ok.tracesSent == 600 && ok.tracesReceived == 600 && ok.incompleteTraces == 0 && ok.duplicateSpans == 0)

        let strict = Verifier.verify(recording: recording, sent: sent, policies: PolicySet.builtIn(), received: receiver.traces())
        #expect(!strict.passed)
        #expect(strict.categories.first { $0.name == "(dropped)" }.map { $0.kept > 0 } == true)
        receiver.server.beginGracefulShutdown()
        serving.cancel()
    }

    /// `json`: every request reaches a real OTLP/HTTP receiver (the proxy's) as `application/json`, is transcoded back
    /// to the same spans, and the second pass carries fresh trace IDs there too (so a JSON load test measures new
    /// traces, not late spans of decided ones).
    @Test func jsonReplayCarriesTheSameSpansWithFreshIDs() async throws {
        let recording = try generated(traces: 40)
        let handler = SpanCollector()
        let ingest = OTLPHTTPIngest(handler: handler, maxRequestBytes: 64 << 20)
        let contentTypes = Mutex<[String: Int]>([:])
        let server = HTTPServer(host: "127.0.0.1", port: 0, maxBodyBytes: 64 << 20, logger: Logger(label: "test"),
                                tooLarge: { ingest.tooLarge($0, limit: $1) }, route: { request in
            contentTypes.withLock { $0[request.head.headers.first(name: "content-type") ?? "", default: 0] += 1 }
            return ingest.handle(request)
        })
        let port = try await server.start()
        var options = ReplayOptions(target: .http(host: "127.0.0.1", port: port, path: "/v1/traces"))
        options.json = true
        options.connections = 2
        options.maxSpans = recording.spans * 2
        let replayer = Replayer(recording: recording, options: options)
        let (report, _) = try await replayer.run { _, _ in }
        await server.stop()

        #expect(report.requestsFailed == 0 && report.errors.isEmpty, "\(report.errors)")
        #expect(report.spansAcked == recording.spans * 2)
        #expect(contentTypes.withLock { $0 } == ["application/json": recording.count * 2])
        var jsonBytes = 0, expected: [String: Int] = [:]
        for pass in 0..<2 {
            for i in 0..<recording.count {
                jsonBytes += try replayer.body(i, pass: pass).count
                var scanned = ScannedRequest()
                try recording.request(i, pass: pass).withUnsafeBytes { try OTLPScanner().scan($0, into: &scanned) }
                for s in scanned.spans { expected["\(s.traceID)/\(s.spanID)", default: 0] += 1 }
            }
        }
        // What was sent is JSON (larger than the protobuf), and what arrived is every span of both passes, once.
        #expect(report.bytesSent == jsonBytes && jsonBytes > 2 * recording.bytes)
        let received = handler.spans.withLock { $0 }
        #expect(expected.count == recording.spans * 2)
        #expect(received.count == expected.count)
        #expect(received.filter { expected[$0.key] != $0.value }.count == 0, "spans that arrived not as sent")
    }

    @Test func jsonNeedsAnHTTPTarget() throws {
        var options = ReplayOptions(target: .grpc(host: "127.0.0.1", port: 1))
        options.json = true
        #expect(throws: Replayer.ReplayError.self) { try Replayer(recording: try generated(traces: 1), options: options).makeClient() }
    }
}

/// Counts the spans (trace ID / span ID) of every request that reaches it.
private final class SpanCollector: TraceIngestHandler {
    let spans = Mutex<[String: Int]>([:])
    func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
        var scanned = ScannedRequest()
        do { try OTLPScanner().scan(body, into: &scanned) } catch { return .invalid("\(error)") }
        spans.withLock { for s in scanned.spans { $0["\(s.traceID)/\(s.spanID)", default: 0] += 1 } }
        return .accepted
    }
    func refused(transport: IngestTransport, reason: RefusalReason) {}
}

import Synchronization
import TailgateIngest
import TailgateRecording
