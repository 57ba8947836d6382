import Synchronization
import TailgatePolicies
package import TailgateIngest
package import TailgateWire
import TailgateConfig

/// Faults a load-test receiver injects, to prove that a proxy loses nothing while its downstream misbehaves.
package struct ReceiverFaults: Sendable, Equatable {
    /// This share of requests (spread evenly, deterministic) is answered UNAVAILABLE and not recorded.
    package var failPercent: Double = 0
    /// Windows (start after the receiver started, length) in which every request is answered UNAVAILABLE: the
    /// downstream "goes away" (its port stays open; the proxy sees the same retryable failure as from a restarting
    /// collector behind a load balancer).
    package var outages: [(start: Duration, length: Duration)] = []

    package init(failPercent: Double = 0, outages: [(start: Duration, length: Duration)] = []) {
        self.failPercent = failPercent
        self.outages = outages
    }

    package static func == (a: Self, b: Self) -> Bool {
        a.failPercent == b.failPercent && a.outages.map(\.start) == b.outages.map(\.start) && a.outages.map(\.length) == b.outages.map(\.length)
    }

    /// Parses `LENGTH@START`, e.g. `30s@60s`.
    package static func outage(_ text: String) -> (start: Duration, length: Duration)? {
        let parts = text.split(separator: "@")
        guard parts.count == 2, let length = parseDuration(String(parts[0])), let start = parseDuration(String(parts[1])) else { return nil }
        return (start, length)
    }
}

/// A downstream collector for load tests: accepts OTLP/gRPC, and remembers every span it received by trace
/// (count and span IDs), to verify what a proxy forwarded. Optionally injects faults (`ReceiverFaults`).
package final class RecordingReceiver: TraceIngestHandler, Sendable {
    final class Shard: Sendable {
        let traces = Mutex<[TraceID: [UInt64]]>([:])
    }

    private let shards: [Shard] = (0..<16).map { _ in Shard() }
    private let spanCount = Atomic<Int>(0)
    private let requestCount = Atomic<Int>(0)
    private let attempts = Atomic<Int>(0)
    private let failedCount = Atomic<Int>(0)
    private let faults: ReceiverFaults
    private let started = ContinuousClock.now
    package let server: GRPCIngestServer

    package init(host: String, port: Int, faults: ReceiverFaults = ReceiverFaults()) {
        self.faults = faults
        let box = HandlerBox()
        server = GRPCIngestServer(host: host, port: port, maxRequestBytes: 64 << 20, handler: box)
        box.target.withLock { $0 = self }
    }

    /// Forwards to the receiver once it exists (the server needs its handler at construction).
    final class HandlerBox: TraceIngestHandler, Sendable {
        let target = Mutex<RecordingReceiver?>(nil)
        func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
            target.withLock { $0 }?.ingest(body, transport: transport) ?? .overloaded(retryAfterSeconds: 1, message: "starting")
        }
        func refused(transport: IngestTransport, reason: RefusalReason) {}
    }

    package func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
        if let fault = injectedFault() {
            failedCount.add(1, ordering: .relaxed)
            return .overloaded(retryAfterSeconds: 0, message: fault)
        }
        var scanned = ScannedRequest()
        do { try OTLPScanner().scan(body, into: &scanned) } catch { return .invalid(error.description) }
        var byShard: [[SpanFacts]] = Array(repeating: [], count: shards.count)
        for span in scanned.spans { byShard[Int(span.traceID.lo & 15)].append(span) }
        for (i, spans) in byShard.enumerated() where !spans.isEmpty {
            shards[i].traces.withLock { traces in
                for span in spans { traces[span.traceID, default: []].append(span.spanID) }
            }
        }
        spanCount.add(scanned.spans.count, ordering: .relaxed)
        requestCount.add(1, ordering: .relaxed)
        return .accepted
    }

    package func refused(transport: IngestTransport, reason: RefusalReason) {}

    private func injectedFault() -> String? {
        let elapsed = ContinuousClock.now - started
        if faults.outages.contains(where: { elapsed >= $0.start && elapsed < $0.start + $0.length }) {
            return "injected outage"
        }
        guard faults.failPercent > 0 else { return nil }
        // Evenly spread: request n fails when floor(n·p) advances.
        let n = Double(attempts.add(1, ordering: .relaxed).newValue)
        let p = faults.failPercent / 100
        return (n * p).rounded(.down) > ((n - 1) * p).rounded(.down) ? "injected failure" : nil
    }

    /// Requests answered with an injected failure.
    package var requestsFailed: Int { failedCount.load(ordering: .relaxed) }

    package var spansReceived: Int { spanCount.load(ordering: .relaxed) }
    package var requestsReceived: Int { requestCount.load(ordering: .relaxed) }

    /// Span IDs received per trace.
    package func traces() -> [TraceID: [UInt64]] {
        var out: [TraceID: [UInt64]] = [:]
        for shard in shards { shard.traces.withLock { out.merge($0) { a, _ in a } } }
        return out
    }
}
