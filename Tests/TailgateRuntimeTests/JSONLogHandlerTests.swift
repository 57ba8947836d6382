import Foundation
import Logging
import Synchronization
import Testing
@testable import TailgateRuntime

/// Collects what a `JSONLogHandler` hands its sink, one entry per call.
final class LineSink: Sendable {
    private let lines = Mutex<[[UInt8]]>([])

    var sink: JSONLogHandler.Sink { { line in self.lines.withLock { $0.append(line) } } }
    var calls: [[UInt8]] { lines.withLock { $0 } }
    var strings: [String] { calls.map { String(decoding: $0, as: UTF8.self) } }

    /// Each line parsed as a JSON object (the trailing newline removed).
    func objects() throws -> [[String: Any]] {
        try calls.map { line in
            #expect(line.last == UInt8(ascii: "\n"))
            #expect(line.dropLast().contains(UInt8(ascii: "\n")) == false, "one line per call")
            let object = try JSONSerialization.jsonObject(with: Data(line.dropLast()))
            return try #require(object as? [String: Any])
        }
    }
}

struct JSONLogHandlerTests {
    /// 2023-11-14T22:13:20.123Z.
    static let fixedDate = Date(timeIntervalSince1970: 1_700_000_000.123)

    func makeLogger(_ sink: LineSink, label: String = "tailgate", level: Logger.Level = .trace,
                metadataProvider: Logger.MetadataProvider? = nil) -> Logger {
        var logger = Logger(label: label) { label in
            JSONLogHandler(label: label, metadataProvider: metadataProvider, now: { Self.fixedDate }, sink: sink.sink)
        }
        logger.logLevel = level
        return logger
    }

