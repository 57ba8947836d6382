import TailgateWire

// The encoder of the benchmark's synthetic requests (`makeRequests` in main.swift): the few span fields the hot-path
// benchmarks need, written in the same order as the tests' OTLP builder, so the workload's bytes (and the figures)
// are those measured before the bench stopped depending on a target under Tests/.

/// One span of a benchmark request.
struct BenchSpan {
    var traceID: TraceID
    var spanID: UInt64
    var parentSpanID: UInt64 = 0
    var name: String
    var start: UInt64
    var end: UInt64
    var status: StatusCode? = nil
    var intAttributes: [(String, Int64)] = []
    var stringAttributes: [(String, String)] = []

    init(trace: TraceID, span: UInt64, parent: UInt64 = 0, name: String, start: UInt64, end: UInt64,
         status: StatusCode? = nil, ints: [(String, Int64)] = [], strings: [(String, String)] = []) {
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
    var encoded: [UInt8] {
        var w = ProtoWriter()
        w.appendBytesField(1, traceID.bytes)
        w.appendBytesField(2, bigEndianBytes(spanID))
        if parentSpanID != 0 { w.appendBytesField(4, bigEndianBytes(parentSpanID)) }
        w.appendStringField(5, name)
        w.appendVarintField(6, 1)  // kind: INTERNAL
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
        if let status {
            w.appendMessageField(15) { s in
                s.appendStringField(2, "status message")
                if status != .unset { s.appendVarintField(3, UInt64(status.rawValue)) }
            }
        }
        return w.bytes
    }
}

private func bigEndianBytes(_ v: UInt64) -> [UInt8] {
    withUnsafeBytes(of: v.bigEndian) { Array($0) }
}

/// An encoded ExportTraceServiceRequest: one resource (`service.name`), one scope, the spans.
func encodeRequest(service: String, spans: [BenchSpan]) -> [UInt8] {
    var w = ProtoWriter()
    w.appendMessageField(1) { rs in
        rs.appendMessageField(1) { r in
            r.appendMessageField(1) { kv in
                kv.appendStringField(1, "service.name")
                kv.appendMessageField(2) { $0.appendStringField(1, service) }
            }
        }
        rs.appendMessageField(2) { ss in
            ss.appendMessageField(1) { $0.appendStringField(1, "scope") }
            for span in spans { ss.appendBytesField(2, span.encoded) }
        }
        rs.appendStringField(3, "https://opentelemetry.io/schemas/1.26.0")
    }
    return w.bytes
}
