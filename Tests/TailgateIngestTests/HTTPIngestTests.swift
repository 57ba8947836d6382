import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import TailgateHTTPServer
import TailgateTestSupport
@testable import TailgateIngest
@testable import TailgateWire

/// Records what reached the pipeline; answers with a fixed result.
final class StubHandler: TraceIngestHandler {
    let bodies = Mutex<[[UInt8]]>([])
    let refusals = Mutex<[RefusalReason]>([])
    let result: IngestResult
    init(result: IngestResult = .accepted) { self.result = result }
    func ingest(_ body: UnsafeRawBufferPointer, transport: IngestTransport) -> IngestResult {
        bodies.withLock { $0.append(Array(body)) }
        return result
    }
    func refused(transport: IngestTransport, reason: RefusalReason) {
        refusals.withLock { $0.append(reason) }
    }
}

struct Reply {
    var status: Int
    var body: [UInt8]
    var headers: [AnyHashable: Any]
    var text: String { String(decoding: body, as: UTF8.self) }
}

func withServer(limit: Int = 64 << 10, handler: StubHandler, _ body: (Int) async throws -> Void) async throws {
    let ingest = OTLPHTTPIngest(handler: handler, maxRequestBytes: limit)
    let server = HTTPServer(host: "127.0.0.1", port: 0, maxBodyBytes: limit, logger: Logger(label: "test"),
                            tooLarge: { ingest.tooLarge($0, limit: $1) }, route: { ingest.handle($0) })
    let port = try await server.start()
    do { try await body(port) } catch { await server.stop(); throw error }
    await server.stop()
}

func post(_ port: Int, path: String = "/v1/traces", contentType: String, encoding: String? = nil, body: [UInt8]) async throws -> Reply {
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
    request.httpMethod = "POST"
    request.setValue(contentType, forHTTPHeaderField: "Content-Type")
    if let encoding { request.setValue(encoding, forHTTPHeaderField: "Content-Encoding") }
    request.httpBody = Data(body)
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = response as! HTTPURLResponse
    return Reply(status: http.statusCode, body: Array(data), headers: http.allHeaderFields)
}

@Suite(.serialized) struct HTTPIngestTests {
    let request = exportRequest(spans: [TestSpan(trace: tid(1), span: 1)])

    @Test func protobufIsPassedThroughAndAnsweredInKind() async throws {
        let handler = StubHandler()
        try await withServer(handler: handler) { port in
            let reply = try await post(port, contentType: "application/x-protobuf", body: request)
            #expect(reply.status == 200)
            #expect(reply.body.isEmpty)  // empty ExportTraceServiceResponse
            #expect((reply.headers["Content-Type"] as? String) == "application/x-protobuf")
        }
        #expect(handler.bodies.withLock { $0 } == [request])
    }

    @Test func gzipBodiesAreDecompressed() async throws {
        let handler = StubHandler()
        try await withServer(handler: handler) { port in
            let reply = try await post(port, contentType: "application/x-protobuf", encoding: "gzip", body: Gzip.compress(request))
            #expect(reply.status == 200)
        }
        #expect(handler.bodies.withLock { $0 } == [request])
    }

    @Test func jsonIsTranscodedAndAnsweredInJSON() async throws {
        let handler = StubHandler()
        let json = try OTLPJSON.jsonFromProtobuf(request)
        try await withServer(handler: handler) { port in
            let reply = try await post(port, contentType: "application/json", body: json)
            #expect(reply.status == 200)
            #expect(reply.text == "{}")
        }
        #expect(handler.bodies.withLock { $0 } == [request])
    }