    @Test func fixedFieldsComeFirstInOrder() throws {
        let sink = LineSink()
        makeLogger(sink).notice("tailgate stopped")
        #expect(sink.strings == [
            #"{"ts":"2023-11-14T22:13:20.123Z","level":"notice","msg":"tailgate stopped","logger":"tailgate","source":"TailgateRuntimeTests"}"# + "\n",
        ])
    }

    @Test func timestampIsRFC3339UTCWithMilliseconds() {
        func ts(_ seconds: Double) -> String {
            var out: [UInt8] = []
            JSONLogHandler.appendTimestamp(Date(timeIntervalSince1970: seconds), to: &out)
            return String(decoding: out, as: UTF8.self)
        }
        #expect(ts(0) == "1970-01-01T00:00:00.000Z")
        #expect(ts(1_700_000_000.999) == "2023-11-14T22:13:20.999Z")
        #expect(ts(1_700_000_000.0004) == "2023-11-14T22:13:20.000Z")  // truncated, not rounded up
        #expect(ts(951_782_400.5) == "2000-02-29T00:00:00.500Z")
        #expect(ts(-0.25) == "1969-12-31T23:59:59.750Z")
    }

    @Test func escapesQuotesBackslashesAndControlCharactersAndKeepsUTF8() throws {
        let sink = LineSink()
        let message = "say \"hi\" \\ path C:\\x\nnext\tline\r\u{08}\u{0C}\u{01}\u{1F}\u{7F} ünïcødé 😀 \u{2028}"
        makeLogger(sink).info("\(message)", metadata: ["k\"ey": "v\\al\nue"])
        let line = try #require(sink.strings.first)
        #expect(line.contains(#""msg":"say \"hi\" \\ path C:\\x\nnext\tline\r\b\f\u0001\u001f\u007f ünïcødé 😀 "#
            + "\u{2028}\""))
        #expect(line.contains(#""k\"ey":"v\\al\nue""#))
        #expect(line.utf8.filter { $0 < 0x20 } == [0x0A], "only the final newline is a raw control character")
        let object = try #require(try sink.objects().first)
        #expect(object["msg"] as? String == message)
        #expect(object["k\"ey"] as? String == "v\\al\nue")
    }

    @Test func metadataBecomesTopLevelFieldsWithNestedObjectsAndArrays() throws {
        let sink = LineSink()
        makeLogger(sink).info("tailgate started", metadata: [
            "listening": "otlp/http=127.0.0.1:4318",
            "count": .stringConvertible(42),
            "tls": ["cert": "a.crt", "reload": ["every": "5m"]],
            "policies": ["errors", .stringConvertible(3), ["nested": "yes"], []],
            "empty": [:],
        ])
        let line = try #require(sink.strings.first)
        #expect(line.hasSuffix(
            #","source":"TailgateRuntimeTests","count":"42","empty":{},"listening":"otlp/http=127.0.0.1:4318","#
            + #""policies":["errors","3",{"nested":"yes"},[]],"tls":{"cert":"a.crt","reload":{"every":"5m"}}}"# + "\n"))
        let object = try #require(try sink.objects().first)
        #expect(object["count"] as? String == "42")
        #expect((object["tls"] as? [String: Any])?["cert"] as? String == "a.crt")
        #expect((object["policies"] as? [Any])?.count == 4)
    }

    @Test func keysCollidingWithFixedFieldsGetTheMetaPrefix() throws {
        let sink = LineSink()
        makeLogger(sink).warning("real message", metadata: [
            "msg": "from metadata", "level": "custom", "ts": "yesterday", "logger": "other", "source": "elsewhere",
            "meta.logger": "already there", "message": "not a fixed field",
        ])
        let line = try #require(sink.strings.first)
        let object = try #require(try sink.objects().first)
        #expect(object["msg"] as? String == "real message")
        #expect(object["level"] as? String == "warning")
        #expect(object["logger"] as? String == "tailgate")
        #expect(object["source"] as? String == "TailgateRuntimeTests")
        #expect(object["ts"] as? String == "2023-11-14T22:13:20.123Z")
        #expect(object["meta.msg"] as? String == "from metadata")
        #expect(object["meta.level"] as? String == "custom")
        #expect(object["meta.ts"] as? String == "yesterday")
        #expect(object["meta.source"] as? String == "elsewhere")
        #expect(object["meta.logger"] as? String == "already there")
        #expect(object["meta.meta.logger"] as? String == "other")  // meta.logger was taken
        #expect(object["message"] as? String == "not a fixed field")
        #expect(object.count == 12)
        // JSONSerialization would hide a duplicate key: count the keys in the text too.
        #expect(line.components(separatedBy: #""msg":"#).count == 2)
        #expect(line.components(separatedBy: #""meta.logger":"#).count == 2)
    }

    @Test func respectsTheLogLevel() throws {
        let sink = LineSink()
        let logger = makeLogger(sink, level: .warning)
        logger.trace("t")
        logger.debug("d")
        logger.info("i")
        logger.notice("n")
        logger.warning("w")
        logger.error("e")
        logger.critical("c")
        #expect(try sink.objects().map { $0["level"] as? String } == ["warning", "error", "critical"])

        let all = LineSink()
        let verbose = makeLogger(all, level: .trace)
        for level in Logger.Level.allCases { verbose.log(level: level, "x") }
        #expect(try all.objects().map { $0["level"] as? String } == Logger.Level.allCases.map(\.rawValue))
    }

    @Test func mergesHandlerProviderAndStatementMetadataLaterWins() throws {
        let sink = LineSink()
        let provider = Logger.MetadataProvider { ["request": "from-provider", "shared": "provider"] }
        var logger = makeLogger(sink, label: "tailgate.ingest", metadataProvider: provider)
        logger[metadataKey: "component"] = "ingest"
        logger[metadataKey: "shared"] = "handler"
        logger.info("one", metadata: ["shared": "statement"])
        logger.info("two")
        let objects = try sink.objects()
        #expect(objects.count == 2)
        #expect(objects[0]["component"] as? String == "ingest")
        #expect(objects[0]["request"] as? String == "from-provider")
        #expect(objects[0]["shared"] as? String == "statement")
        #expect(objects[1]["shared"] as? String == "provider")
        #expect(objects[1]["logger"] as? String == "tailgate.ingest")
    }

    @Test func everyLineReachesTheSinkInOneCall() async throws {
        let sink = LineSink()
        let logger = makeLogger(sink)
        let long = String(repeating: "x", count: 10_000)  // longer than PIPE_BUF
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for i in 0..<50 { logger.info("\(long)", metadata: ["task": "\(task)", "i": "\(i)"]) }
                }
            }
        }
        let objects = try sink.objects()
        #expect(objects.count == 400)
        #expect(objects.allSatisfy { ($0["msg"] as? String)?.count == 10_000 })
    }
}
