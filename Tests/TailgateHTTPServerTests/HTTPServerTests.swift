import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing
import TailgateHTTPServer

/// A budget of `limit` bytes that records what was taken and given back.
final class TestBudget: HTTPBodyBudget {
    let limit: Int
    let used = Mutex(0)
    let acquired = Mutex<[Int]>([])
    init(limit: Int) { self.limit = limit }
    func tryAcquire(_ bytes: Int) -> Bool {
        used.withLock { used in
            guard used + bytes <= limit else { return false }
            used += bytes
            acquired.withLock { $0.append(bytes) }
            return true
        }
    }
    func release(_ bytes: Int) { used.withLock { $0 -= bytes } }
}

/// Refusals the server reported, and requests its route saw.
final class Log: Sendable {
    let refusals = Mutex<[HTTPServer.Refusal]>([])
    let requests = Mutex<[String]>([])
}

struct Reply {
    var status: Int
    var text: String
    var headers: [AnyHashable: Any]
}

func withServer(_ options: HTTPServer.Options, log: Log, _ body: (Int) async throws -> Void) async throws {
    let server = HTTPServer(
        host: "127.0.0.1", port: 0, options: options, logger: Logger(label: "test"),
        refused: { _, reason in log.refusals.withLock { $0.append(reason) }; return nil },
        route: { request in
            log.requests.withLock { $0.append("\(request.head.method) \(request.head.uri) \(request.body.readableBytes)") }
            return HTTPResponse(status: .ok, text: "got \(request.body.readableBytes) bytes\n")
        })
    let port = try await server.start()
    do { try await body(port) } catch { await server.stop(); throw error }
    await server.stop()
}

func send(_ port: Int, method: String = "POST", path: String = "/", body: [UInt8]) async throws -> Reply {
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
    request.httpMethod = method
    if method == "POST" { request.httpBody = Data(body) }
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = response as! HTTPURLResponse
    return Reply(status: http.statusCode, text: String(decoding: data, as: UTF8.self), headers: http.allHeaderFields)
}

@Suite(.serialized) struct HTTPServerTests {
    @Test func routesCompleteRequestsAndAnswersWithContentLength() async throws {
        let log = Log()
        try await withServer(.init(maxBodyBytes: 1024), log: log) { port in
            let post = try await send(port, path: "/a?x=1", body: Array(repeating: 0x41, count: 100))
            #expect(post.status == 200)
            #expect(post.text == "got 100 bytes\n")
            #expect((post.headers["Content-Length"] as? String) == "14")
            let get = try await send(port, method: "GET", path: "/b", body: [])
            #expect(get.status == 200)
        }
        #expect(log.requests.withLock { $0 } == ["POST /a?x=1 100", "GET /b 0"])
        #expect(log.refusals.withLock { $0 }.isEmpty)
    }

    @Test func bodiesOverTheLimitAre413AndNeverReachTheRoute() async throws {
        let log = Log()
        try await withServer(.init(maxBodyBytes: 1024), log: log) { port in
            let big = try await send(port, body: Array(repeating: 0x41, count: 4096))
            #expect(big.status == 413)
            #expect(big.text == "request body exceeds the limit of 1024 bytes\n")
            let small = try await send(port, body: [1, 2, 3])
            #expect(small.status == 200)
        }
        #expect(log.requests.withLock { $0 } == ["POST / 3"])
    }

    @Test func theBudgetIsTakenBeforeTheBodyAndGivenBack() async throws {
        let log = Log()
        let budget = TestBudget(limit: 1000)
        var options = HTTPServer.Options(maxBodyBytes: 64 << 10)
        options.budget = budget
        try await withServer(options, log: log) { port in
            let fits = try await send(port, body: Array(repeating: 0x41, count: 600))
            #expect(fits.status == 200)
            let over = try await send(port, body: Array(repeating: 0x41, count: 2000))
            #expect(over.status == 429)
            #expect((over.headers["Retry-After"] as? String) == "1")
            #expect(over.text == "too many request bytes in flight; retry later\n")
        }
        #expect(budget.acquired.withLock { $0 } == [600])
        #expect(budget.used.withLock { $0 } == 0)
        #expect(log.refusals.withLock { $0 } == [.inflightLimit])
        #expect(log.requests.withLock { $0 } == ["POST / 600"])
    }

    @Test func aConnectionWithoutARequestHeadIsClosedAtTheDeadline() async throws {
        let log = Log()
        var options = HTTPServer.Options(maxBodyBytes: 1024)
        options.readHeaderTimeout = .milliseconds(200)
        try await withServer(options, log: log) { port in
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).get()
            let started = ContinuousClock.now
            try await channel.closeFuture.get()
            #expect(ContinuousClock.now - started < .seconds(5))
        }
        #expect(log.refusals.withLock { $0 } == [.timeout])
    }

    @Test func aBindFailureNamesTheAddress() async throws {
        let log = Log()
        try await withServer(.init(maxBodyBytes: 1024), log: log) { port in
            let second = HTTPServer(host: "127.0.0.1", port: port, maxBodyBytes: 1024, logger: Logger(label: "test")) { _ in
                HTTPResponse(status: .ok)
            }
            await #expect {
                try await second.start()
            } throws: { error in
                (error as? HTTPServerBindError)?.address == "127.0.0.1:\(port)"
            }
        }
    }
}
