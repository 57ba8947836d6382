// Validation of encoded OTLP trace messages against what a protobuf parser downstream would reject.
//
// The scanner forwards spans as their original bytes and only reads what decisions need, so without this pass a
// span with, say, invalid UTF-8 deep in an event attribute would be buffered, kept and sent on, and the collector
// that parses it would refuse the whole batch it travels in — thousands of other clients' spans. Each span (and
// each resource and scope header) is therefore checked once on ingest, as a pass over its bytes that knows the
// OTLP trace schema:
//
// - every field is well-formed at the wire level: valid tags and wire types, varints of at most 10 bytes,
//   lengths inside the enclosing message, groups (only accepted as unknown fields) closed by their own end tag;
// - a known field has the wire type of its declared type (as generated Go parsers, the Collector's included,
//   insist), and every known message field holds a valid message of its type, recursively;
// - every `string` field holds valid UTF-8 (proto3 parsers reject invalid UTF-8; `bytes` fields may hold anything);
// - messages nest at most `maxDepth` levels below the ExportTraceServiceRequest (the ExportTraceServiceRequest is
//   level 0, a ResourceSpans 1, a Span 3; protobuf C++ and Java refuse deeper messages by default).
//
// Unknown fields are accepted when well-formed: parsers keep them as opaque bytes and do not look inside.
// The pass allocates nothing unless it fails, and recurses at most `maxDepth` levels.

/// Checks encoded OTLP trace messages against the schema (see the comment at the top of Validation.swift).
enum OTLPValidator {
    /// Deepest message nesting accepted, counted from the ExportTraceServiceRequest (level 0).
    static let maxDepth = 100

    /// Nesting levels of the messages the scanner validates directly.
    static let resourceSpansDepth = 1
    static let scopeSpansDepth = 2
    static let spanDepth = 3

    /// The OTLP trace messages, by what their fields hold.
    enum Message: UInt8, CaseIterable {
        /// The fields of a ResourceSpans other than `scope_spans` (validated separately, span by span).
        case resourceSpansHeader
        /// The fields of a ScopeSpans other than `spans`.
        case scopeSpansHeader
        case resource, entityRef, scope
        case span, event, link, status
        case keyValue, anyValue, arrayValue, keyValueList
    }

    /// What a known field holds.
    enum Field {
        case unknown
        case varint, fixed64, fixed32
        case bytes
        case string
        case message(Message)
        /// Length-delimited, checked elsewhere (`scope_spans` of a ResourceSpans, `spans` of a ScopeSpans).
        case skipped
    }

    /// The declared type of `field` of `message` (opentelemetry-proto v1.x: trace.proto, common.proto, resource.proto).
    @inline(__always)
    static func field(_ message: Message, _ field: UInt32) -> Field {
        switch message {
        case .span:
            switch field {
            case 1, 2, 4: return .bytes                        // trace_id, span_id, parent_span_id
            case 3, 5: return .string                          // trace_state, name
            case 6, 10, 12, 14: return .varint                 // kind, dropped_*_count
            case 7, 8: return .fixed64                         // start/end_time_unix_nano
            case 9: return .message(.keyValue)                 // attributes
            case 11: return .message(.event)
            case 13: return .message(.link)
            case 15: return .message(.status)
            case 16: return .fixed32                           // flags
            default: return .unknown
            }
        case .keyValue:
            switch field {
            case 1: return .string                             // key
            case 2: return .message(.anyValue)                 // value
            default: return .unknown
            }
        case .anyValue:
            switch field {
            case 1: return .string                             // string_value
            case 2, 3: return .varint                          // bool_value, int_value
            case 4: return .fixed64                            // double_value
            case 5: return .message(.arrayValue)
            case 6: return .message(.keyValueList)
            case 7: return .bytes                              // bytes_value
            default: return .unknown
            }
        case .arrayValue:
            return field == 1 ? .message(.anyValue) : .unknown
        case .keyValueList:
            return field == 1 ? .message(.keyValue) : .unknown
        case .event:
            switch field {
            case 1: return .fixed64                            // time_unix_nano
            case 2: return .string                             // name
            case 3: return .message(.keyValue)                 // attributes
            case 4: return .varint                             // dropped_attributes_count
            default: return .unknown
            }
        case .link:
            switch field {
            case 1, 2: return .bytes                           // trace_id, span_id
            case 3: return .string                             // trace_state
            case 4: return .message(.keyValue)                 // attributes
            case 5: return .varint                             // dropped_attributes_count
            case 6: return .fixed32                            // flags
            default: return .unknown
            }
        case .status:
            switch field {
            case 2: return .string                             // message
            case 3: return .varint                             // code
            default: return .unknown
            }
        case .resourceSpansHeader:
            switch field {
            case 1: return .message(.resource)
            case 2: return .skipped                            // scope_spans
            case 3: return .string                             // schema_url
            default: return .unknown
            }
        case .scopeSpansHeader:
            switch field {
            case 1: return .message(.scope)
            case 2: return .skipped                            // spans
            case 3: return .string                             // schema_url
            default: return .unknown
            }
        case .resource:
            switch field {
            case 1: return .message(.keyValue)                 // attributes
            case 2: return .varint                             // dropped_attributes_count
            case 3: return .message(.entityRef)                // entity_refs
            default: return .unknown
            }
        case .entityRef:
            switch field {
            case 1, 2, 3, 4: return .string                    // schema_url, type, id_keys, description_keys
            default: return .unknown
            }
        case .scope:
            switch field {
            case 1, 2: return .string                          // name, version
            case 3: return .message(.keyValue)                 // attributes
            case 4: return .varint                             // dropped_attributes_count
            default: return .unknown
            }
        }
    }

