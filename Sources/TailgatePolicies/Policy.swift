package import TailgateBuffer
package import TailgateWire
package import Yams
package import TailgateConfig

/// What one policy says about a trace.
package enum Verdict: Sendable, Equatable {
    /// Keep, with the weight the keep carries (`.certain` for rules such as "any error").
    case sample(KeepWeight)
    case notSampled
    /// Drop the trace whatever other policies say (the `drop` policy).
    case drop

    package static let sampled = Verdict.sample(.certain)

    /// A keep stated as a plain probability (`hashed` below 1).
    package static func sample(probability: Double) -> Verdict {
        .sample(probability >= 1 ? .certain : .hashed(probability: probability))
    }

    package var isSample: Bool { if case .sample = self { true } else { false } }
}

/// Where a policy's randomness comes from. Policies drawing on one source keep nested sets of traces (the one with
/// the larger probability keeps every trace the other keeps); policies on different sources decide independently.
package enum RandomSource: Hashable, Sendable {
    /// The trace's randomness R (consistent probability sampling).
    case traceRandomness
    /// XXH3-64 of the trace ID with this seed (hash mode).
    case hash(seed: UInt64)
    /// A rate or bytes budget: admission does not depend on the trace's bits.
    case budget(ObjectIdentifier)
    /// XXH3-64 of the trace's conversation (`TraceSummary.conversation`) with this seed (`conversation` policy): the
    /// same draw for every turn of a conversation, independent of any trace-ID hash.
    case conversation(seed: UInt64)
    /// A combination of sources, or a complement of one (`not`): independent of everything else.
    indirect case derived(RandomSource, tag: Int)
}

/// A random policy's chance of keeping a given trace, whatever it actually decided for it.
package enum Chance: Sendable, Equatable {
    case never
    case certain
    case random(probability: Double, source: RandomSource)

    /// The inclusion probability of a trace under several chances (the OR of policies): within one source the
    /// largest, across sources independent.
    static func union(_ chances: [Chance]) -> Chance {
        var bySource: [RandomSource: Double] = [:]
        for c in chances {
            switch c {
            case .certain: return .certain
            case .never: continue
            case .random(let p, let s): bySource[s] = max(bySource[s] ?? 0, p)
            }
        }
        guard !bySource.isEmpty else { return .never }
        if bySource.count == 1, let (s, p) = bySource.first { return .random(probability: p, source: s) }
        let missed = bySource.values.reduce(1.0) { $0 * (1 - $1) }
        return .random(probability: 1 - missed, source: .derived(.traceRandomness, tag: bySource.count))
    }

    /// The inclusion probability under several chances that must all keep (the AND of policies): within one source
    /// the smallest, across sources independent.
    static func intersection(_ chances: [Chance]) -> Chance {
        var bySource: [RandomSource: Double] = [:]
        for c in chances {
            switch c {
            case .never: return .never
            case .certain: continue
            case .random(let p, let s): bySource[s] = min(bySource[s] ?? 1, p)
            }
        }
        guard !bySource.isEmpty else { return .certain }
        if bySource.count == 1, let (s, p) = bySource.first { return .random(probability: p, source: s) }
        // The conjunction is a set of its own: tagged by its parts, so that two different `and`s are independent in a
        // union (a tag of only the count made every two-source `and` "nested" with every other one), and the same
        // `and` written twice is the same set.
        var tag = Hasher()
        for (s, p) in bySource.sorted(by: { $0.key.hashValue < $1.key.hashValue }) { tag.combine(s); tag.combine(p) }
        return .random(probability: bySource.values.reduce(1.0, *), source: .derived(.traceRandomness, tag: tag.finalize()))
    }

    /// The weight a keep with this chance carries: consistent when it comes from the trace's randomness alone.
    var weight: KeepWeight {
        switch self {
        case .certain, .never: .certain
        case .random(let p, .traceRandomness): .consistent(threshold: KeepAnnotation.threshold(probability: p))
        case .random(let p, _): p >= 1 ? .certain : .hashed(probability: p)
        }
    }
}