    @Test func malformedJSONIs400WithAMessage() async throws {
        let handler = StubHandler()
        try await withServer(handler: handler) { port in
            // Not JSON a transcoder can read (a bad ID alone is not this: it reaches the scanner, which rejects that
            // span by partial success, as for protobuf).
            let reply = try await post(port, contentType: "application/json", body: Array(#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name": 12]}]}]}"#.utf8))
            #expect(reply.status == 400)
            #expect(reply.text.contains(#""code":3"#))
            #expect(reply.text.contains("at character 54"))
        }
        #expect(handler.bodies.withLock { $0 }.isEmpty)
        #expect(handler.refusals.withLock { $0 } == [.malformedJSON])
    }

    @Test func invalidResultIs400WithStatusBody() async throws {
        let handler = StubHandler(result: .invalid("malformed protobuf: truncated varint in resourceSpans[0] (byte 3)"))
        try await withServer(handler: handler) { port in
            let reply = try await post(port, contentType: "application/x-protobuf", body: [0x0A])
            #expect(reply.status == 400)
            // google.rpc.Status: code 3, message.
            #expect(reply.body.starts(with: [0x08, 0x03, 0x12]))
            #expect(reply.text.contains("truncated varint"))
        }
    }

    @Test func overloadIs503WithRetryAfter() async throws {
        let handler = StubHandler(result: .overloaded(retryAfterSeconds: 2, message: "queue full"))
        try await withServer(handler: handler) { port in
            let reply = try await post(port, contentType: "application/x-protobuf", body: request)
            #expect(reply.status == 503)
            #expect((reply.headers["Retry-After"] as? String) == "2")
        }
    }

    @Test func oversizeAndBombsAre413AndTheServerKeepsServing() async throws {
        let handler = StubHandler()
        try await withServer(limit: 64 << 10, handler: handler) { port in
            let big = [UInt8](repeating: 0x41, count: 100 << 10)
            let plain = try await post(port, contentType: "application/x-protobuf", body: big)
            #expect(plain.status == 413)
            let bomb = Gzip.compress([UInt8](repeating: 0, count: 50 << 20))
            let bombReply = try await post(port, contentType: "application/x-protobuf", encoding: "gzip", body: bomb)
            #expect(bombReply.status == 413)
            #expect(bombReply.text.contains("after decompression"))
            let ok = try await post(port, contentType: "application/x-protobuf", body: request)
            #expect(ok.status == 200)
        }
        #expect(handler.refusals.withLock { $0 } == [.tooLarge, .tooLarge])
    }

    @Test func wrongContentTypeEncodingAndPath() async throws {
        let handler = StubHandler()
        try await withServer(handler: handler) { port in
            let text = try await post(port, contentType: "text/plain", body: request)
            let brotli = try await post(port, contentType: "application/x-protobuf", encoding: "br", body: request)
            let notGzip = try await post(port, contentType: "application/x-protobuf", encoding: "gzip", body: request)
            let wrongPath = try await post(port, path: "/v1/metrics", contentType: "application/x-protobuf", body: request)
            #expect(text.status == 415)
            #expect(brotli.status == 415)
            #expect(notGzip.status == 400)
            #expect(wrongPath.status == 404)
        }
        #expect(handler.bodies.withLock { $0 }.isEmpty)
    }

    @Test func partialSuccessIsReported() async throws {
        let handler = StubHandler(result: .partiallyAccepted(rejectedSpans: 2, message: "2 span(s) rejected"))
        try await withServer(handler: handler) { port in
            let reply = try await post(port, contentType: "application/json", body: try OTLPJSON.jsonFromProtobuf(request))
            #expect(reply.status == 200)
            #expect(reply.text == #"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"2 span(s) rejected"}}"#)
        }
    }
}

@Suite struct OTLPResponseTests {
    @Test func encodings() {
        #expect(OTLPResponse.exportResponse().isEmpty)
        #expect(OTLPResponse.exportResponse(rejectedSpans: 3, message: "x") == [0x0A, 0x05, 0x08, 0x03, 0x12, 0x01, 0x78])
        let status = OTLPResponse.status(code: 14, message: "busy", retryAfterSeconds: 2)
        #expect(status.starts(with: [0x08, 0x0E, 0x12, 0x04] + Array("busy".utf8) + [0x1A]))
        #expect(jsonString("a\"b\\\n\u{1}") == #""a\"b\\\n\u0001""#)
    }
}
