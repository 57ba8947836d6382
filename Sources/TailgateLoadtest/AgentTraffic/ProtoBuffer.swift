import Foundation
import TailgateWire

// The byte buffer the span encoder writes protobuf into, and the alphabets of generated IDs.

extension AgentTrafficGenerator {
    // MARK: - Encoding

    static let base62: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    @inline(__always) static func vsize(_ v: UInt64) -> Int { ProtoWriter.varintSize(v) }
    @inline(__always) static func vsize(_ v: Int) -> Int { ProtoWriter.varintSize(UInt64(v)) }
    @inline(__always) static func utf8Count(_ s: StaticString) -> Int { s.withUTF8Buffer { $0.count } }

    /// Tags of KeyValue fields: span attributes (field 9) and event attributes (field 3).
    static let spanAttr: UInt8 = 0x4A
    static let eventAttr: UInt8 = 0x1A

    /// A byte buffer with the protobuf writes the span encoder needs, sized up front (no nested buffers).
    struct Enc {
        var b: [UInt8] = []

        @inline(__always) mutating func byte(_ x: UInt8) { b.append(x) }

        @inline(__always) mutating func varint(_ value: UInt64) {
            var v = value
            while v >= 0x80 {
                b.append(UInt8(truncatingIfNeeded: v) | 0x80)
                v >>= 7
            }
            b.append(UInt8(v))
        }

        @inline(__always) mutating func varint(_ v: Int) { varint(UInt64(v)) }
        @inline(__always) mutating func raw(_ s: StaticString) { s.withUTF8Buffer { b.append(contentsOf: $0) } }
        @inline(__always) mutating func raw(_ a: [UInt8]) { b.append(contentsOf: a) }
        @inline(__always) mutating func be64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { b.append(contentsOf: $0) } }
        @inline(__always) mutating func le64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        @inline(__always) mutating func le32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }

        /// A string field made of two parts.
        @inline(__always) mutating func string(_ tag: UInt8, _ a: StaticString, _ c: StaticString = "") {
            byte(tag)
            varint(utf8Count(a) + utf8Count(c))
            raw(a)
            raw(c)
        }

        @inline(__always) mutating func kvHeader(_ tag: UInt8, _ key: StaticString, valueLength n: Int) {
            let k = utf8Count(key)
            byte(tag)
            varint(1 + vsize(k) + k + 1 + vsize(n) + n)
            byte(0x0A)
            varint(k)
            raw(key)
            byte(0x12)
            varint(n)
        }

        /// A string attribute of `length` bytes written by `body` (which must write exactly that many).
        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, length: Int, _ body: (inout Enc) -> Void) {
            kvHeader(tag, key, valueLength: 1 + vsize(length) + length)
            byte(0x0A)
            varint(length)
            body(&self)
        }

        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, _ value: StaticString, _ suffix: StaticString = "") {
            kv(tag, key, length: utf8Count(value) + utf8Count(suffix)) {
                $0.raw(value)
                $0.raw(suffix)
            }
        }

        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, bytes: [UInt8]) {
            kv(tag, key, length: bytes.count) { $0.raw(bytes) }
        }

        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, int value: Int64) {
            let u = UInt64(bitPattern: value)
            kvHeader(tag, key, valueLength: 1 + vsize(u))
            byte(0x18)
            varint(u)
        }

        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, double value: Double) {
            kvHeader(tag, key, valueLength: 9)
            byte(0x21)
            le64(value.bitPattern)
        }

        /// A string array attribute with one element.
        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, array value: StaticString) {
            let n = utf8Count(value)
            let element = 1 + vsize(n) + n
            let array = 1 + vsize(element) + element
            kvHeader(tag, key, valueLength: 1 + vsize(array) + array)
            byte(0x2A)
            varint(array)
            byte(0x0A)
            varint(element)
            byte(0x0A)
            varint(n)
            raw(value)
        }

        @inline(__always) mutating func randomChars(_ n: Int, _ alphabet: [UInt8], _ r: inout RNG) {
            for _ in 0..<n { b.append(alphabet[Int(truncatingIfNeeded: r.next().multipliedFullWidth(by: UInt64(alphabet.count)).high)]) }
        }

        @inline(__always) mutating func hex(_ v: UInt64, digits: Int) {
            for i in stride(from: digits - 1, through: 0, by: -1) { b.append(hexDigits[Int((v >> UInt64(4 * i)) & 0xF)]) }
        }
    }
}
