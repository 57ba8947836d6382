import Testing
import TailgateTestSupport
@testable import TailgateWire

private func scan(_ bytes: [UInt8], plan: AttributePlan = AttributePlan()) throws(ScanError) -> ScannedRequest {
    var result = ScannedRequest()
    let scanner = OTLPScanner(plan: plan)
    let outcome = bytes.withUnsafeBytes { raw in Result { () throws(ScanError) in try scanner.scan(raw, into: &result) } }
    try outcome.get()
    return result
}

/// One encoded field.
private func field(_ number: UInt32, _ build: (inout ProtoWriter) -> Void) -> [UInt8] {
    var w = ProtoWriter()
    w.appendMessageField(number, build)
    return w.bytes
}

private func bytesField(_ number: UInt32, _ payload: [UInt8]) -> [UInt8] {
    var w = ProtoWriter()
    w.appendBytesField(number, payload)
    return w.bytes
}

/// A KeyValue field `number` whose key and string value are raw bytes.
private func rawAttribute(_ number: UInt32, key: [UInt8], string: [UInt8]) -> [UInt8] {
    field(number) { kv in
        kv.appendBytesField(1, key)
        kv.appendMessageField(2) { $0.appendBytesField(1, string) }
    }
}

/// A request built from raw header fields: resources of (header fields, scopes of (header fields, span payloads)).
private func request(_ resources: [(header: [UInt8], scopes: [(header: [UInt8], spans: [[UInt8]])])]) -> [UInt8] {
    var w = ProtoWriter()
    for resource in resources {
        w.appendMessageField(1) { rs in
            rs.bytes += resource.header
            for scope in resource.scopes {
                rs.appendMessageField(2) { ss in
                    ss.bytes += scope.header
                    for span in scope.spans { ss.appendBytesField(2, span) }
                }
            }
        }
    }
    return w.bytes
}

private func span(_ id: UInt64, trace: TraceID = tid(1), raw: [UInt8] = [], attributes: [(String, TestValue)] = []) -> [UInt8] {
    var s = TestSpan(trace: trace, span: id, attributes: attributes)
    s.rawFields = raw
    return s.encoded
}

/// `value` wrapped in `count` array_values.
private func inArrays(_ count: Int, _ value: TestValue) -> TestValue {
    (0..<count).reduce(value) { v, _ in .array([v]) }
}

/// `count` kvlist_values nested in each other.
private func kvlists(_ count: Int) -> TestValue {
    (0..<count).reduce(TestValue.int(1)) { v, _ in .kvlist([("k", v)]) }
}

private let invalidUTF8: [UInt8] = [0x66, 0x6F, 0xC3, 0x28]   // "fo" + a lead byte without its continuation

@Suite struct ValidationTests {
    // MARK: The three reproductions

    @Test func kvlist150DeepIsRejectedAlone() throws {
        let body = request([(header: [], scopes: [(header: [], spans: [
            span(1, attributes: [("deep", kvlists(150))]),
            span(2),
        ])])])
        let r = try scan(body)
        #expect(r.spans.map(\.spanID) == [2])
        #expect(r.rejectedSpans == 1)
        let message = try #require(r.rejectionMessage)
        #expect(message.contains("nested deeper than 100 levels"), "\(message)")
        #expect(message.contains("within span attributes"), "\(message)")
        #expect(message.hasSuffix("at resourceSpans[0].scopeSpans[0].spans[0]"), "\(message)")
    }

