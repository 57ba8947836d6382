// OTLP/JSON <-> protobuf transcoding for ExportTraceServiceRequest.
//
// The OTLP trace messages are described once, declaratively, in `OTLPJSON.schema`; two generic walkers
// interpret that table: `JSONToProto` (JSON value tree -> ProtoWriter) and `ProtoToJSON` (ProtoReader -> JSON
// bytes). OTLP/JSON differs from proto3 JSON: trace/span ids are hex, enums are integers, keys are lowerCamelCase.

import Foundation

/// A problem transcoding between OTLP/JSON and protobuf: where (a JSON-style path such as
/// `resourceSpans[0].scopeSpans[1].spans[3].traceId`, empty for whole-document problems) and what.
public struct OTLPJSONError: Error, Sendable, CustomStringConvertible, Equatable {
    public var path: String
    public var message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

public enum OTLPJSON {
    /// Transcode an OTLP/JSON ExportTraceServiceRequest into its protobuf encoding.
    public static func protobufFromJSON(_ json: [UInt8]) throws(OTLPJSONError) -> [UInt8] {
        let root = try parseJSON(json)
        guard case .object(let object) = root else {
            throw OTLPJSONError(path: "", message: "expected a JSON object at the top level")
        }
        var walker = JSONToProto()
        var writer = ProtoWriter(capacity: json.count / 2)
        try walker.encodeMessage(.exportTraceServiceRequest, object, into: &writer, depth: 0)
        return writer.bytes
    }

