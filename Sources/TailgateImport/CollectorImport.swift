import Foundation
import Yams
package import TailgateConfig
import TailgatePolicies

/// Turns the `tail_sampling` processor of an OpenTelemetry Collector configuration into a Tailgate policies file
/// (`tailgate import-otel COLLECTOR.yaml`), with a note, at its source position, for everything that could not be
/// carried over as it was.
///
/// Policies keep their order, names, keys and values as written (numbers are not reformatted). Types Tailgate does
/// not have (`ottl_condition`, `trace_flags`, unknown ones) are left out; sub-policies follow the same rules, and a
/// combinator left without sub-policies is left out too. Processor settings (`decision_wait`, `num_traces`, …) are not
/// policies: each gets a note naming the Tailgate configuration key that corresponds, when there is one.
///
/// Values Tailgate rejects but the Collector accepts are translated to what the Collector actually does, with a note:
/// percentages outside 0–100 are clamped (the Collector saturates them), and a policy that can match no trace (an
/// empty `values` list, latency bounds that leave no room) becomes a `probabilistic` policy of 0 % (`always_sample`
/// for an empty `values` list with `invert_match`, which matches every trace). What cannot be translated — a
/// configuration the Collector itself refuses, rate allocations adding up to more than 100 % — fails the import,
/// saying why.
package struct CollectorImport: Sendable {
    /// The Tailgate policies file (YAML text, with a header comment naming the source file and the processor).
    package var policiesYAML: String
    /// What could not be carried over or was changed, each with the source position (severity `.warning`).
    package var notes: [Diagnostic]

    package init(policiesYAML: String, notes: [Diagnostic]) {
        self.policiesYAML = policiesYAML
        self.notes = notes
    }

    /// Converts the `tail_sampling` processor named `processor` (`tail_sampling/NAME`, or just `NAME`), or the first
    /// one when nil. Throws, with positions, when the text is not YAML, has no such processor, or has policies that
    /// cannot be translated (every such problem, not only the first).
    package static func convert(_ text: String, file: String, processor: String? = nil) throws(DiagnosticsError) -> CollectorImport {
        var reader = YAMLReader(file: file)
        guard let root = reader.parse(text) else { throw DiagnosticsError(reader.diagnostics) }
        let found = try locateProcessor(in: root, file: file, requested: processor)

        var converter = Converter(file: file)
        if !found.others.isEmpty {
            let others = found.others.map { "'\($0.id)' (line \($0.key.mark?.line ?? 1))" }.joined(separator: ", ")
            converter.note(found.key, "\(found.others.count + 1) tail_sampling processors: converted '\(found.id)', "
                + "not \(others); choose another with --processor NAME")
        }
        converter.checkPipelines(root, id: found.id, key: found.key)
        let items = converter.convertProcessor(found.value, key: found.key, id: found.id)
        if !converter.errors.isEmpty {
            throw DiagnosticsError(converter.errors.enumerated().sorted {
                ($0.element.line, $0.element.column, $0.offset) < ($1.element.line, $1.element.column, $1.offset)
            }.map(\.element))
        }
        let notes = converter.notes.enumerated().sorted {
            ($0.element.line, $0.element.column, $0.offset) < ($1.element.line, $1.element.column, $1.offset)
        }.map(\.element)
        return CollectorImport(policiesYAML: render(items, file: file, processor: found.id, noteCount: notes.count), notes: notes)
    }
}

// MARK: - Vocabulary

extension CollectorImport {
    /// How a key's value is carried over.
    enum ValueKind: Sendable {
        case string, number, bool, strings, policies, policy, rateAllocation
    }

    /// A Collector policy type Tailgate has: the Collector's name for it, the Tailgate policy type it becomes (the
    /// imported policy is written with that type's `typeName`), and the Collector's keys, in the Collector's order,
    /// with how each value is carried over. Each key is written under its Collector name, which the policy type's
    /// `keys` accept (`CollectorImportTests` checks both against the registry, `TailgatePolicies.policyTypes`, and
    /// loads what the importer writes with the real parser).
    struct Translation: Sendable {
        var collectorType: String
        var policy: any SamplingPolicy.Type
        var keys: [(key: String, kind: ValueKind)]

        init(_ collectorType: String, _ policy: any SamplingPolicy.Type, _ keys: [(key: String, kind: ValueKind)]) {
            self.collectorType = collectorType
            self.policy = policy
            self.keys = keys
        }
    }

    /// The Collector's policy types Tailgate has, in the Collector's order.
    static let translations: [Translation] = [
        Translation("always_sample", AlwaysSamplePolicy.self, []),
        Translation("latency", LatencyPolicy.self, [("threshold_ms", .number), ("upper_threshold_ms", .number)]),
        Translation("numeric_attribute", NumericAttributePolicy.self,
                    [("key", .string), ("min_value", .number), ("max_value", .number), ("invert_match", .bool)]),
        Translation("string_attribute", StringAttributePolicy.self,
                    [("key", .string), ("values", .strings), ("enabled_regex_matching", .bool), ("invert_match", .bool)]),
        Translation("boolean_attribute", BooleanAttributePolicy.self, [("key", .string), ("value", .bool), ("invert_match", .bool)]),
        Translation("span_count", SpanCountPolicy.self, [("min_spans", .number), ("max_spans", .number)]),
        Translation("probabilistic", ProbabilisticPolicy.self, [("sampling_percentage", .number), ("hash_salt", .string)]),
        Translation("status_code", StatusCodePolicy.self, [("status_codes", .strings)]),
        Translation("rate_limiting", RateLimitingPolicy.self, [("spans_per_second", .number), ("burst_capacity", .number)]),
        Translation("bytes_limiting", BytesLimitingPolicy.self, [("bytes_per_second", .number), ("burst_capacity", .number)]),
        Translation("trace_state", TraceStatePolicy.self, [("key", .string), ("values", .strings)]),
        Translation("and", AndPolicy.self, [("and_sub_policy", .policies)]),
        Translation("not", NotPolicy.self, [("not_sub_policy", .policy)]),
        Translation("drop", DropPolicy.self, [("drop_sub_policy", .policies)]),
        Translation("composite", CompositePolicy.self, [("max_total_spans_per_second", .number), ("policy_order", .strings),
                                                        ("composite_sub_policy", .policies), ("rate_allocation", .rateAllocation)]),
    ]

