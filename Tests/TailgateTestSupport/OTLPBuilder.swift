package import TailgateWire

/// An attribute value of any kind.
package enum TestValue: Sendable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case strings([String])
    /// An array_value of any values.
    case array([TestValue])
    /// A kvlist_value.
    case kvlist([(String, TestValue)])
    case bytes([UInt8])

    /// The AnyValue message payload.
    package var encoded: [UInt8] {
        var w = ProtoWriter()
        encode(&w)
        return w.bytes
    }

    func encode(_ w: inout ProtoWriter) {
        switch self {
        case .string(let s): w.appendStringField(1, s)
        case .bool(let b): w.appendVarintField(2, b ? 1 : 0)
        case .int(let i): w.appendVarintField(3, UInt64(bitPattern: i))
        case .double(let d): w.appendFixed64Field(4, d.bitPattern)
        case .strings(let list):
            w.appendMessageField(5) { arr in
                for item in list { arr.appendMessageField(1) { $0.appendStringField(1, item) } }
            }
        case .array(let list):
            w.appendMessageField(5) { arr in
                for item in list { arr.appendMessageField(1) { item.encode(&$0) } }
            }
        case .kvlist(let list):
            w.appendMessageField(6) { kvs in
                for (k, v) in list { appendAttribute(&kvs, field: 1, k, v) }
            }
        case .bytes(let b): w.appendBytesField(7, b)
        }
    }
}

func appendAttribute(_ w: inout ProtoWriter, field: UInt32, _ key: String, _ value: TestValue) {
    w.appendMessageField(field) { kv in
        kv.appendStringField(1, key)
        kv.appendMessageField(2) { value.encode(&$0) }
    }
}

/// Builds encoded OTLP requests for tests, field by field, with ProtoWriter (independent of the scanner).
package struct TestSpan: Sendable {
    package var traceID: TraceID
    package var spanID: UInt64
    package var parentSpanID: UInt64 = 0
    package var name: String = "span"
    package var start: UInt64 = 1_000
    package var end: UInt64 = 2_000
    package var status: StatusCode? = nil
    package var intAttributes: [(String, Int64)] = []
    package var stringAttributes: [(String, String)] = []
    package var attributes: [(String, TestValue)] = []
    package var traceState: String? = nil
    /// `Span.flags` (0x100: the exporter says whether the parent is remote; 0x200: it is), written when set.
    package var flags: UInt32? = nil
    /// Encoded fields appended to the span as they are (events, links, unknown or malformed fields, …).
    package var rawFields: [UInt8] = []

    package init(trace: TraceID, span: UInt64, parent: UInt64 = 0, name: String = "span", start: UInt64 = 1_000, end: UInt64 = 2_000,
                status: StatusCode? = nil, ints: [(String, Int64)] = [], strings: [(String, String)] = [],
                attributes: [(String, TestValue)] = [], traceState: String? = nil) {
        self.attributes = attributes
        self.traceState = traceState
        traceID = trace
        spanID = span
        parentSpanID = parent
        self.name = name
        self.start = start
        self.end = end
        self.status = status
        intAttributes = ints
        stringAttributes = strings
    }

    /// The Span message payload.
    package var encoded: [UInt8] {
        var w = ProtoWriter()
        w.appendBytesField(1, traceID.bytes)
        w.appendBytesField(2, be64(spanID))
        if let traceState { w.appendStringField(3, traceState) }
        if parentSpanID != 0 { w.appendBytesField(4, be64(parentSpanID)) }
        w.appendStringField(5, name)
        w.appendVarintField(6, 1)
        w.appendFixed64Field(7, start)
        w.appendFixed64Field(8, end)
        for (k, v) in stringAttributes {
            w.appendMessageField(9) { kv in
                kv.appendStringField(1, k)
                kv.appendMessageField(2) { $0.appendStringField(1, v) }
            }
        }
        for (k, v) in intAttributes {
            w.appendMessageField(9) { kv in
                kv.appendStringField(1, k)
                kv.appendMessageField(2) { $0.appendVarintField(3, UInt64(bitPattern: v)) }
            }
        }
        for (k, v) in attributes { appendAttribute(&w, field: 9, k, v) }
        if let status {
            w.appendMessageField(15) { s in
                s.appendStringField(2, "status message")
                if status != .unset { s.appendVarintField(3, UInt64(status.rawValue)) }
            }
        }
        if let flags { w.appendFixed32Field(16, flags) }
        w.bytes += rawFields
        return w.bytes
    }
}

package func be64(_ v: UInt64) -> [UInt8] {
    withUnsafeBytes(of: v.bigEndian) { Array($0) }
}

