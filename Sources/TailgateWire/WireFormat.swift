// Protocol Buffers wire-format primitives: a bounds-checked reader over borrowed bytes and an
// appending writer. Everything in Tailgate that touches protobuf bytes goes through these two.

/// Wire types of the protobuf encoding.
package enum WireType: UInt8, Sendable {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case startGroup = 3
    case endGroup = 4
    case fixed32 = 5
}

/// A malformed protobuf encoding: what was wrong and at which byte offset of the input.
package struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    package var offset: Int
    package var message: String

    package init(offset: Int, _ message: String) {
        self.offset = offset
        self.message = message
    }

    package var description: String { "\(message) at byte \(offset)" }
}

/// Reads protobuf fields from borrowed bytes. Offsets are relative to `base`, so ranges returned by
/// `readLengthDelimited()` can be used to create nested readers or to copy a field's raw bytes.
///
/// The reader never reads outside `base` and never traps on malformed input: every failure is a `WireError`.
package struct ProtoReader {
    package let base: UnsafeRawBufferPointer
    package var offset: Int
    package let end: Int

    /// A reader over all of `base`.
    @inlinable
    package init(_ base: UnsafeRawBufferPointer) {
        self.base = base
        self.offset = 0
        self.end = base.count
    }

    /// A reader over `range` of `base` (typically the payload of a length-delimited field).
    @inlinable
    package init(_ base: UnsafeRawBufferPointer, range: Range<Int>) {
        self.base = base
        self.offset = range.lowerBound
        self.end = range.upperBound
    }

    @inlinable
    package var isAtEnd: Bool { offset >= end }

    /// Reads the next field's tag, or returns nil at the end of the message.
    @inlinable @inline(__always)
    package mutating func readTag() throws(WireError) -> (field: UInt32, wireType: WireType)? {
        if offset >= end { return nil }
        let start = offset
        let key = try readVarint()
        guard let wireType = WireType(rawValue: UInt8(truncatingIfNeeded: key & 7)) else {
            throw WireError(offset: start, "invalid wire type \(key & 7)")
        }
        let field = key >> 3
        guard field > 0, field <= 0x1FFF_FFFF else {
            throw WireError(offset: start, "invalid field number \(field)")
        }
        return (UInt32(truncatingIfNeeded: field), wireType)
    }

    /// Reads a varint. One and two bytes (tags, lengths of fields and spans: most varints in OTLP) are inlined at
    /// every call site; longer ones take `readLongVarint` (the scanner's profile had this call at 5–10 %).
    @inlinable @inline(__always)
    package mutating func readVarint() throws(WireError) -> UInt64 {
        if offset < end, let p = base.baseAddress {
            let b = p.load(fromByteOffset: offset, as: UInt8.self)
            if b < 0x80 {
                offset += 1
                return UInt64(b)
            }
            if offset + 1 < end {
                let b1 = p.load(fromByteOffset: offset + 1, as: UInt8.self)
                if b1 < 0x80 {  // two bytes: the length of a span, an attribute value of 128 B–16 KiB
                    offset += 2
                    return UInt64(b & 0x7F) | UInt64(b1) << 7
                }
            }
        }
        return try readLongVarint()
    }

    /// A varint of two or more bytes (or none left): bounds, overflow and the 10-byte limit checked.
    @inline(never) @usableFromInline
    mutating func readLongVarint() throws(WireError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = offset
        while true {
            guard offset < end else { throw WireError(offset: start, "truncated varint") }
            let b = base[offset]
            offset += 1
            if shift == 63 && b > 1 { throw WireError(offset: start, "varint overflows 64 bits") }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
            if shift > 63 { throw WireError(offset: start, "varint longer than 10 bytes") }
        }
    }

    @inlinable
    package mutating func readFixed64() throws(WireError) -> UInt64 {
        guard end - offset >= 8 else { throw WireError(offset: offset, "truncated fixed64") }
        let v = base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        offset += 8
        return UInt64(littleEndian: v)
    }

    @inlinable
    package mutating func readFixed32() throws(WireError) -> UInt32 {
        guard end - offset >= 4 else { throw WireError(offset: offset, "truncated fixed32") }
        let v = base.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
        offset += 4
        return UInt32(littleEndian: v)
    }

    /// Reads a length prefix and returns the payload's range, advancing past it.
    @inlinable @inline(__always)
    package mutating func readLengthDelimited() throws(WireError) -> Range<Int> {
        let start = offset
        let length = try readVarint()
        guard length <= UInt64(end - offset) else {
            throw WireError(offset: start, "length \(length) runs past the end of the enclosing message")
        }
        let lower = offset
        offset += Int(length)
        return lower..<offset
    }

    /// Skips a field's value of the given wire type (groups included, nested to any depth).
    @inlinable
    package mutating func skip(_ wireType: WireType) throws(WireError) {
        switch wireType {
        case .varint: _ = try readVarint()
        case .fixed64:
            guard end - offset >= 8 else { throw WireError(offset: offset, "truncated fixed64") }
            offset += 8
        case .fixed32:
            guard end - offset >= 4 else { throw WireError(offset: offset, "truncated fixed32") }
            offset += 4
        case .lengthDelimited: _ = try readLengthDelimited()
        case .startGroup:
            var depth = 1
            while depth > 0 {
                guard let (_, wt) = try readTag() else { throw WireError(offset: offset, "unterminated group") }
                switch wt {
                case .startGroup: depth += 1
                case .endGroup: depth -= 1
                default: try skip(wt)
                }
            }
        case .endGroup:
            throw WireError(offset: offset, "unexpected end-group")
        }
    }

    /// The bytes of `range` as an array.
    @inlinable
    package func bytes(_ range: Range<Int>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(rebasing: base[range]))
    }

    /// The bytes of `range` decoded as UTF-8 (invalid sequences are repaired).
    @inlinable
    package func string(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: base[range]), as: UTF8.self)
    }
}

