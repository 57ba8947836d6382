// What a span says about an LLM call, an agent run or a tool call, read by the scanner from every span whatever the
// policies (the GenAI metrics count all traffic). Three naming schemes are read: the OpenTelemetry GenAI conventions
// (`gen_ai.*`, current and deprecated names), OpenInference (`llm.token_count.*`, `openinference.span.kind`: what
// Phoenix/Arize users emit) and OpenLLMetry (`llm.usage.total_tokens`, `llm.request.type`, `traceloop.span.kind`).
// Within one span the names are ranked, so a value reported under two names is counted once.

/// The GenAI facts of one span (only spans that carry any of the attributes below have one).
package struct GenAISpan: Sendable, Equatable {
    /// What the span's usage means for the trace's token count (see `GenAILedger`).
    package enum Role: UInt8, Sendable {
        /// A model call (chat, text_completion, generate_content, embeddings; a span with usage and no operation name
        /// counts as one): its usage always counts.
        case inference = 0
        /// An agent, workflow or chain (or any other operation) whose usage may be the sum of its descendants' calls.
        case aggregate = 1
    }

    /// Token lanes of `tokens`.
    package enum Lane {
        package static let input = 0
        package static let output = 1
        /// Subset of input.
        package static let cacheRead = 2
        /// Subset of input.
        package static let cacheCreation = 3
        /// Subset of output.
        package static let reasoning = 4
        /// Only a total was reported (neither input nor output).
        package static let totalOnly = 5
    }

    package var spanID: UInt64
    package var parentSpanID: UInt64
    /// The span's names, shared with every span that has the same ones (see `GenAINames`).
    package var names: GenAINames
    package var durationNanos: UInt64
    /// As reported (never negative), by `Lane`.
    package var tokens: SIMD8<Int64>
    package var role: Role
    /// The span's status is ERROR.
    package var statusError: Bool

    /// Normalized operation: the `gen_ai.operation.name` value, else mapped from OpenInference or OpenLLMetry span
    /// kinds (`chat`, `embeddings`, `invoke_agent`, `execute_tool`, `workflow`, `chain`, …); "" when unknown.
    package var operation: String { names.operation }
    package var provider: String { names.provider }
    /// `gen_ai.response.model`, else `gen_ai.request.model`, else `llm.model_name`.
    package var model: String { names.model }
    /// `gen_ai.request.model` when it differs from `model` (filters match either).
    package var requestModel: String { names.requestModel }
    /// `error.type`; "" when absent.
    package var errorType: String { names.errorType }
    package var toolName: String { names.toolName }
    package var agentName: String { names.agentName }

    package init(spanID: UInt64 = 0, parentSpanID: UInt64 = 0, role: Role = .inference, operation: String = "",
                provider: String = "", model: String = "", requestModel: String = "", errorType: String = "",
                toolName: String = "", agentName: String = "", statusError: Bool = false, durationNanos: UInt64 = 0,
                tokens: SIMD8<Int64> = SIMD8()) {
        self.init(spanID: spanID, parentSpanID: parentSpanID, role: role,
                  names: GenAINames.of(operation: operation, provider: provider, model: model, requestModel: requestModel,
                                       errorType: errorType, toolName: toolName, agentName: agentName),
                  statusError: statusError, durationNanos: durationNanos, tokens: tokens)
    }

    package init(spanID: UInt64, parentSpanID: UInt64, role: Role, names: GenAINames, statusError: Bool,
                durationNanos: UInt64, tokens: SIMD8<Int64>) {
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.role = role
        self.names = names
        self.statusError = statusError
        self.durationNanos = durationNanos
        self.tokens = tokens
    }

    package var hasUsage: Bool { tokens != SIMD8() }
    /// The call failed: ERROR status or `error.type` set.
    package var failed: Bool { statusError || !errorType.isEmpty }
    /// A model call (counted in `tailgate_gen_ai_calls_total`).
    package var isModelCall: Bool { GenAIKeys.inferenceOperations.contains(operation) || (operation.isEmpty && hasUsage) }

    /// Operations whose usage is the model call's own.
    package static func role(operation: String, hasUsage: Bool) -> Role {
        if operation.isEmpty { return .inference }
        return GenAIKeys.inferenceOperations.contains(operation) ? .inference : .aggregate
    }
}

