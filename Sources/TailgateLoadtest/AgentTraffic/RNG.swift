import Foundation
import TailgateWire

// The generator's random numbers (see AgentTrafficGenerator.swift): one seeded xoshiro256** stream.

extension AgentTrafficGenerator {
    // MARK: - Random numbers

    /// xoshiro256** seeded through splitmix64: fast, and stable across platforms and Swift versions
    /// (unlike the standard library's `random(in:)` algorithms, which are not specified).
    struct RNG {
        var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

        init(seed: UInt64) {
            var x = seed
            func splitmix(_ x: inout UInt64) -> UInt64 {
                x &+= 0x9E37_79B9_7F4A_7C15
                var z = x
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return z ^ (z >> 31)
            }
            s0 = splitmix(&x)
            s1 = splitmix(&x)
            s2 = splitmix(&x)
            s3 = splitmix(&x)
        }

        @inline(__always)
        mutating func next() -> UInt64 {
            let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
            let t = s1 << 17
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            s3 = s3 << 45 | s3 >> 19
            return result
        }

        /// Uniform in [0, 1).
        @inline(__always)
        mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

        @inline(__always)
        mutating func chance(_ p: Double) -> Bool { unit() < p }

        /// Uniform in lo...hi (multiply-shift; the bias is far below anything observable).
        @inline(__always)
        mutating func int(_ lo: Int, _ hi: Int) -> Int {
            lo + Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(hi - lo + 1)).high)
        }

        @inline(__always)
        mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }

        mutating func nonZero() -> UInt64 {
            while true {
                let v = next()
                if v != 0 { return v }
            }
        }

        /// Approximately standard normal (Irwin–Hall of 4), bounded to ±3.46: no absurd outliers.
        @inline(__always)
        mutating func normal() -> Double { (unit() + unit() + unit() + unit() - 2) * 1.7320508075688772 }

        /// Lognormal with the given median (exp of a normal with σ = `sigma`).
        @inline(__always)
        mutating func logNormal(_ median: Double, _ sigma: Double) -> Double { median * exp(sigma * normal()) }

        /// Index into `weights` with probability proportional to the weight.
        mutating func pick(_ weights: [Double]) -> Int {
            var total = 0.0
            for w in weights { total += w }
            var u = unit() * total
            for (i, w) in weights.enumerated() {
                if u < w { return i }
                u -= w
            }
            return weights.count - 1
        }
    }

    @inline(__always) static func nanos(_ seconds: Double) -> UInt64 { seconds > 0 ? UInt64(seconds * 1e9) : 0 }
    @inline(__always) static func millis(_ ms: Int) -> UInt64 { UInt64(ms) * 1_000_000 }
}
