import Foundation
import TailgateBuffer
import TailgateWire
import Yams

/// A loaded policies file: its policies in order, and the span attributes they need the scanner to read.
public struct PolicySet: Sendable {
    public var policies: [NamedPolicy]
    public var plan: AttributePlan
    /// XXH3-64 of the file's text, to tell which file is loaded.
    public var sourceHash: UInt64
    /// Warnings found while loading (errors make loading fail).
    public var warnings: [Diagnostic]

    /// The built-in policies, identical to `policies/default.yaml` (a test keeps the two in step).
    public static let defaultYAML = """
        # Tailgate's default policies: the mission's policy.
        # A trace is kept when any policy keeps it; the first one that does is recorded as the reason.
        policies:
          # Every trace in which any span ended in ERROR.
          - name: errors
            type: status_code
            status_code:
              status_codes: [ERROR]

          # Every expensive trace: LLM tokens (input + output, summed over all spans) of 10,000 or more.
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

    public static func builtIn() -> PolicySet {
        // The embedded text is validated by the tests; failing here would be a build defect.
        try! parse(defaultYAML, file: "<built-in default>")
    }

    /// Loads a policies file.
    public static func load(path: String) throws(DiagnosticsError) -> PolicySet {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw DiagnosticsError([Diagnostic(file: path, line: 1, column: 1, message: "cannot read file: \(error.localizedDescription)")])
        }
        return try parse(text, file: path)
    }

    /// Parses policies from YAML text; throws every problem found, not only the first.
    public static func parse(_ text: String, file: String) throws(DiagnosticsError) -> PolicySet {
        var reader = YAMLReader(file: file)
        var plan = AttributePlan()
        var policies: [NamedPolicy] = []
        guard let root = reader.parse(text) else { throw DiagnosticsError(reader.diagnostics) }

        var sawPolicies = false
        for (key, keyNode, value) in reader.mapping(root, allowed: ["policies"], what: "the policies file") where key == "policies" {
            sawPolicies = true
            let items = reader.sequence(value, what: "policies")
            if items.isEmpty, case .sequence = value {
                reader.error(keyNode, "'policies' is empty: every trace would be dropped")
            }
            var names: [String: Node] = [:]
            for item in items {
                guard let policy = parsePolicy(item, reader: &reader, plan: &plan) else { continue }
                if let first = names[policy.name.0] {
                    let line = first.mark.map { " (first defined at line \($0.line))" } ?? ""
                    reader.error(policy.name.1, "duplicate policy name '\(policy.name.0)'\(line)")
                    continue
                }
                names[policy.name.0] = policy.name.1
                policies.append(policy.policy)
            }
        }
        if !sawPolicies, !reader.hasErrors {
            reader.error(root, "missing 'policies:' list")
        }
        if reader.hasErrors { throw DiagnosticsError(reader.diagnostics) }
        return PolicySet(policies: policies, plan: plan, sourceHash: xxh3(text), warnings: reader.diagnostics)
    }

    private static let policyKeys = ["name", "type"] + policyTypes.map { $0.typeName }

    private static func parsePolicy(_ node: Node, reader: inout YAMLReader, plan: inout AttributePlan)
        -> (policy: NamedPolicy, name: (String, Node))?
    {
        let entries = reader.mapping(node, allowed: policyKeys, what: "a policy")
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
        guard let (typeName, typeNode) = typeEntry else {
            reader.error(node, "policy '\(name.0)' needs a 'type' (one of: \(policyTypes.map { $0.typeName }.joined(separator: ", ")))")
            return nil
        }
        guard let type = policyTypes.first(where: { $0.typeName == typeName }) else {
            var message = "unknown policy type '\(typeName)'"
            if let hint = suggestion(for: typeName, among: policyTypes.map { $0.typeName }) {
                message += "; did you mean '\(hint)'?"
            } else {
                message += "; expected one of: \(policyTypes.map { $0.typeName }.joined(separator: ", "))"
            }
            reader.error(typeNode, message)
            return nil
        }
        for (blockName, block) in blocks where blockName != typeName {
            reader.error(block.key, "block '\(blockName)' does not belong to a policy of type '\(typeName)'")
        }
        guard let policy = type.parse(blocks[typeName]?.value, at: blocks[typeName]?.key ?? typeNode, reader: &reader, plan: &plan) else { return nil }
        return (NamedPolicy(name: name.0, type: typeName, policy: policy), name)
    }
}

/// Decides traces with a policy set: a trace is kept when any policy keeps it (the Collector's semantics);
/// the first policy in file order that keeps it is recorded as the reason.
public struct PolicyEngine: TraceDecider {
    public let policySet: PolicySet
    private let policies: [any SamplingPolicy]

    public init(_ policySet: PolicySet) {
        self.policySet = policySet
        policies = policySet.policies.map(\.policy)
    }

    public var policyNames: [String] { policySet.policies.map(\.name) }

    public func decide(_ trace: TraceSummary) -> Decision {
        for (i, p) in policies.enumerated() where p.keeps(trace) {
            return Decision(keep: true, policy: i)
        }
        return .noMatch
    }
}
