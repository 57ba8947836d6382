#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
internal import CHelpers

// Marks kept spans with why they were kept, by appending fields to their original bytes: protobuf lets a later
// occurrence of a scalar field (trace_state) replace an earlier one and appends repeated fields (attributes),
// so the span is never decoded or re-encoded.

/// How a kept trace's weight is stated downstream, so that a backend multiplying counts by the adjusted count
/// (1/probability) gets the truth.
package enum KeepWeight: Sendable, Equatable, Hashable {
    /// Kept for certain by a deterministic rule (an error, a token threshold, …) or forwarded in a dry run: nothing is
    /// written, and an upstream `th` stays as it is (the trace's weight is the upstream one).
    case certain
    /// Kept because the trace's randomness R (the `rv` value, else the low 56 bits of the trace ID) is ≥ `threshold`
    /// (OpenTelemetry consistent probability sampling): `ot=th` becomes max(threshold, incoming th), and
    /// `tailgate.sample_rate` the adjusted count that th states.
    case consistent(threshold: UInt64)
    /// Kept with `probability` by a rule that cannot state a consistent threshold (XXH3 hash mode, rate and bytes
    /// limiters, combinations): `th` is erased (it would be a lie) and `tailgate.sample_rate` = 1/probability × the
    /// upstream adjusted count (from the incoming th, if any).
    case hashed(probability: Double)

    /// The probability of having been kept.
    package var probability: Double {
        switch self {
        case .certain: 1
        case .consistent(let t): Double((UInt64(1) << 56) - min(t, UInt64(1) << 56)) / 72_057_594_037_927_936.0
        case .hashed(let p): p
        }
    }

    package var isCertain: Bool { self == .certain }
}

