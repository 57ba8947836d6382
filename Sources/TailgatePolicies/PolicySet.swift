import Foundation
package import TailgateBuffer
package import TailgateWire
import Yams
package import TailgateConfig

/// A loaded policies file: its policies in order, and the span attributes they need the scanner to read.
package struct PolicySet: Sendable {
    package var policies: [NamedPolicy]
    package var plan: AttributePlan
    /// XXH3-64 of the file's text, to tell which file is loaded.
    package var sourceHash: UInt64
    /// Warnings found while loading (errors make loading fail).
    package var warnings: [Diagnostic]
    /// Prices for cost policies and the GenAI cost metric.
    package var pricing = PriceTable()

    /// The built-in policies, identical to `policies/default.yaml` (a test keeps the two in step).
    package static let defaultYAML = """
        # Tailgate's default policies: the mission's policy.
        # A trace is kept when any policy keeps it; the first one that does is recorded as the reason.
        policies:
          # Every trace in which any span ended in ERROR.
          - name: errors
            type: status_code
            status_code:
              status_codes: [ERROR]

          # Every expensive trace: 10,000 LLM tokens or more (input + output, each model call counted once).
          - name: expensive
            type: token_usage
            token_usage:
              min_total_tokens: 10000

          # 10% of everything else, chosen by hashing the trace ID (the same traces on every instance).
          - name: baseline
            type: probabilistic
            probabilistic:
              sampling_percentage: 10

        """

    package static func builtIn() -> PolicySet {
        // The embedded text is validated by the tests; failing here would be a build defect.
        try! parse(defaultYAML, file: "<built-in default>")
    }

    /// Loads a policies file.
    package static func load(path: String) throws(DiagnosticsError) -> PolicySet {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw DiagnosticsError([Diagnostic(file: path, line: 1, column: 1, message: "cannot read file: \(error.localizedDescription)")])
        }
        return try parse(text, file: path)
    }

    /// Parses policies from YAML text; throws every problem found, not only the first.
    package static func parse(_ text: String, file: String) throws(DiagnosticsError) -> PolicySet {
        var context = PolicyContext(reader: YAMLReader(file: file))
        guard let root = context.reader.parse(text) else { throw DiagnosticsError(context.reader.diagnostics) }
        let entries = context.reader.mapping(root, allowed: ["policies", "prices"], what: "the policies file")
        // Prices first: cost policies compile them into the plan.
        for (_, _, value) in entries.filter({ $0.key == "prices" }) {
            parsePrices(value, &context)
        }
        var policies: [NamedPolicy] = []
        var sawPolicies = false
        for (_, keyNode, value) in entries.filter({ $0.key == "policies" }) {
            sawPolicies = true
            policies = context.parsePolicies(value, what: "policies")
            if policies.isEmpty, case .sequence(let seq) = value, seq.isEmpty {
                context.reader.error(keyNode, "'policies' is empty: every trace would be dropped")
            }
        }
        if !sawPolicies, !context.reader.hasErrors {
            context.reader.error(root, "missing 'policies:' list")
        }
        if !policies.isEmpty, policies.allSatisfy({ $0.policy.neverKeeps || $0.policy is DropPolicy }), !context.reader.hasErrors {
            context.reader.warning(root, "no policy can keep a trace: every trace will be dropped")
        }
        if context.reader.hasErrors { throw DiagnosticsError(context.reader.diagnostics) }
        var set = PolicySet(policies: policies, plan: context.plan, sourceHash: xxh3(text), warnings: context.reader.diagnostics)
        set.pricing = context.pricing
        return set
    }

    private static func parsePrices(_ node: Node, _ context: inout PolicyContext) {
        let keys = ["input", "output", "cache_read", "cache_creation", "reasoning"]
        for (model, _, value) in context.reader.mapping(node, allowed: [], what: "prices", allowAny: true) {
            var n: [String: Double] = [:]
            for (k, _, v) in context.reader.mapping(value, allowed: keys, what: "the price of '\(model)'") {
                if let x = context.reader.number(v, what: k, range: 0...1e9) { n[k] = x }
            }
            guard let input = n["input"], let output = n["output"] else {
                context.reader.error(value, "the price of '\(model)' needs 'input' and 'output' (USD per million tokens; optional: cache_read, cache_creation, reasoning)")
                continue
            }
            let price = ModelPrice(input: input, output: output, cacheRead: n["cache_read"], cacheCreation: n["cache_creation"],
                                   reasoning: n["reasoning"])
            if model == "default" { context.pricing.defaultPrice = price } else { context.pricing.prices[model] = price }
        }
    }
}