    /// Collector policy types Tailgate does not have, and why.
    static let unsupportedTypes: [(type: String, reason: String)] = [
        ("ottl_condition", "Tailgate does not evaluate OTTL conditions; express them with string_attribute, "
            + "numeric_attribute or boolean_attribute policies where possible"),
        ("trace_flags", "Tailgate does not read the trace flags of spans"),
    ]

    /// Collector keys Tailgate does not need, and why.
    static let droppedKeys: [String: String] = [
        "string_attribute.cache_max_size": "Tailgate compiles each regular expression once and needs no match cache",
    ]

    /// The processor settings that are not policies.
    static let processorSettings = [
        "decision_wait", "decision_wait_after_root_received", "num_traces", "expected_new_traces_per_sec",
        "decision_cache", "sample_on_first_match", "maximum_trace_size_bytes", "drop_pending_traces_on_shutdown",
        "block_on_overflow", "policies",
    ]

    static func isTailSampling(_ id: String) -> Bool {
        id == "tail_sampling" || id.hasPrefix("tail_sampling/")
    }
}

// MARK: - Finding the processor

extension CollectorImport {
    struct Located {
        var id: String
        var key: Node
        var value: Node
        var others: [(id: String, key: Node)]
    }

    static func locateProcessor(in root: Node, file: String, requested: String?) throws(DiagnosticsError) -> Located {
        func failure(_ node: Node?, _ message: String) -> DiagnosticsError {
            let mark = node?.mark
            return DiagnosticsError([Diagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, message: message)])
        }
        guard case .mapping(let top) = root else {
            throw failure(root, "not an OpenTelemetry Collector configuration: expected a mapping with 'processors:' at the top level")
        }
        guard let (processorsKey, processorsValue) = top.first(where: { $0.key.string == "processors" }) else {
            throw failure(root, "no 'processors:' section, so no tail_sampling processor to import")
        }
        guard case .mapping(let processors) = processorsValue else {
            throw failure(processorsKey, "'processors' must be a mapping from processor IDs to their settings")
        }
        let all = processors.map { (id: $0.key.string ?? "", key: $0.key, value: $0.value) }
        let candidates = all.filter { isTailSampling($0.id) }

        if let requested {
            let wanted = isTailSampling(requested) ? requested : "tail_sampling/\(requested)"
            guard let index = candidates.firstIndex(where: { $0.id == requested || $0.id == wanted }) else {
                if all.contains(where: { $0.id == requested }) {
                    throw failure(processorsKey, "processor '\(requested)' is not a tail_sampling processor")
                }
                var message = "no processor '\(requested)' under 'processors'"
                if let hint = suggestion(for: wanted, among: candidates.map(\.id)) {
                    message += "; did you mean '\(hint)'?"
                } else if !candidates.isEmpty {
                    message += "; tail_sampling processors: \(candidates.map(\.id).joined(separator: ", "))"
                }
                throw failure(processorsKey, message)
            }
            let chosen = candidates[index]
            return Located(id: chosen.id, key: chosen.key, value: chosen.value, others: [])
        }

        guard let first = candidates.first else {
            var message = "no tail_sampling processor under 'processors'"
            if !all.isEmpty { message += " (found: \(all.map(\.id).joined(separator: ", ")))" }
            if let near = all.first(where: {
                suggestion(for: String($0.id.prefix { $0 != "/" }), among: ["tail_sampling"]) != nil
            }) {
                message += "; did you mean 'tail_sampling' instead of '\(near.id)' (line \(near.key.mark?.line ?? 1))?"
            }
            throw failure(processorsKey, message)
        }
        return Located(id: first.id, key: first.key, value: first.value,
                       others: candidates.dropFirst().map { (id: $0.id, key: $0.key) })
    }
}

// MARK: - Conversion

extension CollectorImport {
    /// The output tree: scalars are already rendered YAML text.
    indirect enum Out {
        case scalar(String)
        case mapping([(key: String, value: Out)])
        case sequence([Item])
    }

    /// A list entry with the comment lines above it; no value for an entry that only leaves a comment in place.
    struct Item {
        var comments: [String]
        var value: Out?
    }

    /// The policy a sub-policy belongs to.
    struct Parent {
        var name: String
        var type: String
    }

    struct Converter {
        let file: String
        var notes: [Diagnostic] = []
        /// Policies that cannot be translated: the import fails with these.
        var errors: [Diagnostic] = []

        init(file: String) { self.file = file }

        mutating func fail(_ node: Node?, _ message: String) {
            let mark = node?.mark
            errors.append(Diagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, message: message))
        }