    @Test(arguments: [
        [0xFF, 0xFF, 0xFF],                    // truncated varint tag
        [0x0F, 0x00],                          // wire type 7
        [0x12, 0x05, 0x41],                    // event name longer than the event
        [0x12, 0x02, 0xC3, 0x28],              // event name that is not UTF-8
        [0x08, 0x01],                          // time_unix_nano (fixed64) sent as a varint
        [0x1A, 0x03, 0x0A, 0x05, 0x41],        // event attribute whose key runs past the attribute
        [0x1B, 0x08, 0x01],                    // a group where the attributes are, never closed
        [0x0C],                                // end-group without a group
        [0x00, 0x01],                          // field number 0
        [0xAB, 0x01, 0x08, 0x00, 0xB4, 0x01],  // unknown group 21 closed by end-group 22
    ] as [[UInt8]])
    func garbageInEventsIsRejectedAlone(garbage: [UInt8]) throws {
        let body = request([(header: [], scopes: [(header: [], spans: [
            span(1),
            span(2, raw: bytesField(11, garbage)),
            span(3),
        ])])])
        let r = try scan(body)
        #expect(r.spans.map(\.spanID) == [1, 3])
        #expect(r.rejectedSpans == 1)
        let message = try #require(r.rejectionMessage)
        #expect(message.contains("within span events at resourceSpans[0].scopeSpans[0].spans[1]"), "\(message)")
    }

    @Test func invalidUTF8InSpanNameIsRejectedAlone() throws {
        let good = (0..<7).map { span(UInt64(10 + $0)) }
        let body = request([(header: [], scopes: [
            (header: [], spans: [span(1)]),
            (header: [], spans: good + [span(99, raw: bytesField(5, invalidUTF8))] + [span(20)]),
        ])])
        let r = try scan(body)
        #expect(r.rejectedSpans == 1)
        #expect(r.rejectionMessage == "invalid UTF-8 in span name at resourceSpans[0].scopeSpans[1].spans[7]")
        #expect(r.spans.map(\.spanID) == [1] + (10..<17).map(UInt64.init) + [20])
    }

    // MARK: Limits and strings

    /// A span is at level 3 (request 0, ResourceSpans 1, ScopeSpans 2); its attribute KeyValue 4, the AnyValue 5;
    /// each array adds 2 levels: 47 arrays put the innermost AnyValue at 99 and its kvlist_value at 100.
    @Test(arguments: [
        (inArrays(47, .kvlist([])), true),                  // deepest message at level 100
        (inArrays(47, .kvlist([("k", .int(1))])), false),   // its KeyValue at 101
        (inArrays(48, .int(1)), false),                     // the innermost AnyValue at 101
        (inArrays(46, .kvlist([("k", .int(1))])), true),    // KeyValue at 99, its AnyValue at 100
    ] as [(TestValue, Bool)])
    func nestingIsAcceptedUpTo100Levels(value: TestValue, accepted: Bool) throws {
        let r = try scan(request([(header: [], scopes: [(header: [], spans: [span(1, attributes: [("nested", value)])])])]))
        #expect(r.spans.count == (accepted ? 1 : 0))
        #expect(r.rejectedSpans == (accepted ? 0 : 1), "\(r.rejectionMessage ?? "")")
    }

    @Test func nestingInEventsCountsTheEventLevel() throws {
        // Event 4, its KeyValue 5, AnyValue 6: 47 arrays put the innermost AnyValue at 100.
        let ok = field(11) { ev in appendRawAttribute(&ev, 3, "k", inArrays(47, .int(1))) }
        let deep = field(11) { ev in appendRawAttribute(&ev, 3, "k", inArrays(47, .kvlist([]))) }
        let r = try scan(request([(header: [], scopes: [(header: [], spans: [span(1, raw: ok), span(2, raw: deep)])])]))
        #expect(r.spans.map(\.spanID) == [1])
        #expect(r.rejectionMessage?.contains("within span events") == true)
    }

