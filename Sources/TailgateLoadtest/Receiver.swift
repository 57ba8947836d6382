import Synchronization
import TailgateIngest
import TailgateWire

/// A downstream collector for load tests: accepts OTLP/gRPC, and remembers every span it received by trace
/// (count and span IDs), to verify what a proxy forwarded.
public final class RecordingReceiver: TraceIngestHandler, Sendable {
    final class Shard: Sendable {
        let traces = Mutex<[TraceID: [UInt64]]>([:])
    }

    private let shards: [Shard] = (0..<16).map { _ in Shard() }
    private let spanCount = Atomic<Int>(0)
    private let requestCount = Atomic<Int>(0)
    public let server: GRPCIngestServer

    public init(host: String, port: Int) {
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

    public func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
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

    public func refused(transport: IngestTransport, reason: RefusalReason) {}

    public var spansReceived: Int { spanCount.load(ordering: .relaxed) }
    public var requestsReceived: Int { requestCount.load(ordering: .relaxed) }

    /// Span IDs received per trace.
    public func traces() -> [TraceID: [UInt64]] {
        var out: [TraceID: [UInt64]] = [:]
        for shard in shards { shard.traces.withLock { out.merge($0) { a, _ in a } } }
        return out
    }
}
