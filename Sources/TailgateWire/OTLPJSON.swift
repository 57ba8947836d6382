// OTLP/JSON <-> protobuf transcoding for ExportTraceServiceRequest.
//
// The OTLP trace messages are described once, declaratively, in `OTLPJSON.schema`; two generic walkers
// interpret that table: `Transcoder` (OTLPJSONTranscoder.swift: a single-pass streaming JSON tokenizer that writes
// protobuf as it reads) and `ProtoToJSON` (ProtoReader -> JSON bytes). OTLP/JSON differs from proto3 JSON:
// trace/span ids are hex, enums are integers, keys are lowerCamelCase.

/// A problem transcoding between OTLP/JSON and protobuf: where (a JSON-style path such as
/// `resourceSpans[0].scopeSpans[1].spans[3].traceId`, empty for whole-document problems) and what.
package struct OTLPJSONError: Error, Sendable, CustomStringConvertible, Equatable {
    package var path: String
    package var message: String

    package init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    package var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

package enum OTLPJSON {
    /// Transcode an OTLP/JSON ExportTraceServiceRequest into its protobuf encoding (canonical: fields in
    /// field-number order, whatever the order of the keys).
    ///
    /// Invalid JSON (including invalid UTF-8 and unpaired surrogates) fails with `invalid JSON: … at character N`,
    /// and takes precedence over schema errors (wrong types, out-of-range numbers, …), which name the field's path.
    /// A malformed trace or span ID does not fail the request: see `Transcoder.hexID`.
    package static func protobufFromJSON(_ json: [UInt8]) throws(OTLPJSONError) -> [UInt8] {
        var malformedIDs = MalformedIDs()
        return try protobufFromJSON(json, malformedIDs: &malformedIDs)
    }

    /// The span IDs (a Span's `traceId`, `spanId`, `parentSpanId`) that `protobufFromJSON` passed on malformed, for
    /// the scanner to reject their spans, instead of failing the request: how many, and the first with its path
    /// and text (what the scanner cannot say: it sees only the length of the bytes written for it). Link IDs are
    /// not counted: the scanner does not check them.
    package struct MalformedIDs: Sendable, Equatable {
        package var count = 0
        /// E.g. `resourceSpans[0].scopeSpans[0].spans[1].traceId: "5b8e…zz" is not hex ('z'): a trace ID is 32 hex digits`.
        package var first: OTLPJSONError?

        package init() {}
    }

    /// `protobufFromJSON(_:)`, also telling which span IDs were malformed (set when the transcoding succeeds).
    package static func protobufFromJSON(_ json: [UInt8], malformedIDs: inout MalformedIDs) throws(OTLPJSONError) -> [UInt8] {
        let result = json.withUnsafeBytes { raw in
            Result { () throws(OTLPJSONError) in try withProtobuf(fromJSON: raw, malformedIDs: &malformedIDs) { [UInt8]($0) } }
        }
        return try result.get()
    }

    /// `protobufFromJSON`, without copying the document in or the protobuf out: `body` sees the protobuf bytes,
    /// which live only for the call (what ingest needs, since the buffer copies the spans it keeps).
    package static func withProtobuf<Result>(
        fromJSON json: UnsafeRawBufferPointer, malformedIDs: inout MalformedIDs, _ body: (UnsafeRawBufferPointer) -> Result
    ) throws(OTLPJSONError) -> Result {
        malformedIDs = MalformedIDs()
        guard let base = json.baseAddress?.assumingMemoryBound(to: UInt8.self), !json.isEmpty else {
            throw OTLPJSONError(path: "", message: "invalid JSON: unexpected end of input, expected a JSON object at character 0")
        }
        var transcoder = Transcoder(base, json.count, outputCapacity: json.count + 64)
        defer { transcoder.free() }
        do throws(TranscodeFailure) {
            try transcoder.document()
        } catch {
            guard !error.isSyntax else { throw error.error }
            // A parse-then-walk reports a syntax error anywhere in the document before any schema error.
            do throws(TranscodeFailure) {
                try transcoder.validateDocument()
            } catch let syntax {
                throw syntax.error
            }
            throw error.error
        }
        malformedIDs = transcoder.malformedIDs
        return body(UnsafeRawBufferPointer(start: transcoder.out.base, count: transcoder.out.count))
    }

    /// Transcode protobuf ExportTraceServiceRequest bytes into one line of OTLP/JSON (no trailing newline),
    /// the shape the OpenTelemetry Collector's file exporter writes ({"resourceSpans":[...]}).
    package static func jsonFromProtobuf(_ protobuf: [UInt8]) throws(OTLPJSONError) -> [UInt8] {
        let result: Result<[UInt8], OTLPJSONError> = protobuf.withUnsafeBytes { base in
            Result { () throws(OTLPJSONError) -> [UInt8] in
                var walker = ProtoToJSON(base: base, capacity: base.count * 2 + 16)
                try walker.writeMessage(.exportTraceServiceRequest, ranges: [0..<base.count], depth: 0)
                return walker.out
            }
        }
        return try result.get()
    }

    /// Messages nested deeper than this are rejected (protects the recursive walkers' stack).
    static let maxDepth = 100
}

// MARK: - Schema

extension OTLPJSON {
    enum MessageID: Int, CaseIterable, Sendable {
        case exportTraceServiceRequest, resourceSpans, resource, scopeSpans, instrumentationScope
        case span, event, link, status, keyValue, anyValue, arrayValue, keyValueList
    }

    /// How a field is encoded in protobuf and in OTLP/JSON.
    enum FieldKind: Sendable {
        case message(MessageID)
        case string
        case bool
        case int64                          // varint (two's complement); JSON decimal string
        case uint32                         // varint; JSON number
        case enumeration([String: Int32])   // varint int32; JSON number (names tolerated on input)
        case fixed64                        // JSON decimal string
        case fixed32                        // JSON number
        case double                         // fixed64 bits; JSON number or "NaN"/"Infinity"/"-Infinity"
        case hexID(byteCount: Int)          // bytes; JSON hex string, "" = absent
        case bytes                          // bytes; JSON base64 string

        var wireType: WireType {
            switch self {
            case .message, .string, .hexID, .bytes: .lengthDelimited
            case .bool, .int64, .uint32, .enumeration: .varint
            case .fixed64, .double: .fixed64
            case .fixed32: .fixed32
            }
        }
    }

    struct FieldSpec: Sendable {
        let number: UInt32
        let jsonName: String      // lowerCamelCase
        let protoName: String     // snake_case, also accepted on input
        let kind: FieldKind
        let repeated: Bool
        let keyBytes: [UInt8]     // `"jsonName":`

        init(_ number: UInt32, _ jsonName: String, _ kind: FieldKind, repeated: Bool = false) {
            self.number = number
            self.jsonName = jsonName
            var snake = ""
            for c in jsonName {
                if c.isUppercase { snake += "_" + c.lowercased() } else { snake.append(c) }
            }
            self.protoName = snake
            self.kind = kind
            self.repeated = repeated
            self.keyBytes = Array("\"\(jsonName)\":".utf8)
        }
    }

    struct MessageSpec: Sendable {
        let name: String
        let fields: [FieldSpec]
        /// All fields belong to one oneof (AnyValue): presence matters, at most one is set.
        let isOneof: Bool
        private let indexByNumber: [Int]

        init(_ name: String, oneof: Bool = false, _ fields: [FieldSpec]) {
            self.name = name
            self.fields = fields
            self.isOneof = oneof
            var table = [Int](repeating: -1, count: Int(fields.map(\.number).max() ?? 0) + 1)
            for (i, f) in fields.enumerated() { table[Int(f.number)] = i }
            self.indexByNumber = table
        }

        /// Index into `fields` of the field with this number, or -1.
        func fieldIndex(_ number: UInt32) -> Int {
            number < indexByNumber.count ? indexByNumber[Int(number)] : -1
        }
    }

    static let spanKindNames: [String: Int32] = [
        "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
        "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
    ]
    static let statusCodeNames: [String: Int32] = [
        "STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2,
    ]

    /// The OTLP trace messages (opentelemetry-proto v1), indexed by `MessageID.rawValue`.
    static let schema: [MessageSpec] = MessageID.allCases.map { id in
        switch id {
        case .exportTraceServiceRequest: MessageSpec("ExportTraceServiceRequest", [
            FieldSpec(1, "resourceSpans", .message(.resourceSpans), repeated: true),
        ])
        case .resourceSpans: MessageSpec("ResourceSpans", [
            FieldSpec(1, "resource", .message(.resource)),
            FieldSpec(2, "scopeSpans", .message(.scopeSpans), repeated: true),
            FieldSpec(3, "schemaUrl", .string),
        ])
        case .resource: MessageSpec("Resource", [
            FieldSpec(1, "attributes", .message(.keyValue), repeated: true),
            FieldSpec(2, "droppedAttributesCount", .uint32),
        ])
        case .scopeSpans: MessageSpec("ScopeSpans", [
            FieldSpec(1, "scope", .message(.instrumentationScope)),
            FieldSpec(2, "spans", .message(.span), repeated: true),
            FieldSpec(3, "schemaUrl", .string),
        ])
        case .instrumentationScope: MessageSpec("InstrumentationScope", [
            FieldSpec(1, "name", .string),
            FieldSpec(2, "version", .string),
            FieldSpec(3, "attributes", .message(.keyValue), repeated: true),
            FieldSpec(4, "droppedAttributesCount", .uint32),
        ])
        case .span: MessageSpec("Span", [
            FieldSpec(1, "traceId", .hexID(byteCount: 16)),
            FieldSpec(2, "spanId", .hexID(byteCount: 8)),
            FieldSpec(3, "traceState", .string),
            FieldSpec(4, "parentSpanId", .hexID(byteCount: 8)),
            FieldSpec(5, "name", .string),
            FieldSpec(6, "kind", .enumeration(spanKindNames)),
            FieldSpec(7, "startTimeUnixNano", .fixed64),
            FieldSpec(8, "endTimeUnixNano", .fixed64),
            FieldSpec(9, "attributes", .message(.keyValue), repeated: true),
            FieldSpec(10, "droppedAttributesCount", .uint32),
            FieldSpec(11, "events", .message(.event), repeated: true),
            FieldSpec(12, "droppedEventsCount", .uint32),
            FieldSpec(13, "links", .message(.link), repeated: true),
            FieldSpec(14, "droppedLinksCount", .uint32),
            FieldSpec(15, "status", .message(.status)),
            FieldSpec(16, "flags", .fixed32),
        ])
        case .event: MessageSpec("Span.Event", [
            FieldSpec(1, "timeUnixNano", .fixed64),
            FieldSpec(2, "name", .string),
            FieldSpec(3, "attributes", .message(.keyValue), repeated: true),
            FieldSpec(4, "droppedAttributesCount", .uint32),
        ])
        case .link: MessageSpec("Span.Link", [
            FieldSpec(1, "traceId", .hexID(byteCount: 16)),
            FieldSpec(2, "spanId", .hexID(byteCount: 8)),
            FieldSpec(3, "traceState", .string),
            FieldSpec(4, "attributes", .message(.keyValue), repeated: true),
            FieldSpec(5, "droppedAttributesCount", .uint32),
            FieldSpec(6, "flags", .fixed32),
        ])
        case .status: MessageSpec("Status", [
            FieldSpec(2, "message", .string),
            FieldSpec(3, "code", .enumeration(statusCodeNames)),
        ])
        case .keyValue: MessageSpec("KeyValue", [
            FieldSpec(1, "key", .string),
            FieldSpec(2, "value", .message(.anyValue)),
        ])
        case .anyValue: MessageSpec("AnyValue", oneof: true, [
            FieldSpec(1, "stringValue", .string),
            FieldSpec(2, "boolValue", .bool),
            FieldSpec(3, "intValue", .int64),
            FieldSpec(4, "doubleValue", .double),
            FieldSpec(5, "arrayValue", .message(.arrayValue)),
            FieldSpec(6, "kvlistValue", .message(.keyValueList)),
            FieldSpec(7, "bytesValue", .bytes),
        ])
        case .arrayValue: MessageSpec("ArrayValue", [
            FieldSpec(1, "values", .message(.anyValue), repeated: true),
        ])
        case .keyValueList: MessageSpec("KeyValueList", [
            FieldSpec(1, "values", .message(.keyValue), repeated: true),
        ])
        }
    }
}

// MARK: - Paths

extension OTLPJSON {
    enum PathComponent {
        case key(String)
        case index(Int)
    }

    static func render(_ path: [PathComponent]) -> String {
        var s = ""
        for component in path {
            switch component {
            case .key(let key):
                if !s.isEmpty { s += "." }
                s += key
            case .index(let i):
                s += "[\(i)]"
            }
        }
        return s
    }
}

// MARK: - protobuf -> JSON

extension OTLPJSON {
    struct ProtoToJSON {
        let base: UnsafeRawBufferPointer
        var out: [UInt8]
        var path: [PathComponent] = []

        /// One occurrence of a known field: its index in the message's `fields`, scalar value, payload range.
        struct Entry {
            var field: Int
            var value: UInt64
            var range: Range<Int>
        }

        init(base: UnsafeRawBufferPointer, capacity: Int) {
            self.base = base
            self.out = []
            out.reserveCapacity(capacity)
        }

        func failure(_ message: String) -> OTLPJSONError {
            OTLPJSONError(path: OTLPJSON.render(path), message: message)
        }

        /// Writes the message whose encoding is the concatenation of `ranges` (several ranges when a non-repeated
        /// message field occurs more than once: protobuf merges them).
        mutating func writeMessage(_ id: MessageID, ranges: [Range<Int>], depth: Int) throws(OTLPJSONError) {
            guard depth < OTLPJSON.maxDepth else {
                throw failure("messages nested deeper than \(OTLPJSON.maxDepth) levels")
            }
            let spec = OTLPJSON.schema[id.rawValue]

            // Pass 1: collect the known fields; skip unknown ones (and known numbers with an unexpected wire type).
            var entries: [Entry] = []
            for range in ranges {
                var reader = ProtoReader(base, range: range)
                var current: String?
                do throws(WireError) {
                    while let (number, wireType) = try reader.readTag() {
                        let index = spec.fieldIndex(number)
                        guard index >= 0, spec.fields[index].kind.wireType == wireType else {
                            current = nil
                            try reader.skip(wireType)
                            continue
                        }
                        current = spec.fields[index].jsonName
                        switch wireType {
                        case .varint:
                            entries.append(Entry(field: index, value: try reader.readVarint(), range: 0..<0))
                        case .fixed64:
                            entries.append(Entry(field: index, value: try reader.readFixed64(), range: 0..<0))
                        case .fixed32:
                            entries.append(Entry(field: index, value: UInt64(try reader.readFixed32()), range: 0..<0))
                        case .lengthDelimited:
                            entries.append(Entry(field: index, value: 0, range: try reader.readLengthDelimited()))
                        case .startGroup, .endGroup:
                            try reader.skip(wireType)  // no known field is a group
                        }
                        current = nil
                    }
                } catch {
                    if let current { path.append(.key(current)) }
                    throw failure(error.description)
                }
            }

            // A oneof keeps only its last member (and that member's trailing run of occurrences, for merging).
            var selected = entries[...]
            if spec.isOneof, let last = entries.last {
                var start = entries.count - 1
                while start > 0 && entries[start - 1].field == last.field { start -= 1 }
                selected = entries[start...]
            }

            // Pass 2: emit in schema order.
            out.append(UInt8(ascii: "{"))
            var needComma = false
            for (index, field) in spec.fields.enumerated() {
                path.append(.key(field.jsonName))
                defer { path.removeLast() }
                if field.repeated {
                    var count = 0
                    for entry in selected where entry.field == index {
                        if count == 0 {
                            writeKey(field, &needComma)
                            out.append(UInt8(ascii: "["))
                        } else {
                            out.append(UInt8(ascii: ","))
                        }
                        path.append(.index(count))
                        if case .message(let child) = field.kind {
                            try writeMessage(child, ranges: [entry.range], depth: depth + 1)
                        } else {
                            writeScalar(field.kind, entry)
                        }
                        path.removeLast()
                        count += 1
                    }
                    if count > 0 { out.append(UInt8(ascii: "]")) }
                } else if case .message(let child) = field.kind {
                    var parts: [Range<Int>] = []
                    for entry in selected where entry.field == index { parts.append(entry.range) }
                    if parts.isEmpty { continue }
                    writeKey(field, &needComma)
                    try writeMessage(child, ranges: parts, depth: depth + 1)
                } else {
                    guard let entry = selected.last(where: { $0.field == index }) else { continue }
                    if !spec.isOneof && entry.value == 0 && entry.range.isEmpty { continue }  // proto3 default
                    writeKey(field, &needComma)
                    writeScalar(field.kind, entry)
                }
            }
            out.append(UInt8(ascii: "}"))
        }

        mutating func writeKey(_ field: FieldSpec, _ needComma: inout Bool) {
            if needComma { out.append(UInt8(ascii: ",")) }
            needComma = true
            out.append(contentsOf: field.keyBytes)
        }

        mutating func writeASCII(_ s: String) {
            out.append(contentsOf: s.utf8)
        }

        mutating func writeQuotedASCII(_ s: String) {
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: s.utf8)
            out.append(UInt8(ascii: "\""))
        }

        mutating func writeScalar(_ kind: FieldKind, _ entry: Entry) {
            switch kind {
            case .message:
                preconditionFailure("messages are written by writeMessage")
            case .string:
                writeString(entry.range)
            case .bool:
                writeASCII(entry.value != 0 ? "true" : "false")
            case .int64:
                writeQuotedASCII(String(Int64(bitPattern: entry.value)))
            case .uint32:
                writeASCII(String(UInt32(truncatingIfNeeded: entry.value)))
            case .enumeration:
                writeASCII(String(Int32(truncatingIfNeeded: entry.value)))
            case .fixed64:
                writeQuotedASCII(String(entry.value))
            case .fixed32:
                writeASCII(String(entry.value))
            case .double:
                let d = Double(bitPattern: entry.value)
                if d.isNaN {
                    writeASCII("\"NaN\"")
                } else if d.isInfinite {
                    writeASCII(d < 0 ? "\"-Infinity\"" : "\"Infinity\"")
                } else {
                    writeASCII(d.description)
                }
            case .hexID:
                let digits = Array("0123456789abcdef".utf8)
                out.append(UInt8(ascii: "\""))
                for b in UnsafeRawBufferPointer(rebasing: base[entry.range]) {
                    out.append(digits[Int(b >> 4)])
                    out.append(digits[Int(b & 0xF)])
                }
                out.append(UInt8(ascii: "\""))
            case .bytes:
                out.append(UInt8(ascii: "\""))
                OTLPJSON.base64Encode(UnsafeRawBufferPointer(rebasing: base[entry.range]), into: &out)
                out.append(UInt8(ascii: "\""))
            }
        }

        /// Writes protobuf string bytes as a JSON string: invalid UTF-8 repaired, `"`, `\` and controls escaped.
        mutating func writeString(_ range: Range<Int>) {
            let bytes = UnsafeRawBufferPointer(rebasing: base[range])
            out.append(UInt8(ascii: "\""))
            if !bytes.contains(where: { $0 < 0x20 || $0 >= 0x80 || $0 == 0x22 || $0 == 0x5C }) {
                out.append(contentsOf: bytes)
            } else {
                let hex = Array("0123456789abcdef".utf8)
                for b in String(decoding: bytes, as: UTF8.self).utf8 {
                    switch b {
                    case 0x22, 0x5C:
                        out.append(UInt8(ascii: "\\"))
                        out.append(b)
                    case 0..<0x20:
                        out.append(contentsOf: "\\u00".utf8)
                        out.append(hex[Int(b >> 4)])
                        out.append(hex[Int(b & 0xF)])
                    default:
                        out.append(b)
                    }
                }
            }
            out.append(UInt8(ascii: "\""))
        }
    }
}

// MARK: - base64

extension OTLPJSON {
    /// Decodes standard or URL-safe base64, padded or not. Nil if malformed.
    static func base64Decode(_ s: String) -> [UInt8]? {
        var s = s
        return s.withUTF8 { text -> [UInt8]? in
            var out = ByteBuffer(capacity: text.count)
            defer { out.free() }
            guard let base = text.baseAddress else { return [] }
            guard base64Decode(base, text.count, into: &out) else { return nil }
            return Array(UnsafeBufferPointer(start: out.base, count: out.count))
        }
    }

    /// Appends standard, padded base64.
    static func base64Encode(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var i = 0
        let n = bytes.count
        out.reserveCapacity(out.count + (n + 2) / 3 * 4)
        while i + 3 <= n {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            out.append(alphabet[Int(v & 63)])
            i += 3
        }
        let rest = n - i
        if rest == 1 {
            let v = UInt32(bytes[i]) << 16
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(contentsOf: "==".utf8)
        } else if rest == 2 {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            out.append(UInt8(ascii: "="))
        }
    }
}
