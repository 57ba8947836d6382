import Foundation
import NIOCore
import NIOHTTP2
import NIOPosix
import Synchronization
import TailgateIngest
import TailgateTestSupport
import TailgateWire
import Testing
@testable import TailgateExport

/// Answers every call as told, and keeps the request bytes it was given.
final class ScriptedHandler: TraceIngestHandler {
    let answer: Mutex<IngestResult>
    let bodies = Mutex<[[UInt8]]>([])
    init(_ answer: IngestResult = .accepted) { self.answer = Mutex(answer) }
    func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
        bodies.withLock { $0.append(Array(body)) }
        return answer.withLock { $0 }
    }
    func refused(transport: IngestTransport, reason: RefusalReason) {}
}

/// Swallows everything: with no HTTP/2 handler before it, not even the connection preface is answered.
final class SilentHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    final class Count: Sendable { let value = Atomic<Int>(0) }
    let accepted: Count
    init(_ accepted: Count) { self.accepted = accepted }
    func channelActive(context: ChannelHandlerContext) { accepted.value.add(1, ordering: .relaxed) }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// The gRPC downstream on real sockets, against Tailgate's own gRPC receiver (`GRPCIngestServer`): what it sends
/// arrives as sent, and every way a call can end is classified as the forwarder needs.
@Suite(.serialized) struct GRPCDownstreamTests {
    let request = exportRequest(spans: (1...20).map { TestSpan(trace: tid(7), span: UInt64($0), strings: [("k", "value \($0)")]) })

    func receiver(port: Int, _ handler: any TraceIngestHandler) async throws -> (GRPCIngestServer, Task<Void, any Error>) {
        let server = GRPCIngestServer(host: "127.0.0.1", port: port, limits: IngestLimits(), budget: nil, handler: handler, serving: { true })
        let task = Task { try await server.serve() }
        try await server.waitUntilListening()
        return (server, task)
    }

    func client(port: Int, gzip: Bool = true, level: Int = 1, timeout: Duration = .seconds(5)) throws -> (GRPCDownstream, Task<Void, any Error>) {
        let downstream = try GRPCDownstream(host: "127.0.0.1", port: port, gzip: gzip, compressionLevel: level, timeout: timeout,
                                            reconnectBackoff: (.milliseconds(20), .milliseconds(100)))
        return (downstream, Task { try await downstream.run() })
    }

    @Test(arguments: [(false, 1), (true, 1), (true, 9)])
    func theReceiverGetsTheBytesSent(gzip: Bool, level: Int) async throws {
        let port = freePort()
        let handler = ScriptedHandler()
        let (server, serving) = try await receiver(port: port, handler)
        defer { server.beginGracefulShutdown(); serving.cancel() }
        let (downstream, running) = try client(port: port, gzip: gzip, level: level)
        defer { downstream.close(); running.cancel() }
        for _ in 0..<3 { #expect(await downstream.send(request) == .delivered) }
        #expect(handler.bodies.withLock { $0 } == [request, request, request])
    }

    @Test func everyAnswerIsClassified() async throws {
        let port = freePort()
        let handler = ScriptedHandler()
        let (server, serving) = try await receiver(port: port, handler)
        defer { server.beginGracefulShutdown(); serving.cancel() }
        let (downstream, running) = try client(port: port)
        defer { downstream.close(); running.cancel() }
        let cases: [(IngestResult, (SendOutcome) -> Bool)] = [
            (.partiallyAccepted(rejectedSpans: 3, message: "3 bad ids"), { $0 == .partial(rejected: 3, message: "3 bad ids") }),
            (.invalid("no trace_id"), { if case .invalid(let r) = $0 { r.contains("no trace_id") } else { false } }),
            (.overloaded(retryAfterSeconds: 1, message: "busy"), { if case .retryable(let r, _) = $0 { r.contains("busy") } else { false } }),
            (.accepted, { $0 == .delivered }),
        ]
        for (answer, check) in cases {
            handler.answer.withLock { $0 = answer }
            let outcome = await downstream.send(request)
            #expect(check(outcome), "\(answer) → \(outcome)")
        }
        // A method the server does not serve: UNIMPLEMENTED, not worth retrying.
        let metrics = await downstream.send(request, signal: .metrics, json: false)
        guard case .permanent(let reason) = metrics else { Issue.record("metrics → \(metrics)"); return }
        #expect(reason.hasPrefix("unimplemented"))
    }

    /// A peer that accepts the connection and then says nothing (dead, or a middlebox that dropped it): the call
    /// ends at its deadline, and the connection is given up, so the next call dials again.
    @Test func aServerThatNeverAnswersTimesOut() async throws {
        let accepted = SilentHandler.Count()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(SilentHandler(accepted))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        let (downstream, running) = try client(port: server.localAddress!.port!, timeout: .milliseconds(300))
        defer { downstream.close(); running.cancel() }
        let started = ContinuousClock.now
        let outcome = await downstream.send(request)
        guard case .retryable(let reason, _) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason.hasPrefix("deadline exceeded"))
        #expect(ContinuousClock.now - started < .seconds(5))
        _ = await downstream.send(request)
        #expect(accepted.value.load(ordering: .relaxed) == 2)
    }

    @Test func aDownstreamThatComesUpLaterIsReached() async throws {
        let port = freePort()
        let (downstream, running) = try client(port: port)
        defer { downstream.close(); running.cancel() }
        // Nothing listens: refused at once, retryable, naming the address.
        let refused = await downstream.send(request)
        guard case .retryable(let reason, _) = refused else { Issue.record("\(refused)"); return }
        #expect(reason.contains("127.0.0.1:\(port)"))
        let handler = ScriptedHandler()
        let (server, serving) = try await receiver(port: port, handler)
        defer { server.beginGracefulShutdown(); serving.cancel() }
        #expect(await deliver(request, to: downstream))
    }

    @Test func aRestartedDownstreamIsReachedOnANewConnection() async throws {
        let port = freePort()
        let first = ScriptedHandler()
        let (server, serving) = try await receiver(port: port, first)
        let (downstream, running) = try client(port: port)
        defer { downstream.close(); running.cancel() }
        #expect(await downstream.send(request) == .delivered)
        server.beginGracefulShutdown()  // GOAWAY, then the connection closes
        _ = try? await serving.value
        let second = ScriptedHandler()
        let (again, servingAgain) = try await receiver(port: port, second)
        defer { again.beginGracefulShutdown(); servingAgain.cancel() }
        #expect(await deliver(request, to: downstream))
        #expect(first.bodies.withLock { $0.count } == 1)
        #expect(second.bodies.withLock { $0.count } >= 1)
    }

    @Test(arguments: [("plain", "plain"), ("a%20b", "a b"), ("caf%C3%A9", "café"), ("100%", "100%"), ("%zz", "%zz")])
    func grpcMessagesArePercentDecoded(encoded: String, text: String) {
        #expect(GRPCClientConnection.percentDecoded(encoded) == text)
    }

    @Test(arguments: [(400, GRPCCode.internal), (401, .unauthenticated), (404, .unimplemented),
                      (429, .unavailable), (503, .unavailable)])
    func httpStatusesWithoutGRPCStatusAreMapped(status: Int, code: GRPCCode) {
        #expect(GRPCCode.forHTTP(status) == code)
    }
}