        mutating func note(_ node: Node?, _ message: String) {
            let mark = node?.mark
            notes.append(Diagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, severity: .warning, message: message))
        }

        // MARK: Processor

        /// Notes when `service.pipelines` exists and no pipeline lists the processor.
        mutating func checkPipelines(_ root: Node, id: String, key: Node) {
            guard case .mapping(let pipelines)? = root["service"]?["pipelines"] else { return }
            let used = pipelines.contains { _, pipeline in
                guard case .sequence(let processors)? = pipeline["processors"] else { return false }
                return processors.contains { $0.string == id }
            }
            if !used {
                note(key, "processor '\(id)' is not used by any pipeline under service.pipelines, so the Collector does not run it")
            }
        }

        mutating func convertProcessor(_ value: Node, key: Node, id: String) -> [Item] {
            guard case .mapping(let settings) = value else {
                if case .scalar(let s) = value, s.string.isEmpty || CollectorImport.tagName(value) == .null {
                    note(key, "processor '\(id)' has no settings, so no policies to import")
                } else {
                    note(value, "processor '\(id)' settings must be a mapping; nothing imported")
                }
                return []
            }
            var items: [Item] = []
            var sawPolicies = false
            for (keyNode, valueNode) in settings {
                let name = keyNode.string ?? ""
                if name == "policies" {
                    sawPolicies = true
                    items = convertPolicyList(valueNode, key: keyNode, parent: nil).items
                } else {
                    settingNote(name, keyNode: keyNode, value: valueNode)
                }
            }
            if !sawPolicies { note(key, "processor '\(id)' has no 'policies'") }
            return items
        }

        /// A processor setting: which Tailgate configuration key corresponds, as a snippet when there is one.
        mutating func settingNote(_ name: String, keyNode: Node, value: Node) {
            let written = value.scalar.map { $0.string } ?? "…"
            let prefix = "'\(name)' is a processor setting, not a policy"
            let message: String
            switch name {
            case "decision_wait":
                message = "\(prefix); the closest Tailgate configuration key is buffer.idle_timeout (decide after this long "
                    + "without a new span; buffer.max_trace_age bounds the time from the first span): "
                    + "`buffer: {idle_timeout: \(written)}`"
            case "decision_wait_after_root_received":
                message = "\(prefix); it corresponds to Tailgate's configuration key buffer.wait_after_root: "
                    + "`buffer: {wait_after_root: \(written)}`"
            case "num_traces":
                message = "\(prefix); no direct equivalent: Tailgate bounds the buffered bytes, not the number of "
                    + "traces, and over the bound decides the oldest traces early instead of dropping them: "
                    + "`buffer: {max_buffered_bytes: 512MiB}`"
            case "expected_new_traces_per_sec":
                message = "\(prefix); no equivalent needed: it only pre-sizes the Collector's memory; Tailgate's buffer grows as needed"
            case "decision_cache":
                let sizes = ["sampled_cache_size", "non_sampled_cache_size"].compactMap { value[$0]?.string }
                    .compactMap { Int($0.replacingOccurrences(of: "_", with: "")) }
                let largest = sizes.max() ?? 0
                let off = !sizes.isEmpty && largest == 0 ? "; the Collector's cache is off (size 0), Tailgate always remembers decisions" : ""
                message = "\(prefix); it corresponds to Tailgate's configuration key buffer.decision_cache_size (trace IDs of "
                    + "kept and of dropped traces remembered for late spans, up to this many each)\(off): "
                    + "`buffer: {decision_cache_size: \(largest > 0 ? String(largest) : "100000")}`"
            case "sample_on_first_match":
                message = "\(prefix); no equivalent needed: Tailgate evaluates the policies in order and records the first "
                    + "one that keeps a trace; decisions are the same, since any policy keeping a trace keeps it"
            case "maximum_trace_size_bytes":
                message = "\(prefix); no direct equivalent: Tailgate bounds a trace by its span count and decides a trace "
                    + "reaching it at once instead of dropping it: `buffer: {max_spans_per_trace: 10000}`"
            case "drop_pending_traces_on_shutdown":
                message = "\(prefix); no equivalent: on shutdown Tailgate always decides every buffered trace by policy and "
                    + "flushes the kept ones, for at most forwarder.shutdown_timeout: `forwarder: {shutdown_timeout: 10s}`"
            case "block_on_overflow":
                message = "\(prefix); no equivalent needed: Tailgate never drops undecided traces when full; over "
                    + "buffer.max_buffered_bytes it decides the oldest early, and while its forward queue is full it answers "
                    + "with retryable errors: `buffer: {max_buffered_bytes: 512MiB}`"
            default:
                var text = "'\(name)' is not a tail_sampling setting known to the importer; ignored"
                if let hint = suggestion(for: name, among: CollectorImport.processorSettings) {
                    text += "; did you mean '\(hint)'?"
                }
                message = text
            }
            note(keyNode, message)
        }

        // MARK: Policies

        struct ListResult {
            var items: [Item] = []
            var kept = 0
            var removedNames: [String] = []
        }

        mutating func convertPolicyList(_ node: Node, key: Node, parent: Parent?) -> ListResult {
            var result = ListResult()
            guard case .sequence(let entries) = node else {
                let whose = parent.map { " of policy '\($0.name)'" } ?? ""
                note(key, "'\(key.string ?? "")'\(whose) must be a list of policies; nothing imported from it")
                return result
            }
            for (index, entry) in entries.enumerated() {
                let converted = convertPolicy(entry, index: index + 1, parent: parent)
                result.items.append(converted.item)
                if converted.item.value != nil {
                    result.kept += 1
                } else if let name = converted.name {
                    result.removedNames.append(name)
                }
            }
            return result
        }

        /// What leaving a sub-policy out does to the policy containing it.
        func consequence(_ parent: Parent?) -> (note: String, comment: String) {
            guard let parent else { return ("", "") }
            switch parent.type {
            case "and": return ("; the 'and' policy '\(parent.name)' now matches more traces", "; '\(parent.name)' now matches more traces")
            case "drop": return ("; the 'drop' policy '\(parent.name)' now drops more traces", "; '\(parent.name)' now drops more traces")
            case "composite": return ("; the 'composite' policy '\(parent.name)' no longer samples what it matched",
                                      "; '\(parent.name)' no longer samples what it matched")
            default: return ("", "")
            }
        }

        func label(_ name: String, _ parent: Parent?) -> String {
            parent.map { "policy '\(name)' in '\($0.name)'" } ?? "policy '\(name)'"
        }

        /// One policy; an item without a value when it is left out. `name` is the name it was written with.
        mutating func convertPolicy(_ node: Node, index: Int, parent: Parent?) -> (item: Item, name: String?) {
            let (afterNote, afterComment) = consequence(parent)
            guard case .mapping(let fields) = node else {
                let whose = parent.map { " of '\($0.name)'" } ?? ""
                note(node, "entry \(index)\(whose) is not a policy (a mapping with name and type); left out\(afterNote)")
                return (Item(comments: ["left out entry \(index): not a policy\(afterComment)"], value: nil), nil)
            }

            var nameNode: Node? = nil
            var typeNode: Node? = nil
            var blocks: [(key: String, keyNode: Node, value: Node)] = []
            for (keyNode, value) in fields {
                switch keyNode.string {
                case "name": nameNode = value
                case "type": typeNode = value
                default: blocks.append((keyNode.string ?? "", keyNode, value))
                }
            }

            var comments: [String] = []
            let name: String
            if let written = nameNode?.scalar?.string, !written.isEmpty {
                name = written
            } else {
                name = parent.map { "\($0.name)-\(index)" } ?? "policy-\(index)"
                note(nameNode ?? node, "policy \(index)\(parent.map { " of '\($0.name)'" } ?? "") has no name; named '\(name)'")
                comments.append("named '\(name)': it had no name")
            }
            let what = label(name, parent)

            guard let typeNode, let type = typeNode.scalar?.string, !type.isEmpty else {
                note(node, "\(what) has no 'type'; left out\(afterNote)")
                return (Item(comments: comments + ["left out '\(name)': no type\(afterComment)"], value: nil), nameNode == nil ? nil : name)
            }
            if let unsupported = CollectorImport.unsupportedTypes.first(where: { $0.type == type }) {
                note(node, "\(what) (\(type)) not imported: \(unsupported.reason)\(afterNote)")
                return (Item(comments: comments + ["left out '\(name)': \(type) is not supported\(afterComment)"], value: nil), name)
            }
            guard let spec = CollectorImport.translations.first(where: { $0.collectorType == type }) else {
                var message = "\(what) not imported: unknown policy type '\(type)'"
                if let hint = suggestion(for: type, among: CollectorImport.translations.map(\.collectorType)) {
                    message += "; did you mean '\(hint)'?"
                }
                note(node, message + afterNote)
                return (Item(comments: comments + ["left out '\(name)': unknown type '\(type)'\(afterComment)"], value: nil), name)
            }

            let knownBlocks = CollectorImport.translations.map(\.collectorType) + CollectorImport.unsupportedTypes.map(\.type)
            var block: (keyNode: Node, value: Node)? = nil
            for entry in blocks {
                if entry.key == type {
                    block = (entry.keyNode, entry.value)
                } else if knownBlocks.contains(entry.key) {
                    note(entry.keyNode, "\(what): ignored the '\(entry.key)' settings, the policy's type is '\(type)' (the Collector ignores them too)")
                    comments.append("dropped the unused '\(entry.key)' settings")
                } else {
                    var message = "\(what): dropped unknown key '\(entry.key)'"
                    if let hint = suggestion(for: entry.key, among: ["name", "type"] + knownBlocks) {
                        message += "; did you mean '\(hint)'?"
                    }
                    note(entry.keyNode, message)
                    comments.append("dropped unknown key '\(entry.key)'")
                }
            }

            let tailgateType = spec.policy.typeName
            var out: [(key: String, value: Out)] = [
                ("name", .scalar(CollectorImport.renderString(name))),
                ("type", .scalar(CollectorImport.renderString(tailgateType))),
            ]
            let context = Context(name: name, type: type, what: what)
            switch collectorOutcome(block, policy: node, context: context) {
            case nil:
                break
            case .refused(let at, let message):
                fail(at, "\(what) (\(type)): \(message)")
                return (Item(comments: comments, value: nil), name)
            case .standIn(let standIn, let at, let reason, let comment):
                note(at ?? node, "\(what) (\(type)): \(reason); written as \(standIn.description)")
                comments.append("\(comment); written as \(standIn.description)")
                out[1] = ("type", .scalar(CollectorImport.renderString(standIn.type)))
                if let settings = standIn.settings { out.append((standIn.type, settings)) }
                return (Item(comments: comments, value: .mapping(out)), name)
            }
            switch convertBlock(block, spec: spec.keys, policy: node, context: context, comments: &comments) {
            case .omit(let reason):
                note(node, "\(what) (\(type)) not imported: \(reason)\(afterNote)")
                return (Item(comments: comments + ["left out '\(name)': \(reason)\(afterComment)"], value: nil), name)
            case .keep(let settings):
                if let settings { out.append((tailgateType, settings)) }
            }
            if type == "probabilistic" {
                note(node, "\(what) (probabilistic): Tailgate hashes trace IDs with XXH3 where the Collector uses FNV-1a, "
                    + "so the same share of traces is kept but not the same traces")
                comments.append("hashed with XXH3, not FNV-1a: same rate, different traces")
            }
            return (Item(comments: comments, value: .mapping(out)), name)
        }

        struct Context {
            var name: String
            var type: String
            var what: String
        }

        enum BlockResult {
            case keep(Out?)
            case omit(String)
        }

        /// The type's settings: known keys carried over as written, unknown ones dropped with a note.
        mutating func convertBlock(_ block: (keyNode: Node, value: Node)?, spec: [(key: String, kind: ValueKind)], policy: Node,
                                   context: Context, comments: inout [String]) -> BlockResult {
            let isCombinator = spec.contains { $0.kind == .policies || $0.kind == .policy }
            var entries: [(key: String, keyNode: Node, value: Node)] = []
            if let block {
                if case .mapping(let mapping) = block.value {
                    entries = mapping.map { ($0.key.string ?? "", $0.key, $0.value) }
                } else if !isEmpty(block.value) {
                    note(block.keyNode, "\(context.what): the '\(context.type)' settings must be a mapping; dropped")
                    comments.append("dropped the '\(context.type)' settings: not a mapping")
                }
            }
            if isCombinator {
                let subKey = spec.first { $0.kind == .policies || $0.kind == .policy }!.key
                if !entries.contains(where: { $0.key == subKey }) {
                    return .omit("it has no '\(subKey)'")
                }
            } else if entries.isEmpty {
                if !spec.isEmpty {
                    note(block?.keyNode ?? policy, "\(context.what) (\(context.type)) has no settings: the Collector uses zero values, "
                        + "Tailgate asks for them; set them explicitly")
                    comments.append("no '\(context.type)' settings: set them explicitly")
                }
                return .keep(nil)
            }

            // Sub-policies first: policy_order and rate_allocation must forget the ones left out.
            let parent = Parent(name: context.name, type: context.type)
            let firstSubNote = notes.count
            var subPolicies: [String: (out: Out?, removed: [String])] = [:]
            // Sub-policies as written and as imported, and their names (for `rate_allocation`).
            var subPolicyCount = (written: 0, kept: 0)
            var subPolicyNames: [String] = []
            for entry in entries {
                guard let kind = spec.first(where: { $0.key == entry.key })?.kind else { continue }
                switch kind {
                case .policies:
                    let list = convertPolicyList(entry.value, key: entry.keyNode, parent: parent)
                    subPolicies[entry.key] = (list.kept > 0 ? .sequence(list.items) : nil, list.removedNames)
                    if case .sequence(let written) = entry.value {
                        subPolicyCount = (written.count, list.kept)
                        subPolicyNames = written.compactMap { $0["name"]?.string }
                    }
                case .policy:
                    let single = convertSinglePolicy(entry.value, key: entry.keyNode, parent: parent)
                    comments += single.comments
                    subPolicies[entry.key] = (single.out, [])
                default:
                    break
                }
            }
            for (key, sub) in subPolicies where sub.out == nil {
                // The notes on its sub-policies must not say what leaving them out does to this policy: it is gone.
                let suffix = consequence(parent).note
                for index in firstSubNote..<notes.count where !suffix.isEmpty && notes[index].message.hasSuffix(suffix) {
                    notes[index].message.removeLast(suffix.count)
                }
                return .omit(key == "not_sub_policy" ? "its sub-policy was left out" : "none of its sub-policies could be imported")
            }
            let removed = subPolicies.values.flatMap(\.removed)

            var out: [(key: String, value: Out)] = []
            for entry in entries {
                guard let kind = spec.first(where: { $0.key == entry.key })?.kind else {
                    let qualified = "\(context.type).\(entry.key)"
                    if let reason = CollectorImport.droppedKeys[qualified] {
                        note(entry.keyNode, "\(context.what): dropped '\(entry.key)': \(reason)")
                        comments.append("dropped '\(entry.key)' (not needed)")
                    } else {
                        var message = "\(context.what): dropped unknown key '\(entry.key)' in \(context.type)"
                        if spec.isEmpty {
                            message += " (\(context.type) takes no settings)"
                        } else if let hint = suggestion(for: entry.key, among: spec.map(\.key)) {
                            message += "; did you mean '\(hint)'?"
                        } else {
                            message += "; expected one of: \(spec.map(\.key).joined(separator: ", "))"
                        }
                        note(entry.keyNode, message)
                        comments.append("dropped unknown key '\(entry.key)'")
                    }
                    continue
                }
                if kind != .policies, kind != .policy, isEmpty(entry.value) {
                    note(entry.keyNode, "\(context.what): '\(entry.key)' has no value; left out")
                    comments.append("left out '\(entry.key)': no value")
                    continue
                }
                switch kind {
                case .number where context.type == "probabilistic" && entry.key == "sampling_percentage":
                    let clamped = percent(entry.value, key: entry.key, context: context, comments: &comments,
                                          above: "the Collector keeps every trace at 100 or more",
                                          below: "the Collector's threshold is then 0, which keeps (practically) no trace")
                    out.append((entry.key, clamped?.out ?? typedValue(entry.value, kind: kind, key: entry.key, context: context, comments: &comments)))
                case .string, .number, .bool:
                    out.append((entry.key, typedValue(entry.value, kind: kind, key: entry.key, context: context, comments: &comments)))
                case .strings:
                    var value = stringList(entry.value, key: entry.key, context: context, comments: &comments)
                    if entry.key == "policy_order", !removed.isEmpty, case .sequence(let items) = value {
                        value = .sequence(items.filter { item in
                            guard case .scalar(let text)? = item.value else { return true }
                            return !removed.contains { CollectorImport.renderString($0) == text }
                        })
                        let gone = removed.map { "'\($0)'" }.joined(separator: ", ")
                        note(entry.keyNode, "\(context.what): removed \(gone) from policy_order, left out above")
                        comments.append("removed \(gone) from policy_order")
                    }
                    out.append((entry.key, value))
                case .policies, .policy:
                    if let sub = subPolicies[entry.key]?.out { out.append((entry.key, sub)) }
                case .rateAllocation:
                    out.append((entry.key, rateAllocation(entry.value, key: entry.keyNode, removed: removed, subPolicies: subPolicyCount,
                                                          names: subPolicyNames, context: context, comments: &comments)))
                }
            }
            return .keep(.mapping(out))
        }

        /// `not_sub_policy`: one policy (a one-item list is accepted).
        /// Its comments go above the policy containing it (a mapping value has no place for them).
        mutating func convertSinglePolicy(_ node: Node, key: Node, parent: Parent) -> (out: Out?, comments: [String]) {
            var single = node
            if case .sequence(let items) = node {
                guard items.count == 1, let only = items.first else {
                    note(key, "'not_sub_policy' of policy '\(parent.name)' must be one policy, not a list of \(items.count)")
                    return (nil, [])
                }
                note(key, "'not_sub_policy' of policy '\(parent.name)' is one policy, not a list; its single item was used")
                single = only
            }
            let converted = convertPolicy(single, index: 1, parent: parent)
            guard let value = converted.item.value else { return (nil, []) }
            let name = converted.name ?? "\(parent.name)-1"
            return (value, converted.item.comments.map { "'\(name)': \($0)" })
        }

        /// `rate_allocation`: entries of sub-policies left out (or that do not exist, which the Collector ignores) are
        /// removed; percents outside 0–100 are clamped to what the Collector applies; a `percent: 0` (the Collector's
        /// default share, the total divided by the number of sub-policies) is written out when sub-policies were left
        /// out, since Tailgate would divide by fewer. Shares adding up to more than 100 cannot be translated.
        mutating func rateAllocation(_ node: Node, key: Node, removed: [String], subPolicies: (written: Int, kept: Int), names: [String],
                                     context: Context, comments: inout [String]) -> Out {
            guard case .sequence(let entries) = node else {
                note(key, "\(context.what): 'rate_allocation' should be a list of {policy, percent}; copied as written")
                return copy(node, context: context, comments: &comments)
            }
            var items: [Item] = []
            var shares: [String: Double] = [:]
            var defaultShares = false
            for entry in entries {
                guard case .mapping(let fields) = entry else {
                    note(entry, "\(context.what): a rate_allocation entry should be a mapping {policy, percent}; copied as written")
                    items.append(Item(comments: [], value: copy(entry, context: context, comments: &comments)))
                    continue
                }
                let policy = entry["policy"]?.string
                if let policy, removed.contains(policy) {
                    note(entry, "\(context.what): removed the rate_allocation of '\(policy)', left out above")
                    comments.append("removed the rate_allocation of '\(policy)'")
                    continue
                }
                if let policy, !names.isEmpty, !names.contains(policy) {
                    note(entry, "\(context.what): removed the rate_allocation of '\(policy)', which is not one of its sub-policies "
                        + "(the Collector ignores it)")
                    comments.append("removed the rate_allocation of '\(policy)': no such sub-policy")
                    continue
                }
                var out: [(key: String, value: Out)] = []
                for (k, v) in fields {
                    switch k.string {
                    case "policy": out.append(("policy", typedValue(v, kind: .string, key: "policy", context: context, comments: &comments)))
                    case "percent":
                        guard var (value, rendered) = percent(v, key: "percent", context: context, comments: &comments,
                            above: "the Collector caps each sub-policy at max_total_spans_per_second",
                            below: "the Collector gives a percent not above 0 the default share, as Tailgate's percent 0 does") else {
                            out.append(("percent", typedValue(v, kind: .number, key: "percent", context: context, comments: &comments)))
                            continue
                        }
                        if value <= 0, subPolicies.written > 0, subPolicies.kept != subPolicies.written {
                            let share = (100 / Double(subPolicies.written) * 10_000).rounded(.down) / 10_000
                            let whose = policy.map { " of '\($0)'" } ?? ""
                            note(v, "\(context.what): percent 0\(whose) is the Collector's default share, max_total_spans_per_second / "
                                + "\(subPolicies.written) sub-policies; written as \(formatNumber(share)), since sub-policies were left out "
                                + "(Tailgate's percent 0 would divide by \(subPolicies.kept))")
                            comments.append("percent 0\(whose) written as the Collector's default share, \(formatNumber(share))")
                            (value, rendered) = (share, .scalar(formatNumber(share)))
                        } else if value <= 0 {
                            value = 100 / Double(max(subPolicies.kept, 1))
                            defaultShares = true
                        }
                        out.append(("percent", rendered))
                        if let policy { shares[policy] = value }
                    default:
                        let name = k.string ?? ""
                        var message = "\(context.what): dropped unknown key '\(name)' in rate_allocation"
                        if let hint = suggestion(for: name, among: ["policy", "percent"]) { message += "; did you mean '\(hint)'?" }
                        note(k, message)
                        comments.append("dropped unknown key '\(name)'")
                    }
                }
                items.append(Item(comments: [], value: .mapping(out)))
            }
            let total = shares.values.reduce(0, +)
            if total > 100 + 1e-9 {
                fail(key, "\(context.what) (composite): the rate_allocation shares add up to \(formatNumber((total * 100).rounded() / 100)) % "
                    + "of max_total_spans_per_second\(defaultShares ? " (a percent of 0 counts as the default share, 100 / \(subPolicies.kept))" : ""); "
                    + "the Collector lets the sub-policies together exceed the total, Tailgate does not: lower the percents so that "
                    + "they add up to at most 100")
            }
            return .sequence(items)
        }

        /// A percentage the Collector accepts outside 0–100, clamped to the value it acts as (with a note), and its
        /// value; nil when it is not a number.
        mutating func percent(_ node: Node, key: String, context: Context, comments: inout [String], above: String, below: String)
            -> (value: Double, out: Out)? {
            guard case .scalar(let scalar) = node, CollectorImport.tagName(node) != .str,
                  [.int, .float].contains(CollectorImport.plainTag(scalar.string)),
                  let value = Double(scalar.string.replacingOccurrences(of: "_", with: "")), value.isFinite else { return nil }
            let text = scalar.string
            if value > 100 {
                note(node, "\(context.what): \(key) \(text) is above 100; written as 100: \(above)")
                comments.append("\(key) \(text) written as 100, what the Collector applies")
                return (100, .scalar("100"))
            }
            if value < 0 {
                note(node, "\(context.what): \(key) \(text) is below 0; written as 0: \(below)")
                comments.append("\(key) \(text) written as 0, what the Collector applies")
                return (0, .scalar("0"))
            }
            return (value, .scalar(text))
        }

        // MARK: What the Collector does with what Tailgate rejects

        /// A policy written in place of one Tailgate cannot take as written, doing what the Collector's does.
        struct StandIn {
            var type: String
            var settings: Out?
            var description: String

            static let never = StandIn(type: ProbabilisticPolicy.typeName, settings: .mapping([(percentageKey, .scalar("0"))]),
                                       description: "a \(ProbabilisticPolicy.typeName) policy of 0 %, which keeps no trace either")
            static let always = StandIn(type: AlwaysSamplePolicy.typeName, settings: nil,
                                        description: "\(AlwaysSamplePolicy.typeName), which keeps every trace too")
            /// The probabilistic policy's percentage, as its `keys` spell it.
            static let percentageKey = "sampling_percentage"
        }

        enum Outcome {
            /// Written as `StandIn`, with a note at `at`.
            case standIn(StandIn, at: Node?, reason: String, comment: String)
            /// The Collector itself refuses the policy: the import fails.
            case refused(at: Node?, message: String)
        }

        /// nil when the policy's settings can be carried over as written.
        func collectorOutcome(_ block: (keyNode: Node, value: Node)?, policy: Node, context: Context) -> Outcome? {
            // Only settings the Collector reads as a mapping (or zero values); other shapes are noted by convertBlock.
            let settings = block?.value
            if let settings, !isEmpty(settings) {
                guard case .mapping = settings else { return nil }
            }
            func value(_ key: String) -> Node? {
                guard let settings, case .mapping = settings, let v = settings[key], !isEmpty(v) else { return nil }
                return v
            }
            func noList(_ key: String) -> Bool {
                guard let v = value(key) else { return true }
                if case .sequence(let items) = v { return items.isEmpty }
                return false
            }
            func integer(_ key: String) -> Int64? {
                value(key)?.scalar.flatMap { Int64($0.string.replacingOccurrences(of: "_", with: "")) }
            }
            let at = block?.keyNode ?? policy
            switch context.type {
            case "string_attribute", "trace_state":
                guard noList("values") else { return nil }
                let at = value("values") ?? at
                let invert = value("invert_match")?.scalar.map { ["true", "yes", "on"].contains($0.string.lowercased()) } ?? false
                if context.type == "string_attribute" && invert {
                    return .standIn(.always, at: at, reason: "'values' is empty and invert_match is set, so the Collector's policy "
                        + "matches every trace (no value can exclude one); Tailgate asks for at least one value",
                        comment: "no 'values', with invert_match: matches every trace")
                }
                return .standIn(.never, at: at, reason: "'values' is empty, so the Collector's policy matches no trace; Tailgate "
                    + "asks for at least one value", comment: "no 'values': matches no trace")
            case "status_code":
                guard noList("status_codes") else { return nil }
                return .refused(at: value("status_codes") ?? at, message: "'status_codes' is empty: the Collector refuses to start "
                    + "with it (\"expected at least one status code to filter on\"), so there is nothing to import; list at least one "
                    + "of ERROR, OK, UNSET")
            case "latency":
                guard let lower = integer("threshold_ms"), let upper = integer("upper_threshold_ms"), upper != 0, upper <= lower else {
                    return nil
                }
                return .standIn(.never, at: value("upper_threshold_ms"), reason: "upper_threshold_ms (\(upper)) is not above "
                    + "threshold_ms (\(lower)); with an upper bound the Collector keeps durations above threshold_ms and at most "
                    + "upper_threshold_ms, so its policy matches no trace", comment: "the latency bounds leave no room: matches no trace")
            default:
                return nil
            }
        }

        mutating func stringList(_ node: Node, key: String, context: Context, comments: inout [String]) -> Out {
            guard case .sequence(let entries) = node else {
                note(node, "\(context.what): '\(key)' should be a list; copied as written")
                comments.append("'\(key)' is not a list")
                return copy(node, context: context, comments: &comments)
            }
            return .sequence(entries.map { Item(comments: [], value: typedValue($0, kind: .string, key: key, context: context, comments: &comments)) })
        }

        /// A scalar carried over as written: strings quoted only when needed, numbers and booleans as their text.
        mutating func typedValue(_ node: Node, kind: ValueKind, key: String, context: Context, comments: inout [String]) -> Out {
            guard case .scalar(let scalar) = node else {
                note(node, "\(context.what): '\(key)' should be a single value; copied as written")
                comments.append("'\(key)' is not a single value")
                return copy(node, context: context, comments: &comments)
            }
            let text = scalar.string
            checkEnvironment(text, node: node, context: context, comments: &comments)
            switch kind {
            case .number, .bool:
                let expected: [Tag.Name] = kind == .number ? [.int, .float] : [.bool]
                if CollectorImport.isPlainSafe(text), expected.contains(CollectorImport.plainTag(text)) {
                    // A whole number written as a float (`3e4`, `30000.0`) is the integer the Collector reads: written
                    // as one, it suits the keys that take only integers as well as those that take any number.
                    if kind == .number, CollectorImport.plainTag(text) == .float, let v = Double(text), v.rounded() == v,
                       abs(v) < 9e15 {
                        return .scalar(String(Int64(v)))
                    }
                    return .scalar(text)
                }
                note(node, "\(context.what): '\(key)' should be \(kind == .number ? "a number" : "true or false"), got '\(text)'; copied as written")
                comments.append("'\(key)' is not \(kind == .number ? "a number" : "true or false")")
                return .scalar(CollectorImport.renderString(text))
            default:
                return .scalar(CollectorImport.renderString(text))
            }
        }

        /// Any value, as written (for shapes the Collector would not accept either).
        mutating func copy(_ node: Node, context: Context, comments: inout [String]) -> Out {
            switch node {
            case .scalar(let scalar):
                checkEnvironment(scalar.string, node: node, context: context, comments: &comments)
                if CollectorImport.tagName(node) != .str, CollectorImport.isPlainSafe(scalar.string),
                   CollectorImport.plainTag(scalar.string) == CollectorImport.tagName(node) {
                    return .scalar(scalar.string)
                }
                if CollectorImport.tagName(node) == .null { return .scalar("null") }
                return .scalar(CollectorImport.renderString(scalar.string))
            case .mapping(let mapping):
                return .mapping(mapping.map { (CollectorImport.renderString($0.key.string ?? ""), copy($0.value, context: context, comments: &comments)) })
            case .sequence(let sequence):
                return .sequence(sequence.map { Item(comments: [], value: copy($0, context: context, comments: &comments)) })
            case .alias:
                return .scalar("null")
            }
        }

        mutating func checkEnvironment(_ text: String, node: Node, context: Context, comments: inout [String]) {
            guard text.contains("${") else { return }
            note(node, "\(context.what): '\(text)' is a Collector environment reference, which Tailgate does not expand; "
                + "replace it with its value")
            comments.append("replace '\(text)' with its value")
        }

        func isEmpty(_ node: Node) -> Bool {
            if case .scalar = node { return CollectorImport.tagName(node) == .null }
            return false
        }
    }
}

