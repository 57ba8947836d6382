import Foundation
import Testing
import TailgateTestSupport
@testable import TailgateWire

/// Tests of the streaming OTLP/JSON -> protobuf transcoder: tokenizer edge cases, canonical output, malformed IDs.
private enum Streaming {
    static func protobuf(_ json: String) throws(OTLPJSONError) -> [UInt8] {
        try OTLPJSON.protobufFromJSON(Array(json.utf8))
    }

    static func requestJSON(spans: String) -> String {
        #"{"resourceSpans":[{"scopeSpans":[{"spans":[\#(spans)]}]}]}"#
    }

    /// An ExportTraceServiceRequest with one ResourceSpans, one ScopeSpans and these span payloads.
    static func request(spans: [[UInt8]]) -> [UInt8] {
        var w = ProtoWriter()
        w.appendMessageField(1) { rs in
            rs.appendMessageField(2) { ss in
                for span in spans { ss.appendBytesField(2, span) }
            }
        }
        return w.bytes
    }

    /// A span holding one attribute "a" whose AnyValue payload is `value`.
    static func attributeSpan(_ value: [UInt8]) -> [UInt8] {
        var span = ProtoWriter()
        span.appendMessageField(9) { kv in
            kv.appendStringField(1, "a")
            kv.appendBytesField(2, value)
        }
        return span.bytes
    }

    static func attributeJSON(_ valueJSON: String) -> String {
        requestJSON(spans: #"{"attributes":[{"key":"a","value":\#(valueJSON)}]}"#)
    }

    static func scan(_ bytes: [UInt8]) throws -> ScannedRequest {
        var result = ScannedRequest()
        let scanner = OTLPScanner(plan: AttributePlan())
        let outcome = bytes.withUnsafeBytes { raw in Result { () throws(ScanError) in try scanner.scan(raw, into: &result) } }
        try outcome.get()
        return result
    }

    /// Expects `json` to fail with a message starting with `prefix` (and, when given, at `path`).
    static func expectFailure(_ json: [UInt8], _ prefix: String, path: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let bytes = try OTLPJSON.protobufFromJSON(json)
            Issue.record("expected \"\(prefix)…\", got \(bytes.count) bytes for \(String(decoding: json.prefix(200), as: UTF8.self))",
                         sourceLocation: sourceLocation)
        } catch {
            #expect(error.message.hasPrefix(prefix), "\(error) for \(String(decoding: json.prefix(200), as: UTF8.self))",
                    sourceLocation: sourceLocation)
            if let path { #expect(error.path == path, "\(error)", sourceLocation: sourceLocation) }
        }
    }
}

@Suite("OTLP JSON streaming transcoder")
struct OTLPJSONStreamingTests {
    // MARK: Malformed IDs: the span is rejected by the scanner, not the request