    /// Each string field of the trace schema, holding invalid UTF-8 (and the same bytes where they are allowed).
    static let stringFields: [(String, [UInt8], Bool)] = [
        ("span name", bytesField(5, invalidUTF8), false),
        ("span trace_state", bytesField(3, invalidUTF8), false),
        ("attribute key", rawAttribute(9, key: invalidUTF8, string: [0x61]), false),
        ("string value", rawAttribute(9, key: [0x61], string: invalidUTF8), false),
        ("string in an array", field(9) { kv in
            kv.appendStringField(1, "k")
            kv.appendMessageField(2) { any in any.appendMessageField(5) { arr in arr.appendMessageField(1) { $0.appendBytesField(1, invalidUTF8) } } }
        }, false),
        ("key in a kvlist", field(9) { kv in
            kv.appendStringField(1, "k")
            kv.appendMessageField(2) { any in any.appendMessageField(6) { list in list.bytes += rawAttribute(1, key: invalidUTF8, string: []) } }
        }, false),
        ("event name", field(11) { $0.appendBytesField(2, invalidUTF8) }, false),
        ("event attribute", field(11) { $0.bytes += rawAttribute(3, key: [0x61], string: invalidUTF8) }, false),
        ("link trace_state", field(13) { $0.appendBytesField(3, invalidUTF8) }, false),
        ("link attribute", field(13) { $0.bytes += rawAttribute(4, key: invalidUTF8, string: []) }, false),
        ("status message", field(15) { $0.appendBytesField(2, invalidUTF8) }, false),
        // bytes fields hold anything.
        ("bytes value", field(9) { kv in
            kv.appendStringField(1, "k")
            kv.appendMessageField(2) { $0.appendBytesField(7, invalidUTF8) }
        }, true),
        ("link IDs", field(13) { l in l.appendBytesField(1, invalidUTF8); l.appendBytesField(2, [0xFF, 0xFE]) }, true),
        ("valid multi-byte UTF-8", bytesField(5, Array("résumé 日本 😀".utf8)), true),
    ]

