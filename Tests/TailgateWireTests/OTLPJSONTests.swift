import Foundation
import Testing
@testable import TailgateWire

private typealias OTLPValue = OTLPTestJSON

/// A parsed JSON value, for comparing documents in tests (Foundation's decoder: independent of the transcoder).
/// Numbers keep full 64-bit integer precision: Int64, else UInt64, else Double.
enum OTLPTestJSON: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([OTLPTestJSON])
    case object([String: OTLPTestJSON])

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let single = try decoder.singleValueContainer()
        if single.decodeNil() { self = .null; return }
        if let s = try? single.decode(String.self) { self = .string(s); return }
        if let keyed = try? decoder.container(keyedBy: AnyKey.self) {
            var object = [String: OTLPTestJSON]()
            for key in keyed.allKeys { object[key.stringValue] = try keyed.decode(OTLPTestJSON.self, forKey: key) }
            self = .object(object)
            return
        }
        if var unkeyed = try? decoder.unkeyedContainer() {
            var items: [OTLPTestJSON] = []
            while !unkeyed.isAtEnd { items.append(try unkeyed.decode(OTLPTestJSON.self)) }
            self = .array(items)
            return
        }
        if let b = try? single.decode(Bool.self) { self = .bool(b); return }
        if let i = try? single.decode(Int64.self) { self = .int(i); return }
        if let u = try? single.decode(UInt64.self) { self = .uint(u); return }
        if let d = try? single.decode(Double.self) { self = .double(d); return }
        throw DecodingError.dataCorruptedError(in: single, debugDescription: "unsupported JSON value")
    }
}

/// Helpers, namespaced so they cannot collide with other test files of the module.
private enum Fixture {
    static func parse(_ text: String) throws -> OTLPValue {
        try JSONDecoder().decode(OTLPValue.self, from: Data(text.utf8))
    }

    static func parse(_ bytes: [UInt8]) throws -> OTLPValue {
        try JSONDecoder().decode(OTLPValue.self, from: Data(bytes))
    }

    static func protobuf(_ json: String) throws(OTLPJSONError) -> [UInt8] {
        try OTLPJSON.protobufFromJSON(Array(json.utf8))
    }

    static func jsonText(_ protobuf: [UInt8]) throws(OTLPJSONError) -> String {
        String(decoding: try OTLPJSON.jsonFromProtobuf(protobuf), as: UTF8.self)
    }

    /// Wraps span payloads into an ExportTraceServiceRequest with one ResourceSpans and one ScopeSpans.
    static func request(spans: [[UInt8]]) -> [UInt8] {
        var w = ProtoWriter()
        w.appendMessageField(1) { rs in
            rs.appendMessageField(2) { ss in
                for span in spans { ss.appendBytesField(2, span) }
            }
        }
        return w.bytes
    }

    /// JSON for a request with one resource, one scope and the given spans.
    static func requestJSON(spans: String) -> String {
        #"{"resourceSpans":[{"scopeSpans":[{"spans":[\#(spans)]}]}]}"#
    }
}

private extension OTLPTestJSON {
    subscript(key: String) -> OTLPValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    subscript(index: Int) -> OTLPValue? {
        if case .array(let a) = self, index < a.count { return a[index] }
        return nil
    }
}

@Suite("OTLP JSON transcoding")
struct OTLPJSONTests {
    // MARK: Round trip