/// Decides traces with a policy set, with the OpenTelemetry Collector's semantics: a `drop` policy that matches
/// drops the trace whatever else matches; otherwise the trace is kept when any policy keeps it. The first policy in
/// file order that keeps it is recorded, except that a later policy keeping it for certain is preferred to an earlier
/// random one.
///
/// The weight of a random keep is the trace's true inclusion probability under the whole set: the union of every
/// random policy's chance for it (kept or not), nested within one randomness source and independent across sources —
/// not the probability of the policy that happened to be first.
package struct PolicyEngine: TraceDecider {
    package let policySet: PolicySet
    private let policies: [any SamplingPolicy]
    private let drops: [Int]
    private let keeps: [Int]
    /// `conversation` policies with `keep_after_error`: they see every decided trace, whichever policy decides it.
    private let remembering: [ConversationPolicy]

    package init(_ policySet: PolicySet) {
        self.policySet = policySet
        let all = policySet.policies.map(\.policy)
        policies = all
        drops = all.indices.filter { all[$0] is DropPolicy }
        keeps = all.indices.filter { !(all[$0] is DropPolicy) }
        remembering = ConversationPolicy.remembering(policySet.policies)
    }

    package var policyNames: [String] { policySet.policies.map(\.name) }

    package func decide(_ trace: TraceSummary) -> Decision {
        for c in remembering { c.observe(trace) }
        for i in drops where policies[i].evaluate(trace) == .drop {
            return Decision(keep: false, policy: i)
        }
        var chosen: Int? = nil
        var chances: [Chance] = []
        for i in keeps {
            let verdict = policies[i].evaluate(trace)
            if let chance = policies[i].chance(trace) {
                if chance == .certain && verdict.isSample { return Decision(keep: true, policy: i) }
                chances.append(chance)
            } else if verdict == .sampled {
                return Decision(keep: true, policy: i)
            }
            if verdict.isSample && chosen == nil { chosen = i }
        }
        guard let chosen else { return .noMatch }
        return Decision(keep: true, policy: chosen, weight: Chance.union(chances).weight)
    }

    /// A dropped trace that received late spans: kept if a deterministic policy (one without a chance: an error, a
    /// token threshold, an attribute match) keeps it now and no drop policy matches. Random policies and limiters are
    /// not asked (their verdict did not depend on the late spans, and a second draw would bias weights).
    package func revise(_ trace: TraceSummary) -> Decision? {
        for c in remembering { c.observe(trace) }
        for i in drops where policies[i].evaluate(trace) == .drop { return nil }
        for i in keeps where policies[i].chance(trace) == nil && policies[i].evaluate(trace) == .sampled {
            return Decision(keep: true, policy: i)
        }
        return nil
    }
}

/// A loaded policy set ready to run: the scanner for its attribute plan and the engine, under one generation number,
/// so that traces aggregated under an older set are re-aggregated before this one decides them.
package struct PolicyRuntime: TraceDecider {
    package let policySet: PolicySet
    package let engine: PolicyEngine
    package let scanner: OTLPScanner
    package let generation: UInt64
    /// Generation of the attribute plan (summaries aggregated under it need no re-aggregation): a reload whose plan
    /// is unchanged keeps the previous one, so traces spilled to the store are not read back to be re-aggregated.
    package let planGeneration: UInt64
    /// Dry run: every trace is kept (forwarded), and `Decision.dryRunKeep` says what the policies decided.
    package let dryRun: Bool

    package init(_ policySet: PolicySet, generation: UInt64 = 0, dryRun: Bool = false, planGeneration: UInt64? = nil) {
        self.policySet = policySet
        engine = PolicyEngine(policySet)
        self.planGeneration = planGeneration ?? generation
        scanner = OTLPScanner(plan: policySet.plan, generation: planGeneration ?? generation)
        self.generation = generation
        self.dryRun = dryRun
    }

    package var policyNames: [String] { engine.policyNames }

    package func policyName(_ decision: Decision) -> String {
        decision.policy >= 0 && decision.policy < engine.policyNames.count ? engine.policyNames[decision.policy] : ""
    }

    package func decide(_ trace: TraceSummary) -> Decision {
        var decision = engine.decide(trace)
        decision.generation = generation
        decision.policyName = policyName(decision)
        if dryRun {
            // Everything is forwarded, so every trace's weight is 1: nothing may be written about probabilities.
            decision.dryRunKeep = decision.keep
            decision.keep = true
            decision.weight = .certain
        }
        return decision
    }

    package func rescan(_ body: UnsafeRawBufferPointer, into request: inout ScannedRequest) -> Bool {
        (try? scanner.scan(body, into: &request)) != nil
    }

    package var canRescan: Bool { true }

    package func revise(_ trace: TraceSummary) -> Decision? {
        guard !dryRun, var decision = engine.revise(trace) else { return nil }
        decision.generation = generation
        decision.policyName = policyName(decision)
        return decision
    }

    package func reaggregate(_ summary: inout TraceSummary, spans: BufferedSpans) {
        summary.bits = 0
        summary.rootBits = 0
        summary.sums = SIMD8()
        summary.conversation = 0
        var resourceBits: [ObjectIdentifier: UInt64] = [:]
        spans.forEach { scope, payload in
            let id = ObjectIdentifier(scope.resource)
            let rb = resourceBits[id] ?? {
                let b = scanner.resourceBits(header: scope.resource.header)
                resourceBits[id] = b
                return b
            }()
            guard let facts = scanner.evaluate(span: payload, resourceBits: rb) else { return }
            summary.bits |= facts.bits
            if facts.isRoot { summary.rootBits |= facts.bits }
            summary.sums.addSaturating(facts.sums)  // as `TraceSummary.add` does
            if summary.conversation == 0 { summary.conversation = facts.conversation }
        }
    }
}
