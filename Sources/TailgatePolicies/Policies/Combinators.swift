package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `and`: keeps traces that every policy of `and_sub_policy` keeps. Its weight is the chance of the conjunction:
/// random sub-policies on one source are nested (the smallest probability), on different sources independent.
package struct AndPolicy: SamplingPolicy {
    package static let typeName = "and"
    package static let keys = ["and_sub_policy"]

    package var policies: [NamedPolicy]

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "and_sub_policy: [...]") else { return nil }
        guard let list = entries.first(where: { $0.key == "and_sub_policy" }) else {
            context.reader.error(at, "and policy needs 'and_sub_policy' (a list of policies)")
            return nil
        }
        let before = context.reader.diagnostics.count
        let subs = context.parsePolicies(list.value, what: "and_sub_policy")
        guard context.reader.diagnostics[before...].allSatisfy({ $0.severity == .warning }) else { return nil }
        guard !subs.isEmpty else { context.reader.error(list.keyNode, "and_sub_policy must list at least one policy"); return nil }
        return AndPolicy(policies: subs)
    }

    package var neverKeeps: Bool { policies.contains { $0.policy.neverKeeps } }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        for p in policies where !p.policy.evaluate(trace).isSample { return .notSampled }
        guard let chance = chance(trace) else { return .sampled }
        return .sample(chance.weight)
    }

    /// nil when every sub-policy is deterministic.
    package func chance(_ trace: TraceSummary) -> Chance? {
        var chances: [Chance] = []
        var excluded = false
        for p in policies {
            if let c = p.policy.chance(trace) {
                chances.append(c)
            } else if !p.policy.evaluate(trace).isSample {
                excluded = true  // a deterministic sub-policy rules the trace out
            }
        }
        guard !chances.isEmpty else { return nil }
        return excluded ? .never : Chance.intersection(chances)
    }
}

/// `not`: keeps traces that `not_sub_policy` does not keep.
package struct NotPolicy: SamplingPolicy {
    package static let typeName = "not"
    package static let keys = ["not_sub_policy"]

    package var policy: NamedPolicy

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "not_sub_policy: {name: …, type: …}") else { return nil }
        guard let sub = entries.first(where: { $0.key == "not_sub_policy" }) else {
            context.reader.error(at, "not policy needs 'not_sub_policy' (one policy)")
            return nil
        }
        guard let (policy, _) = context.parsePolicy(sub.value) else { return nil }
        return NotPolicy(policy: policy)
    }

    package var neverKeeps: Bool { policy.policy is AlwaysSamplePolicy }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        guard !policy.policy.evaluate(trace).isSample else { return .notSampled }
        guard let chance = chance(trace) else { return .sampled }
        return .sample(chance.weight)
    }

    /// The complement of a random sub-policy's chance (a set of its own, independent of others'); nil when the
    /// sub-policy is deterministic.
    package func chance(_ trace: TraceSummary) -> Chance? {
        switch policy.policy.chance(trace) {
        case nil: return nil
        case .never?: return .certain
        case .certain?: return .never
        case .random(let p, let source)?: return .random(probability: 1 - p, source: .derived(source, tag: 0))
        }
    }
}

/// `drop`: drops traces that every policy of `drop_sub_policy` matches, whatever the other policies say.
package struct DropPolicy: SamplingPolicy {
    package static let typeName = "drop"
    package static let keys = ["drop_sub_policy"]

    package var policies: [NamedPolicy]

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "drop_sub_policy: [...]") else { return nil }
        guard let list = entries.first(where: { $0.key == "drop_sub_policy" }) else {
            context.reader.error(at, "drop policy needs 'drop_sub_policy' (a list of policies)")
            return nil
        }
        let before = context.reader.diagnostics.count
        let subs = context.parsePolicies(list.value, what: "drop_sub_policy")
        guard context.reader.diagnostics[before...].allSatisfy({ $0.severity == .warning }) else { return nil }
        guard !subs.isEmpty else { context.reader.error(list.keyNode, "drop_sub_policy must list at least one policy"); return nil }
        return DropPolicy(policies: subs)
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        policies.allSatisfy { $0.policy.evaluate(trace).isSample } ? .drop : .notSampled
    }
}

