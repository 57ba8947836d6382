import Foundation
import Synchronization
package import TailgateExport
import TailgateWire

/// How to replay.
package struct ReplayOptions: Sendable {
    /// Where to send: `grpc://HOST:PORT` or `http://HOST:PORT[/path]`.
    package var target: DownstreamAddress
    package var gzip = false
    /// Send OTLP/JSON instead of protobuf (HTTP targets only): each request is encoded as it is sent, after its trace
    /// IDs are made fresh for the pass, so the proxy sees new traces as it would from a JSON exporter.
    package var json = false
    /// Concurrent connections (one client each, one request in flight per connection).
    package var connections = 4
    /// Target spans per second; nil sends as fast as acknowledgements allow.
    package var spansPerSecond: Double? = nil
    /// Stop after this long…
    package var duration: Duration? = nil
    /// …or after this many spans (whichever comes first; without either, one pass over the recording).
    package var maxSpans: Int? = nil
    /// Replay the recording's own timing (arrival offsets divided by `speed`) instead of a rate.
    package var recordedTiming = false
    package var speed: Double = 1
    /// Give every pass over the recording fresh trace IDs (needed to loop without duplicates).
    package var freshTraceIDs = true
    package var timeout: Duration = .seconds(10)

    package init(target: DownstreamAddress) {
        self.target = target
    }
}

/// What was sent: enough to know exactly which traces must have reached a downstream.
package struct SentLog: Sendable {
    /// Sequence numbers (pass × requests + index) below this were taken by a connection…
    package var taken: Int
    /// …except these, which a connection took and did not send (it stopped there)…
    package var skipped: Set<Int>
    /// …and these, which were answered with an error (their spans were not accepted).
    package var failed: Set<Int>

    package func accepted(_ seq: Int) -> Bool { seq < taken && !skipped.contains(seq) && !failed.contains(seq) }
    package func sent(_ seq: Int) -> Bool { seq < taken && !skipped.contains(seq) }
}