    @Test(arguments: stringFields.indices)
    func stringFieldsMustBeUTF8(index: Int) throws {
        let (name, raw, accepted) = Self.stringFields[index]
        let r = try scan(request([(header: [], scopes: [(header: [], spans: [span(1, raw: raw)])])]))
        #expect(r.spans.count == (accepted ? 1 : 0), "\(name)")
        if !accepted { #expect(r.rejectionMessage?.contains("invalid UTF-8") == true, "\(name): \(r.rejectionMessage ?? "")") }
    }

    @Test(arguments: [
        ([0x28, 0x01], "wrong wire type varint for span name"),                // name as a varint
        ([0x4D, 0, 0, 0, 0], "wrong wire type fixed32 for span attributes"),   // attributes as fixed32
        ([0x58, 0x01], "wrong wire type varint for span events"),
        ([0x32, 0x00], "wrong wire type lengthDelimited for span kind"),
        ([0x38, 0x01], "wrong wire type varint for span start_time_unix_nano"),
        ([0x80, 0x01, 0x01], "wrong wire type varint for span flags"),
        ([0x7B, 0x7C], "wrong wire type startGroup for span status"),          // status as a group
    ] as [([UInt8], String)])
    func knownFieldsNeedTheirWireType(raw: [UInt8], message: String) throws {
        let r = try scan(request([(header: [], scopes: [(header: [], spans: [span(1, raw: raw), span(2)])])]))
        #expect(r.spans.map(\.spanID) == [2])
        #expect(r.rejectionMessage == "\(message) at resourceSpans[0].scopeSpans[0].spans[0]")
    }

    @Test func wellFormedUnknownFieldsAreAcceptedEverywhere() throws {
        // Unknown fields of every wire type; the length-delimited one holds bytes no parser looks into.
        var unknown = ProtoWriter()
        unknown.appendVarintField(100, 7)
        unknown.appendFixed32Field(101, 9)
        unknown.appendFixed64Field(102, 9)
        unknown.appendBytesField(104, [0xFF, 0xC3, 0x28, 0x0F])
        unknown.appendTag(103, .startGroup)
        unknown.appendVarintField(1, 1)
        unknown.appendTag(105, .startGroup)
        unknown.appendBytesField(2, invalidUTF8)
        unknown.appendTag(105, .endGroup)
        unknown.appendTag(103, .endGroup)
        let u = unknown.bytes

        let spanRaw = u
            + field(9) { kv in kv.appendStringField(1, "k"); kv.appendMessageField(2) { any in any.appendStringField(1, "v"); any.bytes += u }; kv.bytes += u }
            + field(9) { kv in
                kv.appendStringField(1, "list")
                kv.appendMessageField(2) { any in any.appendMessageField(6) { list in list.bytes += u } }
            }
            + field(11) { ev in ev.appendStringField(2, "event"); ev.bytes += u }
            + field(13) { l in l.appendBytesField(1, tid(9).bytes); l.bytes += u }
            + field(15) { st in st.appendVarintField(3, 2); st.bytes += u }
        let resourceHeader = field(1) { res in
            res.appendMessageField(1) { kv in kv.appendStringField(1, "service.name"); kv.appendMessageField(2) { $0.appendStringField(1, "svc") } }
            res.appendMessageField(3) { ref in ref.appendStringField(2, "service"); ref.appendStringField(3, "service.name"); ref.bytes += u }
            res.bytes += u
        } + bytesField(3, Array("https://opentelemetry.io/schemas/1.26.0".utf8)) + u
        let scopeHeader = field(1) { sc in sc.appendStringField(1, "scope"); sc.appendStringField(2, "1.0"); sc.bytes += u } + u
        var body = request([(header: resourceHeader, scopes: [(header: scopeHeader, spans: [span(1, raw: spanRaw)])])])
        body += u  // and at the request level

        let r = try scan(body)
        #expect(r.rejectedSpans == 0, "\(r.rejectionMessage ?? "")")
        #expect(r.spans.count == 1)
        #expect(Array(body[r.spans[0].bytes]) == span(1, raw: spanRaw))
        // Unknown header fields are kept in the headers, as received.
        #expect(r.scopes[0].header == scopeHeader)
        #expect(r.scopes[0].resource.header == resourceHeader)
    }

    // MARK: Requests mixing good and bad

    @Test func mixedRequestAcceptsTheGoodSpans() throws {
        let body = request([
            (header: [], scopes: [
                (header: field(1) { $0.appendStringField(1, "s0") }, spans: [
                    span(1, raw: bytesField(5, invalidUTF8)),
                    span(2),
                    span(3, attributes: [("deep", kvlists(40))]),
                    span(4, raw: bytesField(11, [0xFF])),
                ]),
                (header: field(1) { $0.appendStringField(1, "s1") }, spans: [
                    span(5, trace: TraceID(hi: 0, lo: 0)),   // invalid trace ID
                    span(6, attributes: [("ok", kvlists(20))]),
                ]),
            ]),
            (header: [], scopes: [
                (header: field(1) { $0.appendStringField(1, "s2") }, spans: [span(7, raw: field(15) { $0.appendBytesField(2, invalidUTF8) })]),
                (header: field(1) { $0.appendStringField(1, "s3") }, spans: [span(8), span(9)]),
            ]),
        ])
        let r = try scan(body)
        #expect(r.spans.map(\.spanID) == [2, 6, 8, 9])
        #expect(r.rejectedSpans == 5)
        #expect(r.rejectionMessage == "invalid UTF-8 in span name at resourceSpans[0].scopeSpans[0].spans[0]")
        // Scopes: s0, s1 and s3 hold accepted spans; s2 none.
        #expect(r.spans.map(\.scope) == [0, 1, 2, 2])
        #expect(r.scopes.map(\.header) == ["s0", "s1", "s3"].map { name in field(1) { $0.appendStringField(1, name) } })
        #expect(r.scopes[0].resource === r.scopes[1].resource)
        // The second ResourceSpans has the same (empty) header as the first: one shared origin (`OriginInterner`).
        #expect(r.scopes[1].resource === r.scopes[2].resource)
        #expect(r.scopes[2].resource.header.isEmpty)
    }

    @Test(arguments: [
        ("invalid UTF-8 in a resource attribute", field(1) { $0.bytes += rawAttribute(1, key: [0x6B], string: invalidUTF8) },
         "invalid UTF-8 in value string_value within resource at resourceSpans[0]"),
        ("invalid UTF-8 in the schema URL", bytesField(3, invalidUTF8), "invalid UTF-8 in resource_spans schema_url at resourceSpans[0]"),
        ("too deep a resource attribute", field(1) { res in appendRawAttribute(&res, 1, "k", kvlists(40)) }, "nested deeper than 100 levels"),
        ("garbage in the resource", bytesField(1, [0x0A, 0x09, 0x01]), "runs past the end"),
        ("resource as a varint", [0x08, 0x01], "wrong wire type varint for resource at resourceSpans[0]"),
        ("invalid UTF-8 in an entity ref", field(1) { $0.appendMessageField(3) { $0.appendBytesField(3, invalidUTF8) } },
         "invalid UTF-8 in entity_ref id_keys within resource"),
    ] as [(String, [UInt8], String)])
    func invalidResourceHeaderRejectsItsSpans(what: String, header: [UInt8], message: String) throws {
        let body = request([
            (header: header, scopes: [(header: [], spans: [span(1), span(2)]), (header: [], spans: []), (header: [], spans: [span(3)])]),
            (header: [], scopes: [(header: [], spans: [span(4)])]),
        ])
        let r = try scan(body)
        #expect(r.spans.map(\.spanID) == [4], "\(what)")
        #expect(r.rejectedSpans == 3, "\(what)")
        #expect(r.rejectionMessage?.contains(message) == true, "\(what): \(r.rejectionMessage ?? "")")
        #expect(r.rejectionMessage?.hasSuffix("(every span of the resource rejected)") == true)
        #expect(r.scopes.count == 1 && r.spans[0].scope == 0)
    }

    @Test(arguments: [
        ("invalid UTF-8 in the scope name", field(1) { $0.appendBytesField(1, invalidUTF8) }, "invalid UTF-8 in scope name within scope"),
        ("invalid UTF-8 in the scope version", field(1) { $0.appendBytesField(2, invalidUTF8) }, "invalid UTF-8 in scope version"),
        ("invalid UTF-8 in a scope attribute", field(1) { $0.bytes += rawAttribute(3, key: invalidUTF8, string: []) }, "invalid UTF-8 in attribute key"),
        ("invalid UTF-8 in the schema URL", bytesField(3, invalidUTF8), "invalid UTF-8 in scope_spans schema_url"),
        ("spans as a varint", [0x10, 0x01], "wrong wire type varint for scope_spans spans"),
    ] as [(String, [UInt8], String)])
    func invalidScopeHeaderRejectsItsSpans(what: String, header: [UInt8], message: String) throws {
        let body = request([(header: [], scopes: [
            (header: [], spans: [span(1)]),
            (header: header, spans: [span(2), span(3)]),
            (header: [], spans: [span(4)]),
        ])])
        let r = try scan(body)
        #expect(r.spans.map(\.spanID) == [1, 4], "\(what)")
        #expect(r.rejectedSpans == 2, "\(what)")
        #expect(r.rejectionMessage?.contains(message) == true, "\(what): \(r.rejectionMessage ?? "")")
        #expect(r.rejectionMessage?.hasSuffix("at resourceSpans[0].scopeSpans[1] (every span of the scope rejected)") == true,
                "\(r.rejectionMessage ?? "")")
        #expect(r.spans.map(\.scope) == [0, 1])
    }