/// One sampling policy type: how it is written in the policies file and how it judges a whole trace.
/// Each type lives in its own file under `Policies/`, with its own table-driven test.
package protocol SamplingPolicy: Sendable {
    /// The `type:` value, named as in the OpenTelemetry Collector's `tail_sampling` where it exists there.
    static var typeName: String { get }
    /// Keys allowed inside the policy's own block (e.g. `probabilistic: {sampling_percentage: 10}`).
    static var keys: [String] { get }
    /// Parses the policy's block, reporting problems to the context's reader; returns nil when it is invalid.
    /// `at` is where to report what is missing: the block's key, or the `type:` value when there is no block.
    static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self?
    /// The verdict on a whole trace.
    func evaluate(_ trace: TraceSummary) -> Verdict
    /// For policies that keep at random (probabilistic, limiters, combinations of them): the chance this trace had of
    /// being kept, whether or not it was. Read-only (a limiter's budget is not spent). nil for deterministic policies,
    /// whose verdict is the whole story.
    func chance(_ trace: TraceSummary) -> Chance?
    /// True when the policy can never keep a trace (reported as a warning by `tailgate check`).
    var neverKeeps: Bool { get }
}

extension SamplingPolicy {
    package var neverKeeps: Bool { false }
    package func chance(_ trace: TraceSummary) -> Chance? { nil }
}

/// Every policy type Tailgate understands.
package let policyTypes: [any SamplingPolicy.Type] = [
    AlwaysSamplePolicy.self,
    StatusCodePolicy.self,
    LatencyPolicy.self,
    NumericAttributePolicy.self,
    StringAttributePolicy.self,
    BooleanAttributePolicy.self,
    SpanCountPolicy.self,
    ProbabilisticPolicy.self,
    RateLimitingPolicy.self,
    BytesLimitingPolicy.self,
    TraceStatePolicy.self,
    AndPolicy.self,
    NotPolicy.self,
    DropPolicy.self,
    CompositePolicy.self,
    ConversationPolicy.self,
    TokenUsagePolicy.self,
    LLMCostPolicy.self,
    FinishReasonPolicy.self,
    AgentLoopPolicy.self,
    ToolErrorPolicy.self,
]

/// A named policy from the policies file.
package struct NamedPolicy: Sendable {
    package var name: String
    package var type: String
    package var policy: any SamplingPolicy
    /// Where the policy's name is written (for diagnostics found after parsing, such as weight warnings); 0 unknown.
    package var line = 0
    package var column = 0
}