/// Replays a prepared recording against an OTLP endpoint and measures acknowledgements.
package final class Replayer: Sendable {
    struct Second {
        var sent = 0
        var acked = 0
        var rejected = 0
        var latencies: [Double] = []
    }

    struct Stats {
        var seconds: [Second] = []
        var requestsSent = 0
        var requestsAcked = 0
        var requestsFailed = 0
        var spansSent = 0
        var spansAcked = 0
        var spansRejected = 0
        var bytesSent = 0
        var errors: [String: Int] = [:]
        /// Every request's latency in ms (bounded reservoir beyond 2 M).
        var latencies: [Double] = []
        var failedSeqs: Set<Int> = []
        var skipped: Set<Int> = []
    }

    package let recording: PreparedRecording
    package let options: ReplayOptions
    private let stats = Mutex(Stats())
    private let nextSeq = Atomic<Int>(0)

    package init(recording: PreparedRecording, options: ReplayOptions) {
        self.recording = recording
        self.options = options
    }

    /// The schemes a load test sends to (no TLS options: plaintext gRPC and OTLP/HTTP only).
    static let schemes: Set<String> = ["grpc", "http"]

    /// One replay connection, built by the same factory as `tailgate serve`'s forwarder.
    func makeClient() throws -> any Downstream {
        guard Self.schemes.contains(options.target.scheme) else {
            throw ReplayError("a load test needs a grpc:// or http:// target")
        }
        if options.json && options.target.scheme != "http" {
            throw ReplayError("OTLP/JSON is sent only to an http:// target (gRPC carries protobuf)")
        }
        return try options.target.makeDownstream(DownstreamOptions(gzip: options.gzip, timeout: options.timeout))
    }

    package struct ReplayError: Error, CustomStringConvertible {
        package var description: String
        init(_ d: String) { description = d }
    }

    /// Runs the replay; `progress` is called once a second with that second's sample.
    package func run(progress: @escaping @Sendable (LoadtestSample, Double) -> Void) async throws -> (LoadtestReport, SentLog) {
        guard recording.count > 0 else { throw ReplayError("the recording holds no requests") }
        let clients = try (0..<max(1, options.connections)).map { _ in try makeClient() }
        let started = ContinuousClock.now
        let startDate = Date()
        let deadline = options.duration.map { started + $0 }
        let spanLimit = options.maxSpans ?? (options.duration == nil ? recording.spans : Int.max)

        let runners = Task {
            await withTaskGroup(of: Void.self) { group in
                for client in clients {
                    group.addTask { try? await client.run() }
                }
            }
        }
        let reporter = Task {
            var second = 0
            while !Task.isCancelled {
                try? await Task.sleep(until: started + .seconds(second + 1), clock: .continuous)
                if Task.isCancelled { break }
                progress(self.sample(second), Double(second + 1))
                second += 1
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for client in clients {
                group.addTask { await self.worker(client, started: started, deadline: deadline, spanLimit: spanLimit) }
            }
        }
        reporter.cancel()
        let elapsed = ContinuousClock.now - started
        for c in clients { c.close() }
        runners.cancel()
        let duration = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return report(duration: duration, startDate: startDate)
    }

    private func worker(_ client: any Downstream, started: ContinuousClock.Instant, deadline: ContinuousClock.Instant?, spanLimit: Int) async {
        let n = recording.count
        while true {
            let seq = nextSeq.wrappingAdd(1, ordering: .relaxed).oldValue
            let pass = seq / n, index = seq % n
            let stop = (pass > 0 && !options.freshTraceIDs)
                || recording.spans(before: seq) >= spanLimit
                || deadline.map { ContinuousClock.now >= $0 } ?? false
            if stop {
                stats.withLock { _ = $0.skipped.insert(seq) }
                return
            }
            // Pace: by target rate, or by the recording's own timing.
            var due: ContinuousClock.Instant? = nil
            if options.recordedTiming {
                due = started + .nanoseconds(Int64(Double(recording.recordedOffset(seq)) / max(options.speed, 1e-9)))
            } else if let rate = options.spansPerSecond, rate > 0 {
                due = started + .seconds(Double(recording.spans(before: seq)) / rate)
            }
            if let due, due > .now {
                if let deadline, due > deadline {
                    stats.withLock { _ = $0.skipped.insert(seq) }
                    return
                }
                try? await Task.sleep(until: due, clock: .continuous)
            }
            let spans = recording.spanCounts[index]
            let bytes: [UInt8]
            do { bytes = try body(index, pass: pass) } catch {
                // Not sent: counted as a failed request with the reason (the recording was checked when prepared, so
                // this would be a bug in the encoder, not something to skip quietly).
                stats.withLock { s in
                    s.requestsFailed += 1
                    s.errors[Self.shorten("cannot encode as OTLP/JSON: \(error)"), default: 0] += 1
                    _ = s.skipped.insert(seq)
                }
                continue
            }
            let sentAt = ContinuousClock.now
            let second = Int((sentAt - started).components.seconds)
            stats.withLock { s in
                s.ensure(second)
                s.seconds[second].sent += spans
                s.requestsSent += 1
                s.spansSent += spans
                s.bytesSent += bytes.count
            }
            let outcome = options.json ? await client.send(bytes, signal: .traces, json: true) : await client.send(bytes)
            let done = ContinuousClock.now
            let latency = (done - sentAt)
            let ms = Double(latency.components.seconds) * 1000 + Double(latency.components.attoseconds) / 1e15
            let doneSecond = Int((done - started).components.seconds)
            stats.withLock { s in
                s.ensure(doneSecond)
                s.seconds[doneSecond].latencies.append(ms)
                if s.latencies.count < 2_000_000 { s.latencies.append(ms) }
                switch outcome {
                case .delivered, .partial:
                    s.seconds[doneSecond].acked += spans
                    s.requestsAcked += 1
                    s.spansAcked += spans
                case .retryable(let reason, _), .permanent(let reason), .invalid(let reason), .tooLarge(let reason):
                    s.seconds[doneSecond].rejected += spans
                    s.requestsFailed += 1
                    s.spansRejected += spans
                    s.errors[Self.shorten(reason), default: 0] += 1
                    s.failedSeqs.insert(seq)
                }
            }
        }
    }

    /// The body of request `index` in pass `pass`, as sent: protobuf, or OTLP/JSON with `json`.
    func body(_ index: Int, pass: Int) throws -> [UInt8] {
        let protobuf = recording.request(index, pass: pass)
        return options.json ? try OTLPJSON.jsonFromProtobuf(protobuf) : protobuf
    }

    static func shorten(_ reason: String) -> String {
        String(reason.prefix(120))
    }

    private func sample(_ second: Int) -> LoadtestSample {
        stats.withLock { s in
            s.ensure(second)
            let b = s.seconds[second]
            let sorted = b.latencies.sorted()
            return LoadtestSample(
                second: second, sentSpans: b.sent, ackedSpans: b.acked, rejectedSpans: b.rejected,
                latencyP50Ms: percentile(sorted, 50), latencyP99Ms: percentile(sorted, 99), latencyMaxMs: sorted.last ?? 0)
        }
    }

    private func report(duration: Double, startDate: Date) -> (LoadtestReport, SentLog) {
        stats.withLock { s in
            let samples = s.seconds.indices.map { i -> LoadtestSample in
                let sorted = s.seconds[i].latencies.sorted()
                return LoadtestSample(
                    second: i, sentSpans: s.seconds[i].sent, ackedSpans: s.seconds[i].acked, rejectedSpans: s.seconds[i].rejected,
                    latencyP50Ms: percentile(sorted, 50), latencyP99Ms: percentile(sorted, 99), latencyMaxMs: sorted.last ?? 0)
            }
            let all = s.latencies.sorted()
            let latency: [String: Double] = [
                "p50": percentile(all, 50), "p90": percentile(all, 90), "p99": percentile(all, 99),
                "p999": percentile(all, 99.9), "max": all.last ?? 0,
                "mean": all.isEmpty ? 0 : all.reduce(0, +) / Double(all.count),
            ]
            let report = LoadtestReport(
                target: options.target.description, transport: options.target.scheme, gzip: options.gzip,
                connections: options.connections, targetSpansPerSecond: options.spansPerSecond, recording: [],
                startedAt: startDate, durationSeconds: duration, requestsSent: s.requestsSent, requestsAcked: s.requestsAcked,
                requestsFailed: s.requestsFailed, spansSent: s.spansSent, spansAcked: s.spansAcked,
                spansRejected: s.spansRejected, bytesSent: s.bytesSent, latencyMs: latency, samples: samples,
                errors: s.errors, verification: nil, notes: [])
            return (report, SentLog(taken: nextSeq.load(ordering: .relaxed), skipped: s.skipped, failed: s.failedSeqs))
        }
    }
}

extension Replayer.Stats {
    mutating func ensure(_ second: Int) {
        while seconds.count <= second { seconds.append(Replayer.Second()) }
    }
}