// MARK: - Rendering

extension CollectorImport {
    static func render(_ items: [Item], file: String, processor: String, noteCount: Int) -> String {
        var lines = ["# Tailgate policies imported from \(oneLine(file)), processor '\(oneLine(processor))' (tailgate import-otel)."]
        if noteCount > 0 {
            lines.append("# The import printed \(noteCount) note\(noteCount == 1 ? "" : "s"); '# imported:' lines mark the policies concerned.")
        }
        if items.allSatisfy({ $0.value == nil }) {
            for item in items { lines += item.comments.map { "# imported: \(oneLine($0))" } }
            lines.append("policies: []")
        } else {
            lines.append("policies:")
            emitSequence(items, indent: 2, into: &lines, blankBetween: true)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Text made safe for a comment line: control characters (line breaks) become spaces.
    static func oneLine(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : $0 }))
    }

    static func emitMapping(_ entries: [(key: String, value: Out)], indent: Int, into lines: inout [String]) {
        let pad = String(repeating: " ", count: indent)
        for (key, value) in entries {
            switch value {
            case .scalar(let text):
                lines.append("\(pad)\(key): \(text)")
            case .mapping(let inner) where inner.isEmpty:
                lines.append("\(pad)\(key): {}")
            case .mapping(let inner):
                lines.append("\(pad)\(key):")
                emitMapping(inner, indent: indent + 2, into: &lines)
            case .sequence(let items) where items.allSatisfy({ $0.value == nil }):
                lines += items.flatMap(\.comments).map { "\(pad)# imported: \(oneLine($0))" }
                lines.append("\(pad)\(key): []")
            case .sequence(let items):
                lines.append("\(pad)\(key):")
                emitSequence(items, indent: indent + 2, into: &lines, blankBetween: false)
            }
        }
    }

    static func emitSequence(_ items: [Item], indent: Int, into lines: inout [String], blankBetween: Bool) {
        let pad = String(repeating: " ", count: indent)
        for (index, item) in items.enumerated() {
            if blankBetween, index > 0 { lines.append("") }
            lines += item.comments.map { "\(pad)# imported: \(oneLine($0))" }
            guard let value = item.value else { continue }
            var inner: [String] = []
            switch value {
            case .scalar(let text):
                lines.append("\(pad)- \(text)")
                continue
            case .mapping(let entries) where entries.isEmpty:
                lines.append("\(pad)- {}")
                continue
            case .sequence(let nested) where nested.allSatisfy({ $0.value == nil }):
                lines.append("\(pad)- []")
                continue
            case .mapping(let entries):
                emitMapping(entries, indent: indent + 2, into: &inner)
            case .sequence(let nested):
                emitSequence(nested, indent: indent + 2, into: &inner, blankBetween: false)
            }
            let first = inner[0].dropFirst(indent + 2)
            if first.hasPrefix("#") {
                lines.append("\(pad)-")
                lines += inner
            } else {
                lines.append("\(pad)- \(first)")
                lines += inner.dropFirst()
            }
        }
    }

    // MARK: Scalars

    /// The resolved tag of a parsed node (`!!str` for quoted scalars).
    static func tagName(_ node: Node) -> Tag.Name {
        Tag.Name(rawValue: node.tag.rawValue)
    }

    /// What a plain (unquoted) scalar with this text reads as.
    static func plainTag(_ text: String) -> Tag.Name {
        Resolver.default.resolveTag(of: Node(text))
    }

    /// Whether `text` can be written unquoted in block context and read back as the same text.
    static func isPlainSafe(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, let last = text.unicodeScalars.last else { return false }
        if first == " " || last == " " || first == "\t" || last == "\t" { return false }
        if ",[]{}#&*!|>'\"%@`".unicodeScalars.contains(first) { return false }
        // `-`, `?` and `:` start a plain scalar only when a non-space follows (`-1` does, `- x` does not).
        if "-?:".unicodeScalars.contains(first) {
            let second = text.unicodeScalars.dropFirst().first
            if second == nil || second == " " { return false }
        }
        if text.contains(": ") || text.hasSuffix(":") || text.contains(" #") { return false }
        return !text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || $0 == "\u{FEFF}" }
    }

    /// A string value: plain when YAML (1.1 or 1.2, any common parser) reads it back as the same string, else quoted.
    static func renderString(_ text: String) -> String {
        if needsQuotes(text) { return quote(text) }
        return text
    }

    static func needsQuotes(_ text: String) -> Bool {
        guard isPlainSafe(text) else { return true }
        if plainTag(text) != .str { return true }
        // Leading characters that are indicators in some position: quoted for any reader.
        if let first = text.unicodeScalars.first, "-?:~".unicodeScalars.contains(first) { return true }
        // Words some YAML 1.1 readers take as booleans or null, and anything that parses as a number.
        if ["y", "n", "null", "nil", "none"].contains(text.lowercased()) { return true }
        if Double(text) != nil || Int(text.replacingOccurrences(of: "_", with: "")) != nil { return true }
        // Colons, comments and regular expressions read more safely quoted.
        return text.unicodeScalars.contains { ":#^$*+?()[]{}|\\".unicodeScalars.contains($0) }
    }

    /// Single quotes when the text is printable on one line, double quotes with escapes otherwise.
    static func quote(_ text: String) -> String {
        let printable = !text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || $0 == "\u{FEFF}" }
        if printable { return "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F || scalar == "\u{FEFF}":
                out += String(format: "\\u%04X", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