/// The attribute names read, ranked (lower rank wins within a span).
package enum GenAIKeys {
    package static let inferenceOperations: Set<String> = ["chat", "text_completion", "generate_content", "embeddings"]

    /// String fields first (lanes 0…10 of the scratch), then the numeric ones (contiguous, `input` first).
    enum Field: UInt8 {
        case operation, openInferenceKind, traceloopKind, requestType
        case provider, responseModel, requestModel, openInferenceModel
        case errorType, toolName, agentName
        case input, output, cacheRead, cacheCreation, reasoning, total
    }

    /// (key, field, rank within the field).
    static let table: [(String, Field, Int)] = [
        ("gen_ai.operation.name", .operation, 0),
        ("openinference.span.kind", .openInferenceKind, 0),
        ("traceloop.span.kind", .traceloopKind, 0),
        ("llm.request.type", .requestType, 0),
        ("gen_ai.provider.name", .provider, 0),
        ("gen_ai.system", .provider, 1),
        ("llm.provider", .provider, 2),
        ("llm.system", .provider, 3),
        ("gen_ai.response.model", .responseModel, 0),
        ("gen_ai.request.model", .requestModel, 0),
        ("llm.model_name", .openInferenceModel, 0),
        ("gen_ai.usage.input_tokens", .input, 0),
        ("gen_ai.usage.prompt_tokens", .input, 1),
        ("llm.token_count.prompt", .input, 2),
        ("gen_ai.usage.output_tokens", .output, 0),
        ("gen_ai.usage.completion_tokens", .output, 1),
        ("llm.token_count.completion", .output, 2),
        ("gen_ai.usage.cache_read.input_tokens", .cacheRead, 0),
        ("gen_ai.usage.cache_read_input_tokens", .cacheRead, 1),
        ("gen_ai.usage.input_tokens.cached", .cacheRead, 2),
        ("llm.token_count.prompt_details.cache_read", .cacheRead, 3),
        ("gen_ai.usage.cache_creation.input_tokens", .cacheCreation, 0),
        ("gen_ai.usage.cache_creation_input_tokens", .cacheCreation, 1),
        ("llm.token_count.prompt_details.cache_write", .cacheCreation, 2),
        ("gen_ai.usage.reasoning.output_tokens", .reasoning, 0),
        ("gen_ai.usage.output_tokens.reasoning", .reasoning, 1),
        ("llm.token_count.completion_details.reasoning", .reasoning, 2),
        ("gen_ai.usage.total_tokens", .total, 0),
        ("llm.usage.total_tokens", .total, 1),
        ("llm.token_count.total", .total, 2),
        ("error.type", .errorType, 0),
        ("gen_ai.tool.name", .toolName, 0),
        ("tool.name", .toolName, 1),
        ("gen_ai.agent.name", .agentName, 0),
        ("agent.name", .agentName, 1),
    ]

    /// Every key as bytes, grouped by length for the scanner's lookup.
    static let byLength: [[(key: [UInt8], field: Field, rank: Int)]] = {
        let longest = table.map { $0.0.utf8.count }.max() ?? 0
        var groups = Array(repeating: [(key: [UInt8], field: Field, rank: Int)](), count: longest + 1)
        for (key, field, rank) in table { groups[key.utf8.count].append((Array(key.utf8), field, rank)) }
        return groups
    }()

    /// The field of a key, if it is one of the table's. First bytes decide quickly for the common non-GenAI keys.
    @inline(__always)
    static func lookup(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) -> (field: Field, rank: Int)? {
        let n = range.count
        guard n >= 8, n < byLength.count else { return nil }
        let first = base[range.lowerBound]
        // g(en_ai.), l(lm.), o(peninference.), t(raceloop., tool.), e(rror.type), a(gent.name)
        guard first == 0x67 || first == 0x6C || first == 0x6F || first == 0x74 || first == 0x65 || first == 0x61 else { return nil }
        for candidate in byLength[n] {
            let equal = candidate.key.withUnsafeBytes { key in
                memcmpBytes(key.baseAddress!, base.baseAddress! + range.lowerBound, n)
            }
            if equal { return (candidate.field, candidate.rank) }
        }
        return nil
    }

    /// OpenInference span kinds as operations.
    static func operation(openInferenceKind kind: String) -> String {
        switch kind.uppercased() {
        case "LLM": "chat"
        case "EMBEDDING": "embeddings"
        case "AGENT": "invoke_agent"
        case "TOOL": "execute_tool"
        case "CHAIN": "chain"
        case "RETRIEVER": "retrieval"
        default: kind.lowercased()
        }
    }

    /// OpenLLMetry `traceloop.span.kind` values as operations.
    static func operation(traceloopKind kind: String) -> String {
        switch kind {
        case "agent": "invoke_agent"
        case "tool": "execute_tool"
        default: kind  // workflow, task
        }
    }

    /// OpenLLMetry `llm.request.type` values as operations.
    static func operation(requestType type: String) -> String {
        switch type {
        case "chat": "chat"
        case "completion": "text_completion"
        case "embedding": "embeddings"
        default: type
        }
    }
}