    // MARK: Fast path

    /// Field codes of the fast path: what `field(_:_:)` says, in one byte.
    @usableFromInline static let codeUnknown: UInt8 = 0, codeVarint: UInt8 = 1, codeFixed64: UInt8 = 2, codeFixed32: UInt8 = 3,
        codeBytes: UInt8 = 4, codeString: UInt8 = 5, codeMessage: UInt8 = 0x10  // | Message.rawValue

    static func code(_ message: Message, _ field: UInt32) -> UInt8 {
        switch Self.field(message, field) {
        case .unknown: return codeUnknown
        case .varint: return codeVarint
        case .fixed64: return codeFixed64
        case .fixed32: return codeFixed32
        case .bytes, .skipped: return codeBytes
        case .string: return codeString
        case .message(let m): return codeMessage | m.rawValue
        }
    }

    /// Per message type, the codes of fields 1…16, a byte each (fields 1…8 in the first word, 9…16 in the second):
    /// `code(_:_:)` of every field, as constants (a test checks them against `field(_:_:)`).
    @inline(__always)
    static func codeTable(_ message: Message) -> (UInt64, UInt64) {
        switch message {
        case .resourceSpansHeader: return (0x0000000000050412, 0x0000000000000000)
        case .scopeSpansHeader: return (0x0000000000050414, 0x0000000000000000)
        case .resource: return (0x0000000000130119, 0x0000000000000000)
        case .entityRef: return (0x0000000005050505, 0x0000000000000000)
        case .scope: return (0x0000000001190505, 0x0000000000000000)
        case .span: return (0x0202010504050404, 0x0318011701160119)
        case .event: return (0x0000000001190502, 0x0000000000000000)
        case .link: return (0x0000030119050404, 0x0000000000000000)
        case .status: return (0x0000000000010500, 0x0000000000000000)
        case .keyValue: return (0x0000000000001A05, 0x0000000000000000)
        case .anyValue: return (0x00041C1B02010105, 0x0000000000000000)
        case .arrayValue: return (0x000000000000001A, 0x0000000000000000)
        case .keyValueList: return (0x0000000000000019, 0x0000000000000000)
        }
    }