/// Appends protobuf fields to a byte array.
package struct ProtoWriter: Sendable {
    package var bytes: [UInt8]

    package init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inlinable
    package static func varintSize(_ value: UInt64) -> Int {
        // 1 byte per 7 bits, at least one byte.
        let bits = 64 - (value | 1).leadingZeroBitCount
        return (bits + 6) / 7
    }

    @inlinable
    package mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    @inlinable
    package mutating func appendTag(_ field: UInt32, _ wireType: WireType) {
        appendVarint(UInt64(field) << 3 | UInt64(wireType.rawValue))
    }

    @inlinable
    package mutating func appendVarintField(_ field: UInt32, _ value: UInt64) {
        appendTag(field, .varint)
        appendVarint(value)
    }

    @inlinable
    package mutating func appendFixed64Field(_ field: UInt32, _ value: UInt64) {
        appendTag(field, .fixed64)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    @inlinable
    package mutating func appendFixed32Field(_ field: UInt32, _ value: UInt32) {
        appendTag(field, .fixed32)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// Appends a length-delimited field whose payload is `payload`.
    @inlinable
    package mutating func appendBytesField<C: Collection>(_ field: UInt32, _ payload: C) where C.Element == UInt8 {
        appendTag(field, .lengthDelimited)
        appendVarint(UInt64(payload.count))
        bytes.append(contentsOf: payload)
    }

    @inlinable
    package mutating func appendStringField(_ field: UInt32, _ value: String) {
        var value = value
        value.withUTF8 { appendBytesField(field, $0) }
    }

    /// Appends a length-delimited field whose payload is written by `body` (the length is patched in afterwards).
    @inlinable
    package mutating func appendMessageField(_ field: UInt32, _ body: (inout ProtoWriter) throws -> Void) rethrows {
        var inner = ProtoWriter()
        try body(&inner)
        appendBytesField(field, inner.bytes)
    }
}

/// Writes protobuf framing into memory already sized for it (no bounds checks: the caller sized it exactly).
package struct RawProtoWriter {
    package var position: UnsafeMutableRawPointer

    package init(_ start: UnsafeMutableRawPointer) { position = start }

    package mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            position.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, as: UInt8.self)
            position += 1
            v >>= 7
        }
        position.storeBytes(of: UInt8(v), as: UInt8.self)
        position += 1
    }

    /// Tag (wire type 2) and length.
    package mutating func lengthDelimitedHeader(_ field: UInt32, _ length: Int) {
        varint(UInt64(field) << 3 | 2)
        varint(UInt64(length))
    }

    package mutating func bytes(_ source: UnsafeRawBufferPointer) {
        guard source.count > 0 else { return }
        position.copyMemory(from: source.baseAddress!, byteCount: source.count)
        position += source.count
    }

    package mutating func bytes(_ source: [UInt8]) { source.withUnsafeBytes { bytes($0) } }
}
