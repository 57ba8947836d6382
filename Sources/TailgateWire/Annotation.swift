import Foundation

// Marks kept spans with why they were kept, by appending fields to their original bytes: protobuf lets a later
// occurrence of a scalar field (trace_state) replace an earlier one and appends repeated fields (attributes),
// so the span is never decoded or re-encoded.

/// What to write on a span that is forwarded.
public struct KeepAnnotation: Sendable, Equatable {
    /// Name of the policy that kept (or, in dry run, would have kept) the trace; empty for none.
    public var policy: String
    /// Probability with which the trace was kept (1 when certain). Below 1, the span's tracestate gets OpenTelemetry's
    /// `ot=th:…` threshold (never lowering an incoming one) and the attribute `tailgate.sample_rate` = 1/probability.
    public var probability: Double
    /// Dry run: the decision the policies would have made (everything is forwarded).
    public var dryRunKeep: Bool?
    /// What closed the trace's decision window (`root`, `idle`, `max_age`, …), written as `tailgate.decision.trigger`.
    public var trigger: String?
    /// The trace was decided without its root or with spans waiting for their parent: `tailgate.trace.incomplete`
    /// = true, so a partial trace in the backend is recognisable as such.
    public var incomplete: Bool

    /// The suffix of spans kept for certain (nil below probability 1).
    private var constantSuffix: [UInt8]? = nil

    public init(policy: String, probability: Double = 1, dryRunKeep: Bool? = nil, trigger: String? = nil, incomplete: Bool = false) {
        self.policy = policy
        self.probability = probability
        self.dryRunKeep = dryRunKeep
        self.trigger = trigger
        self.incomplete = incomplete
        if probability >= 1 {
            constantSuffix = suffix(for: UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    public static func == (a: KeepAnnotation, b: KeepAnnotation) -> Bool {
        a.policy == b.policy && a.probability == b.probability && a.dryRunKeep == b.dryRunKeep
            && a.trigger == b.trigger && a.incomplete == b.incomplete
    }

    public static let policyAttribute = "tailgate.policy"
    public static let sampleRateAttribute = "tailgate.sample_rate"
    public static let dryRunAttribute = "tailgate.dry_run.decision"
    public static let triggerAttribute = "tailgate.decision.trigger"
    public static let incompleteAttribute = "tailgate.trace.incomplete"

    /// `payload` followed by the annotation's fields.
    public func annotate(_ payload: UnsafeRawBufferPointer) -> [UInt8] {
        Array(payload) + suffix(for: payload)
    }

    /// The fields to append to `payload`. Only the tracestate depends on the span (and only below probability 1), so
    /// spans kept for certain share one suffix, computed once.
    public func suffix(for payload: UnsafeRawBufferPointer) -> [UInt8] {
        if probability >= 1, let constant = constantSuffix { return constant }
        var w = ProtoWriter(capacity: 96)
        if probability < 1 {
            let incoming = Self.traceState(of: payload)
            w.appendStringField(3, Self.mergeThreshold(traceState: incoming, probability: probability))
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
        if probability < 1 && probability > 0 {
            w.appendMessageField(9) { kv in
                kv.appendStringField(1, Self.sampleRateAttribute)
                kv.appendMessageField(2) { $0.appendFixed64Field(4, (1 / probability).bitPattern) }
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
    public static func threshold(probability: Double) -> UInt64 {
        // 2^56 − round(p × 2^56): exact for the probabilities people write (computing 1 − p first would not be).
        let max56 = UInt64(1) << 56
        let kept = UInt64((min(max(probability, 0), 1) * Double(max56)).rounded())
        return kept == 0 ? max56 - 1 : max56 - kept
    }

    /// `th` value: 14 hex digits with trailing zeros dropped ("0" for probability 1).
    public static func thValue(_ threshold: UInt64) -> String {
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

    /// A W3C tracestate with the `ot` member's `th` set to max(incoming th, the threshold of `probability`);
    /// the `ot` member moves to the front, as W3C asks of a modified member.
    public static func mergeThreshold(traceState: String, probability: Double) -> String {
        var ours = threshold(probability: probability)
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
        return ([ot] + members).joined(separator: ",")
    }
}

