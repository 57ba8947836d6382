import TailgateBuffer
import TailgateWire
package import TailgateConfig

// `tailgate check` warnings for combinations whose weight (`tailgate.sample_rate`, the adjusted count backends multiply
// by) the engine cannot state honestly. What the engine does (PolicyEngine.decide, Chance.union / .intersection):
//
// - A random keep is weighed by the union of every random policy's chance: nested within one randomness source (the
//   larger probability), independent across sources. That is exact for plain policies (one probabilistic,
//   conversation or limiter each), but a combination (`and` over several sources, `not`, `composite`) is a source of
//   its own: when it shares a source with another policy, the two are correlated (a `not` is even disjoint from its
//   sub-policy's source), and treating them as independent gives a wrong weight.        → "draws on … like"
// - `not` of a limiter keeps what the limiter refuses, weighed 1 − the limiter's admission ratio over the previous
//   second: 0 — an infinite adjusted count — when that second refused nothing, and refusals come in bursts, not at
//   random.                                                                              → "keeps what … refuses"
// - `drop` is applied before any keep and its weight is never counted: a random sub-policy (probabilistic, a limiter)
//   makes the traces it spares survive with a probability below 1 that no keep states.   → "drops at random"
// - `composite` weighs a keep by the admission ratio of the first sub-policy that matches the trace, but a trace
//   refused by that share falls through to later sub-policies: its real chance is higher, so when a share runs out
//   the traces that fall through are over-counted.                                       → "falls through"
//
// Combinations the engine states honestly, not warned: `and` of sub-policies on one source (the smaller probability)
// or on independent sources (the product, a limiter's ratio being measured among the traces offered to it); `not` of
// a probabilistic or conversation policy whose source no other policy uses; limiters alone.

/// The sub-policies of a combinator (empty for other types).
func subPolicies(of policy: any SamplingPolicy) -> [NamedPolicy] {
    switch policy {
    case let p as AndPolicy: p.policies
    case let p as NotPolicy: [p.policy]
    case let p as DropPolicy: p.policies
    case let p as CompositePolicy: p.members.map(\.policy)
    default: []
    }
}

extension PolicySet {
    /// Warnings for policies whose keeps cannot carry an honest weight (see the comment above), positioned at the
    /// policy's name, each with a hint. Printed by `tailgate check`; they do not make a file invalid.
    package func weightWarnings(file: String) -> [Diagnostic] {
        var analysis = WeightAnalysis(file: file)
        analysis.group(policies.filter { !($0.policy is DropPolicy) }, union: true)
        for p in policies { analysis.visit(p) }
        return analysis.warnings.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
    }
}

struct WeightAnalysis {
    /// A randomness source a random policy draws on (its leaves; a combination draws on several).
    enum Leaf: Hashable {
        case traceHash(seed: UInt64)
        case traceRandomness
        case conversation(seed: UInt64)
        case budget(ObjectIdentifier)

        /// For picking one of several shared sources; nil for budgets (never shared by two policies).
        var rank: UInt64? {
            switch self {
            case .conversation(let seed): seed / 4
            case .traceHash(let seed): UInt64.max / 4 + seed / 4
            case .traceRandomness: UInt64.max / 4 * 3
            case .budget: nil
            }
        }

        var description: String {
            switch self {
            case .traceHash(let seed): seed == 0 ? "the trace-ID hash without a salt" : "the trace-ID hash with the same hash_salt"
            case .traceRandomness: "the trace's randomness (mode: consistent)"
            case .conversation(let seed): seed == 0 ? "the conversation hash without a salt" : "the conversation hash with the same hash_salt"
            case .budget: "the same budget"
            }
        }
    }

    /// How a random policy draws: its leaves, whether it is a combination (a source of its own in the engine), and the
    /// limiters inside it.
    struct Shape {
        var leaves: Set<Leaf>
        var combined: Bool
        var limiters: [String]
    }

    let file: String
    var warnings: [Diagnostic] = []

    init(file: String) { self.file = file }

    mutating func warn(_ p: NamedPolicy, _ message: String) {
        warnings.append(Diagnostic(file: file, line: max(p.line, 1), column: max(p.column, 1), severity: .warning, message: message))
    }

