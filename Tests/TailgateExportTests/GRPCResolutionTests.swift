import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import TailgateIngest
import TailgateTestSupport
import TailgateWire
import Testing
@testable import TailgateExport

/// A name that resolves to whatever the test says, counting how often it is resolved.
struct TestName: ResolvableTarget {}

final class TestResolver: NameResolverFactory, Sendable {
    typealias Target = TestName
    let ports: Mutex<[Int]>
    let resolutions = Atomic<Int>(0)
    init(ports: [Int]) { self.ports = Mutex(ports) }

    struct Names: AsyncSequence, Sendable {
        let resolver: TestResolver
        struct AsyncIterator: AsyncIteratorProtocol {
            let resolver: TestResolver
            mutating func next() async throws -> NameResolutionResult? {
                resolver.resolutions.add(1, ordering: .relaxed)
                // As the transport's DNS resolver answers: one endpoint holding every address of the name.
                let addresses = resolver.ports.withLock { $0 }.map { SocketAddress.ipv4(host: "127.0.0.1", port: $0) }
                return NameResolutionResult(endpoints: [Endpoint(addresses: addresses)], serviceConfig: nil)
            }
        }
        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(resolver: resolver) }
    }

    func resolver(for target: TestName) -> NameResolver {
        // Pull: asked again whenever the channel needs addresses (first connect, reconnect).
        NameResolver(names: RPCAsyncSequence(wrapping: Names(resolver: self)), updateMode: .pull)
    }
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

func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

@Suite(.serialized) struct GRPCResolutionTests {
    func receiver(port: Int, handler: CountingHandler) async throws -> (GRPCIngestServer, Task<Void, any Error>) {
        let server = GRPCIngestServer(host: "127.0.0.1", port: port, limits: IngestLimits(), budget: nil, handler: handler, serving: { true })
        let task = Task { try await server.serve() }
        try await server.waitUntilListening()
        return (server, task)
    }

    /// Sends until delivered (bounded): the connection may need a moment to find a working address.
    func deliver(_ downstream: GRPCDownstream) async -> Bool {
        let request = exportRequest(spans: [TestSpan(trace: tid(1), span: 1)])
        for _ in 0..<100 {
            if case .delivered = await downstream.send(request) { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    @Test func aNameWithSeveralAddressesReachesTheOneThatAnswers() async throws {
        let dead = freePort(), live = freePort()
        let names = TestResolver(ports: [dead, live])
        var registry = NameResolverRegistry()
        registry.registerFactory(names)
        let downstream = try GRPCDownstream(host: "collector.test", port: 4317, gzip: false, timeout: .seconds(5),
                                            reconnectBackoff: (.milliseconds(20), .milliseconds(200)),
                                            resolution: (TestName(), registry))
        let connections = Task { try await downstream.run() }
        defer { downstream.close(); connections.cancel() }
        let handler = CountingHandler()
        let (server, task) = try await receiver(port: live, handler: handler)
        defer { server.beginGracefulShutdown(); task.cancel() }
        #expect(await deliver(downstream))
        #expect(handler.requests.load(ordering: .relaxed) >= 1)  // through the second address: the first refuses
        #expect(names.resolutions.load(ordering: .relaxed) >= 1)  // the name went through the injected resolver
    }
}