/// Per-span scratch of the scanner while it reads GenAI attributes: byte ranges and numbers in fixed lanes (no
/// allocation while the span is read); strings are made once, when the span ends, for the fields it has.
struct GenAIScratch {
    var seen = false
    /// Per string field (`Field.rawValue`): start and end of the value in the body, and the rank that set it.
    var starts = SIMD16<Int32>(repeating: 0)
    var ends = SIMD16<Int32>(repeating: 0)
    var stringRanks = SIMD16<Int8>(repeating: .max)
    /// Per numeric field (`Field.rawValue - Field.input.rawValue`): value and rank.
    var numbers = SIMD8<Int64>()
    var numberRanks = SIMD8<Int8>(repeating: .max)

    @inline(__always)
    mutating func take(_ field: GenAIKeys.Field, rank: Int, _ value: AnyValueView, _ base: UnsafeRawBufferPointer) {
        switch field {
        case .input, .output, .cacheRead, .cacheCreation, .reasoning, .total:
            let lane = Int(field.rawValue - GenAIKeys.Field.input.rawValue)
            guard Int8(rank) < numberRanks[lane], let v = value.integer(base) else { return }
            numbers[lane] = max(0, v)
            numberRanks[lane] = Int8(rank)
            seen = true
        default:
            let lane = Int(field.rawValue)
            guard Int8(rank) < stringRanks[lane], case .string(let r) = value.kind, !r.isEmpty else { return }
            starts[lane] = Int32(r.lowerBound)
            ends[lane] = Int32(min(r.upperBound, r.lowerBound + 128))  // a label value is never a document
            stringRanks[lane] = Int8(rank)
            seen = true
        }
    }

    func has(_ f: GenAIKeys.Field) -> Bool {
        f.rawValue >= GenAIKeys.Field.input.rawValue && f.rawValue <= GenAIKeys.Field.total.rawValue
            ? numberRanks[Int(f.rawValue - GenAIKeys.Field.input.rawValue)] != .max
            : stringRanks[Int(f.rawValue)] != .max
    }

    func span(_ base: UnsafeRawBufferPointer, spanID: UInt64, parent: UInt64, start: UInt64, end: UInt64, statusError: Bool) -> GenAISpan {
        func bytes(_ f: GenAIKeys.Field) -> UnsafeRawBufferPointer {
            let lane = Int(f.rawValue)
            guard stringRanks[lane] != .max else { return UnsafeRawBufferPointer(rebasing: base[0..<0]) }
            return UnsafeRawBufferPointer(rebasing: base[Int(starts[lane])..<Int(ends[lane])])
        }
        func s(_ f: GenAIKeys.Field) -> String { String(decoding: bytes(f), as: UTF8.self) }
        func n(_ f: GenAIKeys.Field) -> Int64 { numbers[Int(f.rawValue - GenAIKeys.Field.input.rawValue)] }
        var tokens = SIMD8<Int64>()
        tokens[GenAISpan.Lane.input] = n(.input)
        tokens[GenAISpan.Lane.output] = n(.output)
        tokens[GenAISpan.Lane.cacheRead] = n(.cacheRead)
        tokens[GenAISpan.Lane.cacheCreation] = n(.cacheCreation)
        tokens[GenAISpan.Lane.reasoning] = n(.reasoning)
        if !has(.input) && !has(.output) { tokens[GenAISpan.Lane.totalOnly] = n(.total) }
        let response = bytes(.responseModel), request = bytes(.requestModel)
        let model = !response.isEmpty ? response : (!request.isEmpty ? request : bytes(.openInferenceModel))
        let requestModel = request.count == model.count && (model.isEmpty || memcmpBytes(request.baseAddress!, model.baseAddress!, model.count))
            ? UnsafeRawBufferPointer(rebasing: base[0..<0]) : request
        let names: GenAINames
        if has(.operation) || !(has(.openInferenceKind) || has(.requestType) || has(.traceloopKind)) {
            names = GenAINamesInterner.shared.names((bytes(.operation), bytes(.provider), model, requestModel,
                                                     bytes(.errorType), bytes(.toolName), bytes(.agentName)))
        } else {
            // Operation named by another scheme's span kind (OpenInference, OpenLLMetry): mapped first.
            var operation = ""
            if has(.openInferenceKind) { operation = GenAIKeys.operation(openInferenceKind: s(.openInferenceKind)) }
            if operation.isEmpty, has(.requestType) { operation = GenAIKeys.operation(requestType: s(.requestType)) }
            if operation.isEmpty, has(.traceloopKind) { operation = GenAIKeys.operation(traceloopKind: s(.traceloopKind)) }
            names = GenAINames.of(operation: operation, provider: s(.provider), model: String(decoding: model, as: UTF8.self),
                                  requestModel: String(decoding: requestModel, as: UTF8.self), errorType: s(.errorType),
                                  toolName: s(.toolName), agentName: s(.agentName))
        }
        return GenAISpan(
            spanID: spanID, parentSpanID: parent, role: GenAISpan.role(operation: names.operation, hasUsage: tokens != SIMD8()),
            names: names, statusError: statusError, durationNanos: end > start ? end - start : 0, tokens: tokens)
    }
}