/// What parsing a policy needs: the reader (diagnostics), the attribute plan, the price table, and the
/// ability to parse nested policies (for `and`, `not`, `drop`, `composite`).
package struct PolicyContext {
    package var reader: YAMLReader
    package var plan: AttributePlan
    /// USD per million tokens, by model: the built-in table overridden by the file's `prices:`.
    package var pricing = PriceTable()

    init(reader: YAMLReader) {
        self.reader = reader
        plan = AttributePlan()
    }

    /// Records a plan failure (too many conditions, a bad regex) at `node`.
    package mutating func plan<T>(_ node: Node?, _ body: (inout AttributePlan) throws(AttributePlan.PlanError) -> T) -> T? {
        do {
            return try body(&plan)
        } catch {
            reader.error(node, error.description)
            return nil
        }
    }

    static let policyKeys = ["name", "type"] + policyTypes.map { $0.typeName }

    /// Parses one `{name, type, <type>: {…}}` entry.
    package mutating func parsePolicy(_ node: Node) -> (policy: NamedPolicy, nameNode: Node)? {
        // A key of the policy's own block written beside `type:` is a common slip: say where it belongs.
        var typeName: String? = nil
        if case .mapping(let m) = node { typeName = m["type"]?.string }
        let ownKeys = typeName.flatMap { t in policyTypes.first { $0.typeName == t } }?.keys ?? []
        let entries = reader.mapping(node, allowed: Self.policyKeys, what: "a policy", hint: { key in
            guard let typeName, ownKeys.contains(key) else { return nil }
            return "'\(key)' belongs inside the '\(typeName):' block"
        })
        guard case .mapping = node else { return nil }
        var name: (String, Node)? = nil
        var typeEntry: (String, Node)? = nil
        var blocks: [String: (key: Node, value: Node)] = [:]
        for (key, keyNode, value) in entries {
            switch key {
            case "name":
                if let s = reader.string(value, what: "name") {
                    if s.isEmpty { reader.error(value, "name must not be empty") } else { name = (s, value) }
                }
            case "type":
                if let s = reader.string(value, what: "type") { typeEntry = (s, value) }
            default:
                blocks[key] = (keyNode, value)
            }
        }
        guard let name else {
            if entries.allSatisfy({ $0.key != "name" }) { reader.error(node, "policy needs a 'name'") }
            return nil
        }
        let typeNames = policyTypes.map { $0.typeName }
        guard let (typeName, typeNode) = typeEntry else {
            reader.error(node, "policy '\(name.0)' needs a 'type' (one of: \(typeNames.joined(separator: ", ")))")
            return nil
        }
        guard let type = policyTypes.first(where: { $0.typeName == typeName }) else {
            var message = "unknown policy type '\(typeName)'"
            if let hint = suggestion(for: typeName, among: typeNames) {
                message += "; did you mean '\(hint)'?"
            } else {
                message += "; expected one of: \(typeNames.joined(separator: ", "))"
            }
            reader.error(typeNode, message)
            return nil
        }
        for (blockName, block) in blocks where blockName != typeName {
            reader.error(block.key, "block '\(blockName)' does not belong to a policy of type '\(typeName)'")
        }
        guard let policy = type.parse(blocks[typeName]?.value, at: blocks[typeName]?.key ?? typeNode, context: &self) else { return nil }
        if policy.neverKeeps {
            reader.warning(name.1, "policy '\(name.0)' can never keep a trace")
        }
        return (NamedPolicy(name: name.0, type: typeName, policy: policy, line: name.1.mark?.line ?? 0, column: name.1.mark?.column ?? 0), name.1)
    }

    /// Parses a list of sub-policies; names must be unique within the list.
    package mutating func parsePolicies(_ node: Node, what: String) -> [NamedPolicy] {
        var out: [NamedPolicy] = []
        var names: [String: Node] = [:]
        for item in reader.sequence(node, what: what) {
            guard let (policy, nameNode) = parsePolicy(item) else { continue }
            if let first = names[policy.name] {
                let line = first.mark.map { " (first defined at line \($0.line))" } ?? ""
                reader.error(nameNode, "duplicate policy name '\(policy.name)'\(line)")
                continue
            }
            names[policy.name] = nameNode
            out.append(policy)
        }
        return out
    }

    /// The block's entries (unknown keys reported), or an error when the block is missing.
    mutating func block(_ block: Node?, at: Node, type: String, keys: [String], example: String) -> [(key: String, keyNode: Node, value: Node)]? {
        guard let block else {
            reader.error(at, "\(type) policy needs a '\(type):' block, e.g. \(type): {\(example)}")
            return nil
        }
        return reader.mapping(block, allowed: keys, what: type)
    }

    /// The `scope` of an attribute condition: `any` (span or resource, the default), `span`, `resource` or `root`.
    mutating func attributeScope(_ node: Node?) -> AttributeScope? {
        guard let node else { return .any }
        guard let s = reader.string(node, what: "scope") else { return nil }
        guard let scope = AttributeScope(rawValue: s) else {
            var message = "scope must be one of any, span, resource, root; got '\(s)'"
            if let hint = suggestion(for: s, among: AttributeScope.allCases.map(\.rawValue)) { message += "; did you mean '\(hint)'?" }
            reader.error(node, message)
            return nil
        }
        return scope
    }
}

/// Which attributes an attribute condition looks at.
package enum AttributeScope: String, Sendable, CaseIterable {
    /// Any span's attributes or the resource's (the Collector's behaviour).
    case any
    /// Any span's attributes.
    case span
    /// The resource's attributes.
    case resource
    /// The root span's attributes (or its resource's).
    case root

    var target: AttributePlan.Target {
        switch self {
        case .any, .root: .any
        case .span: .span
        case .resource: .resource
        }
    }
}

/// A condition bit checked on any span or on the root span, optionally inverted.
package struct BitTest: Sendable, Equatable {
    package var bit: Int
    package var rootOnly: Bool
    package var invert: Bool

    package func matches(_ trace: TraceSummary) -> Bool {
        let mask: UInt64 = 1 << UInt64(bit)
        let hit = (rootOnly ? trace.rootBits : trace.bits) & mask != 0
        return hit != invert
    }
}
