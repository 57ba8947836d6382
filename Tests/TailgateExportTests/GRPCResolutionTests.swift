import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TailgateIngest
import TailgateTestSupport
import TailgateWire
import Testing
@testable import TailgateExport

/// A name that resolves to whatever the test says (IPv4 loopback addresses on the given ports), counting how often it
/// is resolved.
final class TestResolver: Resolver, Sendable {
    let ports: Mutex<[Int]>
    let resolutions = Atomic<Int>(0)
    let eventLoop: any EventLoop
    init(ports: [Int], eventLoop: any EventLoop) {
        self.ports = Mutex(ports)
        self.eventLoop = eventLoop
    }

    func initiateAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        resolutions.add(1, ordering: .relaxed)
        // As DNS answers a name with several addresses: every one of them, in order.
        let addresses = ports.withLock { $0 }.compactMap { try? SocketAddress(ipAddress: "127.0.0.1", port: $0) }
        return eventLoop.makeSucceededFuture(addresses)
    }

    func initiateAAAAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        eventLoop.makeSucceededFuture([])
    }

    func cancelQueries() {}
}

/// Sends until delivered, at most 100 times 50 ms apart: a connection may need a moment to find a working address or
/// a downstream that is coming up.
func deliver(_ request: [UInt8], to downstream: GRPCDownstream) async -> Bool {
    for _ in 0..<100 {
        if await downstream.send(request) == .delivered { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return false
}

/// Counts the spans it is sent.
final class CountingHandler: TraceIngestHandler {
    let requests = Atomic<Int>(0)
    func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
        requests.add(1, ordering: .relaxed)
        return .accepted
    }
    func refused(transport: IngestTransport, reason: RefusalReason) {}
}

/// A loopback port free a moment ago (bound, read, closed).
func freePort() -> Int {
    let channel = try! ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
    defer { try? channel.close().wait() }
    return channel.localAddress!.port!
}

@Suite(.serialized) struct GRPCResolutionTests {
    func receiver(port: Int, handler: CountingHandler) async throws -> (GRPCIngestServer, Task<Void, any Error>) {
        let server = GRPCIngestServer(host: "127.0.0.1", port: port, limits: IngestLimits(), budget: nil, handler: handler, serving: { true })
        let task = Task { try await server.serve() }
        try await server.waitUntilListening()
        return (server, task)
    }


    @Test func aNameWithSeveralAddressesReachesTheOneThatAnswers() async throws {
        let dead = freePort(), live = freePort()
        let names = Mutex<[TestResolver]>([])
        let downstream = try GRPCDownstream(host: "collector.test", port: 4317, gzip: false, timeout: .seconds(5),
                                            reconnectBackoff: (.milliseconds(20), .milliseconds(200)),
                                            resolver: { loop in
                                                let r = TestResolver(ports: [dead, live], eventLoop: loop)
                                                names.withLock { $0.append(r) }
                                                return r
                                            })
        let connections = Task { try await downstream.run() }
        defer { downstream.close(); connections.cancel() }
        let handler = CountingHandler()
        let (server, task) = try await receiver(port: live, handler: handler)
        defer { server.beginGracefulShutdown(); task.cancel() }
        #expect(await deliver(exportRequest(spans: [TestSpan(trace: tid(1), span: 1)]), to: downstream))
        #expect(handler.requests.load(ordering: .relaxed) >= 1)  // through the second address: the first refuses
        // The name went through the injected resolver.
        #expect(names.withLock { $0.reduce(0) { $0 + $1.resolutions.load(ordering: .relaxed) } } >= 1)
    }
}