/// What to write on a span that is forwarded.
package struct KeepAnnotation: Sendable, Equatable {
    /// Name of the policy that kept (or, in dry run, would have kept) the trace; empty for none.
    package var policy: String
    /// How the keep's weight is stated (see `KeepWeight`).
    package var weight: KeepWeight
    /// Probability with which the trace was kept (1 when certain).
    package var probability: Double { weight.probability }
    /// Dry run: the decision the policies would have made (everything is forwarded).
    package var dryRunKeep: Bool?
    /// What closed the trace's decision window (`root`, `idle`, `max_age`, …), written as `tailgate.decision.trigger`.
    package var trigger: String?
    /// The trace was decided without its root or with spans waiting for their parent: `tailgate.trace.incomplete`
    /// = true, so a partial trace in the backend is recognisable as such.
    package var incomplete: Bool

    /// The suffix of spans kept for certain (nil below probability 1).
    private var constantSuffix: [UInt8]? = nil

    package init(policy: String, weight: KeepWeight = .certain, dryRunKeep: Bool? = nil, trigger: String? = nil, incomplete: Bool = false) {
        self.policy = policy
        self.weight = weight
        self.dryRunKeep = dryRunKeep
        self.trigger = trigger
        self.incomplete = incomplete
        if weight.isCertain {
            constantSuffix = suffix(for: UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    /// A keep stated as a plain probability (`hashed`), or certain at 1.
    package init(policy: String, probability: Double, dryRunKeep: Bool? = nil) {
        self.init(policy: policy, weight: probability >= 1 ? .certain : .hashed(probability: probability), dryRunKeep: dryRunKeep)
    }

    package static func == (a: KeepAnnotation, b: KeepAnnotation) -> Bool {
        a.policy == b.policy && a.weight == b.weight && a.dryRunKeep == b.dryRunKeep
            && a.trigger == b.trigger && a.incomplete == b.incomplete
    }

    package static let policyAttribute = "tailgate.policy"
    package static let sampleRateAttribute = "tailgate.sample_rate"
    package static let dryRunAttribute = "tailgate.dry_run.decision"
    package static let triggerAttribute = "tailgate.decision.trigger"
    package static let incompleteAttribute = "tailgate.trace.incomplete"

    /// `payload` followed by the annotation's fields; attributes the annotation writes that the span already carries
    /// (a second Tailgate tier, or reprocessing) are removed first, so that every key stays unique (OTLP requires
    /// it, and readers take the first occurrence).
    package func annotate(_ payload: UnsafeRawBufferPointer) -> [UInt8] {
        if let stripped = withoutOwnAttributes(payload) {
            return stripped + suffix(for: payload)
        }
        return Array(payload) + suffix(for: payload)
    }

    /// The keys this annotation writes.
    var writtenKeys: [String] {
        var keys: [String] = []
        if dryRunKeep != nil { keys.append(Self.dryRunAttribute) }
        if !policy.isEmpty { keys.append(Self.policyAttribute) }
        if trigger != nil { keys.append(Self.triggerAttribute) }
        if incomplete { keys.append(Self.incompleteAttribute) }
        if !weight.isCertain { keys.append(Self.sampleRateAttribute) }
        return keys
    }

    /// Whether the span may carry attributes of Tailgate's (a quick byte search, true on a match anywhere).
    package static func mayCarryOwnAttributes(_ payload: UnsafeRawBufferPointer) -> Bool {
        guard payload.count >= 9, let base = payload.baseAddress else { return false }
        // "tailgate." with the C library's memmem. (Finding each 't' with memchr and comparing the rest stopped at every
        // 't' of the span's keys and values: 1.4 % of the proxy's CPU at 60k spans/s. Comparing 16 positions at a time
        // with Swift's SIMD16 compiled to one lane at a time through memory: 28 %. Both measured.)
        let key: StaticString = "tailgate."
        return tailgate_memmem(base, payload.count, key.utf8Start, key.utf8CodeUnitCount) != nil
    }

    /// The span without the attributes this annotation is about to write; nil when it has none of them.
    package func withoutOwnAttributes(_ payload: UnsafeRawBufferPointer) -> [UInt8]? {
        guard Self.mayCarryOwnAttributes(payload) else { return nil }
        let keys = writtenKeys
        var reader = ProtoReader(payload)
        var kept: [Range<Int>] = []
        var removed = false
        do {
            while true {
                let start = reader.offset
                guard let (field, wt) = try reader.readTag() else { break }
                if field == 9 && wt == .lengthDelimited {
                    let kv = try reader.readLengthDelimited()
                    if let key = Self.attributeKey(payload, kv), keys.contains(key) {
                        removed = true
                        continue
                    }
                } else {
                    try reader.skip(wt)
                }
                kept.append(start..<reader.offset)
            }
        } catch {
            return nil  // not ours to repair: the scanner accepted it, so this does not happen
        }
        guard removed else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(payload.count)
        for r in kept { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: payload[r])) }
        return out
    }

    /// The key of a KeyValue message.
    static func attributeKey(_ payload: UnsafeRawBufferPointer, _ range: Range<Int>) -> String? {
        var kv = ProtoReader(payload, range: range)
        while let (f, w) = try? kv.readTag() {
            if f == 1 && w == .lengthDelimited, let r = try? kv.readLengthDelimited() { return kv.string(r) }
            guard (try? kv.skip(w)) != nil else { return nil }
        }
        return nil
    }

    /// An incoming `tailgate.sample_rate` (a double attribute written by an earlier Tailgate tier), if any.
    static func incomingSampleRate(_ payload: UnsafeRawBufferPointer) -> Double? {
        guard mayCarryOwnAttributes(payload) else { return nil }
        var reader = ProtoReader(payload)
        while let (field, wt) = try? reader.readTag() {
            guard field == 9 && wt == .lengthDelimited else {
                guard (try? reader.skip(wt)) != nil else { return nil }
                continue
            }
            guard let kv = try? reader.readLengthDelimited() else { return nil }
            guard attributeKey(payload, kv) == sampleRateAttribute else { continue }
            var r = ProtoReader(payload, range: kv)
            while let (f, w) = try? r.readTag() {
                guard f == 2 && w == .lengthDelimited, let any = try? r.readLengthDelimited() else {
                    guard (try? r.skip(w)) != nil else { return nil }
                    continue
                }
                var v = ProtoReader(payload, range: any)
                while let (f2, w2) = try? v.readTag() {
                    if f2 == 4 && w2 == .fixed64, let bits = try? v.readFixed64() { return Double(bitPattern: bits) }
                    if f2 == 3 && w2 == .varint, let n = try? v.readVarint() { return Double(Int64(bitPattern: n)) }
                    guard (try? v.skip(w2)) != nil else { return nil }
                }
            }
        }
        return nil
    }

    /// The fields to append to `payload`. Only the tracestate depends on the span (and only for weighted keeps), so
    /// spans kept for certain share one suffix, computed once.
    package func suffix(for payload: UnsafeRawBufferPointer) -> [UInt8] {
        if weight.isCertain, let constant = constantSuffix { return constant }
        var w = ProtoWriter(capacity: 96)
        var sampleRate: Double? = nil
        switch weight {
        case .certain:
            break
        case .consistent(let threshold):
            let incoming = Self.traceState(of: payload)
            let (state, written) = Self.mergeThreshold(traceState: incoming, threshold: threshold)
            w.appendStringField(3, state)
            // An earlier tier that could not state a threshold (hash mode) wrote its weight as a sample rate only.
            let upstream = Self.incomingThreshold(traceState: incoming) == nil ? (Self.incomingSampleRate(payload) ?? 1) : 1
            sampleRate = Self.adjustedCount(threshold: written) * upstream
        case .hashed(let probability):
            let incoming = Self.traceState(of: payload)
            let (state, upstreamThreshold) = Self.eraseThreshold(traceState: incoming)
            if state != incoming { w.appendStringField(3, state) }
            let upstream = upstreamThreshold.map(Self.adjustedCount) ?? Self.incomingSampleRate(payload) ?? 1
            sampleRate = probability > 0 ? (1 / probability) * upstream : nil
        }
        if let dryRunKeep {
            appendAttribute(&w, Self.dryRunAttribute, string: dryRunKeep ? "keep" : "drop")
        }
        if !policy.isEmpty {
            appendAttribute(&w, Self.policyAttribute, string: policy)
        }
        if let trigger {
            appendAttribute(&w, Self.triggerAttribute, string: trigger)
        }
        if incomplete {
            w.appendMessageField(9) { kv in
                kv.appendStringField(1, Self.incompleteAttribute)
                kv.appendMessageField(2) { $0.appendVarintField(2, 1) }
            }
        }
        if let sampleRate {
            w.appendMessageField(9) { kv in
                kv.appendStringField(1, Self.sampleRateAttribute)
                kv.appendMessageField(2) { $0.appendFixed64Field(4, sampleRate.bitPattern) }
            }
        }
        return w.bytes
    }

    private func appendAttribute(_ w: inout ProtoWriter, _ key: String, string: String) {
        w.appendMessageField(9) { kv in
            kv.appendStringField(1, key)
            kv.appendMessageField(2) { $0.appendStringField(1, string) }
        }
    }

    /// The raw bytes of the span's trace_state (the last occurrence of field 3).
    static func rawTraceState(of payload: UnsafeRawBufferPointer) -> [UInt8] {
        var reader = ProtoReader(payload)
        var state: Range<Int> = 0..<0
        do {
            while let (field, wt) = try reader.readTag() {
                if field == 3 && wt == .lengthDelimited { state = try reader.readLengthDelimited() } else { try reader.skip(wt) }
            }
        } catch {}
        return state.isEmpty ? [] : Array(UnsafeRawBufferPointer(rebasing: payload[state]))
    }

    /// The span's trace_state (the last occurrence of field 3), or "".
    static func traceState(of payload: UnsafeRawBufferPointer) -> String {
        var reader = ProtoReader(payload)
        var state = ""
        do {
            while let (field, wt) = try reader.readTag() {
                if field == 3 && wt == .lengthDelimited { state = reader.string(try reader.readLengthDelimited()) } else { try reader.skip(wt) }
            }
        } catch {}
        return state
    }

    /// The 56-bit rejection threshold for keeping with `probability`: keep when randomness ≥ threshold.
    package static func threshold(probability: Double) -> UInt64 {
        // 2^56 − round(p × 2^56): exact for the probabilities people write (computing 1 − p first would not be).
        let max56 = UInt64(1) << 56
        let kept = UInt64((min(max(probability, 0), 1) * Double(max56)).rounded())
        return kept == 0 ? max56 - 1 : max56 - kept
    }

    /// `th` value: 14 hex digits with trailing zeros dropped ("0" for probability 1).
    package static func thValue(_ threshold: UInt64) -> String {
        if threshold == 0 { return "0" }
        var hex = String(threshold, radix: 16)
        hex = String(repeating: "0", count: max(0, 14 - hex.count)) + hex
        while hex.hasSuffix("0") { hex.removeLast() }
        return hex
    }

    static func parseTh(_ value: Substring) -> UInt64? {
        guard !value.isEmpty, value.count <= 14, let v = UInt64(value, radix: 16) else { return nil }
        return v << UInt64(4 * (14 - value.count))
    }

    /// The adjusted count (1/probability) a 56-bit rejection threshold states.
    package static func adjustedCount(threshold: UInt64) -> Double {
        let kept = (UInt64(1) << 56) - min(threshold, (UInt64(1) << 56) - 1)
        return 72_057_594_037_927_936.0 / Double(kept)
    }

    /// The incoming `th` of a tracestate, if any.
    package static func incomingThreshold(traceState: String) -> UInt64? {
        guard let ot = traceState.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }).first(where: { $0.hasPrefix("ot=") }) else { return nil }
        for field in ot.dropFirst(3).split(separator: ";") where field.hasPrefix("th:") {
            return parseTh(field.dropFirst(3))
        }
        return nil
    }

    /// The tracestate without the `ot` member's `th` (the member is dropped when nothing else is left in it), and the
    /// threshold that was there.
    package static func eraseThreshold(traceState: String) -> (String, UInt64?) {
        var members = traceState.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard let i = members.firstIndex(where: { $0.hasPrefix("ot=") }) else { return (traceState, nil) }
        var erased: UInt64? = nil
        let fields = members[i].dropFirst(3).split(separator: ";").filter { field in
            guard field.hasPrefix("th:") else { return true }
            erased = parseTh(field.dropFirst(3))
            return false
        }
        guard erased != nil else { return (traceState, nil) }
        if fields.isEmpty { members.remove(at: i) } else { members[i] = "ot=" + fields.joined(separator: ";") }
        return (members.joined(separator: ","), erased)
    }

    /// A W3C tracestate with the `ot` member's `th` set to max(incoming th, the threshold of `probability`);
    /// the `ot` member moves to the front, as W3C asks of a modified member.
    package static func mergeThreshold(traceState: String, probability: Double) -> String {
        mergeThreshold(traceState: traceState, threshold: threshold(probability: probability)).0
    }

    /// A W3C tracestate with the `ot` member's `th` set to max(incoming th, `threshold`), and the threshold written.
    package static func mergeThreshold(traceState: String, threshold: UInt64) -> (String, UInt64) {
        var ours = threshold
        var members = traceState.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var otFields: [String] = []
        if let i = members.firstIndex(where: { $0.hasPrefix("ot=") }) {
            let ot = members.remove(at: i).dropFirst(3)
            for field in ot.split(separator: ";") {
                if field.hasPrefix("th:") {
                    if let incoming = parseTh(field.dropFirst(3)), incoming > ours { ours = incoming }
                } else {
                    otFields.append(String(field))
                }
            }
        }
        let ot = "ot=" + (["th:" + thValue(ours)] + otFields).joined(separator: ";")
        return (([ot] + members).joined(separator: ","), ours)
    }
}

