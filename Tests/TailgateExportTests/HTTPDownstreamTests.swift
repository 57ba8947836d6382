#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
// The socket structs below are declared by the C headers NIO's shim module includes too; with NIO in this test target
// their fields are found through that module.
#if canImport(CNIOLinux)
import CNIOLinux
#endif
import Foundation
import Synchronization
import Testing
import TailgateWire
@testable import TailgateExport

/// A blocking HTTP/1.1 server on 127.0.0.1 (plain sockets, a thread per connection) answering from a script and
/// recording what it was sent.
final class ScriptedHTTPServer: @unchecked Sendable {
    struct Received: Sendable {
        var method: String
        var path: String
        var headers: [(String, String)]
        var body: [UInt8]

        func header(_ name: String) -> [String] {
            headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1)
        }
    }

    struct Reply: Sendable {
        var status: Int
        var headers: [(String, String)] = []
        var body: [UInt8] = []
        var delay: Duration? = nil
        /// Send the head announcing `body`, then only `partialBody` bytes of it, then stall.
        var partialBody: Int? = nil
        /// Never answer.
        var hang = false
        var close = false
    }

    let port: Int
    let received = Mutex<[Received]>([])
    let connections = Atomic<Int>(0)
    /// The most requests answered at once.
    let maxInFlight = Atomic<Int>(0)
    private let inFlight = Atomic<Int>(0)
    private let listener: Int32
    private let clients = Mutex<[Int32]>([])
    private let stopped = Atomic<Bool>(false)
    private let script: @Sendable (Received) -> Reply

    init(_ script: @escaping @Sendable (Received) -> Reply) throws {
        self.script = script
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    func stop() {
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        _ = shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in clients.withLock({ $0 }) { _ = shutdown(fd, Int32(SHUT_RDWR)) }
    }

    var requests: [Received] { received.withLock { $0 } }

    private func acceptLoop() {
        while !stopped.load(ordering: .sequentiallyConsistent) {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { if errno == EINTR { continue } else { return } }
            connections.add(1, ordering: .sequentiallyConsistent)
            clients.withLock { $0.append(fd) }
            Thread.detachNewThread { [self] in serve(fd) }
        }
    }

    private func serve(_ fd: Int32) {
        defer {
            clients.withLock { $0.removeAll { $0 == fd } }
            close(fd)
        }
        var buffer: [UInt8] = []
        while true {
            guard let headEnd = readUntilHeadEnd(fd, &buffer) else { return }
            let head = String(decoding: buffer[..<headEnd], as: UTF8.self)
            buffer.removeFirst(headEnd + 4)
            var lines = head.components(separatedBy: "\r\n")
            let requestLine = lines.removeFirst().split(separator: " ")
            guard requestLine.count == 3 else { return }
            let headers: [(String, String)] = lines.compactMap { line in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) } ?? 0
            while buffer.count < length {
                guard let chunk = readSome(fd) else { return }
                buffer += chunk
            }
            let request = Received(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers,
                                   body: Array(buffer[..<length]))
            buffer.removeFirst(length)
            received.withLock { $0.append(request) }
            let reply = script(request)
            let now = inFlight.add(1, ordering: .sequentiallyConsistent).newValue
            maxInFlight.max(now, ordering: .sequentiallyConsistent)
            if let delay = reply.delay { Thread.sleep(forTimeInterval: Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18) }
            inFlight.subtract(1, ordering: .sequentiallyConsistent)
            if reply.hang {
                while readSome(fd) != nil {}
                return
            }
            var response = "HTTP/1.1 \(reply.status) Status\r\nContent-Length: \(reply.body.count)\r\n"
            for (name, value) in reply.headers { response += "\(name): \(value)\r\n" }
            if reply.close { response += "Connection: close\r\n" }
            response += "\r\n"
            let body = reply.partialBody.map { Array(reply.body.prefix($0)) } ?? reply.body
            guard write(fd, Array(response.utf8) + body) else { return }
            if reply.partialBody != nil {
                while readSome(fd) != nil {}
                return
            }
            if reply.close { return }
        }
    }

    private func readUntilHeadEnd(_ fd: Int32, _ buffer: inout [UInt8]) -> Int? {
        while true {
            if buffer.count >= 4 {
                for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
                    return i
                }
            }
            guard let chunk = readSome(fd) else { return nil }
            buffer += chunk
        }
    }

    private func readSome(_ fd: Int32) -> [UInt8]? {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return Array(chunk[..<n])
    }

    private func write(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }
}

/// A port nothing listens on (bound, then released).
func closedPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

@Suite(.serialized) struct HTTPDownstreamTests {
    /// A generous timeout for exchanges that must succeed: the whole suite runs in parallel on 2 cores (a first
    /// connection once took over 5 s there); the tests about timeouts pass their own.
    func downstream(_ server: ScriptedHTTPServer, host: String = "127.0.0.1", path: String = "/v1/traces", gzip: Bool = false,
                    timeout: Duration = .seconds(30), headers: [String: String] = [:]) -> HTTPDownstream {
        HTTPDownstream(host: host, port: server.port, path: path, gzip: gzip, timeout: timeout, headers: headers)
    }