    /// nil for deterministic policies (and for random ones that never or always keep).
    static func shape(_ named: NamedPolicy) -> Shape? {
        switch named.policy {
        case let p as ProbabilisticPolicy:
            guard p.percentage > 0 && p.percentage < 100 else { return nil }
            return Shape(leaves: [p.mode == .hash ? .traceHash(seed: p.seed) : .traceRandomness], combined: false, limiters: [])
        case let p as ConversationPolicy:
            guard p.percentage > 0 && p.percentage < 100 else { return nil }
            var leaves: Set<Leaf> = [.conversation(seed: p.seed)]
            if p.fallback == .traceID { leaves.insert(.traceHash(seed: p.seed)) }
            return Shape(leaves: leaves, combined: false, limiters: [])
        case let p as RateLimitingPolicy:
            return Shape(leaves: [.budget(ObjectIdentifier(p.budget))], combined: false, limiters: [named.name])
        case let p as BytesLimitingPolicy:
            return Shape(leaves: [.budget(ObjectIdentifier(p.budget))], combined: false, limiters: [named.name])
        case let p as AndPolicy:
            let subs = p.policies.compactMap(shape)
            guard !subs.isEmpty else { return nil }
            // One source per trace when every random sub-policy draws on the same leaves: the engine nests them.
            let combined = subs.contains { $0.combined } || Set(subs.map(\.leaves)).count > 1
            return Shape(leaves: subs.reduce(into: Set<Leaf>()) { $0.formUnion($1.leaves) }, combined: combined,
                         limiters: subs.flatMap(\.limiters))
        case let p as NotPolicy:
            guard var s = shape(p.policy) else { return nil }
            s.combined = true
            return s
        case let p as CompositePolicy:
            let subs = p.members.compactMap { shape($0.policy) }
            var leaves = Set(p.members.map { Leaf.budget(ObjectIdentifier($0.budget)) })
            for s in subs { leaves.formUnion(s.leaves) }
            return Shape(leaves: leaves, combined: !subs.isEmpty, limiters: [named.name] + subs.flatMap(\.limiters))
        default:
            return nil
        }
    }

    /// Policies weighed together: the top-level keeps (a union) or the sub-policies of an `and` (an intersection).
    /// Two that share a source where one is a combination are correlated, but weighed as independent.
    mutating func group(_ policies: [NamedPolicy], union: Bool) {
        let shapes = policies.map(Self.shape)
        for j in policies.indices {
            guard let b = shapes[j] else { continue }
            for i in 0..<j {
                guard let a = shapes[i], (a.combined || b.combined) else { continue }
                // The first shared source in a fixed order (sets iterate in a per-process order).
                guard let shared = a.leaves.intersection(b.leaves).compactMap({ l in l.rank.map { (l, $0) } }).min(by: { $0.1 < $1.1 })?.0 else { continue }
                // Reported at the combination (the later one when both are).
                let (at, other) = b.combined ? (policies[j], policies[i]) : (policies[i], policies[j])
                let how = union ? "the engine weighs a trace either of them keeps" : "the 'and' weighs a trace both keep"
                warn(at, "the weight of policy '\(at.name)' cannot be stated: it draws on \(shared.description) like policy "
                     + "'\(other.name)', but as a combination (\(at.type)) it is a source of its own, so the two are correlated"
                     + (at.policy is NotPolicy ? " (a 'not' is even disjoint from its sub-policy's draws)" : "")
                     + " while \(how) as if they were independent; hint: give one of them its own hash_salt")
                break
            }
        }
    }

    /// Walks a policy and its sub-policies.
    mutating func visit(_ named: NamedPolicy) {
        switch named.policy {
        case let p as AndPolicy:
            group(p.policies, union: false)
        case let p as NotPolicy:
            if let s = Self.shape(p.policy), let limiter = s.limiters.first {
                warn(named, "the weight of policy '\(named.name)' cannot be stated: it keeps what the limiter '\(limiter)' "
                     + "refuses, weighed 1 − the limiter's admission ratio of the previous second, which is 0 (an infinite "
                     + "adjusted count) when that second refused nothing; a limiter refuses in bursts, not at random; "
                     + "hint: keep a random share of those traces with a probabilistic policy instead")
            }
        case let p as DropPolicy:
            if let random = p.policies.first(where: { Self.shape($0) != nil }) {
                warn(named, "the weight of the traces policy '\(named.name)' spares cannot be stated: it drops at random "
                     + "('\(random.name)' is \(random.type)), before any keep, so a trace another policy keeps survives with "
                     + "a probability below 1 that its weight does not include (an error kept for certain is written as "
                     + "certain); hint: drop with deterministic conditions only, and keep a share of such traces with an "
                     + "'and' of the condition and a probabilistic policy, excluded from the other policies with 'not'")
            }
        case let p as CompositePolicy:
            let live = p.members.filter { !$0.policy.policy.neverKeeps }
            if live.count >= 2 {
                warn(named, "the weight of policy '\(named.name)' cannot be stated when a share runs out: a trace refused by "
                     + "the share of '\(live[0].policy.name)' falls through to '\(live[1].policy.name)', but its weight counts "
                     + "only the admission ratio of the first share that matches it, so such traces are over-counted; hint: "
                     + "give the sub-policies disjoint conditions (e.g. a 'not' of the earlier ones), or use one "
                     + "rate_limiting policy per kind of trace")
            }
        default:
            break
        }
        for sub in subPolicies(of: named.policy) { visit(sub) }
    }
}