    @Test func roundTripEveryFieldKind() throws {
        let input = #"""
        {"resourceSpans":[{
          "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}],"droppedAttributesCount":1},
          "scopeSpans":[{
            "scope":{"name":"lib","version":"1.2","attributes":[{"key":"s","value":{"boolValue":true}}],"droppedAttributesCount":2},
            "spans":[{
              "traceId":"5B8EFFF798038103D269B633813FC60C",
              "spanId":"EEE19B7EC3C1B174",
              "traceState":"k=v",
              "parentSpanId":"eee19b7ec3c1b173",
              "name":"GET /cart",
              "kind":"SPAN_KIND_SERVER",
              "startTimeUnixNano":1544712660000000000,
              "endTimeUnixNano":"18446744073709551615",
              "attributes":[
                {"key":"str","value":{"stringValue":"a\"b\\c\n\u0001é🚀"}},
                {"key":"empty","value":{"stringValue":""}},
                {"key":"t","value":{"boolValue":true}},
                {"key":"f","value":{"boolValue":false}},
                {"key":"neg","value":{"intValue":"-42"}},
                {"key":"min","value":{"intValue":-9223372036854775808}},
                {"key":"zero","value":{"intValue":0}},
                {"key":"dbl","value":{"doubleValue":3.25}},
                {"key":"dzero","value":{"doubleValue":0}},
                {"key":"inf","value":{"doubleValue":"-Infinity"}},
                {"key":"bytes","value":{"bytesValue":"AAEC/w=="}},
                {"key":"nobytes","value":{"bytesValue":""}},
                {"key":"arr","value":{"arrayValue":{"values":[
                  {"stringValue":"x"},{"intValue":"7"},{"arrayValue":{"values":[{"boolValue":false}]}},{"arrayValue":{}}]}}},
                {"key":"kv","value":{"kvlistValue":{"values":[
                  {"key":"inner","value":{"kvlistValue":{"values":[{"key":"deep","value":{"doubleValue":-0.5}}]}}}]}}},
                {"key":"novalue"},
                {"key":"emptyvalue","value":{}}
              ],
              "droppedAttributesCount":3,
              "events":[
                {"timeUnixNano":"1544712660500000000","name":"ev","attributes":[{"key":"e","value":{"intValue":"1"}}],"droppedAttributesCount":4},
                {}
              ],
              "droppedEventsCount":5,
              "links":[{"traceId":"0AF7651916CD43DD8448EB211C80319C","spanId":"B7AD6B7169203331","traceState":"l=1",
                        "attributes":[{"key":"l","value":{"stringValue":"v"}}],"droppedAttributesCount":6,"flags":257}],
              "droppedLinksCount":7,
              "status":{"message":"boom","code":"STATUS_CODE_ERROR"},
              "flags":769
            },{
              "traceId":"5b8efff798038103d269b633813fc60c","spanId":"0000000000000001","parentSpanId":"",
              "name":"","kind":0,"startTimeUnixNano":"0","droppedAttributesCount":0,"flags":0,"status":{}
            }],
            "schemaUrl":"https://opentelemetry.io/schemas/1.21.0"
          }],
          "schemaUrl":"https://example.com/r"
        }]}
        """#
        let expected = #"""
        {"resourceSpans":[{
          "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}],"droppedAttributesCount":1},
          "scopeSpans":[{
            "scope":{"name":"lib","version":"1.2","attributes":[{"key":"s","value":{"boolValue":true}}],"droppedAttributesCount":2},
            "spans":[{
              "traceId":"5b8efff798038103d269b633813fc60c",
              "spanId":"eee19b7ec3c1b174",
              "traceState":"k=v",
              "parentSpanId":"eee19b7ec3c1b173",
              "name":"GET /cart",
              "kind":2,
              "startTimeUnixNano":"1544712660000000000",
              "endTimeUnixNano":"18446744073709551615",
              "attributes":[
                {"key":"str","value":{"stringValue":"a\"b\\c\n\u0001é🚀"}},
                {"key":"empty","value":{"stringValue":""}},
                {"key":"t","value":{"boolValue":true}},
                {"key":"f","value":{"boolValue":false}},
                {"key":"neg","value":{"intValue":"-42"}},
                {"key":"min","value":{"intValue":"-9223372036854775808"}},
                {"key":"zero","value":{"intValue":"0"}},
                {"key":"dbl","value":{"doubleValue":3.25}},
                {"key":"dzero","value":{"doubleValue":0.0}},
                {"key":"inf","value":{"doubleValue":"-Infinity"}},
                {"key":"bytes","value":{"bytesValue":"AAEC/w=="}},
                {"key":"nobytes","value":{"bytesValue":""}},
                {"key":"arr","value":{"arrayValue":{"values":[
                  {"stringValue":"x"},{"intValue":"7"},{"arrayValue":{"values":[{"boolValue":false}]}},{"arrayValue":{}}]}}},
                {"key":"kv","value":{"kvlistValue":{"values":[
                  {"key":"inner","value":{"kvlistValue":{"values":[{"key":"deep","value":{"doubleValue":-0.5}}]}}}]}}},
                {"key":"novalue"},
                {"key":"emptyvalue","value":{}}
              ],
              "droppedAttributesCount":3,
              "events":[
                {"timeUnixNano":"1544712660500000000","name":"ev","attributes":[{"key":"e","value":{"intValue":"1"}}],"droppedAttributesCount":4},
                {}
              ],
              "droppedEventsCount":5,
              "links":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","traceState":"l=1",
                        "attributes":[{"key":"l","value":{"stringValue":"v"}}],"droppedAttributesCount":6,"flags":257}],
              "droppedLinksCount":7,
              "status":{"message":"boom","code":2},
              "flags":769
            },{
              "traceId":"5b8efff798038103d269b633813fc60c","spanId":"0000000000000001","status":{}
            }],
            "schemaUrl":"https://opentelemetry.io/schemas/1.21.0"
          }],
          "schemaUrl":"https://example.com/r"
        }]}
        """#
        let bytes = try Fixture.protobuf(input)
        let output = try OTLPJSON.jsonFromProtobuf(bytes)
        #expect(!output.contains(UInt8(ascii: "\n")))
        #expect(try Fixture.parse(output) == Fixture.parse(expected))

        // The canonical form is a fixed point.
        #expect(try Fixture.protobuf(String(decoding: output, as: UTF8.self)) == bytes)
        #expect(try OTLPJSON.jsonFromProtobuf(Fixture.protobuf(expected)) == output)
    }

    @Test func emptyRequest() throws {
        #expect(try Fixture.protobuf("{}") == [])
        #expect(try Fixture.protobuf(#"{"resourceSpans":[]}"#) == [])
        #expect(try Fixture.jsonText([]) == "{}")
        #expect(try Fixture.jsonText(Fixture.request(spans: [])) == #"{"resourceSpans":[{"scopeSpans":[{}]}]}"#)
    }

    // MARK: protobuf -> JSON

    @Test func handBuiltProtobufToJSON() throws {
        var span = ProtoWriter()
        span.appendBytesField(1, (0..<16).map { UInt8(0xA0 + $0) })
        span.appendBytesField(2, [0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x01, 0x02, 0xFF])
        span.appendBytesField(4, [1, 2, 3, 4, 5, 6, 7, 8])
        span.appendStringField(5, "db.query")
        span.appendVarintField(6, 3)
        span.appendFixed64Field(7, 1_700_000_000_123_456_789)
        span.appendFixed64Field(8, UInt64.max)
        span.appendMessageField(9) { kv in
            kv.appendStringField(1, "n")
            kv.appendMessageField(2) { $0.appendVarintField(3, UInt64(bitPattern: -7)) }
        }
        span.appendMessageField(9) { kv in
            kv.appendStringField(1, "d")
            kv.appendMessageField(2) { $0.appendFixed64Field(4, (1.5).bitPattern) }
        }
        span.appendMessageField(9) { kv in
            kv.appendStringField(1, "b")
            kv.appendMessageField(2) { $0.appendBytesField(7, [0xFB, 0xFF]) }
        }
        span.appendVarintField(10, 9)
        span.appendMessageField(15) { st in
            st.appendStringField(2, "bad")
            st.appendVarintField(3, 2)
        }
        span.appendFixed32Field(16, 0x301)

        let text = try Fixture.jsonText(Fixture.request(spans: [span.bytes]))
        let json = try Fixture.parse(text)
        let s = try #require(json["resourceSpans"]?[0]?["scopeSpans"]?[0]?["spans"]?[0])
        #expect(s["traceId"] == .string("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"))
        #expect(s["spanId"] == .string("deadbeef000102ff"))
        #expect(s["parentSpanId"] == .string("0102030405060708"))
        #expect(s["name"] == .string("db.query"))
        #expect(s["kind"] == .int(3))
        #expect(s["startTimeUnixNano"] == .string("1700000000123456789"))
        #expect(s["endTimeUnixNano"] == .string("18446744073709551615"))
        #expect(s["attributes"]?[0]?["value"]?["intValue"] == .string("-7"))
        #expect(s["attributes"]?[1]?["value"]?["doubleValue"] == .double(1.5))
        #expect(s["attributes"]?[2]?["value"]?["bytesValue"] == .string("+/8="))
        #expect(s["droppedAttributesCount"] == .int(9))
        #expect(s["status"] == .object(["message": .string("bad"), "code": .int(2)]))
        #expect(s["flags"] == .int(0x301))
        #expect(s["traceState"] == nil)
        #expect(s["events"] == nil)
        #expect(text.hasPrefix(#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"a0a1"#))
        #expect(text.contains(#""kind":3,"startTimeUnixNano":"1700000000123456789""#))
    }

    @Test func unknownProtobufFieldsOfEveryWireTypeAreSkipped() throws {
        var plain = ProtoWriter()
        plain.appendStringField(5, "op")
        plain.appendVarintField(6, 1)

        var noisy = ProtoWriter()
        noisy.appendVarintField(100, 12345)
        noisy.appendStringField(5, "op")
        noisy.appendFixed64Field(101, 7)
        noisy.appendBytesField(102, [1, 2, 3])
        noisy.appendTag(103, .startGroup)
        noisy.appendVarintField(1, 1)
        noisy.appendTag(2, .startGroup)
        noisy.appendFixed32Field(3, 3)
        noisy.appendTag(2, .endGroup)
        noisy.appendTag(103, .endGroup)
        noisy.appendVarintField(6, 1)
        noisy.appendFixed32Field(104, 9)
        noisy.appendFixed32Field(5, 1)      // known number, wrong wire type: treated as unknown
        noisy.appendFixed64Field(3000, 1)   // beyond the schema's highest number

        var outer = ProtoWriter()
        outer.appendVarintField(1000, 1)    // unknown field in ExportTraceServiceRequest
        outer.bytes += Fixture.request(spans: [noisy.bytes])
        #expect(try Fixture.jsonText(outer.bytes) == Fixture.jsonText(Fixture.request(spans: [plain.bytes])))
        #expect(try Fixture.jsonText(Fixture.request(spans: [plain.bytes]))
            == #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"op","kind":1}]}]}]}"#)
    }

    @Test func oneofLastMemberWinsAndRepeatedMessageFieldsMerge() throws {
        var span = ProtoWriter()
        span.appendMessageField(9) { kv in
            kv.appendStringField(1, "k")
            kv.appendMessageField(2) { v in
                v.appendStringField(1, "first")
                v.appendVarintField(2, 0)   // explicit false: present
            }
        }
        span.appendMessageField(15) { $0.appendStringField(2, "m") }
        span.appendMessageField(15) { $0.appendVarintField(3, 1) }
        let s = try Fixture.parse(Fixture.jsonText(Fixture.request(spans: [span.bytes])))["resourceSpans"]?[0]?["scopeSpans"]?[0]?["spans"]?[0]
        #expect(s?["attributes"]?[0]?["value"] == .object(["boolValue": .bool(false)]))
        #expect(s?["status"] == .object(["message": .string("m"), "code": .int(1)]))
    }

    @Test func stringEscapingAndUTF8Repair() throws {
        var span = ProtoWriter()
        span.appendBytesField(5, Array("q\"b\\t\tn\nz\u{0}".utf8) + [0xFF] + Array("é\u{7F}".utf8))
        let text = try Fixture.jsonText(Fixture.request(spans: [span.bytes]))
        #expect(text.contains(#""name":"q\"b\\t\u0009n\u000az\u0000\#u{FFFD}é\#u{7F}""#))
        let name = try Fixture.parse(text)["resourceSpans"]?[0]?["scopeSpans"]?[0]?["spans"]?[0]?["name"]
        #expect(name == .string("q\"b\\t\tn\nz\u{0}\u{FFFD}é\u{7F}"))
    }

    @Test func nonFiniteDoubles() throws {
        for (input, output) in [("\"NaN\"", "\"NaN\""), ("\"Infinity\"", "\"Infinity\""), ("\"-Infinity\"", "\"-Infinity\""),
                                ("1e300", "1e+300"), ("-2", "-2.0"), ("\"0.25\"", "0.25")] {
            let json = Fixture.requestJSON(spans: #"{"attributes":[{"key":"d","value":{"doubleValue":\#(input)}}]}"#)
            let text = try Fixture.jsonText(Fixture.protobuf(json))
            #expect(text.contains(#"{"doubleValue":\#(output)}"#), "\(input) -> \(text)")
        }
    }

    // MARK: JSON -> protobuf

    @Test func smallSpanIsEncodedByteExactly() throws {
        let json = Fixture.requestJSON(spans: #"""
            {"traceId":"0102030405060708090A0B0C0D0E0F10","spanId":"1112131415161718","name":"x","kind":2,
             "startTimeUnixNano":"1000","endTimeUnixNano":2000,"flags":1,
             "attributes":[{"key":"n","value":{"intValue":-1}},{"key":"e","value":{"stringValue":""}}],
             "status":{"code":2}}
            """#)
        var span = ProtoWriter()
        span.appendBytesField(1, Array(1...16) as [UInt8])
        span.appendBytesField(2, Array(0x11...0x18) as [UInt8])
        span.appendStringField(5, "x")
        span.appendVarintField(6, 2)
        span.appendFixed64Field(7, 1000)
        span.appendFixed64Field(8, 2000)
        span.appendMessageField(9) { kv in
            kv.appendStringField(1, "n")
            kv.appendMessageField(2) { $0.appendVarintField(3, UInt64.max) }
        }
        span.appendMessageField(9) { kv in
            kv.appendStringField(1, "e")
            kv.appendMessageField(2) { $0.appendStringField(1, "") }
        }
        span.appendMessageField(15) { $0.appendVarintField(3, 2) }
        span.appendFixed32Field(16, 1)
        #expect(try Fixture.protobuf(json) == Fixture.request(spans: [span.bytes]))
    }

    @Test func snakeCaseUnknownKeysNullsAndEnumNamesAreAccepted() throws {
        let camel = Fixture.requestJSON(spans: #"""
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173",
             "traceState":"a=b","kind":3,"startTimeUnixNano":"5","endTimeUnixNano":"6","droppedAttributesCount":1,
             "droppedEventsCount":2,"droppedLinksCount":3,"status":{"code":1},
             "events":[{"timeUnixNano":"7","name":"e"}],
             "attributes":[{"key":"k","value":{"kvlistValue":{"values":[{"key":"x","value":{"bytesValue":"-_8"}}]}}}]}
            """#)
        let snake = #"""
            {"resource_spans":[{"scope_spans":[{"spans":[
             {"trace_id":"5B8EFFF798038103D269B633813FC60C","span_id":"eee19b7ec3c1b174","parent_span_id":"EEE19B7EC3C1B173",
              "trace_state":"a=b","kind":"SPAN_KIND_CLIENT","start_time_unix_nano":5,"end_time_unix_nano":"6",
              "dropped_attributes_count":"1","dropped_events_count":2,"dropped_links_count":3,
              "status":{"code":"STATUS_CODE_OK","message":null},
              "events":[{"time_unix_nano":"7","name":"e","extra":[1,2,{"x":null}]}],
              "attributes":[{"key":"k","value":{"kvlist_value":{"values":[{"key":"x","value":{"bytes_value":"+/8="}}]}}}],
              "links":null,"somethingElse":{"nested":true},"flags":null}
            ]}],"unknownTopLevel":1}],"extra":"ignored"}
            """#
        let expected = try Fixture.protobuf(camel)
        #expect(try Fixture.protobuf(snake) == expected)
        #expect(!expected.isEmpty)
    }

    @Test func base64Variants() throws {
        for (input, bytes) in [("", [UInt8]()), ("AA==", [0]), ("AA", [0]), ("AAE=", [0, 1]), ("AAEC", [0, 1, 2]),
                               ("+/8=", [0xFB, 0xFF]), ("-_8", [0xFB, 0xFF]), ("aGVsbG8", Array("hello".utf8))] {
            #expect(OTLPJSON.base64Decode(input) == bytes, "\(input)")
            var encoded = [UInt8]()
            bytes.withUnsafeBytes { OTLPJSON.base64Encode($0, into: &encoded) }
            #expect(OTLPJSON.base64Decode(String(decoding: encoded, as: UTF8.self)) == bytes)
        }
        for bad in ["A", "AAAAA", "AA=A", "A===", "AA AA", "AA*A"] {
            #expect(OTLPJSON.base64Decode(bad) == nil, "\(bad)")
        }
    }

    // MARK: Errors

    @Test(arguments: [
        // (json, path, message prefix)
        ("{\"resourceSpans\":[", "", "invalid JSON"),
        ("", "", "invalid JSON"),
        ("[1]", "", "expected a JSON object at the top level"),
        (#"{"resourceSpans":{}}"#, "resourceSpans", "expected an array"),
        (#"{"resourceSpans":[7]}"#, "resourceSpans[0]", "expected an object"),
        (Fixture.requestJSON(spans: #"{"parent_span_id":7}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].parent_span_id", "expected a hex string"),
        (Fixture.requestJSON(spans: #"{},{},{"startTimeUnixNano":true}"#),
         "resourceSpans[0].scopeSpans[0].spans[2].startTimeUnixNano", "expected an integer or a decimal string"),
        (Fixture.requestJSON(spans: #"{"startTimeUnixNano":"12x"}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano", "expected an integer or a decimal string"),
        (Fixture.requestJSON(spans: #"{"startTimeUnixNano":1.5}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano", "expected an integer or a decimal string"),
        (Fixture.requestJSON(spans: #"{"endTimeUnixNano":-1}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].endTimeUnixNano", "-1 is out of range for uint64"),
        (Fixture.requestJSON(spans: #"{"flags":4294967296}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].flags", "4294967296 is out of range for uint32"),
        (Fixture.requestJSON(spans: #"{"kind":"SPAN_KIND_BOGUS"}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].kind", "unknown enum value \"SPAN_KIND_BOGUS\""),
        (Fixture.requestJSON(spans: #"{"name":5}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].name", "expected a string"),
        (Fixture.requestJSON(spans: #"{"attributes":[{"key":"a","value":{"intValue":"9223372036854775808"}}]}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue", "9223372036854775808 is out of range for int64"),
        (Fixture.requestJSON(spans: #"{"attributes":[{"key":"a","value":{"boolValue":"true"}}]}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.boolValue", "expected true or false"),
        (Fixture.requestJSON(spans: #"{"attributes":[{"key":"a","value":{"doubleValue":"abc"}}]}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.doubleValue", "expected a number"),
        (Fixture.requestJSON(spans: #"{"attributes":[{"key":"a","value":{"bytesValue":"A"}}]}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.bytesValue", "invalid base64"),
        (Fixture.requestJSON(spans: #"{"attributes":[{"key":"a","value":{"arrayValue":{"values":[{"kvlistValue":{"values":[{"key":"b","value":{"intValue":[]}}]}}]}}}]}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.arrayValue.values[0].kvlistValue.values[0].value.intValue",
         "expected an integer or a decimal string"),
        (Fixture.requestJSON(spans: #"{"attributes":[{"key":"a","value":{"stringValue":"x","intValue":"1"}}]}"#),
         "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue", "only one value may be set in AnyValue"),
    ])
    func jsonErrors(json: String, path: String, message: String) {
        #expect {
            _ = try Fixture.protobuf(json)
        } throws: { error in
            guard let error = error as? OTLPJSONError else { return false }
            #expect(error.path == path, "\(error)")
            #expect(error.message.hasPrefix(message), "\(error)")
            return error.path == path && error.message.hasPrefix(message)
        }
    }

    @Test func invalidJSONMessageIsUseful() {
        do {
            _ = try Fixture.protobuf(#"{"resourceSpans": [ }"#)
            Issue.record("expected an error")
        } catch {
            #expect(error.path == "")
            #expect(error.message.hasPrefix("invalid JSON: "))
            #expect(error.message.contains("character 20"), "\(error)")
            #expect(error.description == error.message)
        }
        let e = OTLPJSONError(path: "a.b", message: "m")
        #expect(e.description == "a.b: m")
    }

    @Test func malformedProtobuf() throws {
        var truncatedSpan = ProtoWriter()
        truncatedSpan.appendStringField(5, "ok")
        truncatedSpan.appendTag(7, .fixed64)
        truncatedSpan.bytes += [1, 2, 3]

        var badLength = ProtoWriter()
        badLength.appendTag(5, .lengthDelimited)
        badLength.appendVarint(50)

        var endGroup = ProtoWriter()
        endGroup.appendTag(9, .endGroup)

        var badWireType = [UInt8]()
        badWireType.append(UInt8(9 << 3 | 7))

        let cases: [([UInt8], String, String)] = [
            ([0x0A], "resourceSpans", "truncated varint at byte 1"),
            ([0x0B], "", "unterminated group"),
            ([0x0A, 0x05, 0x01], "resourceSpans", "length 5 runs past the end of the enclosing message at byte 1"),
            (Fixture.request(spans: [[], truncatedSpan.bytes]), "resourceSpans[0].scopeSpans[0].spans[1].startTimeUnixNano",
             "truncated fixed64"),
            (Fixture.request(spans: [badLength.bytes]), "resourceSpans[0].scopeSpans[0].spans[0].name", "length 50 runs past"),
            (Fixture.request(spans: [endGroup.bytes]), "resourceSpans[0].scopeSpans[0].spans[0]", "unexpected end-group"),
            (Fixture.request(spans: [badWireType]), "resourceSpans[0].scopeSpans[0].spans[0]", "invalid wire type 7"),
        ]
        for (bytes, path, message) in cases {
            do {
                _ = try OTLPJSON.jsonFromProtobuf(bytes)
                Issue.record("expected an error for \(bytes)")
            } catch {
                #expect(error.path == path, "\(error)")
                #expect(error.message.hasPrefix(message), "\(error)")
            }
        }
    }

    @Test func deepNestingIsRejectedNotCrashing() throws {
        // AnyValue -> ArrayValue -> AnyValue ... 10_000 levels deep.
        var value = ProtoWriter()
        value.appendStringField(1, "leaf")
        for _ in 0..<10_000 {
            var array = ProtoWriter()
            array.appendBytesField(1, value.bytes)
            var next = ProtoWriter()
            next.appendBytesField(5, array.bytes)
            value = next
        }
        var span = ProtoWriter()
        span.appendMessageField(9) { kv in
            kv.appendStringField(1, "deep")
            kv.appendBytesField(2, value.bytes)
        }
        #expect(throws: OTLPJSONError.self) { try OTLPJSON.jsonFromProtobuf(Fixture.request(spans: [span.bytes])) }

        // Same on the JSON side.
        let depth = 60
        let nested = String(repeating: #"{"arrayValue":{"values":["#, count: depth) + #"{"intValue":1}"#
            + String(repeating: "]}}", count: depth)
        let json = Fixture.requestJSON(spans: #"{"attributes":[{"key":"k","value":\#(nested)}]}"#)
        #expect { try Fixture.protobuf(json) } throws: { error in
            (error as? OTLPJSONError)?.message == "messages nested deeper than 100 levels"
        }

        // Moderate nesting works in both directions.
        let ok = String(repeating: #"{"arrayValue":{"values":["#, count: 20) + #"{"intValue":"1"}"#
            + String(repeating: "]}}", count: 20)
        let okJSON = Fixture.requestJSON(spans: #"{"attributes":[{"key":"k","value":\#(ok)}]}"#)
        #expect(try Fixture.parse(Fixture.jsonText(Fixture.protobuf(okJSON))) == Fixture.parse(okJSON))
    }

    @Test func numbersKeepFull64BitPrecision() throws {
        let json = Fixture.requestJSON(spans: #"""
            {"startTimeUnixNano":1544712660123456789,"endTimeUnixNano":18446744073709551615,
             "droppedAttributesCount":"4294967295","kind":"3",
             "attributes":[{"key":"a","value":{"intValue":9007199254740993}},{"key":"b","value":{"intValue":"-9007199254740993"}}]}
            """#)
        let s = try Fixture.parse(Fixture.jsonText(Fixture.protobuf(json)))["resourceSpans"]?[0]?["scopeSpans"]?[0]?["spans"]?[0]
        #expect(s?["startTimeUnixNano"] == .string("1544712660123456789"))
        #expect(s?["endTimeUnixNano"] == .string("18446744073709551615"))
        #expect(s?["droppedAttributesCount"] == .int(4_294_967_295))
        #expect(s?["kind"] == .int(3))
        #expect(s?["attributes"]?[0]?["value"]?["intValue"] == .string("9007199254740993"))
        #expect(s?["attributes"]?[1]?["value"]?["intValue"] == .string("-9007199254740993"))
    }

    @Test func deeplyNestedIgnoredJSONDoesNotCrash() throws {
        // Deep nesting under an ignored key: skipped (without recursion).
        let json = #"{"ignored":"# + String(repeating: "[", count: 500) + String(repeating: "]", count: 500) + "}"
        #expect(try Fixture.protobuf(json) == [])
        // Not an object at the top level: a clean error.
        let tooDeep = String(repeating: "[", count: 5_000) + String(repeating: "]", count: 5_000)
        #expect(throws: OTLPJSONError.self) { try Fixture.protobuf(tooDeep) }
    }

    @Test func largeRequestIsLinear() throws {
        var spans: [String] = []
        for i in 0..<2_000 {
            spans.append(#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"\#(String(format: "%016x", i + 1))","name":"s\#(i)","startTimeUnixNano":"\#(i)","attributes":[{"key":"i","value":{"intValue":"\#(i)"}}]}"#)
        }
        let json = Fixture.requestJSON(spans: spans.joined(separator: ","))
        let bytes = try Fixture.protobuf(json)
        let back = try Fixture.parse(Fixture.jsonText(bytes))
        #expect(back["resourceSpans"]?[0]?["scopeSpans"]?[0]?["spans"]?[1_999]?["name"] == .string("s1999"))
    }
}