    @Test func brokenFramingOfAResourceIsStillAMalformedRequest() {
        // A header field whose own length runs past the ResourceSpans: no telling where the scopes are.
        var w = ProtoWriter()
        w.appendMessageField(1) { rs in rs.bytes += [0x1A, 0x20, 0x61] }
        #expect { _ = try scan(w.bytes) } throws: { ($0 as? ScanError)?.description.contains("runs past the end") == true }
    }

    // MARK: The fast and the thorough pass

    @Test func codeTablesMatchTheSchema() {
        for message in OTLPValidator.Message.allCases {
            let (low, high) = OTLPValidator.codeTable(message)
            for field in 1...16 {
                let code = field <= 8 ? UInt8(truncatingIfNeeded: low >> (UInt64(field - 1) * 8)) : UInt8(truncatingIfNeeded: high >> (UInt64(field - 9) * 8))
                #expect(code == OTLPValidator.code(message, UInt32(field)), "\(message) field \(field)")
            }
        }
    }

    @Test func fastAndThoroughPassesAgreeOnMutatedSpans() {
        var mutator = Mutator(state: 42)
        let events = field(11) { ev in ev.appendFixed64Field(1, 5); ev.appendStringField(2, "ev"); appendRawAttribute(&ev, 3, "a", .kvlist([("b", .strings(["x", "y"]))])) }
        let links = field(13) { l in l.appendBytesField(1, tid(3).bytes); l.appendStringField(3, "k=v"); l.appendFixed32Field(6, 1) }
        let seed = span(1, raw: events + links, attributes: [("s", .string("héllo")), ("d", .double(1.5)), ("b", .bytes([0xFF])),
                                                             ("n", .array([.int(1), .kvlist([("deep", .bool(true))])]))])
        var disagreements = 0, rejected = 0
        for _ in 0..<20_000 {
            var bytes = seed
            mutator.mutate(&bytes, upTo: 3)
            bytes.withUnsafeBytes { raw in
                let fast = OTLPValidator.isValid(.span, raw, 0..<raw.count, depth: 3)
                let thorough = (try? OTLPValidator.validate(.span, raw, 0..<raw.count, depth: 3, root: true)) != nil
                if fast != thorough { disagreements += 1 }
                if !fast { rejected += 1 }
            }
        }
        #expect(disagreements == 0)
        #expect(rejected > 1000)  // the mutations do hit
    }

