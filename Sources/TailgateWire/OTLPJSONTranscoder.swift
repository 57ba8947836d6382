// OTLP/JSON -> protobuf in one pass over the raw UTF-8 bytes: a validating JSON tokenizer that writes the protobuf
// encoding of each field as it reads it (no JSON tree, no Foundation). Nested messages get a one-byte length
// placeholder, widened in place when the message turns out to be 128 bytes or longer; a message whose keys came out
// of field-number order is re-sorted when it closes, so the output is the canonical encoding whatever the key order.
//
// Allocations are per request: the output buffer, a scratch buffer (unescaped strings, re-sorting), the error path
// stack and the container stack used to skip unknown values.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension OTLPJSON {
    // MARK: Tables

    /// `schema`, flattened into immortal buffers for the hot path (no reference counting, no dictionary lookups).
    final class Tables: @unchecked Sendable {
        enum Kind: UInt8 {
            case message, string, bool, int64, uint32, enumeration, fixed64, fixed32, double, hexID, bytes
        }

        struct Field {
            var tag: UInt64          // field number << 3 | wire type
            var number: UInt32
            var kind: Kind
            var child: UInt8         // MessageID.rawValue of a message field
            var repeated: Bool
            var byteCount: UInt8     // of a hexID
            var message: UInt8       // the message this field belongs to
            var local: UInt8         // its index in that message's `fields`
        }

        struct Key {
            var offset: Int32        // into `pool`
            var length: Int32
            var field: Int32         // into `fields`
            var snake: Bool          // the key is the protobuf (snake_case) name
        }

        let fields: UnsafeMutablePointer<Field>
        let keys: UnsafeMutablePointer<Key>
        /// Keys of message m: keyStart[m] ..< keyStart[m + 1] (lowerCamelCase names first).
        let keyStart: UnsafeMutablePointer<Int>
        let oneof: UnsafeMutablePointer<Bool>
        let pool: UnsafeMutablePointer<UInt8>
        /// Hex digit value by byte, 0xFF when not a hex digit.
        let hexValue: UnsafeMutablePointer<UInt8>

        init() {
            let schema = OTLPJSON.schema
            var fieldList: [Field] = []
            var keyList: [Key] = []
            var poolBytes: [UInt8] = []
            var starts: [Int] = []
            for (m, spec) in schema.enumerated() {
                starts.append(keyList.count)
                var camel: [Key] = []
                var snake: [Key] = []
                for (local, f) in spec.fields.enumerated() {
                    let kind: Kind
                    var child: UInt8 = 0
                    var byteCount: UInt8 = 0
                    switch f.kind {
                    case .message(let id): kind = .message; child = UInt8(id.rawValue)
                    case .string: kind = .string
                    case .bool: kind = .bool
                    case .int64: kind = .int64
                    case .uint32: kind = .uint32
                    case .enumeration: kind = .enumeration
                    case .fixed64: kind = .fixed64
                    case .fixed32: kind = .fixed32
                    case .double: kind = .double
                    case .hexID(let n): kind = .hexID; byteCount = UInt8(n)
                    case .bytes: kind = .bytes
                    }
                    let index = Int32(fieldList.count)
                    fieldList.append(Field(
                        tag: UInt64(f.number) << 3 | UInt64(f.kind.wireType.rawValue), number: f.number, kind: kind,
                        child: child, repeated: f.repeated, byteCount: byteCount, message: UInt8(m), local: UInt8(local)))
                    camel.append(Key(offset: Int32(poolBytes.count), length: Int32(f.jsonName.utf8.count), field: index, snake: false))
                    poolBytes += f.jsonName.utf8
                    if f.protoName != f.jsonName {
                        snake.append(Key(offset: Int32(poolBytes.count), length: Int32(f.protoName.utf8.count), field: index, snake: true))
                        poolBytes += f.protoName.utf8
                    }
                }
                keyList += camel + snake
            }
            starts.append(keyList.count)

            fields = .allocate(capacity: fieldList.count)
            fields.initialize(from: fieldList, count: fieldList.count)
            keys = .allocate(capacity: keyList.count)
            keys.initialize(from: keyList, count: keyList.count)
            keyStart = .allocate(capacity: starts.count)
            keyStart.initialize(from: starts, count: starts.count)
            oneof = .allocate(capacity: schema.count)
            oneof.initialize(from: schema.map(\.isOneof), count: schema.count)
            pool = .allocate(capacity: max(poolBytes.count, 1))
            pool.initialize(from: poolBytes, count: poolBytes.count)
            hexValue = .allocate(capacity: 256)
            hexValue.initialize(repeating: 0xFF, count: 256)
            for (i, c) in "0123456789".utf8.enumerated() { hexValue[Int(c)] = UInt8(i) }
            for (i, c) in "abcdef".utf8.enumerated() { hexValue[Int(c)] = UInt8(10 + i) }
            for (i, c) in "ABCDEF".utf8.enumerated() { hexValue[Int(c)] = UInt8(10 + i) }
        }

        /// The name a key had in the document.
        func keyName(_ key: Key) -> String {
            String(decoding: UnsafeBufferPointer(start: pool + Int(key.offset), count: Int(key.length)), as: UTF8.self)
        }
    }

    static let tables = Tables()

    // MARK: Output

    /// A growable byte buffer over manually managed memory (freed by its owner).
    struct ByteBuffer {
        var base: UnsafeMutablePointer<UInt8>
        var count = 0
        var capacity: Int

        init(capacity: Int) {
            self.capacity = max(capacity, 64)
            base = .allocate(capacity: self.capacity)
        }

        func free() { base.deallocate() }

        @inline(__always)
        mutating func ensure(_ extra: Int) {
            if capacity &- count < extra { grow(extra) }
        }

        @inline(never)
        mutating func grow(_ extra: Int) {
            var newCapacity = capacity * 2
            while newCapacity - count < extra { newCapacity *= 2 }
            let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
            newBase.update(from: base, count: count)
            base.deallocate()
            base = newBase
            capacity = newCapacity
        }

        @inline(__always)
        mutating func append(_ byte: UInt8) {
            ensure(1)
            base[count] = byte
            count &+= 1
        }

        @inline(__always)
        mutating func append(_ source: UnsafePointer<UInt8>, count n: Int) {
            ensure(n)
            (base + count).update(from: source, count: n)
            count &+= n
        }

        @inline(__always)
        mutating func appendVarint(_ value: UInt64) {
            ensure(10)
            var v = value
            while v >= 0x80 {
                base[count] = UInt8(truncatingIfNeeded: v) | 0x80
                count &+= 1
                v >>= 7
            }
            base[count] = UInt8(truncatingIfNeeded: v)
            count &+= 1
        }

        @inline(__always)
        mutating func appendFixed64(_ value: UInt64) {
            ensure(8)
            UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt64.self)
            count &+= 8
        }

        @inline(__always)
        mutating func appendFixed32(_ value: UInt32) {
            ensure(4)
            UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt32.self)
            count &+= 4
        }

        /// Reserves one byte for the length of what follows; `closeLength` fills it in.
        @inline(__always)
        mutating func openLength() -> Int {
            append(0)
            return count &- 1
        }

        /// Writes the length of everything after the placeholder at `position`, widening it when needed.
        @inline(__always)
        mutating func closeLength(_ position: Int) {
            let length = count &- position &- 1
            if length < 0x80 {
                base[position] = UInt8(truncatingIfNeeded: length)
            } else {
                widenLength(position, length)
            }
        }

        @inline(never)
        mutating func widenLength(_ position: Int, _ length: Int) {
            let size = ProtoWriter.varintSize(UInt64(length))
            ensure(size - 1)
            memmove(base + position + size, base + position + 1, length)
            var v = UInt64(length)
            var j = position
            while v >= 0x80 {
                base[j] = UInt8(truncatingIfNeeded: v) | 0x80
                j += 1
                v >>= 7
            }
            base[j] = UInt8(truncatingIfNeeded: v)
            count += size - 1
        }
    }

    // MARK: Transcoder

    /// A failure while transcoding; `isSyntax` when the document is not valid JSON (or not UTF-8).
    struct TranscodeFailure: Error {
        var error: OTLPJSONError
        var isSyntax: Bool
    }

    struct PathFrame {
        var key: Int32      // into Tables.keys
        var index: Int32    // array index, -1 when none
    }

    /// A scanned JSON string: the bytes between the quotes, and whether they hold escapes.
    struct StringToken {
        var start: Int
        var end: Int
        var escaped: Bool
        var count: Int { end &- start }
    }

    /// A scanned JSON number. `magnitude` is exact when `isInteger && !overflow`.
    struct NumberToken {
        var start: Int
        var end: Int
        var negative: Bool
        var magnitude: UInt64
        var overflow: Bool
        var isInteger: Bool
    }

    struct Transcoder {
        let p: UnsafePointer<UInt8>
        let n: Int
        var i = 0
        let t: Tables
        var out: ByteBuffer
        var scratch: ByteBuffer
        /// The fields being transcoded, outermost first (for error messages): one frame per message level, so at most
        /// `OTLPJSON.maxDepth`. A fixed allocation rather than an array: pushed and popped for every field.
        let path: UnsafeMutablePointer<PathFrame>
        var pathCount = 0
        var containers: [UInt8] = []
        var chunks: [(number: UInt32, start: Int, end: Int)] = []
        /// Span IDs written malformed for the scanner to reject (see `hexID`).
        var malformedIDs = MalformedIDs()

        init(_ p: UnsafePointer<UInt8>, _ n: Int, outputCapacity: Int) {
            self.p = p
            self.n = n
            self.t = OTLPJSON.tables
            out = ByteBuffer(capacity: outputCapacity)
            scratch = ByteBuffer(capacity: 256)
            path = .allocate(capacity: OTLPJSON.maxDepth &+ 2)
        }

        func free() {
            out.free()
            scratch.free()
            path.deallocate()
        }

        // MARK: Errors

        func syntax(_ what: String, at offset: Int? = nil) -> TranscodeFailure {
            TranscodeFailure(
                error: OTLPJSONError(path: "", message: "invalid JSON: \(what) at character \(offset ?? i)"), isSyntax: true)
        }

        /// A syntax error at the current byte: what was expected and what was found.
        func unexpected(_ expected: String) -> TranscodeFailure {
            guard i < n else { return syntax("unexpected end of input, expected \(expected)") }
            let c = p[i]
            let found = c >= 0x20 && c < 0x7F ? "'\(Character(Unicode.Scalar(c)))'" : "byte 0x\(String(c, radix: 16, uppercase: true))"
            return syntax("expected \(expected), found \(found)")
        }

        func failure(_ message: String) -> TranscodeFailure {
            var s = ""
            for frame in UnsafeBufferPointer(start: path, count: pathCount) {
                if !s.isEmpty { s += "." }
                s += t.keyName(t.keys[Int(frame.key)])
                if frame.index >= 0 { s += "[\(frame.index)]" }
            }
            return TranscodeFailure(error: OTLPJSONError(path: s, message: message), isSyntax: false)
        }

        // MARK: Document

        mutating func document() throws(TranscodeFailure) {
            skipBOM()
            skipWhitespace()
            guard i < n else { throw unexpected("a JSON object") }
            guard p[i] == UInt8(ascii: "{") else { throw failure("expected a JSON object at the top level") }
            try message(MessageID.exportTraceServiceRequest.rawValue, depth: 0)
            try end()
        }

        /// Validates the whole document as JSON (used to prefer a syntax error over a schema error, as a parse
        /// followed by a walk would).
        mutating func validateDocument() throws(TranscodeFailure) {
            i = 0
            skipBOM()
            skipWhitespace()
            try skipValue()
            try end()
        }

        mutating func skipBOM() {
            if n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF { i = 3 }
        }

        mutating func end() throws(TranscodeFailure) {
            skipWhitespace()
            guard i == n else { throw syntax("unexpected data after the top-level value") }
        }

        // MARK: Messages

        /// Transcodes the object at `i` as message `m`, appending its fields to `out`.
        mutating func message(_ m: Int, depth: Int) throws(TranscodeFailure) {
            guard depth < OTLPJSON.maxDepth else {
                throw failure("messages nested deeper than \(OTLPJSON.maxDepth) levels")
            }
            i &+= 1  // {
            skipWhitespace()
            if i < n && p[i] == UInt8(ascii: "}") {
                i &+= 1
                return
            }
            let contentStart = out.count
            let isOneof = t.oneof[m]
            var oneofKey: Int32 = -1
            var lastNumber: UInt32 = 0
            var unordered = false
            let keysLow = t.keyStart[m]
            let keysHigh = t.keyStart[m &+ 1]
            let keys = t.keys, pool = t.pool
            while true {
                guard i < n && p[i] == UInt8(ascii: "\"") else { throw unexpected("a string key") }
                let key = try scanString()
                let k = key.escaped
                    ? lookupEscaped(key, keysLow, keysHigh)
                    : Transcoder.lookup(keys, pool, p + key.start, key.count, keysLow, keysHigh)
                skipWhitespace()
                guard i < n && p[i] == UInt8(ascii: ":") else { throw unexpected("':'") }
                i &+= 1
                skipWhitespace()
                if k < 0 {
                    try skipValue()
                } else if i < n && p[i] == UInt8(ascii: "n") {
                    try literal("null")
                } else {
                    let fieldIndex = Int(t.keys[k].field)
                    let field = t.fields[fieldIndex]
                    path[pathCount] = PathFrame(key: Int32(k), index: -1)
                    pathCount &+= 1
                    if isOneof {
                        if oneofKey >= 0 && t.keys[Int(oneofKey)].field != Int32(fieldIndex) {
                            let spec = OTLPJSON.schema[m]
                            throw failure("only one value may be set in \(spec.name) (also found \"\(t.keyName(t.keys[Int(oneofKey)]))\")")
                        }
                        oneofKey = Int32(k)
                    }
                    if field.number < lastNumber { unordered = true }
                    lastNumber = field.number
                    if field.repeated {
                        try repeatedField(field, depth: depth)
                    } else {
                        try value(field, present: isOneof, depth: depth)
                    }
                    pathCount &-= 1
                }
                skipWhitespace()
                guard i < n else { throw unexpected("',' or '}'") }
                let c = p[i]
                i &+= 1
                if c == UInt8(ascii: ",") {
                    skipWhitespace()
                    continue
                }
                if c == UInt8(ascii: "}") { break }
                i &-= 1
                throw unexpected("',' or '}'")
            }
            if unordered { sortFields(from: contentStart) }
        }

        /// The key entry in `low..<high` spelled as the `count` bytes at `key`, or -1. Static, so that a call from the
        /// transcoding loop passes what it reads rather than a copy of the transcoder.
        @inline(__always)
        static func lookup(
            _ keys: UnsafeMutablePointer<Tables.Key>, _ pool: UnsafeMutablePointer<UInt8>, _ key: UnsafePointer<UInt8>, _ count: Int,
            _ low: Int, _ high: Int
        ) -> Int {
            let length = Int32(truncatingIfNeeded: count)
            var k = low
            while k < high {
                let entry = keys[k]
                if entry.length == length && memcmp(pool + Int(entry.offset), key, count) == 0 { return k }
                k &+= 1
            }
            return -1
        }

        /// A key written with escapes (`"trace\u0049d"`): compares its unescaped bytes.
        func lookupEscaped(_ key: StringToken, _ low: Int, _ high: Int) -> Int {
            var buffer = ByteBuffer(capacity: key.count)
            defer { buffer.free() }
            Transcoder.unescape(p, key, t.hexValue, into: &buffer)
            for k in low..<high {
                let entry = t.keys[k]
                if Int(entry.length) == buffer.count && memcmp(t.pool + Int(entry.offset), buffer.base, buffer.count) == 0 { return k }
            }
            return -1
        }

        mutating func repeatedField(_ field: Tables.Field, depth: Int) throws(TranscodeFailure) {
            guard i < n && p[i] == UInt8(ascii: "[") else { throw failure("expected an array") }
            i &+= 1
            skipWhitespace()
            if i < n && p[i] == UInt8(ascii: "]") {
                i &+= 1
                return
            }
            var index: Int32 = 0
            while true {
                path[pathCount &- 1].index = index
                if i < n && p[i] == UInt8(ascii: "n") {
                    try literal("null")
                } else {
                    try value(field, present: true, depth: depth)
                }
                skipWhitespace()
                guard i < n else { throw unexpected("',' or ']'") }
                let c = p[i]
                i &+= 1
                if c == UInt8(ascii: ",") {
                    skipWhitespace()
                    index &+= 1
                    continue
                }
                if c == UInt8(ascii: "]") { break }
                i &-= 1
                throw unexpected("',' or ']'")
            }
        }

        /// Appends one value of `field`. `present` forces default values out (repeated elements, oneof members).
        @inline(__always)
        mutating func value(_ field: Tables.Field, present: Bool, depth: Int) throws(TranscodeFailure) {
            switch field.kind {
            case .message:
                guard i < n && p[i] == UInt8(ascii: "{") else { throw failure("expected an object") }
                out.appendVarint(field.tag)
                let position = out.openLength()
                try message(Int(field.child), depth: depth &+ 1)
                out.closeLength(position)
            case .string:
                guard i < n && p[i] == UInt8(ascii: "\"") else { throw failure("expected a string") }
                let s = try scanString()
                if s.escaped {
                    out.appendVarint(field.tag)
                    let position = out.openLength()
                    Transcoder.unescape(p, s, t.hexValue, into: &out)
                    out.closeLength(position)
                } else if present || s.count > 0 {
                    out.appendVarint(field.tag)
                    out.appendVarint(UInt64(s.count))
                    out.append(p + s.start, count: s.count)
                }
            case .bool:
                let b: Bool
                if i < n && p[i] == UInt8(ascii: "t") {
                    try literal("true")
                    b = true
                } else if i < n && p[i] == UInt8(ascii: "f") {
                    try literal("false")
                    b = false
                } else {
                    throw failure("expected true or false")
                }
                if present || b {
                    out.appendVarint(field.tag)
                    out.append(b ? 1 : 0)
                }
            case .int64:
                let v = Int64(truncatingIfNeeded: try integer(in: Int128(Int64.min)...Int128(Int64.max), "int64"))
                if present || v != 0 {
                    out.appendVarint(field.tag)
                    out.appendVarint(UInt64(bitPattern: v))
                }
            case .uint32:
                let v = UInt64(truncatingIfNeeded: try integer(in: 0...Int128(UInt32.max), "uint32"))
                if present || v != 0 {
                    out.appendVarint(field.tag)
                    out.appendVarint(v)
                }
            case .enumeration:
                let v = try enumeration(field)
                if present || v != 0 {
                    out.appendVarint(field.tag)
                    out.appendVarint(UInt64(bitPattern: Int64(v)))
                }
            case .fixed64:
                let v = UInt64(truncatingIfNeeded: try integer(in: 0...Int128(UInt64.max), "uint64"))
                if present || v != 0 {
                    out.appendVarint(field.tag)
                    out.appendFixed64(v)
                }
            case .fixed32:
                let v = UInt32(truncatingIfNeeded: try integer(in: 0...Int128(UInt32.max), "uint32"))
                if present || v != 0 {
                    out.appendVarint(field.tag)
                    out.appendFixed32(v)
                }
            case .double:
                let d = try double()
                if present || d.bitPattern != 0 {
                    out.appendVarint(field.tag)
                    out.appendFixed64(d.bitPattern)
                }
            case .hexID:
                guard i < n && p[i] == UInt8(ascii: "\"") else { throw failure("expected a hex string") }
                let s = try scanString()
                let (bytes, count) = content(s)
                hexID(field, bytes, count)
            case .bytes:
                guard i < n && p[i] == UInt8(ascii: "\"") else { throw failure("expected a base64 string") }
                let s = try scanString()
                let (bytes, count) = content(s)
                let fieldStart = out.count
                out.appendVarint(field.tag)
                let position = out.openLength()
                guard OTLPJSON.base64Decode(bytes, count, into: &out) else { throw failure("invalid base64") }
                if !present && out.count == position &+ 1 {
                    out.count = fieldStart
                } else {
                    out.closeLength(position)
                }
            }
        }

        /// A trace or span ID: `byteCount` bytes as 2 × `byteCount` hex digits; "" means absent.
        ///
        /// A malformed ID (wrong length, not hex) does not fail the request: it is written as its text's bytes
        /// (one byte shorter when the text happens to be `byteCount` bytes long), a length no valid ID has, so the
        /// scanner rejects that span alone as it would a protobuf span with the same defect (a link's IDs are not
        /// checked by the scanner and are forwarded as they are, as for protobuf). A span's malformed IDs are also
        /// noted in `malformedIDs`, so that the answer can name the text the scanner only sees the length of.
        @inline(__always)
        mutating func hexID(_ field: Tables.Field, _ bytes: UnsafePointer<UInt8>, _ count: Int) {
            if count == 0 { return }
            let byteCount = Int(field.byteCount)
            let fieldStart = out.count
            out.appendVarint(field.tag)
            if count == byteCount &* 2 {
                out.ensure(1 &+ byteCount)
                out.base[out.count] = UInt8(truncatingIfNeeded: byteCount)
                let dst = out.base + (out.count &+ 1)
                var bad: UInt8 = 0
                for j in 0..<byteCount {
                    let high = t.hexValue[Int(bytes[2 &* j])]
                    let low = t.hexValue[Int(bytes[2 &* j &+ 1])]
                    bad |= high | low
                    dst[j] = high << 4 | low
                }
                if bad & 0xF0 == 0 {
                    out.count &+= 1 &+ byteCount
                    return
                }
                out.count = fieldStart
                out.appendVarint(field.tag)
            }
            if field.message == UInt8(truncatingIfNeeded: MessageID.span.rawValue) { noteMalformedID(field, bytes, count) }
            let length = count == byteCount ? count &- 1 : count
            out.appendVarint(UInt64(length))
            out.append(bytes, count: length)
        }

        /// Counts a span's malformed ID and describes the first: `"…" is not hex ('z'): a trace ID is 32 hex digits`.
        @inline(never)
        mutating func noteMalformedID(_ field: Tables.Field, _ bytes: UnsafePointer<UInt8>, _ count: Int) {
            malformedIDs.count += 1
            guard malformedIDs.first == nil else { return }
            let digits = 2 * Int(field.byteCount)
            let scalars = String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self).unicodeScalars
            var shown = String(String.UnicodeScalarView(scalars.prefix(digits + 8))).debugDescription
            if scalars.count > digits + 8 { shown.insert("…", at: shown.index(before: shown.endIndex)) }
            let problem: String
            if scalars.count != digits {
                problem = "has \(scalars.count) character\(scalars.count == 1 ? "" : "s")"
            } else if let bad = scalars.first(where: { !$0.isASCII || t.hexValue[Int($0.value)] == 0xFF }) {
                problem = "is not hex ('\(String(bad).debugDescription.dropFirst().dropLast())')"
            } else {
                problem = "is malformed"  // not reached: well-formed hex of the right length is written as bytes
            }
            let what = field.byteCount == 16 ? "a trace ID" : "a span ID"
            malformedIDs.first = failure("\(shown) \(problem): \(what) is \(digits) hex digits").error
        }

        // MARK: Scalars

        /// The integer at `i` (a JSON number, or a decimal string), range-checked.
        mutating func integer(in range: ClosedRange<Int128>, _ typeName: String) throws(TranscodeFailure) -> Int128 {
            guard i < n else { throw unexpected("a value") }
            let v: Int128?
            let c = p[i]
            if c == UInt8(ascii: "\"") {
                let s = try scanString()
                let (bytes, count) = content(s)
                v = OTLPJSON.decimal(bytes, count)
            } else if c == UInt8(ascii: "-") || (c &- UInt8(ascii: "0")) < 10 {
                let number = try scanNumber()
                if number.isInteger && !number.overflow {
                    v = number.negative ? -Int128(number.magnitude) : Int128(number.magnitude)
                } else {
                    let d = parseDouble(number)
                    v = d.isFinite ? Int128(exactly: d) : nil
                }
            } else {
                v = nil
            }
            guard let v else { throw failure("expected an integer or a decimal string") }
            guard range.contains(v) else { throw failure("\(v) is out of range for \(typeName)") }
            return v
        }

        /// An enum: an integer, a decimal string or the value's name.
        mutating func enumeration(_ field: Tables.Field) throws(TranscodeFailure) -> Int32 {
            if i < n && p[i] == UInt8(ascii: "\"") {
                let start = i
                let s = try scanString()
                let (bytes, count) = content(s)
                let text = String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
                if case .enumeration(let names) = OTLPJSON.schema[Int(field.message)].fields[Int(field.local)].kind,
                   let named = names[text] {
                    return named
                }
                if Int32(text) == nil { throw failure("unknown enum value \"\(text)\"") }
                i = start
            }
            return Int32(truncatingIfNeeded: try integer(in: Int128(Int32.min)...Int128(Int32.max), "int32"))
        }

        /// A double: a JSON number, or a string holding one or "NaN", "Infinity", "-Infinity".
        mutating func double() throws(TranscodeFailure) -> Double {
            let expected = "expected a number or \"NaN\", \"Infinity\", \"-Infinity\""
            guard i < n else { throw unexpected("a value") }
            let c = p[i]
            if c == UInt8(ascii: "\"") {
                let s = try scanString()
                let (bytes, count) = content(s)
                let text = String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
                switch text {
                case "NaN": return .nan
                case "Infinity": return .infinity
                case "-Infinity": return -.infinity
                default:
                    if let d = Double(text), d.isFinite { return d }
                    throw failure(expected)
                }
            }
            guard c == UInt8(ascii: "-") || (c &- UInt8(ascii: "0")) < 10 else { throw failure(expected) }
            let number = try scanNumber()
            if number.isInteger && !number.overflow {
                if number.magnitude == 0 { return 0 }
                let d = Double(number.magnitude)
                return number.negative ? -d : d
            }
            let d = parseDouble(number)
            guard d.isFinite else {
                throw failure("\(String(decoding: UnsafeBufferPointer(start: p + number.start, count: number.end - number.start), as: UTF8.self)) is out of range for double")
            }
            return d
        }

        func parseDouble(_ number: NumberToken) -> Double {
            let text = String(decoding: UnsafeBufferPointer(start: p + number.start, count: number.end &- number.start), as: UTF8.self)
            return Double(text) ?? .nan
        }

        // MARK: Tokens

        @inline(__always)
        mutating func skipWhitespace() {
            while i < n {
                let c = p[i]
                guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { return }
                i &+= 1
            }
        }

        /// Consumes `word` (true, false, null) at `i`.
        mutating func literal(_ word: StaticString) throws(TranscodeFailure) {
            let length = word.utf8CodeUnitCount
            guard n &- i >= length && memcmp(p + i, word.utf8Start, length) == 0 else {
                throw syntax("invalid literal, expected \(word)")
            }
            i &+= length
        }

        /// Scans the string whose opening quote is at `i`, validating escapes and UTF-8, and moves past it.
        @inline(__always)
        mutating func scanString() throws(TranscodeFailure) -> StringToken {
            let start = i &+ 1
            // The position is kept in a local (a register) and written back only around the rare cases: `i` lives in
            // `self`, which the loop would otherwise store and reload for every 8 bytes.
            var j = start
            var escaped = false
            while true {
                j = Transcoder.plainPrefix(p, from: j, n)
                guard j < n else {
                    i = j
                    throw syntax("unterminated string", at: start &- 1)
                }
                let c = p[j]
                if c == UInt8(ascii: "\"") {
                    i = j &+ 1
                    return StringToken(start: start, end: j, escaped: escaped)
                } else if c == UInt8(ascii: "\\") {
                    escaped = true
                    i = j
                    try scanEscape()
                    j = i
                } else if c < 0x20 {
                    i = j
                    throw syntax("unescaped control character 0x\(String(c, radix: 16, uppercase: true)) in a string")
                } else if c >= 0x80 {
                    i = j
                    try scanUTF8()
                    j = i
                } else {
                    j &+= 1  // not reached from `plainPrefix` (it stops only at a special byte or the end)
                }
            }
        }

        /// The position of the first quote, backslash, control character or non-ASCII byte at or after `from` (or
        /// `n`), 8 bytes at a time. In each word, the lowest byte flagged is exact (a flag above it may come from a
        /// borrow), so the scan jumps straight to it.
        @inline(__always)
        static func plainPrefix(_ p: UnsafePointer<UInt8>, from: Int, _ n: Int) -> Int {
            let ones: UInt64 = 0x0101_0101_0101_0101
            let highs: UInt64 = 0x8080_8080_8080_8080
            var j = from
            while j &+ 8 <= n {
                let w = UnsafeRawPointer(p + j).loadUnaligned(as: UInt64.self)
                let quote = w ^ (ones &* 0x22)
                let backslash = w ^ (ones &* 0x5C)
                let special = (((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | (w &- ones &* 0x20) | w) & highs
                if special != 0 { return j &+ (special.trailingZeroBitCount &>> 3) }
                j &+= 8
            }
            while j < n {
                let c = p[j]
                if c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") || c < 0x20 || c >= 0x80 { return j }
                j &+= 1
            }
            return n
        }

        /// Validates the escape sequence at `i` (a backslash) and moves past it. Surrogates must pair up.
        mutating func scanEscape() throws(TranscodeFailure) {
            guard i &+ 1 < n else { throw syntax("unterminated string") }
            switch p[i &+ 1] {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                 UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                i &+= 2
            case UInt8(ascii: "u"):
                let unit = try hex4(at: i &+ 2)
                if unit >= 0xDC00 && unit <= 0xDFFF {
                    throw syntax("unpaired UTF-16 surrogate \\u\(String(unit, radix: 16, uppercase: true))")
                }
                if unit >= 0xD800 && unit <= 0xDBFF {
                    guard i &+ 11 < n && p[i &+ 6] == UInt8(ascii: "\\") && p[i &+ 7] == UInt8(ascii: "u"),
                          let low = try? hex4(at: i &+ 8), low >= 0xDC00 && low <= 0xDFFF else {
                        throw syntax("unpaired UTF-16 surrogate \\u\(String(unit, radix: 16, uppercase: true))")
                    }
                    i &+= 12
                } else {
                    i &+= 6
                }
            default:
                throw syntax("invalid escape sequence")
            }
        }

        func hex4(at offset: Int) throws(TranscodeFailure) -> UInt32 {
            guard offset &+ 4 <= n else { throw syntax("unterminated \\u escape", at: offset &- 2) }
            var v: UInt32 = 0
            for j in 0..<4 {
                let d = t.hexValue[Int(p[offset &+ j])]
                guard d != 0xFF else { throw syntax("invalid \\u escape", at: offset &- 2) }
                v = v << 4 | UInt32(d)
            }
            return v
        }

        /// Validates the UTF-8 sequence starting at `i` (a byte >= 0x80) and moves past it.
        mutating func scanUTF8() throws(TranscodeFailure) {
            let b0 = p[i]
            let length: Int
            var low: UInt8 = 0x80
            var high: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; low = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; high = 0x9F
            case 0xF0: length = 4; low = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; high = 0x8F
            default: throw invalidUTF8()
            }
            guard n &- i >= length else { throw invalidUTF8() }
            let b1 = p[i &+ 1]
            guard b1 >= low && b1 <= high else { throw invalidUTF8() }
            for j in 2..<max(length, 2) where p[i &+ j] & 0xC0 != 0x80 { throw invalidUTF8() }
            i &+= length
        }

        func invalidUTF8() -> TranscodeFailure {
            syntax("invalid UTF-8 (byte 0x\(String(p[i], radix: 16, uppercase: true)))")
        }

        /// Scans the number at `i` (RFC 8259 grammar) and moves past it.
        @inline(__always)
        mutating func scanNumber() throws(TranscodeFailure) -> NumberToken {
            let start = i
            var negative = false
            if p[i] == UInt8(ascii: "-") {
                negative = true
                i &+= 1
            }
            guard i < n, (p[i] &- UInt8(ascii: "0")) < 10 else { throw unexpected("a digit") }
            var magnitude: UInt64 = 0
            var overflow = false
            if p[i] == UInt8(ascii: "0") {
                i &+= 1
            } else {
                while i < n {
                    let d = p[i] &- UInt8(ascii: "0")
                    guard d < 10 else { break }
                    let (m, o1) = magnitude.multipliedReportingOverflow(by: 10)
                    let (s, o2) = m.addingReportingOverflow(UInt64(d))
                    overflow = overflow || o1 || o2
                    magnitude = s
                    i &+= 1
                }
            }
            var isInteger = true
            if i < n && p[i] == UInt8(ascii: ".") {
                isInteger = false
                i &+= 1
                guard i < n, (p[i] &- UInt8(ascii: "0")) < 10 else { throw unexpected("a digit") }
                while i < n && (p[i] &- UInt8(ascii: "0")) < 10 { i &+= 1 }
            }
            if i < n && (p[i] | 0x20) == UInt8(ascii: "e") {
                isInteger = false
                i &+= 1
                if i < n && (p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-")) { i &+= 1 }
                guard i < n, (p[i] &- UInt8(ascii: "0")) < 10 else { throw unexpected("a digit") }
                while i < n && (p[i] &- UInt8(ascii: "0")) < 10 { i &+= 1 }
            }
            return NumberToken(start: start, end: i, negative: negative, magnitude: magnitude, overflow: overflow, isInteger: isInteger)
        }

        /// Skips (and validates) the value at `i`, to any depth, without recursion.
        mutating func skipValue() throws(TranscodeFailure) {
            let object: UInt8 = 1
            let array: UInt8 = 2
            let base = containers.count
            defer { containers.removeSubrange(base...) }
            while true {
                // A value.
                guard i < n else { throw unexpected("a value") }
                switch p[i] {
                case UInt8(ascii: "{"):
                    i &+= 1
                    skipWhitespace()
                    if i < n && p[i] == UInt8(ascii: "}") {
                        i &+= 1
                    } else {
                        containers.append(object)
                        try memberKey()
                        continue
                    }
                case UInt8(ascii: "["):
                    i &+= 1
                    skipWhitespace()
                    if i < n && p[i] == UInt8(ascii: "]") {
                        i &+= 1
                    } else {
                        containers.append(array)
                        continue
                    }
                case UInt8(ascii: "\""): _ = try scanString()
                case UInt8(ascii: "t"): try literal("true")
                case UInt8(ascii: "f"): try literal("false")
                case UInt8(ascii: "n"): try literal("null")
                case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try scanNumber()
                default: throw unexpected("a value")
                }
                // After a value: close containers, or go on with the next member or element.
                while true {
                    guard containers.count > base else { return }
                    skipWhitespace()
                    guard i < n else { throw unexpected("',' or a closing bracket") }
                    let c = p[i]
                    let top = containers[containers.count &- 1]
                    if c == UInt8(ascii: ",") {
                        i &+= 1
                        skipWhitespace()
                        if top == object { try memberKey() }
                        break
                    }
                    if (top == object && c == UInt8(ascii: "}")) || (top == array && c == UInt8(ascii: "]")) {
                        i &+= 1
                        containers.removeLast()
                        continue
                    }
                    throw unexpected(top == object ? "',' or '}'" : "',' or ']'")
                }
            }
        }

        /// `"key":` of an object member being skipped, leaving `i` at its value.
        mutating func memberKey() throws(TranscodeFailure) {
            guard i < n && p[i] == UInt8(ascii: "\"") else { throw unexpected("a string key") }
            _ = try scanString()
            skipWhitespace()
            guard i < n && p[i] == UInt8(ascii: ":") else { throw unexpected("':'") }
            i &+= 1
            skipWhitespace()
        }

        // MARK: String content

        /// The bytes a string stands for: in place when it has no escapes, else unescaped into `scratch`
        /// (valid until the next call).
        @inline(__always)
        mutating func content(_ s: StringToken) -> (UnsafePointer<UInt8>, Int) {
            if !s.escaped { return (p + s.start, s.count) }
            scratch.count = 0
            Transcoder.unescape(p, s, t.hexValue, into: &scratch)
            return (UnsafePointer(scratch.base), scratch.count)
        }

        /// Appends the unescaped bytes of a (validated) string of `p`.
        static func unescape(
            _ p: UnsafePointer<UInt8>, _ s: StringToken, _ hexValue: UnsafeMutablePointer<UInt8>, into buffer: inout ByteBuffer
        ) {
            func hexUnit(_ offset: Int) -> UInt32 {
                var v: UInt32 = 0
                for k in 0..<4 { v = v << 4 | UInt32(hexValue[Int(p[offset &+ k])]) }
                return v
            }
            buffer.ensure(s.count)  // unescaping never grows a string
            var j = s.start
            var run = j
            while j < s.end {
                guard p[j] == UInt8(ascii: "\\") else {
                    j &+= 1
                    continue
                }
                buffer.append(p + run, count: j &- run)
                let e = p[j &+ 1]
                j &+= 2
                switch e {
                case UInt8(ascii: "b"): buffer.append(0x08)
                case UInt8(ascii: "f"): buffer.append(0x0C)
                case UInt8(ascii: "n"): buffer.append(0x0A)
                case UInt8(ascii: "r"): buffer.append(0x0D)
                case UInt8(ascii: "t"): buffer.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = hexUnit(j)
                    j &+= 4
                    if scalar >= 0xD800 && scalar <= 0xDBFF {
                        let low = hexUnit(j &+ 2)
                        j &+= 6
                        scalar = 0x10000 &+ ((scalar &- 0xD800) << 10) &+ (low &- 0xDC00)
                    }
                    appendUTF8(scalar, into: &buffer)
                default: buffer.append(e)  // " \ /
                }
                run = j
            }
            buffer.append(p + run, count: j &- run)
        }

        static func appendUTF8(_ scalar: UInt32, into buffer: inout ByteBuffer) {
            switch scalar {
            case 0..<0x80:
                buffer.append(UInt8(scalar))
            case 0x80..<0x800:
                buffer.append(UInt8(0xC0 | scalar >> 6))
                buffer.append(UInt8(0x80 | scalar & 0x3F))
            case 0x800..<0x10000:
                buffer.append(UInt8(0xE0 | scalar >> 12))
                buffer.append(UInt8(0x80 | scalar >> 6 & 0x3F))
                buffer.append(UInt8(0x80 | scalar & 0x3F))
            default:
                buffer.append(UInt8(0xF0 | scalar >> 18))
                buffer.append(UInt8(0x80 | scalar >> 12 & 0x3F))
                buffer.append(UInt8(0x80 | scalar >> 6 & 0x3F))
                buffer.append(UInt8(0x80 | scalar & 0x3F))
            }
        }

        // MARK: Field order

        /// Re-sorts the fields written since `start` by field number (stable), as a tree walker in schema order
        /// would have written them. Only for messages whose keys came out of order.
        mutating func sortFields(from start: Int) {
            chunks.removeAll(keepingCapacity: true)
            let end = out.count
            var j = start
            func varint() -> UInt64 {
                var v: UInt64 = 0
                var shift: UInt64 = 0
                while true {
                    let b = out.base[j]
                    j += 1
                    v |= UInt64(b & 0x7F) << shift
                    if b < 0x80 { return v }
                    shift += 7
                }
            }
            while j < end {
                let fieldStart = j
                let tag = varint()
                switch tag & 7 {
                case 0: _ = varint()
                case 1: j += 8
                case 5: j += 4
                default: j += Int(varint())  // length-delimited: the only other wire type written
                }
                chunks.append((UInt32(truncatingIfNeeded: tag >> 3), fieldStart, j))
            }
            chunks.sort { $0.number != $1.number ? $0.number < $1.number : $0.start < $1.start }
            scratch.count = 0
            scratch.ensure(end - start)
            for chunk in chunks {
                scratch.append(out.base + chunk.start, count: chunk.end - chunk.start)
            }
            (out.base + start).update(from: scratch.base, count: end - start)
        }
    }

    // MARK: Helpers shared with the tests

    /// A decimal string as `Int128(String)` reads it (optional sign, digits), nil when malformed or out of range.
    static func decimal(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int128? {
        if count > 0 && count <= 19 {
            var v: UInt64 = 0
            var j = 0
            while j < count {
                let d = bytes[j] &- UInt8(ascii: "0")
                if d >= 10 { break }
                v = v &* 10 &+ UInt64(d)
                j &+= 1
            }
            if j == count { return Int128(v) }
        }
        return Int128(String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self))
    }

    /// Decodes standard or URL-safe base64, padded or not, appending to `out`. False if malformed.
    static func base64Decode(_ bytes: UnsafePointer<UInt8>, _ count: Int, into out: inout ByteBuffer) -> Bool {
        out.ensure(count / 4 * 3 + 3)
        var accumulator: UInt32 = 0
        var bits = 0
        var symbols = 0
        var padding = 0
        for j in 0..<count {
            let c = bytes[j]
            if c == UInt8(ascii: "=") {
                padding += 1
                continue
            }
            if padding > 0 { return false }  // data after padding
            let v: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = c &- UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = c &- UInt8(ascii: "a") &+ 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c &- UInt8(ascii: "0") &+ 52
            case UInt8(ascii: "+"), UInt8(ascii: "-"): v = 62
            case UInt8(ascii: "/"), UInt8(ascii: "_"): v = 63
            default: return false
            }
            accumulator = accumulator << 6 | UInt32(v)
            bits += 6
            symbols += 1
            if bits >= 8 {
                bits -= 8
                out.base[out.count] = UInt8(truncatingIfNeeded: accumulator >> UInt32(bits))
                out.count += 1
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        if symbols % 4 == 1 { return false }
        if padding > 0 && (padding > 2 || (symbols + padding) % 4 != 0) { return false }
        return true
    }
}