    /// Transcode protobuf ExportTraceServiceRequest bytes into one line of OTLP/JSON (no trailing newline),
    /// the shape the OpenTelemetry Collector's file exporter writes ({"resourceSpans":[...]}).
    public static func jsonFromProtobuf(_ protobuf: [UInt8]) throws(OTLPJSONError) -> [UInt8] {
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

// MARK: - JSON values

extension OTLPJSON {
    /// A parsed JSON value. Numbers keep full 64-bit integer precision: Int64, else UInt64, else Double.
    enum JSONValue: Decodable, Equatable, Sendable {
        case null
        case bool(Bool)
        case int(Int64)
        case uint(UInt64)
        case double(Double)
        case string(String)
        case array([JSONValue])
        case object([String: JSONValue])

        private struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let single = try decoder.singleValueContainer()
            if single.decodeNil() { self = .null; return }
            // Most common first: strings (keys, values, ids, timestamps), then objects and arrays.
            if let s = try? single.decode(String.self) { self = .string(s); return }
            if let keyed = try? decoder.container(keyedBy: AnyKey.self) {
                let keys = keyed.allKeys
                var object = [String: JSONValue](minimumCapacity: keys.count)
                for key in keys { object[key.stringValue] = try keyed.decode(JSONValue.self, forKey: key) }
                self = .object(object)
                return
            }
            if var unkeyed = try? decoder.unkeyedContainer() {
                var items: [JSONValue] = []
                if let n = unkeyed.count { items.reserveCapacity(n) }
                while !unkeyed.isAtEnd { items.append(try unkeyed.decode(JSONValue.self)) }
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

    static func parseJSON(_ bytes: [UInt8]) throws(OTLPJSONError) -> JSONValue {
        let data = Data(bytes)
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw OTLPJSONError(path: "", message: "invalid JSON: \(explainJSONError(data, error))")
        }
    }

    /// JSONDecoder's errors say little more than "not valid JSON"; JSONSerialization says what and where.
    /// Only used on the failure path.
    private static func explainJSONError(_ data: Data, _ error: any Error) -> String {
        do {
            _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch let serializationError as NSError {
            if let detail = serializationError.userInfo[NSDebugDescriptionErrorKey] as? String, !detail.isEmpty {
                return detail
            }
        } catch {}
        if case .dataCorrupted(let context) = error as? DecodingError {
            if let underlying = context.underlyingError {
                return "\(context.debugDescription) (\(underlying))"
            }
            return context.debugDescription
        }
        return String(describing: error)
    }
}

// MARK: - JSON -> protobuf

extension OTLPJSON {
    struct JSONToProto {
        var path: [PathComponent] = []

        func failure(_ message: String) -> OTLPJSONError {
            OTLPJSONError(path: OTLPJSON.render(path), message: message)
        }

        mutating func encodeMessage(
            _ id: MessageID, _ object: [String: JSONValue], into writer: inout ProtoWriter, depth: Int
        ) throws(OTLPJSONError) {
            guard depth < OTLPJSON.maxDepth else {
                throw failure("messages nested deeper than \(OTLPJSON.maxDepth) levels")
            }
            let spec = OTLPJSON.schema[id.rawValue]
            var oneofKey: String?
            for field in spec.fields {
                let key: String
                let value: JSONValue
                if let v = object[field.jsonName] {
                    (key, value) = (field.jsonName, v)
                } else if field.protoName != field.jsonName, let v = object[field.protoName] {
                    (key, value) = (field.protoName, v)
                } else {
                    continue
                }
                if case .null = value { continue }
                path.append(.key(key))
                if spec.isOneof {
                    if let other = oneofKey {
                        throw failure("only one value may be set in \(spec.name) (also found \"\(other)\")")
                    }
                    oneofKey = key
                }
                if field.repeated {
                    guard case .array(let items) = value else { throw failure("expected an array") }
                    for (i, item) in items.enumerated() {
                        if case .null = item { continue }
                        path.append(.index(i))
                        try encodeValue(field, item, present: true, into: &writer, depth: depth)
                        path.removeLast()
                    }
                } else {
                    try encodeValue(field, value, present: spec.isOneof, into: &writer, depth: depth)
                }
                path.removeLast()
            }
        }

        /// Appends one field value. `present` forces encoding of default values (repeated elements, oneof members).
        mutating func encodeValue(
            _ field: FieldSpec, _ value: JSONValue, present: Bool, into writer: inout ProtoWriter, depth: Int
        ) throws(OTLPJSONError) {
            let number = field.number
            switch field.kind {
            case .message(let child):
                guard case .object(let object) = value else { throw failure("expected an object") }
                var inner = ProtoWriter()
                try encodeMessage(child, object, into: &inner, depth: depth + 1)
                writer.appendBytesField(number, inner.bytes)
            case .string:
                guard case .string(let s) = value else { throw failure("expected a string") }
                if present || !s.isEmpty { writer.appendStringField(number, s) }
            case .bool:
                guard case .bool(let b) = value else { throw failure("expected true or false") }
                if present || b { writer.appendVarintField(number, b ? 1 : 0) }
            case .int64:
                let v = Int64(try integer(value, in: Int128(Int64.min)...Int128(Int64.max), "int64"))
                if present || v != 0 { writer.appendVarintField(number, UInt64(bitPattern: v)) }
            case .uint32:
                let v = UInt64(try integer(value, in: 0...Int128(UInt32.max), "uint32"))
                if present || v != 0 { writer.appendVarintField(number, v) }
            case .enumeration(let names):
                let v: Int32
                if case .string(let s) = value, let named = names[s] {
                    v = named
                } else if case .string(let s) = value, Int32(s) == nil {
                    throw failure("unknown enum value \"\(s)\"")
                } else {
                    v = Int32(try integer(value, in: Int128(Int32.min)...Int128(Int32.max), "int32"))
                }
                if present || v != 0 { writer.appendVarintField(number, UInt64(bitPattern: Int64(v))) }
            case .fixed64:
                let v = UInt64(try integer(value, in: 0...Int128(UInt64.max), "uint64"))
                if present || v != 0 { writer.appendFixed64Field(number, v) }
            case .fixed32:
                let v = UInt32(try integer(value, in: 0...Int128(UInt32.max), "uint32"))
                if present || v != 0 { writer.appendFixed32Field(number, v) }
            case .double:
                let d = try double(value)
                if present || d.bitPattern != 0 { writer.appendFixed64Field(number, d.bitPattern) }
            case .hexID(let byteCount):
                guard case .string(let s) = value else { throw failure("expected a hex string") }
                if s.isEmpty { return }
                writer.appendBytesField(number, try hexDecode(s, byteCount: byteCount))
            case .bytes:
                guard case .string(let s) = value else { throw failure("expected a base64 string") }
                guard let bytes = OTLPJSON.base64Decode(s) else { throw failure("invalid base64") }
                if present || !bytes.isEmpty { writer.appendBytesField(number, bytes) }
            }
        }

        func integer(_ value: JSONValue, in range: ClosedRange<Int128>, _ typeName: String) throws(OTLPJSONError) -> Int128 {
            let v: Int128?
            switch value {
            case .int(let i): v = Int128(i)
            case .uint(let u): v = Int128(u)
            case .double(let d): v = d.isFinite ? Int128(exactly: d) : nil
            case .string(let s): v = Int128(s)
            default: v = nil
            }
            guard let v else { throw failure("expected an integer or a decimal string") }
            guard range.contains(v) else { throw failure("\(v) is out of range for \(typeName)") }
            return v
        }

        func double(_ value: JSONValue) throws(OTLPJSONError) -> Double {
            switch value {
            case .double(let d): return d
            case .int(let i): return Double(i)
            case .uint(let u): return Double(u)
            case .string("NaN"): return .nan
            case .string("Infinity"): return .infinity
            case .string("-Infinity"): return -.infinity
            case .string(let s):
                if let d = Double(s), d.isFinite { return d }
            default: break
            }
            throw failure("expected a number or \"NaN\", \"Infinity\", \"-Infinity\"")
        }

        func hexDecode(_ s: String, byteCount: Int) throws(OTLPJSONError) -> [UInt8] {
            let utf8 = s.utf8
            guard utf8.count == byteCount * 2 else {
                throw failure("expected \(byteCount * 2) hex digits, got \(s.count)")
            }
            var out = [UInt8]()
            out.reserveCapacity(byteCount)
            var high: UInt8 = 0
            var odd = false
            for c in utf8 {
                let nibble: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = c &- UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = c &- UInt8(ascii: "a") &+ 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = c &- UInt8(ascii: "A") &+ 10
                default:
                    let (position, character) = s.enumerated().first { !($0.element.isASCII && $0.element.isHexDigit) }
                        ?? (0, Character("?"))
                    throw failure("expected \(byteCount * 2) hex digits, found \"\(character)\" at position \(position)")
                }
                if odd { out.append(high << 4 | nibble) } else { high = nibble }
                odd.toggle()
            }
            return out
        }
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
        var out = [UInt8]()
        out.reserveCapacity(s.utf8.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        var symbols = 0
        var padding = 0
        for c in s.utf8 {
            if c == UInt8(ascii: "=") {
                padding += 1
                continue
            }
            if padding > 0 { return nil }  // data after padding
            let v: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = c &- UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = c &- UInt8(ascii: "a") &+ 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c &- UInt8(ascii: "0") &+ 52
            case UInt8(ascii: "+"), UInt8(ascii: "-"): v = 62
            case UInt8(ascii: "/"), UInt8(ascii: "_"): v = 63
            default: return nil
            }
            accumulator = accumulator << 6 | UInt32(v)
            bits += 6
            symbols += 1
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        if symbols % 4 == 1 { return nil }
        if padding > 0 && (padding > 2 || (symbols + padding) % 4 != 0) { return nil }
        return out
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