/// A resource (by service name) with scopes of spans.
package struct TestResource: Sendable {
    package var service: String
    package var scopes: [(name: String, spans: [TestSpan])]
    package var attributes: [(String, TestValue)]

    package init(service: String, scopes: [(name: String, spans: [TestSpan])], attributes: [(String, TestValue)] = []) {
        self.service = service
        self.scopes = scopes
        self.attributes = attributes
    }

    package init(service: String, spans: [TestSpan], attributes: [(String, TestValue)] = []) {
        self.init(service: service, scopes: [("scope", spans)], attributes: attributes)
    }
}

/// An encoded ExportTraceServiceRequest.
package func exportRequest(_ resources: [TestResource]) -> [UInt8] {
    var w = ProtoWriter()
    for resource in resources {
        w.appendMessageField(1) { rs in
            rs.appendMessageField(1) { r in
                r.appendMessageField(1) { kv in
                    kv.appendStringField(1, "service.name")
                    kv.appendMessageField(2) { $0.appendStringField(1, resource.service) }
                }
                for (k, v) in resource.attributes { appendAttribute(&r, field: 1, k, v) }
            }
            for scope in resource.scopes {
                rs.appendMessageField(2) { ss in
                    ss.appendMessageField(1) { $0.appendStringField(1, scope.name) }
                    for span in scope.spans { ss.appendBytesField(2, span.encoded) }
                }
            }
            rs.appendStringField(3, "https://opentelemetry.io/schemas/1.26.0")
        }
    }
    return w.bytes
}

package func exportRequest(service: String = "svc", spans: [TestSpan]) -> [UInt8] {
    exportRequest([TestResource(service: service, spans: spans)])
}

/// Reads back what a request holds: per resource service name, per scope name, span IDs (a full, slow decode for tests).
package struct DecodedSpan: Equatable, Sendable, Hashable {
    package var service: String
    package var scope: String
    package var traceID: TraceID
    package var spanID: UInt64
    package var payload: [UInt8]
}

package func decodeRequest(_ bytes: [UInt8]) throws -> [DecodedSpan] {
    var out: [DecodedSpan] = []
    try bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) throws in
        var req = ProtoReader(raw)
        while let (f, wt) = try req.readTag() {
            guard f == 1 else { try req.skip(wt); continue }
            var rs = ProtoReader(raw, range: try req.readLengthDelimited())
            var service = ""
            var scopes: [Range<Int>] = []
            while let (f2, wt2) = try rs.readTag() {
                if f2 == 1 {
                    var res = ProtoReader(raw, range: try rs.readLengthDelimited())
                    while let (f3, wt3) = try res.readTag() {
                        guard f3 == 1 else { try res.skip(wt3); continue }
                        var kv = ProtoReader(raw, range: try res.readLengthDelimited())
                        var key = ""
                        var value = ""
                        while let (f4, wt4) = try kv.readTag() {
                            if f4 == 1 { key = kv.string(try kv.readLengthDelimited()) }
                            else if f4 == 2 {
                                var any = ProtoReader(raw, range: try kv.readLengthDelimited())
                                while let (f5, wt5) = try any.readTag() {
                                    if f5 == 1 { value = any.string(try any.readLengthDelimited()) } else { try any.skip(wt5) }
                                }
                            } else { try kv.skip(wt4) }
                        }
                        if key == "service.name" { service = value }
                    }
                } else if f2 == 2 {
                    scopes.append(try rs.readLengthDelimited())
                } else { try rs.skip(wt2) }
            }
            for scopeRange in scopes {
                var ss = ProtoReader(raw, range: scopeRange)
                var scopeName = ""
                var spans: [Range<Int>] = []
                while let (f6, wt6) = try ss.readTag() {
                    if f6 == 1 {
                        var sc = ProtoReader(raw, range: try ss.readLengthDelimited())
                        while let (f7, wt7) = try sc.readTag() {
                            if f7 == 1 { scopeName = sc.string(try sc.readLengthDelimited()) } else { try sc.skip(wt7) }
                        }
                    } else if f6 == 2 {
                        spans.append(try ss.readLengthDelimited())
                    } else { try ss.skip(wt6) }
                }
                for spanRange in spans {
                    var sp = ProtoReader(raw, range: spanRange)
                    var tid = TraceID(hi: 0, lo: 0)
                    var sid: UInt64 = 0
                    while let (f8, wt8) = try sp.readTag() {
                        if f8 == 1 { let r = try sp.readLengthDelimited(); tid = TraceID(loadingFrom: raw, at: r.lowerBound) }
                        else if f8 == 2 { let r = try sp.readLengthDelimited(); sid = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: r.lowerBound, as: UInt64.self)) }
                        else { try sp.skip(wt8) }
                    }
                    out.append(DecodedSpan(service: service, scope: scopeName, traceID: tid, spanID: sid, payload: Array(raw[spanRange])))
                }
            }
        }
    }
    return out
}

/// A deterministic trace ID for tests.
package func tid(_ n: UInt64) -> TraceID { TraceID(hi: 0xABCD_0000_0000_0000 | n, lo: n &* 0x9E37_79B9_7F4A_7C15 | 1) }
