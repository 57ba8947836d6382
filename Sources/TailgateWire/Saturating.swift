// Arithmetic on numbers that clients send. A span's attributes can hold any int64, any double (NaN and
// infinities included) or any string, so every conversion and every sum of them saturates instead of
// trapping: a hostile value can at worst pin a total at its limit, never crash the process or wrap a
// total around to the other sign.

/// `d` rounded to the nearest integer (halfway cases away from zero) and clamped to `Int64`:
/// NaN is 0, +∞ and values ≥ 2⁶³ are `Int64.max`, −∞ and values < −2⁶³ are `Int64.min`. Never traps.
@inlinable
package func saturatingInt64(_ d: Double) -> Int64 {
    if d.isNaN { return 0 }
    let r = d.rounded()
    // 2⁶³ and −2⁶³ are exact doubles; −2⁶³ itself is representable.
    if r >= 9_223_372_036_854_775_808.0 { return .max }
    if r < -9_223_372_036_854_775_808.0 { return .min }
    return Int64(r)
}

/// `a + b`, clamped to `Int64.min...Int64.max`.
@inlinable
package func saturatingAdd(_ a: Int64, _ b: Int64) -> Int64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    // Overflow only happens when both operands have the same sign: saturate towards it.
    return overflow ? (a < 0 ? .min : .max) : sum
}

extension SIMD8 where Scalar == Int64 {
    /// Adds `other` lane by lane, saturating: a lane whose sum overflows becomes `Int64.max` (both operands
    /// positive) or `Int64.min` (both negative) instead of wrapping. Use it for every per-trace total of
    /// client-supplied values (`SpanFacts.sums`).
    @inlinable
    package mutating func addSaturating(_ other: Self) {
        let sum = self &+ other
        // Signed overflow: the operands share a sign and the sum's sign differs from it, i.e. the sign bit of
        // (self ^ sum) & (other ^ sum) is set; shifted down arithmetically, all ones in a lane that overflowed.
        // (Plain vector arithmetic: a comparison's `SIMDMask` was built lane by lane through memory, and the
        // stalled reloads cost 3 % of scanning and inserting agent traffic; `tailgate-bench profile-agents`.)
        let overflow = ((self ^ sum) & (other ^ sum)) &>> 63
        // self >> 63 is 0 for self ≥ 0 and −1 otherwise; XOR with .max gives .max or .min.
        let limit = (self &>> 63) ^ Self(repeating: .max)
        self = (sum & ~overflow) | (limit & overflow)
    }

    /// `self + other` lane by lane, saturating (see `addSaturating(_:)`).
    @inlinable
    package func addingSaturating(_ other: Self) -> Self {
        var result = self
        result.addSaturating(other)
        return result
    }
}