    /// The inline path for attributes of the common shapes gives the general path's verdict, or declines (nil):
    /// attributes of every simple kind, with 1- and 2-byte lengths, empty values, invalid UTF-8, and random
    /// mutations of each.
    @Test func simpleAttributePathAgreesWithTheGeneralOne() {
        var mutator = Mutator(state: 7)
        func attribute(_ key: [UInt8], _ value: [UInt8]) -> [UInt8] {
            var w = ProtoWriter()
            w.appendBytesField(1, key)
            w.appendBytesField(2, value)
            return w.bytes
        }
        let long = String(repeating: "prompt ", count: 40)  // a value of 280 bytes: 2-byte lengths
        let seeds: [[UInt8]] = [
            attribute(Array("gen_ai.request.model".utf8), TestValue.string("gpt-4o").encoded),
            attribute(Array("gen_ai.prompt".utf8), TestValue.string(long).encoded),
            attribute(Array(String(repeating: "k", count: 200).utf8), TestValue.string("v").encoded),
            attribute(Array("gen_ai.usage.input_tokens".utf8), TestValue.int(1234).encoded),
            attribute(Array("negative".utf8), TestValue.int(-1).encoded),  // a 10-byte varint: declined
            attribute(Array("ok".utf8), TestValue.bool(true).encoded),
            attribute(Array("ratio".utf8), TestValue.double(0.25).encoded),
            attribute(Array("empty".utf8), []),
            attribute([0x61, 0xFF], TestValue.string("x").encoded),  // invalid UTF-8 in the key
            attribute(Array("s".utf8), [0x0A, 0x02, 0xC3, 0x28]),  // invalid UTF-8 in the value
            attribute(Array("b".utf8), TestValue.bytes([0xFF]).encoded),  // bytes_value: declined
        ]
        var agreed = 0, declined = 0, rejected = 0
        for seed in seeds {
            for round in 0..<2_000 {
                var bytes = seed
                if round > 0 { mutator.mutate(&bytes, upTo: 2) }
                bytes.withUnsafeBytes { raw in
                    let general = OTLPValidator.isValid(.keyValue, raw, 0..<raw.count, depth: 4)
                    guard let base = raw.baseAddress, let fast = OTLPValidator.simpleAttribute(base, raw, 0..<raw.count) else {
                        declined += 1
                        return
                    }
                    #expect(fast == general, "\(bytes)")
                    if fast == general { agreed += 1 }
                    if !fast { rejected += 1 }
                }
            }
        }
        #expect(agreed > 4_000)  // the unmutated shapes and many mutations take the inline path
        #expect(rejected > 500)  // … and it does refuse some
        #expect(declined > 1_000)
    }