    @Test(arguments: [
        // (span JSON, what the scanner says)
        (#"{"traceId":"5b8efff798038103d269b633813fc60","spanId":"eee19b7ec3c1b174"}"#, "trace_id must be 16 bytes"),
        (#"{"traceId":"5b8efff798038103d269b633813fc6zz","spanId":"eee19b7ec3c1b174"}"#, "trace_id must be 16 bytes"),
        (#"{"traceId":"5b8efff798038103","spanId":"eee19b7ec3c1b174"}"#, "trace_id must be 16 bytes"),              // 16 chars
        (#"{"traceId":"5b8efff798038103d269b633813fc60c00","spanId":"eee19b7ec3c1b174"}"#, "trace_id must be 16 bytes"),
        (#"{"traceId":"W4791/mAOBA9JptjOBP8YM==","spanId":"eee19b7ec3c1b174"}"#, "trace_id must be 16 bytes"),    // base64
        (#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b17"}"#, "span_id must be 8 bytes"),
        (#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b17g"}"#, "span_id must be 8 bytes"),
        (#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7e"}"#, "span_id must be 8 bytes"),       // 8 chars
        (#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"é"}"#, "span_id must be 8 bytes"),
        (#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7"}"#,
         "parent_span_id must be empty or 8 bytes"),
        (#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parent_span_id":"zzzzzzzz"}"#,
         "parent_span_id must be empty or 8 bytes"),
        (#"{"traceId":"00000000000000000000000000000000","spanId":"eee19b7ec3c1b174"}"#, "trace_id must be 16 bytes and not all zero"),
    ])
    func malformedIDRejectsOnlyItsSpan(badSpan: String, reason: String) throws {
        let good = #"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"ok"}"#
        let bytes = try Streaming.protobuf(Streaming.requestJSON(spans: "\(good),\(badSpan),\(good)"))
        let result = try Streaming.scan(bytes)
        #expect(result.spans.count == 2)
        #expect(result.rejectedSpans == 1)
        #expect(result.rejectionMessage?.hasPrefix(reason) == true, "\(result.rejectionMessage ?? "nil")")
    }

    @Test func malformedIDEncodingNeverHasAValidLength() throws {
        // The bytes written for a malformed ID: its text, one byte shorter when the text is exactly as long as the ID.
        for (text, bytes) in [("abc", Array("abc".utf8)), ("0123456789abcdefgh", Array("0123456789abcdefgh".utf8)),
                              ("0123456789abcdez", Array("0123456789abcde".utf8))] {
            let json = Streaming.requestJSON(spans: #"{"traceId":"\#(text)"}"#)
            var span = ProtoWriter()
            span.appendBytesField(1, bytes)
            #expect(try Streaming.protobuf(json) == Streaming.request(spans: [span.bytes]), "\(text)")
        }
        // A link's IDs are not checked by the scanner (as for protobuf): the span is accepted.
        let link = #"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","links":[{"traceId":"nothex","spanId":"01"}]}"#
        let result = try Streaming.scan(Streaming.protobuf(Streaming.requestJSON(spans: link)))
        #expect(result.spans.count == 1 && result.rejectedSpans == 0)
        // Still a request error: an ID that is not a string at all.
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"traceId":1}"#).utf8), "expected a hex string",
                                path: "resourceSpans[0].scopeSpans[0].spans[0].traceId")
    }

    @Test func hexIDsAreCaseInsensitive() throws {
        // OTLP/JSON: "case-insensitive hex-encoded strings" (upper, lower or mixed case: the same bytes).
        let lower = #"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"abcdef0123456789"}"#
        var expected = ProtoWriter()
        expected.appendBytesField(1, [0x5B, 0x8E, 0xFF, 0xF7, 0x98, 0x03, 0x81, 0x03, 0xD2, 0x69, 0xB6, 0x33, 0x81, 0x3F, 0xC6, 0x0C])
        expected.appendBytesField(2, [0xEE, 0xE1, 0x9B, 0x7E, 0xC3, 0xC1, 0xB1, 0x74])
        expected.appendBytesField(4, [0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89])
        for spans in [lower,
                      #"{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"ABCDEF0123456789"}"#,
                      #"{"traceId":"5B8efFF798038103D269b633813Fc60C","spanId":"EeE19b7eC3C1B174","parentSpanId":"ABCdef0123456789"}"#] {
            var malformed = OTLPJSON.MalformedIDs()
            let bytes = try OTLPJSON.protobufFromJSON(Array(Streaming.requestJSON(spans: spans).utf8), malformedIDs: &malformed)
            #expect(bytes == Streaming.request(spans: [expected.bytes]), "\(spans)")
            #expect(malformed == OTLPJSON.MalformedIDs(), "\(spans)")
            let result = try Streaming.scan(bytes)
            #expect(result.spans.count == 1 && result.rejectedSpans == 0, "\(spans)")
        }
    }

    @Test(arguments: [
        // (span JSON, path of the first malformed ID, its description)
        (#"{"traceId":"5b8efff798038103d269b633813fc6zz","spanId":"eee19b7ec3c1b174"}"#,
         "traceId", #""5b8efff798038103d269b633813fc6zz" is not hex ('z'): a trace ID is 32 hex digits"#),
        (#"{"traceId":"5b8efff798038103d269b633813fc60","spanId":"eee19b7ec3c1b174"}"#,
         "traceId", #""5b8efff798038103d269b633813fc60" has 31 characters: a trace ID is 32 hex digits"#),
        (#"{"traceId":"5B8EFFF798038103D269B633813FC60C","span_id":"EEE19B7EC3C1B17"}"#,
         "span_id", #""EEE19B7EC3C1B17" has 15 characters: a span ID is 16 hex digits"#),
        (#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b17\u0000"}"#,
         "parentSpanId", #""eee19b7ec3c1b17\0" is not hex ('\0'): a span ID is 16 hex digits"#),
        (#"{"traceId":"W4791/mAOBA9JptjOBP8YM==","spanId":"eee19b7ec3c1b174"}"#,
         "traceId", #""W4791/mAOBA9JptjOBP8YM==" has 24 characters: a trace ID is 32 hex digits"#),
        (#"{"traceId":"é","spanId":"eee19b7ec3c1b174"}"#, "traceId", #""é" has 1 character: a trace ID is 32 hex digits"#),
        (#"{"traceId":"\#(String(repeating: "ab", count: 30))","spanId":"eee19b7ec3c1b174"}"#,
         "traceId", #""\#(String(repeating: "ab", count: 20))…" has 60 characters: a trace ID is 32 hex digits"#),
    ])
    func malformedSpanIDsAreNamed(badSpan: String, field: String, message: String) throws {
        let good = #"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"ok"}"#
        var malformed = OTLPJSON.MalformedIDs()
        let json = Streaming.requestJSON(spans: "\(good),\(badSpan),\(good)")
        let bytes = try OTLPJSON.protobufFromJSON(Array(json.utf8), malformedIDs: &malformed)
        let plain = try Streaming.protobuf(json)
        #expect(bytes == plain)  // the same output as without the notes
        #expect(malformed.count == 1)
        #expect(malformed.first == OTLPJSONError(path: "resourceSpans[0].scopeSpans[0].spans[1].\(field)", message: message))
        let result = try Streaming.scan(bytes)
        #expect(result.spans.count == 2 && result.rejectedSpans == 1)
    }

    @Test func malformedIDsAreCountedPerSpanFieldNotForLinks() throws {
        let spans = [
            #"{"traceId":"xx","spanId":"yy","links":[{"traceId":"nothex","spanId":"01"}]}"#,     // 2, not the link's
            #"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","links":[{"traceId":"z"}]}"#,
            #"{"traceId":"","spanId":"eee19b7ec3c1b174","parentSpanId":""}"#,                  // "" is absent, not malformed
            #"{"traceId":"00000000000000000000000000000000","spanId":"eee19b7ec3c1b174"}"#,   // well-formed hex: the scanner's
            #"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"-1"}"#,
        ].joined(separator: ",")
        var malformed = OTLPJSON.MalformedIDs()
        let bytes = try OTLPJSON.protobufFromJSON(Array(Streaming.requestJSON(spans: spans).utf8), malformedIDs: &malformed)
        #expect(malformed.count == 3)
        #expect(malformed.first?.path == "resourceSpans[0].scopeSpans[0].spans[0].traceId")
        let result = try Streaming.scan(bytes)
        #expect(result.spans.count == 1 && result.rejectedSpans == 4)
        // A failed transcoding leaves no notes behind.
        malformed.count = 7
        #expect(throws: OTLPJSONError.self) {
            try OTLPJSON.protobufFromJSON(Array(Streaming.requestJSON(spans: #"{"traceId":"xx","name":5}"#).utf8), malformedIDs: &malformed)
        }
        #expect(malformed == OTLPJSON.MalformedIDs())
    }

    // MARK: Strings

    @Test(arguments: [
        // (JSON string literal, the string it stands for)
        (#""plain""#, "plain"),
        (#""""#, ""),
        (#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{C}\n\r\t"),
        (#""\u0041\u00e9\u20AC\u0000""#, "Aé€\u{0}"),
        (#""\ud83d\ude80 \uD83D\uDE80""#, "🚀 🚀"),
        (#""\uDBFF\uDFFF""#, "\u{10FFFF}"),
        ("\"é東🚀\u{7F}\"", "é東🚀\u{7F}"),
        (#""x\u0022y""#, "x\"y"),
        ("\"" + String(repeating: "long\\n", count: 5000) + "\"", String(repeating: "long\n", count: 5000)),
        ("\"" + String(repeating: "é", count: 300) + "\"", String(repeating: "é", count: 300)),
    ])
    func stringEscapes(literal: String, expected: String) throws {
        var span = ProtoWriter()
        if !expected.isEmpty { span.appendStringField(5, expected) }
        #expect(try Streaming.protobuf(Streaming.requestJSON(spans: #"{"name":\#(literal)}"#)) == Streaming.request(spans: [span.bytes]))
        // As an AnyValue (present even when empty), nested in a kvlist in an array.
        var value = ProtoWriter()
        value.appendStringField(1, expected)
        var kv = ProtoWriter()
        kv.appendStringField(1, "k")
        kv.appendBytesField(2, value.bytes)
        var list = ProtoWriter()
        list.appendBytesField(1, kv.bytes)
        var inner = ProtoWriter()
        inner.appendBytesField(6, list.bytes)
        var array = ProtoWriter()
        array.appendBytesField(1, inner.bytes)
        var outer = ProtoWriter()
        outer.appendBytesField(5, array.bytes)
        let json = Streaming.attributeJSON(#"{"arrayValue":{"values":[{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":\#(literal)}}]}}]}}"#)
        #expect(try Streaming.protobuf(json) == Streaming.request(spans: [Streaming.attributeSpan(outer.bytes)]))
    }

    @Test func escapedKeysAndIDs() throws {
        let plain = Streaming.requestJSON(spans: #"{"traceId":"5b8efff798038103d269b633813fc60c","name":"n"}"#)
        let escaped = Streaming.requestJSON(spans: #"{"trace\u0049d":"5b8efff798038103d269b633813fc60\u0063","n\u0061me":"n","unknown\n":1}"#)
        #expect(try Streaming.protobuf(escaped) == Streaming.protobuf(plain))
    }

    @Test(arguments: [
        #""\ud83d""#, #""\ude80""#, #""\ud83d\u0041""#, #""\ud83dx""#, #""\ud83d\ud83d""#,
        #""\x""#, #""\u12""#, #""\u12g4""#, #""\U0041""#, "\"a\nb\"", "\"a\u{1F}b\"", "\"tab\there\"", #""unterminated"#, #""\"#,
    ])
    func invalidStrings(literal: String) {
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"name":\#(literal)}"#).utf8), "invalid JSON: ")
        // Also where the value is skipped (unknown key) and as a key.
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"other":\#(literal)}"#).utf8), "invalid JSON: ")
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{\#(literal):1}"#).utf8), "invalid JSON: ")
    }

    @Test(arguments: [
        [0xFF], [0x80], [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
        [0xF5, 0x80, 0x80, 0x80], [0xE2, 0x82], [0xF0, 0x9F, 0x9A], [0xC3, 0x41], [0xE2, 0x28, 0xA1],
    ] as [[UInt8]])
    func invalidUTF8IsRejected(bad: [UInt8]) {
        let head = Array(#"{"resourceSpans":[{"scopeSpans":[{"spans":["#.utf8)
        let tail = Array("]}]}]}".utf8)
        // In a string value, in a skipped value, in a key.
        for (before, after) in [(#"{"name":"ok"#, #"x"}"#), (#"{"other":[""#, #"x"]}"#), (#"{""#, #"x":1}"#)] {
            // Right after ASCII and after 8+ bytes (the word-at-a-time path).
            for padding in ["", "0123456789"] {
                let json = head + Array((before + padding).utf8) + bad + Array(after.utf8) + tail
                Streaming.expectFailure(json, "invalid JSON: invalid UTF-8")
            }
        }
    }

    @Test func validUTF8OfEveryLengthIsKept() throws {
        let text = "aé€🚀\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}\u{D7FF}\u{E000}"
        var span = ProtoWriter()
        span.appendStringField(5, text)
        for padding in ["", "01234567"] {
            var expected = ProtoWriter()
            expected.appendStringField(5, padding + text)
            #expect(try Streaming.protobuf(Streaming.requestJSON(spans: #"{"name":"\#(padding)\#(text)"}"#))
                    == Streaming.request(spans: [expected.bytes]))
        }
    }

    /// Key lookup: every key of every message (both spellings) is found, and a key one byte off is not taken for it
    /// (`dropped_attributes_count` and `dropped_events_count` share their first 8 bytes).
    @Test func everyKeyIsFoundAndNearMissesAreNot() {
        let t = OTLPJSON.tables
        for m in 0..<OTLPJSON.schema.count {
            let low = t.keyStart[m], high = t.keyStart[m + 1]
            let names = (low..<high).map { Array(t.keyName(t.keys[$0]).utf8) }
            func find(_ name: [UInt8]) -> Int {
                name.withUnsafeBufferPointer { b in OTLPJSON.Transcoder.lookup(t.keys, t.pool, b.baseAddress!, name.count, low, high) }
            }
            for (k, name) in names.enumerated() {
                #expect(find(name) == low + k, "\(String(decoding: name, as: UTF8.self))")
                var changed = name
                changed[changed.count - 1] ^= 0x01
                for near in [changed, Array(name.dropLast()), name + [UInt8(ascii: "x")], [UInt8(ascii: "x")] + name.dropFirst()] {
                    #expect(find(near) == (names.firstIndex(of: near).map { low + $0 } ?? -1), "\(String(decoding: near, as: UTF8.self))")
                }
            }
        }
    }

    /// The string scan reads 8 bytes at a time and jumps to the first special byte of a word: an escape, a non-ASCII
    /// sequence, a control character or the closing quote at every offset of a word (and across two words) must be
    /// found where it is.
    @Test func specialBytesAtEveryOffsetOfAWord() throws {
        for offset in 0..<20 {
            let head = String(repeating: "a", count: offset)
            for (json, text) in [(#"\n"#, "\n"), (#"\""#, "\""), ("é", "é"), ("🚀", "🚀"), (#"\u00e9"#, "é"), ("", "")] {
                for tail in ["", "b", "bcdefghijk"] {
                    var expected = ProtoWriter()
                    // An empty name is the default, not written.
                    if !(head + text + tail).isEmpty { expected.appendStringField(5, head + text + tail) }
                    #expect(try Streaming.protobuf(Streaming.requestJSON(spans: #"{"name":"\#(head)\#(json)\#(tail)"}"#))
                            == Streaming.request(spans: [expected.bytes]), "offset \(offset), \(json), tail \(tail.count)")
                }
            }
            for bad in ["\u{01}", "\u{1F}", "\t"] {
                Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"name":"\#(head)\#(bad)x"}"#).utf8),
                                        "invalid JSON: unescaped control character")
            }
        }
    }

    // MARK: Numbers

    @Test(arguments: [
        // (intValue JSON, expected int64)
        ("\"-42\"", Int64(-42)), ("-42", -42), ("0", 0), ("-0", 0), ("\"0\"", 0), ("\"007\"", 7), ("\"+5\"", 5),
        ("9223372036854775807", .max), ("-9223372036854775808", .min), ("\"-9223372036854775808\"", .min),
        ("1e3", 1000), ("1E+2", 100), ("1.0", 1), ("-2.5e1", -25), ("1.2345e4", 12345),
        ("\"18\"", 18), ("\"\\u0031\\u0032\"", 12),
    ])
    func integers(json: String, expected: Int64) throws {
        var value = ProtoWriter()
        value.appendVarintField(3, UInt64(bitPattern: expected))
        #expect(try Streaming.protobuf(Streaming.attributeJSON(#"{"intValue":\#(json)}"#))
                == Streaming.request(spans: [Streaming.attributeSpan(value.bytes)]), "\(json)")
    }

    @Test(arguments: [
        // (intValue JSON, message prefix)
        ("9223372036854775808", "9223372036854775808 is out of range for int64"),
        ("-9223372036854775809", "-9223372036854775809 is out of range for int64"),
        ("\"99999999999999999999\"", "99999999999999999999 is out of range for int64"),
        ("1e19", "10000000000000000000 is out of range for int64"),
        ("123456789012345678901234567890", "123456789012345677877719597056 is out of range for int64"),
        ("1.5", "expected an integer or a decimal string"),
        ("1e400", "expected an integer or a decimal string"),
        ("\"1.0\"", "expected an integer or a decimal string"),
        ("\"0x10\"", "expected an integer or a decimal string"),
        ("\" 1\"", "expected an integer or a decimal string"),
        ("\"\"", "expected an integer or a decimal string"),
        ("\"999999999999999999999999999999999999999999\"", "expected an integer or a decimal string"),
        ("true", "expected an integer or a decimal string"),
        ("{}", "expected an integer or a decimal string"),
        ("[1]", "expected an integer or a decimal string"),
    ])
    func integerErrors(json: String, message: String) {
        Streaming.expectFailure(Array(Streaming.attributeJSON(#"{"intValue":\#(json)}"#).utf8), message,
                                path: "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue")
    }

    @Test(arguments: [
        // (doubleValue JSON, expected bits)
        ("3.25", (3.25).bitPattern), ("-2.5E-3", (-2.5e-3).bitPattern), ("0.1", (0.1).bitPattern), ("1e300", (1e300).bitPattern),
        ("-0.0", (-0.0).bitPattern), ("-0", (0.0).bitPattern), ("0", (0.0).bitPattern), ("5e-324", (5e-324).bitPattern),
        ("9007199254740993", (9007199254740992.0).bitPattern), ("-9007199254740993", (-9007199254740992.0).bitPattern),
        ("123456789012345678901234567890", (123456789012345678901234567890.0).bitPattern),
        ("1.7976931348623157e308", Double.greatestFiniteMagnitude.bitPattern),
        ("\"1.5\"", (1.5).bitPattern), ("\"NaN\"", Double.nan.bitPattern), ("\"-Infinity\"", (-Double.infinity).bitPattern),
        ("\"Infinity\"", Double.infinity.bitPattern),
    ])
    func doubles(json: String, bits: UInt64) throws {
        var value = ProtoWriter()
        value.appendFixed64Field(4, bits)
        #expect(try Streaming.protobuf(Streaming.attributeJSON(#"{"doubleValue":\#(json)}"#))
                == Streaming.request(spans: [Streaming.attributeSpan(value.bytes)]), "\(json)")
    }

    @Test func doubleErrors() {
        let path = "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.doubleValue"
        Streaming.expectFailure(Array(Streaming.attributeJSON(#"{"doubleValue":1e400}"#).utf8), "1e400 is out of range for double", path: path)
        for bad in [#""inf""#, #""nan""#, #""""#, "true", "[]"] {
            Streaming.expectFailure(Array(Streaming.attributeJSON(#"{"doubleValue":\#(bad)}"#).utf8), "expected a number", path: path)
        }
    }

    @Test func unsignedAndFixedRanges() throws {
        var span = ProtoWriter()
        span.appendFixed64Field(7, .max)
        span.appendVarintField(10, UInt64(UInt32.max))
        span.appendFixed32Field(16, .max)
        let json = Streaming.requestJSON(spans: #"{"startTimeUnixNano":18446744073709551615,"droppedAttributesCount":4294967295,"flags":"4294967295"}"#)
        #expect(try Streaming.protobuf(json) == Streaming.request(spans: [span.bytes]))
        let base = "resourceSpans[0].scopeSpans[0].spans[0]."
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"startTimeUnixNano":18446744073709551616}"#).utf8),
                                "18446744073709551616 is out of range for uint64", path: base + "startTimeUnixNano")
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"droppedAttributesCount":-1}"#).utf8),
                                "-1 is out of range for uint32", path: base + "droppedAttributesCount")
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"kind":2147483648}"#).utf8),
                                "2147483648 is out of range for int32", path: base + "kind")
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"kind":"2147483648"}"#).utf8),
                                "unknown enum value \"2147483648\"", path: base + "kind")
        var kinds = ProtoWriter()
        kinds.appendVarintField(6, UInt64(bitPattern: -1))
        #expect(try Streaming.protobuf(Streaming.requestJSON(spans: #"{"kind":-1}"#)) == Streaming.request(spans: [kinds.bytes]))
    }

    @Test(arguments: ["01", "+1", ".5", "1.", "1e", "1e+", "-", "--1", "1.e5", "0x10", "-a", "1_000", "Infinity", "NaN", "tru", "nul", "falsey"])
    func invalidNumberSyntax(json: String) {
        Streaming.expectFailure(Array(Streaming.attributeJSON(#"{"intValue":\#(json)}"#).utf8), "invalid JSON: ")
        Streaming.expectFailure(Array(Streaming.requestJSON(spans: #"{"ignored":\#(json)}"#).utf8), "invalid JSON: ")
    }

    // MARK: Structure

    @Test func nestingDepthLimit() throws {
        // Request 0, ResourceSpans 1, ScopeSpans 2, Span 3, KeyValue 4, AnyValue 5; each arrayValue adds two levels.
        func nested(_ levels: Int) -> String {
            Streaming.attributeJSON(String(repeating: #"{"arrayValue":{"values":["#, count: levels) + #"{"intValue":"1"}"#
                + String(repeating: "]}}", count: levels))
        }
        _ = try Streaming.protobuf(nested(47))   // innermost AnyValue at depth 99
        let path = "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value"
            + String(repeating: ".arrayValue.values[0]", count: 47) + ".arrayValue"
        Streaming.expectFailure(Array(nested(48).utf8), "messages nested deeper than 100 levels", path: path)
        // kvlistValue nests the same way.
        let kv = String(repeating: #"{"kvlistValue":{"values":[{"key":"k","value":"#, count: 40) + "{}" + String(repeating: "}]}}", count: 40)
        Streaming.expectFailure(Array(Streaming.attributeJSON(kv).utf8), "messages nested deeper than 100 levels")
        // Ignored values nest without limit and without recursion.
        let deep = Streaming.requestJSON(spans: #"{"ignored":"# + String(repeating: #"[{"a":"#, count: 100_000) + "1"
            + String(repeating: "}]", count: 100_000) + "}")
        #expect(try Streaming.protobuf(deep) == Streaming.request(spans: [[]]))
        Streaming.expectFailure(Array(deep.utf8.dropLast(7)), "invalid JSON: ")
        Streaming.expectFailure(Array((String(repeating: "[", count: 100_000) + String(repeating: "]", count: 99_999)).utf8), "invalid JSON: ")
    }

    @Test func everyTruncationIsInvalidJSON() throws {
        let json = try OTLPJSON.jsonFromProtobuf(everyKindRequest(small: true))
        #expect(json.count > 500)
        for length in 0..<json.count {
            Streaming.expectFailure(Array(json.prefix(length)), "invalid JSON: ")
        }
    }

    @Test func syntaxErrorsWinOverSchemaErrors() {
        // A schema error early in the document, a syntax error later: as a parse-then-walk, report the syntax error.
        for json in [#"{"resourceSpans":{}, "#, #"{"resourceSpans":[7]} x"#, #"{"resourceSpans":[7],"a":tru}"#,
                     #"[1,]"#, #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":5,}]}]}]}"#, #"{"a":1}{}"#] {
            Streaming.expectFailure(Array(json.utf8), "invalid JSON: ", path: "")
        }
        Streaming.expectFailure(Array(#"{"resourceSpans": [ }"#.utf8), "invalid JSON: expected a value, found '}' at character 20")
        Streaming.expectFailure([], "invalid JSON: ")
        Streaming.expectFailure(Array("  ".utf8), "invalid JSON: ")
        Streaming.expectFailure(Array("null".utf8), "expected a JSON object at the top level")
        Streaming.expectFailure(Array("\"x\"".utf8), "expected a JSON object at the top level")
    }

    @Test func whitespaceAndByteOrderMark() throws {
        let compact = try Streaming.protobuf(Streaming.requestJSON(spans: #"{"name":"a","attributes":[{"key":"k","value":{"boolValue":true}}]}"#))
        let pretty = " \r\n\t{ \"resourceSpans\" : [ { \"scopeSpans\" :\n[ {\"spans\": [\n\t{ \"name\" : \"a\" , \"attributes\" : [ { \"key\" : \"k\" , \"value\" : { \"boolValue\" : true } } ] }\n] } ] } ]\n}\r\n"
        #expect(try Streaming.protobuf(pretty) == compact)
        #expect(try OTLPJSON.protobufFromJSON([0xEF, 0xBB, 0xBF] + Array(pretty.utf8)) == compact)
    }

    @Test func keyOrderDoesNotChangeTheEncoding() throws {
        let schemaOrder = #"""
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","traceState":"a=b",
             "parentSpanId":"eee19b7ec3c1b173","name":"n","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2",
             "attributes":[{"key":"a","value":{"stringValue":"x"}},{"key":"b","value":{"intValue":"1"}}],"droppedAttributesCount":1,
             "events":[{"timeUnixNano":"3","name":"e"}],"droppedEventsCount":2,
             "links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b172","flags":1}],"droppedLinksCount":3,
             "status":{"message":"m","code":2},"flags":257}
            """#
        // As OpenTelemetry JS writes it (flags after parentSpanId, status before links), and fully reversed.
        let jsOrder = #"""
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","traceState":"a=b",
             "parentSpanId":"eee19b7ec3c1b173","flags":257,"name":"n","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2",
             "attributes":[{"value":{"stringValue":"x"},"key":"a"},{"key":"b","value":{"intValue":"1"}}],"droppedAttributesCount":1,
             "events":[{"name":"e","timeUnixNano":"3"}],"droppedEventsCount":2,"status":{"code":2,"message":"m"},
             "links":[{"flags":1,"spanId":"eee19b7ec3c1b172","traceId":"5b8efff798038103d269b633813fc60c"}],"droppedLinksCount":3}
            """#
        let reversed = #"""
            {"flags":257,"status":{"code":2,"message":"m"},"droppedLinksCount":3,
             "links":[{"flags":1,"spanId":"eee19b7ec3c1b172","traceId":"5b8efff798038103d269b633813fc60c"}],
             "droppedEventsCount":2,"events":[{"name":"e","timeUnixNano":"3"}],"droppedAttributesCount":1,
             "attributes":[{"value":{"stringValue":"x"},"key":"a"},{"value":{"intValue":"1"},"key":"b"}],
             "endTimeUnixNano":"2","startTimeUnixNano":"1","kind":2,"name":"n","parentSpanId":"eee19b7ec3c1b173",
             "traceState":"a=b","spanId":"eee19b7ec3c1b174","traceId":"5b8efff798038103d269b633813fc60c"}
            """#
        let expected = try Streaming.protobuf(Streaming.requestJSON(spans: schemaOrder))
        #expect(try Streaming.protobuf(Streaming.requestJSON(spans: jsOrder)) == expected)
        #expect(try Streaming.protobuf(Streaming.requestJSON(spans: reversed)) == expected)
        #expect(try Streaming.protobuf(#"{"resourceSpans":[{"schemaUrl":"u","scopeSpans":[{"spans":[\#(reversed)],"scope":{"name":"s"}}],"resource":{}}]}"#)
                == Streaming.protobuf(#"{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{"name":"s"},"spans":[\#(schemaOrder)]}],"schemaUrl":"u"}]}"#))
        // Large out-of-order messages (multi-byte lengths) too.
        let big = String(repeating: "x", count: 20_000)
        #expect(try Streaming.protobuf(Streaming.requestJSON(spans: #"{"name":"\#(big)","traceState":"\#(big)","kind":1}"#))
                == Streaming.protobuf(Streaming.requestJSON(spans: #"{"traceState":"\#(big)","name":"\#(big)","kind":1}"#)))
    }

    @Test func emptySpansBombIsLinearAndExact() throws {
        let count = 200_000
        let json = Streaming.requestJSON(spans: Array(repeating: "{}", count: count).joined(separator: ","))
        #expect(try Streaming.protobuf(json) == Streaming.request(spans: Array(repeating: [], count: count)))
        let nulls = Streaming.requestJSON(spans: Array(repeating: "null", count: count).joined(separator: ","))
        #expect(try Streaming.protobuf(nulls) == Streaming.request(spans: []))
    }

    // MARK: Round trip

    /// A builder-made request with attributes of every type, several resources and scopes, strings needing escapes.
    func everyKindRequest(small: Bool = false) -> [UInt8] {
        let values: [(String, TestValue)] = [
            ("s", .string("plain")), ("empty", .string("")), ("esc", .string("q\"b\\s/\n\r\t\u{0}\u{1F}é東🚀\u{7F}")),
            ("t", .bool(true)), ("f", .bool(false)),
            ("i", .int(42)), ("zero", .int(0)), ("neg", .int(-7)), ("min", .int(.min)), ("max", .int(.max)),
            ("d", .double(3.25)), ("dz", .double(0)), ("nz", .double(-0.0)), ("tiny", .double(5e-324)),
            ("big", .double(.greatestFiniteMagnitude)), ("tenth", .double(0.1)), ("nan", .double(.nan)),
            ("inf", .double(.infinity)), ("ninf", .double(-.infinity)),
            ("strs", .strings(["a", "", "c"])), ("arr", .array([.int(1), .array([.bool(false), .array([])]), .kvlist([])])),
            ("kv", .kvlist([("inner", .kvlist([("deep", .double(-0.5))])), ("b", .bytes([0, 1, 2, 255]))])),
            ("bytes", .bytes(Array(0...255))), ("nobytes", .bytes([])), ("long", .string(String(repeating: "long text ", count: 2000))),
        ]
        if small {
            let few = Array(values.prefix(12))
            return exportRequest([TestResource(service: "s", spans: [
                TestSpan(trace: tid(1), span: 2, parent: 3, name: "n", status: .error, attributes: few + [("kv", values[21].1)], traceState: "k=v"),
            ])])
        }
        var spans: [TestSpan] = []
        for i in 0..<5 {
            var span = TestSpan(trace: tid(UInt64(i + 1)), span: UInt64(100 + i), parent: i == 0 ? 0 : 100, name: "span \(i)",
                                start: 1_700_000_000_000_000_000 + UInt64(i), end: .max - UInt64(i),
                                status: [StatusCode.unset, .ok, .error][i % 3],
                                ints: [("gen_ai.usage.input_tokens", Int64(i) * 1000)], strings: [("gen_ai.system", "openai")],
                                attributes: values, traceState: i == 1 ? "k=v,k2=v2" : nil)
            if i == 2 {
                span.status = nil  // so that the raw fields below (11…16) come after every other field, in order
                // An event and a link, as encoded fields.
                var w = ProtoWriter()
                w.appendMessageField(11) { ev in
                    ev.appendFixed64Field(1, 5)
                    ev.appendStringField(2, "event")
                    ev.appendMessageField(3) { kv in
                        kv.appendStringField(1, "e")
                        kv.appendMessageField(2) { $0.appendStringField(1, "v") }
                    }
                    ev.appendVarintField(4, 1)
                }
                w.appendVarintField(12, 2)
                w.appendMessageField(13) { link in
                    link.appendBytesField(1, tid(9).bytes)
                    link.appendBytesField(2, be64(7))
                    link.appendStringField(3, "l=1")
                    link.appendFixed32Field(6, 0x301)
                }
                w.appendVarintField(14, 3)
                w.appendFixed32Field(16, 0x101)
                span.rawFields = w.bytes
            }
            spans.append(span)
        }
        return exportRequest([
            TestResource(service: "checkout", scopes: [("scope-a", Array(spans[0..<2])), ("scope-b", Array(spans[2..<4]))],
                         attributes: [("host", .string("h")), ("n", .int(3))]),
            TestResource(service: "agent", spans: [spans[4]], attributes: values),
        ])
    }

    /// The transcoder reserves one byte for a message's length and moves the content when the length needs more:
    /// spans whose lengths take 1, 2 and 3 bytes in varying order (and scopes and resources of different sizes
    /// around them) must come out exactly as a builder writes them (minimal lengths), and so must the same request
    /// with keys out of order, whose fields the transcoder re-sorts by reading back the lengths it wrote.
    @Test(arguments: [
        [0, 1, 2, 1, 0, 2, 0, 0, 1, 1, 2, 2],
        [2, 0, 2, 1, 0, 1],
        [1],
        [0, 2],
    ])
    func lengthWidthsGrowAndShrink(widths: [Int]) throws {
        // Name lengths giving encoded spans of about 40 bytes, 1 KiB and 20 KiB: 1-, 2- and 3-byte lengths.
        let nameLengths = [8, 1_000, 20_000]
        var resources: [TestResource] = []
        var spanNumber: UInt64 = 1
        for (r, chunk) in stride(from: 0, to: widths.count, by: 3).map({ Array(widths[$0..<min($0 + 3, widths.count)]) }).enumerated() {
            var scopes: [(String, [TestSpan])] = []
            for (k, width) in chunk.enumerated() {
                // Scope k of a resource holds k + 1 spans of the same size class.
                let spans = (0...k).map { _ -> TestSpan in
                    defer { spanNumber += 1 }
                    return TestSpan(trace: tid(spanNumber), span: spanNumber, name: String(repeating: "n", count: nameLengths[width]))
                }
                scopes.append(("scope-\(r)-\(k)", spans))
            }
            resources.append(TestResource(service: "service-\(r)", scopes: scopes))
        }
        let request = exportRequest(resources)
        let json = try OTLPJSON.jsonFromProtobuf(request)
        #expect(try OTLPJSON.protobufFromJSON(json) == request)
        // A key of a later field first (an empty schemaUrl, which writes nothing) makes the transcoder re-sort the
        // fields of every resource and scope, reading back the lengths it wrote for their children.
        let text = String(decoding: json, as: UTF8.self)
        let reordered = text.replacingOccurrences(of: #"{"resource":"#, with: #"{"schemaUrl":"","resource":"#)
            .replacingOccurrences(of: #"{"scope":"#, with: #"{"schemaUrl":"","scope":"#)
        #expect(reordered.count == text.count + 15 * (resources.count + resources.reduce(0) { $0 + $1.scopes.count }))
        #expect(try OTLPJSON.protobufFromJSON(Array(reordered.utf8)) == request)
    }

    @Test func roundTripOfBuilderMadeRequests() throws {
        let request = everyKindRequest()
        #expect(try OTLPJSON.protobufFromJSON(OTLPJSON.jsonFromProtobuf(request)) == request)
        for span in [TestSpan(trace: tid(1), span: 1), TestSpan(trace: tid(2), span: 2, parent: 1, name: "x", status: .error)] {
            let single = exportRequest(spans: [span])
            #expect(try OTLPJSON.protobufFromJSON(OTLPJSON.jsonFromProtobuf(single)) == single)
        }
        // And what the scanner reads from it is the same.
        let direct = try Streaming.scan(request)
        let viaJSON = try Streaming.scan(OTLPJSON.protobufFromJSON(OTLPJSON.jsonFromProtobuf(request)))
        #expect(direct.spans.map(\.traceID) == viaJSON.spans.map(\.traceID))
        #expect(direct.spans.count == 5 && viaJSON.rejectedSpans == 0)
    }
}