/// `composite`: shares `max_total_spans_per_second` among sub-policies. Sub-policies are tried in `policy_order`;
/// each may keep traces while its share of the per-second span budget lasts: its `rate_allocation` percent, where
/// `percent: 0` means the Collector's default share (the total divided by the number of sub-policies); the rest is
/// split evenly among sub-policies without an allocation.
package struct CompositePolicy: SamplingPolicy {
    package static let typeName = "composite"
    package static let keys = ["max_total_spans_per_second", "policy_order", "composite_sub_policy", "rate_allocation"]

    struct Member: Sendable {
        var policy: NamedPolicy
        var budget: SecondBudget
    }

    var members: [Member]

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "max_total_spans_per_second: 1000, …") else { return nil }
        var total: Int64? = nil
        var order: [(String, Node)] = []
        var subs: [NamedPolicy] = []
        var allocation: [String: (Double, Node)] = [:]
        var ok = true
        for (k, keyNode, value) in entries {
            switch k {
            case "max_total_spans_per_second":
                total = context.reader.integer(value, what: k, range: 0...Int64(Int32.max))
            case "policy_order":
                for item in context.reader.sequence(value, what: k) {
                    if let s = context.reader.string(item, what: "a policy name") { order.append((s, item)) }
                }
            case "composite_sub_policy":
                let before = context.reader.diagnostics.count
                subs = context.parsePolicies(value, what: k)
                if !context.reader.diagnostics[before...].allSatisfy({ $0.severity == .warning }) { ok = false }
                if subs.isEmpty && ok { context.reader.error(keyNode, "composite_sub_policy must list at least one policy"); ok = false }
            default:
                for item in context.reader.sequence(value, what: k) {
                    var name: String? = nil
                    var percent: Double? = nil
                    var written: Set<String> = []
                    for (ak, _, av) in context.reader.mapping(item, allowed: ["policy", "percent"], what: "a rate allocation") {
                        written.insert(ak)
                        if ak == "policy" { name = context.reader.string(av, what: "policy") } else { percent = context.reader.number(av, what: "percent", range: 0...100) }
                    }
                    if let name, let percent { allocation[name] = (percent, item); continue }
                    ok = false
                    // A value that is present but invalid (out of range, not a number) has its own error already.
                    if case .mapping = item, written.count < 2 { context.reader.error(item, "a rate allocation needs 'policy' and 'percent'") }
                }
            }
        }
        guard ok else { return nil }
        guard let total else { context.reader.error(at, "composite policy needs 'max_total_spans_per_second'"); return nil }
        let names = subs.map(\.name)
        for (name, node) in order where !names.contains(name) {
            var message = "policy_order names '\(name)', which is not in composite_sub_policy"
            if let hint = suggestion(for: name, among: names) { message += "; did you mean '\(hint)'?" }
            context.reader.error(node, message)
            ok = false
        }
        for (name, (_, node)) in allocation where !names.contains(name) {
            context.reader.error(node, "rate_allocation names '\(name)', which is not in composite_sub_policy")
            ok = false
        }
        // `percent: 0` is the Collector's default share: the total divided by the number of sub-policies.
        let defaultShare = 100 / Double(max(subs.count, 1))
        func share(_ percent: Double) -> Double { percent > 0 ? percent : defaultShare }
        let allocated = allocation.values.reduce(0) { $0 + share($1.0) }
        if allocated > 100 + 1e-9, let node = allocation.values.min(by: { ($0.1.mark?.line ?? 0) < ($1.1.mark?.line ?? 0) })?.1 {
            let shown = { (v: Double) in formatNumber((v * 100).rounded() / 100) }
            var message = "rate_allocation percentages add up to \(shown(allocated)), more than 100"
            if allocation.values.contains(where: { $0.0 == 0 }) {
                message += " (percent 0 stands for the default share, 100 / \(subs.count) sub-policies = \(shown(defaultShare)))"
            }
            context.reader.error(node, message)
            ok = false
        }
        guard ok else { return nil }
        let ordered = order.isEmpty ? subs : order.compactMap { o in subs.first { $0.name == o.0 } } + subs.filter { s in !order.contains { $0.0 == s.name } }
        let unallocated = ordered.filter { allocation[$0.name] == nil }.count
        let rest = max(0, 100 - allocated) / Double(max(unallocated, 1))
        let members = ordered.map { sub in
            // Rounded to a millionth of a span, so that 1/3 of 90 is 30 and not 30.000000000000004 (or 29.999…).
            let perSecond = Double(total) * (allocation[sub.name].map { share($0.0) } ?? rest) / 100
            return Member(policy: sub, budget: SecondBudget(perSecond: (perSecond * 1e6).rounded() / 1e6))
        }
        return CompositePolicy(members: members)
    }

    package var neverKeeps: Bool { members.allSatisfy { $0.budget.perSecond == 0 || $0.policy.policy.neverKeeps } }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        for m in members {
            guard case .sample(let w) = m.policy.policy.evaluate(trace) else { continue }
            if let p = m.budget.take(Double(trace.spanCount), at: trace.decidedAt) { return .sample(.hashed(probability: p * w.probability)) }
        }
        return .notSampled
    }

    /// Approximated: the first member whose sub-policy would keep the trace, at its budget's admission ratio.
    package func chance(_ trace: TraceSummary) -> Chance? {
        for m in members {
            let sub = m.policy.policy.chance(trace) ?? (m.policy.policy.evaluate(trace).isSample ? .certain : .never)
            let ratio = m.budget.admissionRatio
            switch sub {
            case .never: continue
            case .certain: return .random(probability: ratio, source: .budget(ObjectIdentifier(m.budget)))
            case .random(let q, _): return .random(probability: ratio * q, source: .budget(ObjectIdentifier(m.budget)))
            }
        }
        return .never
    }
}