    /// Whether the message at `range` is valid: the same verdict as `validate`, without saying why, and about
    /// faster (no throwing, no reader, tags decoded inline). `problem` says why, only when this fails.
    static func isValid(_ message: Message, _ base: UnsafeRawBufferPointer, _ range: Range<Int>, depth: Int) -> Bool {
        guard !range.isEmpty, let p = base.baseAddress else { return true }
        let (low, high) = codeTable(message)
        var i = range.lowerBound
        let end = range.upperBound
        @inline(__always) func byte(_ i: Int) -> UInt8 { p.load(fromByteOffset: i, as: UInt8.self) }
        /// A varint of at most 10 bytes inside the message, or nil.
        @inline(__always) func varint(_ i: inout Int) -> UInt64? {
            if i < end {
                let b = byte(i)
                if b < 0x80 { i += 1; return UInt64(b) }
                if i + 1 < end {
                    let b1 = byte(i + 1)
                    if b1 < 0x80 { i += 2; return UInt64(b & 0x7F) | UInt64(b1) << 7 }
                }
            }
            return slowVarint(p, &i, end)
        }
        while i < end {
            guard let tag = varint(&i) else { return false }
            let field = tag >> 3
            guard field > 0, field <= 0x1FFF_FFFF else { return false }
            let code: UInt8 = field <= 8 ? UInt8(truncatingIfNeeded: low >> ((field &- 1) &* 8))
                : field <= 16 ? UInt8(truncatingIfNeeded: high >> ((field &- 9) &* 8)) : codeUnknown
            switch tag & 7 {
            case 0:
                guard code == codeVarint || code == codeUnknown, varint(&i) != nil else { return false }
            case 1:
                guard code == codeFixed64 || code == codeUnknown, end - i >= 8 else { return false }
                i += 8
            case 5:
                guard code == codeFixed32 || code == codeUnknown, end - i >= 4 else { return false }
                i += 4
            case 2:
                guard let length = varint(&i), length <= UInt64(end - i) else { return false }
                let r = i..<(i + Int(length))
                i = r.upperBound
                if code == codeString {
                    guard isValidUTF8(base, r) else { return false }
                } else if code == codeAttribute, depth + 2 < maxDepth, let verdict = simpleAttribute(p, base, r) {
                    guard verdict else { return false }
                } else if code >= codeMessage {
                    guard depth < maxDepth, let nested = Message(rawValue: code & 0x0F),
                          isValid(nested, base, r, depth: depth + 1) else { return false }
                } else if code != codeBytes && code != codeUnknown {
                    return false
                }
            case 3:
                // Groups are rare: the thorough path checks them.
                guard code == codeUnknown else { return false }
                var reader = ProtoReader(base, range: i..<end)
                do { try skipUnknown(UInt32(truncatingIfNeeded: field), .startGroup, &reader, depth: depth) } catch { return false }
                i = reader.offset
            default:
                return false  // end-group without a group, wire types 6 and 7
            }
        }
        return true
    }

    /// The code of a KeyValue field (attributes of spans, events, links, resources, scopes).
    static let codeAttribute = codeMessage | Message.keyValue.rawValue

