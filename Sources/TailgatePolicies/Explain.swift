package import TailgateBuffer
package import TailgateWire

/// Every policy's verdict on one trace, in file order, and which policy would decide it: what
/// `GET /debug/traces/{id}` shows for an undecided trace.
///
/// Evaluating is read-only: policies that spend a budget when asked (`rate_limiting`, `bytes_limiting`, `composite`,
/// and combinations holding one) are not asked for a verdict — their current admission ratio is reported instead
/// (`limited`), and whether they would admit the trace is left open.
package struct PolicyExplanation: Sendable {
    package enum Outcome: String, Sendable {
        /// The policy keeps the trace.
        case keep
        /// The policy does not keep it.
        case no
        /// A `drop` policy that matches: the trace is dropped whatever else matches.
        case drop
        /// A budget-limited policy: admission depends on the budget left at the decision (not spent by explaining).
        case limited
    }

    package struct Entry: Sendable {
        package var name: String
        package var type: String
        package var outcome: Outcome
        /// For keeps: how the keep would be stated downstream.
        package var weight: KeepWeight?
        /// For random policies (probabilistic, limiters, combinations): the chance this trace has of being kept by
        /// this policy, whatever its verdict (nil for deterministic policies).
        package var chance: Double?
    }

    package var policies: [Entry]
    package var keep: Bool
    /// Index of the deciding policy (nil: none matched).
    package var deciding: Int?
    /// The weight of the keep (the union of every random policy's chance, as the engine computes it).
    package var weight: KeepWeight
    /// Budget-limited policies that could change the outcome (they come before the deciding one, or nothing keeps the
    /// trace), by index.
    package var undetermined: [Int]

    /// The deciding policy's name, if any.
    package var decidingName: String? { deciding.map { policies[$0].name } }

    /// "would keep by policy 'errors'", "would drop: no policy matched", …
    package var text: String {
        var s: String
        if let deciding {
            let p = policies[deciding]
            s = keep ? "would keep by policy '\(p.name)'" : "would drop by policy '\(p.name)' (\(p.type))"
            if keep, !weight.isCertain { s += " with probability \(formatProbability(weight.probability))" }
        } else {
            s = "would drop: no policy matched"
        }
        let dropping = undetermined.filter { policies[$0].type == DropPolicy.typeName }
        let admitting = undetermined.filter { policies[$0].type != DropPolicy.typeName }
        func names(_ list: [Int]) -> String { list.map { "'\(policies[$0].name)'" }.joined(separator: ", ") }
        if !admitting.isEmpty {
            s += keep ? " (unless budget-limited \(names(admitting)) admits it first)" : " (unless budget-limited \(names(admitting)) admits it)"
        }
        if !dropping.isEmpty { s += " (unless budget-limited drop policy \(names(dropping)) matches)" }
        return s
    }
}

func formatProbability(_ p: Double) -> String {
    let percent = p * 100
    if percent >= 1 { return "\(Double(Int((percent * 100).rounded())) / 100)%" }
    return "\(percent)%"
}

extension PolicySet {
    /// Every policy's verdict on `trace` and the decision `PolicyEngine` would make on it now (with the Collector's
    /// semantics: a matching `drop` policy wins; otherwise the first keep in file order, a later certain keep being
    /// preferred to an earlier random one). Budget-limited policies are not asked (see `PolicyExplanation`).
    package func explain(_ trace: TraceSummary) -> PolicyExplanation {
        var entries: [PolicyExplanation.Entry] = []
        var verdicts: [Verdict?] = []
        var chances: [Chance?] = []
        for named in policies {
            let p = named.policy
            let chance = p.chance(trace)
            chances.append(chance)
            var entry = PolicyExplanation.Entry(name: named.name, type: named.type, outcome: .no)
            if case .random(let probability, _)? = chance { entry.chance = probability }
            if case .certain? = chance { entry.chance = 1 }
            if case .never? = chance { entry.chance = 0 }
            if Self.spendsBudget(p) {
                entry.outcome = .limited
                verdicts.append(nil)
            } else {
                let verdict = p.evaluate(trace)
                verdicts.append(verdict)
                switch verdict {
                case .sample(let w):
                    entry.outcome = .keep
                    entry.weight = w
                case .notSampled: entry.outcome = .no
                case .drop: entry.outcome = .drop
                }
            }
            entries.append(entry)
        }
        var out = PolicyExplanation(policies: entries, keep: false, deciding: nil, weight: .certain, undetermined: [])
        let drops = policies.indices.filter { policies[$0].policy is DropPolicy }
        let keeps = policies.indices.filter { !(policies[$0].policy is DropPolicy) }
        // Drop policies first, whatever their place in the file.
        var dropUndetermined: [Int] = []
        for i in drops {
            guard let verdict = verdicts[i] else { dropUndetermined.append(i); continue }
            if verdict == .drop {
                out.deciding = i
                return out
            }
        }
        out.undetermined = dropUndetermined
        var chosen: Int? = nil
        var union: [Chance] = []
        for i in keeps {
            guard let verdict = verdicts[i] else {
                // A limiter: the engine would take from its budget here; whether it admits the trace is open.
                if let c = chances[i] { union.append(c) }
                if chosen == nil { out.undetermined.append(i) }
                continue
            }
            if let chance = chances[i] {
                if chance == .certain && verdict.isSample {
                    // A certain keep wins over any limiter before it: only drop limiters stay open.
                    out.keep = true
                    out.deciding = i
                    out.undetermined = dropUndetermined
                    return out
                }
                union.append(chance)
            } else if verdict == .sampled {
                out.keep = true
                out.deciding = i
                out.undetermined = dropUndetermined
                return out
            }
            if verdict.isSample && chosen == nil { chosen = i }
        }
        guard let chosen else { return out }
        out.keep = true
        out.deciding = chosen
        out.weight = Chance.union(union).weight
        return out
    }

    /// Policies whose `evaluate` spends a per-second budget (so explaining must not call it).
    static func spendsBudget(_ policy: any SamplingPolicy) -> Bool {
        switch policy {
        case is RateLimitingPolicy, is BytesLimitingPolicy, is CompositePolicy: return true
        case let p as AndPolicy: return p.policies.contains { spendsBudget($0.policy) }
        case let p as NotPolicy: return spendsBudget(p.policy.policy)
        case let p as DropPolicy: return p.policies.contains { spendsBudget($0.policy) }
        default: return false
        }
    }
}
