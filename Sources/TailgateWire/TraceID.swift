import CXXHash

/// A 16-byte trace ID, held as two big-endian 64-bit halves so that `hi`/`lo` read like the hex form.
package struct TraceID: Hashable, Sendable, Comparable, CustomStringConvertible {
    package var hi: UInt64
    package var lo: UInt64

    @inlinable
    package init(hi: UInt64, lo: UInt64) {
        self.hi = hi
        self.lo = lo
    }

    /// Reads 16 bytes at `offset` of `base` (the caller checked the bounds).
    @inlinable
    package init(loadingFrom base: UnsafeRawBufferPointer, at offset: Int) {
        hi = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        lo = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
    }

    /// Parses 32 hex digits.
    package init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 32, let hi = parseHex64(utf8[0..<16]), let lo = parseHex64(utf8[16..<32]) else { return nil }
        self.hi = hi
        self.lo = lo
    }

    package var isValid: Bool { hi != 0 || lo != 0 }

    /// The 16 bytes as they appear on the wire.
    package var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBytes {
            $0.storeBytes(of: hi.bigEndian, toByteOffset: 0, as: UInt64.self)
            $0.storeBytes(of: lo.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return out
    }

    /// XXH3-64 of the 16 wire bytes with `seed`: the same value on every instance, platform and run.
    package func xxh3(seed: UInt64 = 0) -> UInt64 {
        var raw = (hi.bigEndian, lo.bigEndian)
        return withUnsafeBytes(of: &raw) { XXH3_64bits_withSeed($0.baseAddress, 16, seed) }
    }

    package var description: String { hex64(hi) + hex64(lo) }

    /// What dictionaries and sets of trace IDs hash with (the buffer's trace tables, decision caches): XXH3 of the 16
    /// bytes, seeded with the table's own seed (random per process, as Swift's SipHash would be, so a client cannot
    /// aim IDs at one bucket), in place of SipHash-1-3 and its `Hasher` state: ~2 % of the proxy's CPU at 60k spans/s
    /// went to hashing trace IDs.
    package func _rawHashValue(seed: Int) -> Int {
        Int(truncatingIfNeeded: xxh3(seed: UInt64(truncatingIfNeeded: seed)))
    }

    package static func < (a: TraceID, b: TraceID) -> Bool { (a.hi, a.lo) < (b.hi, b.lo) }
}

/// Lowercase 16-digit hex of a 64-bit value.
package func hex64(_ v: UInt64) -> String {
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var out = [UInt8](repeating: 0, count: 16)
    for i in 0..<16 { out[i] = digits[Int((v >> UInt64(60 - 4 * i)) & 0xF)] }
    return String(decoding: out, as: UTF8.self)
}

func parseHex64(_ digits: ArraySlice<UInt8>) -> UInt64? {
    var v: UInt64 = 0
    for c in digits {
        let d: UInt8
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
        default: return nil
        }
        v = v << 4 | UInt64(d)
    }
    return v
}

/// XXH3-64 of arbitrary bytes (used for salts and shard selection).
package func xxh3(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
    XXH3_64bits_withSeed(bytes.baseAddress, bytes.count, seed)
}

package func xxh3(_ string: String, seed: UInt64 = 0) -> UInt64 {
    var s = string
    return s.withUTF8 { xxh3(UnsafeRawBufferPointer($0), seed: seed) }
}