    /// The verdict of `isValid(.keyValue, …)` for an attribute of the common shape — a key, then a value that is
    /// empty or holds one string, bool, int or double — read inline with no recursion; nil for any other shape
    /// (fields in another order, repeated or unknown fields, nested values, 3-byte lengths), which the general path
    /// then decides. Most of a span's bytes are attributes, so this is the bulk of validation
    /// (`OTLPValidatorTests` checks that both verdicts agree).
    @inline(__always)
    static func simpleAttribute(_ p: UnsafeRawPointer, _ base: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool? {
        let end = range.upperBound
        @inline(__always) func byte(_ i: Int) -> UInt8 { p.load(fromByteOffset: i, as: UInt8.self) }
        /// A length of one or two bytes that fits before `end`, or nil.
        @inline(__always) func length(_ i: inout Int) -> Int? {
            guard i < end else { return nil }
            let b0 = byte(i)
            var n = Int(b0)
            if b0 < 0x80 {
                i += 1
            } else {
                guard i + 1 < end else { return nil }
                let b1 = byte(i + 1)
                guard b1 < 0x80 else { return nil }
                n = Int(b0 & 0x7F) | Int(b1) << 7
                i += 2
            }
            return n <= end - i ? n : nil
        }
        var i = range.lowerBound
        guard i < end, byte(i) == 0x0A else { return nil }  // key (field 1, length-delimited)
        i += 1
        guard let keyLength = length(&i) else { return nil }
        let key = i..<(i + keyLength)
        i = key.upperBound
        guard i < end, byte(i) == 0x12 else { return nil }  // value (field 2, length-delimited)
        i += 1
        guard let valueLength = length(&i), i + valueLength == end else { return nil }
        if i == end { return isValidUTF8(base, key) }  // an empty AnyValue
        let tag = byte(i)
        i += 1
        switch tag {
        case 0x0A:  // string_value
            guard let n = length(&i), i + n == end else { return nil }
            return isValidUTF8(base, key) && isValidUTF8(base, i..<end)
        case 0x10, 0x18:  // bool_value, int_value: a varint of at most 9 bytes ending the value
            var k = i
            while k < end && byte(k) >= 0x80 { k += 1 }
            guard k + 1 == end, k - i < 9 else { return nil }
            return isValidUTF8(base, key)
        case 0x21:  // double_value
            guard end - i == 8 else { return nil }
            return isValidUTF8(base, key)
        default:
            return nil
        }
    }

    /// A varint of 2 to 10 bytes (or a 1-byte one at the end), or nil when it is truncated or too long.
    static func slowVarint(_ p: UnsafeRawPointer, _ i: inout Int, _ end: Int) -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        var j = i
        while j < end {
            let b = p.load(fromByteOffset: j, as: UInt8.self)
            j += 1
            if shift == 63 && b > 1 { return nil }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { i = j; return result }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    // MARK: Thorough path

    /// What is wrong with a message `isValid` refused ("invalid UTF-8 in span name", "truncated varint within
    /// span events"): the thorough pass, run only on failure.
    static func problem(_ message: Message, _ base: UnsafeRawBufferPointer, _ range: Range<Int>, depth: Int) -> String {
        do {
            try validate(message, base, range, depth: depth, root: true)
        } catch {
            return error.message
        }
        return "invalid \(message)"  // both passes agree (tested); never reached
    }

    /// Validates the message of type `message` at `range`, which sits `depth` levels below the request.
    /// `root`: errors inside nested messages name the field of this message they are in ("… within span events").
    static func validate(
        _ message: Message, _ base: UnsafeRawBufferPointer, _ range: Range<Int>, depth: Int, root: Bool = false
    ) throws(WireError) {
        var reader = ProtoReader(base, range: range)
        while let (field, wt) = try reader.readTag() {
            try validateField(message, field, wt, &reader, depth: depth, root: root)
        }
    }

    /// Validates the value of one field whose tag was just read, advancing `reader` past it.
    @inline(__always)
    static func validateField(
        _ message: Message, _ field: UInt32, _ wt: WireType, _ reader: inout ProtoReader, depth: Int, root: Bool
    ) throws(WireError) {
        let declared = Self.field(message, field)
        switch declared {
        case .unknown:
            try skipUnknown(field, wt, &reader, depth: depth)
        case .varint:
            guard wt == .varint else { throw wrongWireType(message, field, wt, reader.offset) }
            _ = try reader.readVarint()
        case .fixed64:
            guard wt == .fixed64 else { throw wrongWireType(message, field, wt, reader.offset) }
            try reader.skip(.fixed64)
        case .fixed32:
            guard wt == .fixed32 else { throw wrongWireType(message, field, wt, reader.offset) }
            try reader.skip(.fixed32)
        case .bytes, .skipped:
            guard wt == .lengthDelimited else { throw wrongWireType(message, field, wt, reader.offset) }
            _ = try reader.readLengthDelimited()
        case .string:
            guard wt == .lengthDelimited else { throw wrongWireType(message, field, wt, reader.offset) }
            let r = try reader.readLengthDelimited()
            guard isValidUTF8(reader.base, r) else {
                throw WireError(offset: r.lowerBound, "invalid UTF-8 in \(describe(message, field))")
            }
        case .message(let nested):
            guard wt == .lengthDelimited else { throw wrongWireType(message, field, wt, reader.offset) }
            let r = try reader.readLengthDelimited()
            guard depth < maxDepth else {
                throw WireError(offset: r.lowerBound, "messages nested deeper than \(maxDepth) levels in \(describe(message, field))")
            }
            if root {
                do {
                    try validate(nested, reader.base, r, depth: depth + 1)
                } catch {
                    throw WireError(offset: error.offset, "\(error.message) within \(describe(message, field))")
                }
            } else {
                try validate(nested, reader.base, r, depth: depth + 1)
            }
        }
    }

    /// Skips an unknown field, checking that it is well-formed (a group must close with its own field number).
    static func skipUnknown(_ field: UInt32, _ wt: WireType, _ reader: inout ProtoReader, depth: Int) throws(WireError) {
        switch wt {
        case .startGroup:
            // A group is a nested message: it counts towards the depth.
            let start = reader.offset
            guard depth < maxDepth else { throw WireError(offset: start, "messages nested deeper than \(maxDepth) levels in a group") }
            while true {
                guard let (f, w) = try reader.readTag() else { throw WireError(offset: start, "unterminated group") }
                if w == .endGroup {
                    guard f == field else { throw WireError(offset: reader.offset, "end-group \(f) closes group \(field)") }
                    return
                }
                try skipUnknown(f, w, &reader, depth: depth + 1)
            }
        case .endGroup:
            throw WireError(offset: reader.offset, "unexpected end-group")
        default:
            try reader.skip(wt)
        }
    }

    private static func wrongWireType(_ message: Message, _ field: UInt32, _ wt: WireType, _ offset: Int) -> WireError {
        WireError(offset: offset, "wrong wire type \(wt) for \(describe(message, field))")
    }

    /// A field's name for error messages ("span name", "attribute key", "event attributes").
    static func describe(_ message: Message, _ field: UInt32) -> String {
        let names: (String, [UInt32: String])
        switch message {
        case .span:
            names = ("span", [1: "trace_id", 2: "span_id", 3: "trace_state", 4: "parent_span_id", 5: "name", 6: "kind",
                              7: "start_time_unix_nano", 8: "end_time_unix_nano", 9: "attributes",
                              10: "dropped_attributes_count", 11: "events", 12: "dropped_events_count", 13: "links",
                              14: "dropped_links_count", 15: "status", 16: "flags"])
        case .event: names = ("event", [1: "time_unix_nano", 2: "name", 3: "attributes", 4: "dropped_attributes_count"])
        case .link:
            names = ("link", [1: "trace_id", 2: "span_id", 3: "trace_state", 4: "attributes", 5: "dropped_attributes_count", 6: "flags"])
        case .status: names = ("status", [2: "message", 3: "code"])
        case .keyValue: names = ("attribute", [1: "key", 2: "value"])
        case .anyValue:
            names = ("value", [1: "string_value", 2: "bool_value", 3: "int_value", 4: "double_value", 5: "array_value",
                               6: "kvlist_value", 7: "bytes_value"])
        case .arrayValue: names = ("array_value", [1: "values"])
        case .keyValueList: names = ("kvlist_value", [1: "values"])
        case .resourceSpansHeader: names = ("resource_spans", [1: "resource", 2: "scope_spans", 3: "schema_url"])
        case .scopeSpansHeader: names = ("scope_spans", [1: "scope", 2: "spans", 3: "schema_url"])
        case .resource: names = ("resource", [1: "attributes", 2: "dropped_attributes_count", 3: "entity_refs"])
        case .entityRef: names = ("entity_ref", [1: "schema_url", 2: "type", 3: "id_keys", 4: "description_keys"])
        case .scope: names = ("scope", [1: "name", 2: "version", 3: "attributes", 4: "dropped_attributes_count"])
        }
        switch (message, field) {
        case (.resourceSpansHeader, 1): return "resource"
        case (.scopeSpansHeader, 1): return "scope"
        default: return "\(names.0) \(names.1[field] ?? "field \(field)")"
        }
    }
}

/// Whether `range` of `base` is well-formed UTF-8 (Unicode Table 3-7: no overlong forms, no surrogates,
/// nothing above U+10FFFF). ASCII runs are checked 8 bytes at a time.
@inline(__always)
func isValidUTF8(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
    let n = range.count
    guard n > 0, let start = base.baseAddress else { return true }
    let p = start + range.lowerBound
    var i = 0
    while i + 8 <= n {
        if p.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
        i += 8
    }
    while i < n {
        let b0 = p.load(fromByteOffset: i, as: UInt8.self)
        if b0 < 0x80 { i += 1; continue }
        return isValidUTF8Tail(p, i, n)
    }
    return true
}

/// The non-ASCII part of `isValidUTF8`, from byte `from` on.
func isValidUTF8Tail(_ p: UnsafeRawPointer, _ from: Int, _ n: Int) -> Bool {
    @inline(__always) func byte(_ i: Int) -> UInt8 { p.load(fromByteOffset: i, as: UInt8.self) }
    @inline(__always) func isContinuation(_ b: UInt8) -> Bool { b & 0xC0 == 0x80 }
    var i = from
    while i < n {
        let b0 = byte(i)
        if b0 < 0x80 { i += 1; continue }
        switch b0 {
        case 0xC2...0xDF:
            guard i + 1 < n, isContinuation(byte(i + 1)) else { return false }
            i += 2
        case 0xE0...0xEF:
            guard i + 2 < n else { return false }
            let b1 = byte(i + 1)
            let lower: UInt8 = b0 == 0xE0 ? 0xA0 : 0x80   // no overlong 3-byte forms
            let upper: UInt8 = b0 == 0xED ? 0x9F : 0xBF   // no surrogates
            guard b1 >= lower, b1 <= upper, isContinuation(byte(i + 2)) else { return false }
            i += 3
        case 0xF0...0xF4:
            guard i + 3 < n else { return false }
            let b1 = byte(i + 1)
            let lower: UInt8 = b0 == 0xF0 ? 0x90 : 0x80   // no overlong 4-byte forms
            let upper: UInt8 = b0 == 0xF4 ? 0x8F : 0xBF   // nothing above U+10FFFF
            guard b1 >= lower, b1 <= upper, isContinuation(byte(i + 2)), isContinuation(byte(i + 3)) else { return false }
            i += 4
        default:
            return false  // continuation byte without a lead, C0/C1 (overlong), F5…FF
        }
    }
    return true
}