    @Test func postsEachSignalToItsPathWithTheHeaders() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200) }
        defer { server.stop() }
        let d = downstream(server, path: "/otlp/v1/traces", headers: ["X-Scope-OrgID": "tenant-a", "Authorization": "Bearer t"])
        defer { d.close() }
        #expect(d.target == "http://127.0.0.1:\(server.port)/otlp/v1/traces")
        #expect(d.acceptsJSON)
        #expect(await d.send([1, 2, 3]) == .delivered)
        #expect(await d.send([4], signal: .metrics, json: false) == .delivered)
        #expect(await d.send(Array(#"{"resourceLogs":[]}"#.utf8), signal: .logs, json: true) == .delivered)
        let requests = server.requests
        #expect(requests.map(\.path) == ["/otlp/v1/traces", "/otlp/v1/metrics", "/otlp/v1/logs"])
        #expect(requests.map(\.method) == ["POST", "POST", "POST"])
        #expect(requests.map(\.body) == [[1, 2, 3], [4], Array(#"{"resourceLogs":[]}"#.utf8)])
        #expect(requests.map { $0.header("Content-Type") } == [["application/x-protobuf"], ["application/x-protobuf"], ["application/json"]])
        for r in requests {
            #expect(r.header("Host") == ["127.0.0.1:\(server.port)"])
            #expect(r.header("User-Agent") == ["tailgate"])
            #expect(r.header("X-Scope-OrgID") == ["tenant-a"])
            #expect(r.header("Authorization") == ["Bearer t"])
            #expect(r.header("Content-Length") == [String(r.body.count)])
            #expect(r.header("Content-Encoding").isEmpty)
        }
        // Keep-alive: one connection for the three requests.
        #expect(server.connections.load(ordering: .sequentiallyConsistent) == 1)
    }

    @Test func gzipsTheBody() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200) }
        defer { server.stop() }
        let d = downstream(server, gzip: true)
        defer { d.close() }
        let payload = [UInt8](repeating: 7, count: 100_000)
        #expect(await d.send(payload) == .delivered)
        let r = try #require(server.requests.first)
        #expect(r.header("Content-Encoding") == ["gzip"])
        #expect(r.body.count < 10_000)
        #expect(try Gzip.decompress(r.body, limit: 1 << 20) == payload)
    }

    @Test func headersMayReplaceTheDefaults() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200) }
        defer { server.stop() }
        let d = downstream(server, headers: ["User-Agent": "custom/1"])
        defer { d.close() }
        #expect(await d.send([1]) == .delivered)
        #expect(server.requests.first?.header("User-Agent") == ["custom/1"])
    }

    @Test(arguments: [
        (200, [(String, String)](), SendOutcome.delivered),
        (204, [], .delivered),
        (503, [("Retry-After", "7")], .retryable(reason: "HTTP 503", retryAfter: .seconds(7))),
        (429, [("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT")], .retryable(reason: "HTTP 429", retryAfter: .seconds(0))),
        (502, [("Retry-After", "soon")], .retryable(reason: "HTTP 502", retryAfter: nil)),
        (504, [], .retryable(reason: "HTTP 504", retryAfter: nil)),
        (413, [], .tooLarge(reason: "HTTP 413")),
        (400, [], .invalid(reason: "HTTP 400")),
        (401, [], .permanent(reason: "HTTP 401")),
        (404, [], .permanent(reason: "HTTP 404")),
        (500, [], .permanent(reason: "HTTP 500")),
        (301, [("Location", "http://127.0.0.1:1/elsewhere")], .permanent(reason: "HTTP 301")),  // not followed
        (307, [("Location", "/elsewhere")], .permanent(reason: "HTTP 307")),
    ])
    func statusesMapToOutcomes(status: Int, headers: [(String, String)], expected: SendOutcome) async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: status, headers: headers, body: status == 204 ? [] : Array("a body".utf8)) }
        defer { server.stop() }
        let d = downstream(server)
        defer { d.close() }
        #expect(await d.send([1]) == expected)
        #expect(await d.send([1]) == expected)
        #expect(server.requests.count == 2)
        #expect(server.connections.load(ordering: .sequentiallyConsistent) == 1)
    }

    @Test func aFutureHTTPDateIsHonoured() async throws {
        let server = try ScriptedHTTPServer { _ in
            let date = Date(timeIntervalSince1970: Double(wallClockSeconds() + 30))
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
            return .init(status: 503, headers: [("Retry-After", formatter.string(from: date))])
        }
        defer { server.stop() }
        let d = downstream(server)
        defer { d.close() }
        guard case .retryable(_, let retryAfter?) = await d.send([1]) else { Issue.record("no delay"); return }
        #expect(retryAfter >= .seconds(28) && retryAfter <= .seconds(31))
    }

    @Test func aClosedPortIsRetryable() async throws {
        let port = closedPort()
        let d = HTTPDownstream(host: "127.0.0.1", port: port, path: "/v1/traces", gzip: false, timeout: .seconds(5))
        defer { d.close() }
        let started = ContinuousClock.now
        guard case .retryable(let reason, nil) = await d.send([1]) else { Issue.record("not retryable"); return }
        #expect(reason.hasPrefix("cannot connect to http://127.0.0.1:\(port)/v1/traces: "), "\(reason)")
        #expect(ContinuousClock.now - started < .seconds(2))  // at once, not after the connect timeout
    }

    @Test func aHostNameIsResolved() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200) }
        defer { server.stop() }
        let d = downstream(server, host: "localhost")
        defer { d.close() }
        #expect(d.target == "http://localhost:\(server.port)/v1/traces")
        #expect(await d.send([1]) == .delivered)
        #expect(server.requests.first?.header("Host") == ["localhost:\(server.port)"])
    }

    @Test func anUnknownHostIsRetryable() async throws {
        let d = HTTPDownstream(host: "no-such-host.invalid", port: 4318, path: "/v1/traces", gzip: false, timeout: .seconds(5))
        defer { d.close() }
        guard case .retryable(let reason, nil) = await d.send([1]) else { Issue.record("not retryable"); return }
        #expect(reason.hasPrefix("cannot connect to "), "\(reason)")
    }

    @Test func noAnswerTimesOut() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200, hang: true) }
        defer { server.stop() }
        let d = downstream(server, timeout: .milliseconds(300))
        defer { d.close() }
        let started = ContinuousClock.now
        guard case .retryable(let reason, nil) = await d.send([1]) else { Issue.record("not retryable"); return }
        #expect(reason.hasPrefix("request to "), "\(reason)")
        #expect(ContinuousClock.now - started < .seconds(3))
    }

    @Test func aStalledBodyTimesOut() async throws {
        let server = try ScriptedHTTPServer { _ in
            .init(status: 200, body: [UInt8](repeating: 1, count: 1000), partialBody: 10)
        }
        defer { server.stop() }
        let d = downstream(server, timeout: .milliseconds(300))
        defer { d.close() }
        let started = ContinuousClock.now
        guard case .retryable = await d.send([1]) else { Issue.record("not retryable"); return }
        #expect(ContinuousClock.now - started < .seconds(3))
    }

    @Test func connectionClosedByTheServerIsReplaced() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200, close: true) }
        defer { server.stop() }
        let d = downstream(server)
        defer { d.close() }
        for _ in 0..<3 { #expect(await d.send([1]) == .delivered) }
        #expect(server.connections.load(ordering: .sequentiallyConsistent) == 3)
    }

    @Test func concurrentSendsUseConnectionsOfTheirOwn() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200, delay: .milliseconds(400)) }
        defer { server.stop() }
        let d = downstream(server)
        defer { d.close() }
        let outcomes = await withTaskGroup(of: SendOutcome.self) { group in
            for _ in 0..<4 { group.addTask { await d.send([1]) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes == Array(repeating: .delivered, count: 4))
        // Not one after the other on one connection (timing-free: the server counts what overlaps).
        #expect(server.maxInFlight.load(ordering: .sequentiallyConsistent) >= 2)
        #expect(server.connections.load(ordering: .sequentiallyConsistent) >= 2)
    }

    @Test func runReturnsOnceClosedAndCloseTwiceIsHarmless() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200) }
        defer { server.stop() }
        let d = downstream(server)
        #expect(await d.send([1]) == .delivered)
        let running = Task { try await d.run() }
        try await Task.sleep(for: .milliseconds(50))
        d.close()
        d.close()
        try await running.value
        try await d.run()  // already closed: returns at once
        if case .retryable = await d.send([1]) {} else { Issue.record("sent after close") }
    }

    @Test func droppedWithoutCloseDoesNotCrash() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200) }
        defer { server.stop() }
        do {
            let d = downstream(server)
            #expect(await d.send([1]) == .delivered)
        }
        do {
            _ = try HTTPDownstream(host: "127.0.0.1", port: 1, path: "/v1/traces", gzip: false, timeout: .seconds(1), tls: DownstreamTLS())
        }
        try await Task.sleep(for: .milliseconds(100))
    }

    @Test func tlsFilesAreLoadedAtInit() throws {
        var tls = DownstreamTLS()
        tls.caFile = "/nonexistent/ca.pem"
        #expect(throws: (any Error).self) {
            _ = try HTTPDownstream(host: "127.0.0.1", port: 1, path: "/v1/traces", gzip: false, timeout: .seconds(1), tls: tls)
        }
        let https = try HTTPDownstream(host: "::1", port: 4318, path: "/v1/traces", gzip: false, timeout: .seconds(1), tls: DownstreamTLS())
        #expect(https.target == "https://[::1]:4318/v1/traces")
        https.close()
    }

    @Test func tlsToAPlaintextPeerIsRetryable() async throws {
        let server = try ScriptedHTTPServer { _ in .init(status: 200) }
        defer { server.stop() }
        var tls = DownstreamTLS()
        tls.insecureSkipVerify = true
        let d = try HTTPDownstream(host: "127.0.0.1", port: server.port, path: "/v1/traces", gzip: false, timeout: .seconds(2), tls: tls)
        defer { d.close() }
        guard case .retryable = await d.send([1]) else { Issue.record("not retryable"); return }
    }
}