    // MARK: UTF-8

    @Test(arguments: [
        ([], true), (Array("plain ascii longer than eight bytes".utf8), true), (Array("héllo".utf8), true),
        (Array("日本語".utf8), true), (Array("😀".utf8), true), ([0xEF, 0xBF, 0xBF], true), ([0xF4, 0x8F, 0xBF, 0xBF], true),
        ([0xED, 0x9F, 0xBF], true), ([0xE0, 0xA0, 0x80], true), ([0xF0, 0x90, 0x80, 0x80], true),
        ([0x80], false), ([0xC3], false), ([0xC0, 0x80], false), ([0xC1, 0xBF], false), ([0xE0, 0x80, 0x80], false),
        ([0xE0, 0x9F, 0xBF], false), ([0xED, 0xA0, 0x80], false), ([0xF0, 0x80, 0x80, 0x80], false),
        ([0xF4, 0x90, 0x80, 0x80], false), ([0xF5, 0x80, 0x80, 0x80], false), ([0xFF], false), ([0xE2, 0x82], false),
        (Array("0123456789abcdef".utf8) + [0xC3], false), (Array("0123456789".utf8) + [0xE2, 0x82, 0xAC, 0x41, 0xFE], false),
    ] as [([UInt8], Bool)])
    func utf8Validation(bytes: [UInt8], valid: Bool) {
        #expect(bytes.withUnsafeBytes { isValidUTF8($0, 0..<$0.count) } == valid, "\(bytes)")
    }

    @Test func utf8ValidationAgreesWithTheStandardLibrary() {
        var state: UInt64 = 0x1234_5678_9ABC_DEF0
        func next() -> UInt64 { state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407; return state >> 33 }
        let pieces: [[UInt8]] = [[0x41], [0xC3, 0xA9], [0xE2, 0x82, 0xAC], [0xF0, 0x9F, 0x98, 0x80], [0x80], [0xC3], [0xED, 0xA0, 0x80],
                                 [0xF4, 0x90, 0x80, 0x80], [0xE0, 0x80, 0xAF], [0xFF], Array("abcdefgh".utf8)]
        for _ in 0..<20_000 {
            var bytes: [UInt8] = []
            for _ in 0..<Int(next() % 6) {
                if next() % 3 == 0 { bytes.append(UInt8(truncatingIfNeeded: next())) } else { bytes += pieces[Int(next() % UInt64(pieces.count))] }
            }
            let expected = String(validating: bytes, as: UTF8.self) != nil
            // At an offset inside a larger buffer too.
            let padded = [0x20, 0x20, 0x20] + bytes + [0x80]
            #expect(bytes.withUnsafeBytes { isValidUTF8($0, 0..<$0.count) } == expected, "\(bytes)")
            #expect(padded.withUnsafeBytes { isValidUTF8($0, 3..<(3 + bytes.count)) } == expected, "\(bytes)")
        }
    }
}

/// Seeded random mutations of encoded bytes: 1 to `upTo` times, a byte replaced, a bit flipped or a byte removed.
private struct Mutator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state >> 33
    }
    mutating func mutate(_ bytes: inout [UInt8], upTo: UInt64) {
        for _ in 0..<(1 + Int(next() % upTo)) where !bytes.isEmpty {
            let i = Int(next() % UInt64(bytes.count))
            switch next() % 3 {
            case 0: bytes[i] = UInt8(truncatingIfNeeded: next())
            case 1: bytes[i] ^= 1 << UInt8(next() % 8)
            default: bytes.remove(at: i)
            }
        }
    }
}

/// Appends KeyValue field `number` with `key` and `value`.
private func appendRawAttribute(_ w: inout ProtoWriter, _ number: UInt32, _ key: String, _ value: TestValue) {
    w.appendMessageField(number) { kv in
        kv.appendStringField(1, key)
        kv.appendBytesField(2, value.encoded)
    }
}
