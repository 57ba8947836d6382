import Synchronization
package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `conversation`: keeps or drops every turn (trace) of a conversation together. A conversation is named by the first
/// of `keys` a span carries (default `gen_ai.conversation.id`, then `session.id`; span attributes); a trace's
/// conversation is that of its first span naming one (`TraceSummary.conversation`, XXH3-64 of the ID).
///
/// - The draw: XXH3-64 of the conversation hash's 8 big-endian bytes, seeded with XXH3-64 of `hash_salt` (0 without),
///   is below `sampling_percentage / 100 × 2^64`. Every turn, instance and run gets the same draw.
/// - Traces naming no conversation (`without_conversation`): `trace_id` (default) draws on the trace-ID hash with the
///   same seed — exactly what a `probabilistic` policy with the same salt and percentage does, so such a trace is a
///   conversation of one turn and its weight is that policy's; `none` does not match them (another policy decides).
/// - The weight: a keep is a function of the conversation, not of the trace's randomness, so it states no `th` (erased)
///   and `tailgate.sample_rate` = 1/p (× any upstream adjusted count). In the engine's union of chances it is its own
///   randomness source (`RandomSource.conversation`), independent of trace-ID hashing and of consistent sampling.
/// - `keep_after_error: true`: a turn with a span whose status is ERROR makes its conversation remembered (at most
///   `max_conversations`, the least recently active forgotten first and counted; each forgotten `remember_for` after
///   its latest turn), and the policy keeps, for certain, that turn and every turn of a remembered conversation decided
///   later. The memory is fed by every decided trace, whatever policy decides it (`PolicyEngine` calls `observe`), on
///   the decision clock (`TraceSummary.decidedAt`). Weight 1 is honest: whether a turn is in a remembered conversation
///   depends only on what the proxy saw of earlier turns (their status), never on a random draw — every trace in that
///   situation is kept, so its inclusion probability is 1.
package struct ConversationPolicy: SamplingPolicy {
    package static let typeName = "conversation"
    package static let keys = ["sampling_percentage", "keys", "hash_salt", "without_conversation", "keep_after_error",
                              "max_conversations", "remember_for"]
    package static let defaultKeys = ["gen_ai.conversation.id", "session.id"]
    package static let defaultMaxConversations = 100_000
    package static let defaultRememberFor: Duration = .seconds(3600)

    /// What the policy does with a trace that names no conversation.
    package enum Fallback: String, Sendable, CaseIterable {
        /// Draw on the trace-ID hash with the policy's seed (a conversation of one turn).
        case traceID = "trace_id"
        /// Do not match.
        case none
    }

    package var percentage: Double
    package var conversationKeys: [String]
    package var seed: UInt64
    package var fallback: Fallback
    /// Keep when the draw is below this; nil: 100 %.
    package var threshold: UInt64?
    /// Conversations that erred (with `keep_after_error`).
    let memory: ConversationMemory?

    package init(percentage: Double, keys: [String] = Self.defaultKeys, salt: String = "", fallback: Fallback = .traceID,
                keepAfterError: Bool = false, maxConversations: Int = Self.defaultMaxConversations,
                rememberFor: Duration = Self.defaultRememberFor) {
        self.percentage = percentage
        conversationKeys = keys
        seed = salt.isEmpty ? 0 : xxh3(salt)
        self.fallback = fallback
        let scaled = percentage / 100 * 18_446_744_073_709_551_616.0
        threshold = scaled >= 18_446_744_073_709_551_616.0 ? nil : UInt64(max(0, scaled))
        memory = keepAfterError ? ConversationMemory(capacity: maxConversations, rememberFor: rememberFor) : nil
    }

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "sampling_percentage: 10") else { return nil }
        var percentage: Double? = nil
        var conversationKeys = defaultKeys
        var keysNode: Node? = nil
        var salt = ""
        var fallback = Fallback.traceID
        var keepAfterError = false
        var maxConversations = defaultMaxConversations
        var rememberFor = defaultRememberFor
        var memoryKeys: [Node] = []
        var ok = true
        for (key, keyNode, value) in entries {
            switch key {
            case "sampling_percentage":
                percentage = context.reader.number(value, what: key, range: 0...100)
                if percentage == nil { ok = false }
            case "keys":
                keysNode = value
                let items = context.reader.sequence(value, what: key)
                let names = items.compactMap { context.reader.string($0, what: "a conversation key") }
                if names.count != items.count { ok = false }
                if case .sequence = value, items.isEmpty {
                    context.reader.error(keyNode, "keys must name at least one attribute, e.g. [gen_ai.conversation.id]")
                    ok = false
                } else if let empty = zip(items, names).first(where: { $0.1.isEmpty }) {
                    context.reader.error(empty.0, "a conversation key must not be empty")
                    ok = false
                }
                conversationKeys = names
            case "hash_salt":
                salt = context.reader.string(value, what: key) ?? ""
            case "without_conversation":
                let text = context.reader.string(value, what: key) ?? ""
                if let f = Fallback(rawValue: text) { fallback = f } else {
                    var message = "without_conversation must be trace_id or none, got '\(text)'"
                    if let hint = suggestion(for: text, among: Fallback.allCases.map(\.rawValue)) { message += "; did you mean '\(hint)'?" }
                    context.reader.error(value, message)
                    ok = false
                }
            case "keep_after_error":
                if let b = context.reader.bool(value, what: key) { keepAfterError = b } else { ok = false }
            case "max_conversations":
                memoryKeys.append(keyNode)
                if let n = context.reader.integer(value, what: key, range: 1...10_000_000) { maxConversations = Int(n) } else { ok = false }
            default:  // remember_for
                memoryKeys.append(keyNode)
                if let d = context.reader.duration(value, what: key) {
                    if d <= .zero { context.reader.error(value, "remember_for must be above 0"); ok = false } else { rememberFor = d }
                } else { ok = false }
            }
        }
        if !keepAfterError {
            for node in memoryKeys {
                context.reader.warning(node, "'\(node.string ?? "")' has no effect without keep_after_error: true")
            }
        }
        guard ok else { return nil }
        guard let percentage else {
            context.reader.error(at, "conversation policy needs 'sampling_percentage' (0 to 100)")
            return nil
        }
        // Every policy of a file must name the same keys: a trace has one conversation.
        guard context.plan(keysNode ?? at, { (p: inout AttributePlan) throws(AttributePlan.PlanError) -> Bool in try p.conversation(keys: conversationKeys); return true }) != nil else { return nil }
        return ConversationPolicy(percentage: percentage, keys: conversationKeys, salt: salt, fallback: fallback,
                                  keepAfterError: keepAfterError, maxConversations: maxConversations, rememberFor: rememberFor)
    }

    package var keepsAfterError: Bool { memory != nil }

    package var neverKeeps: Bool { percentage == 0 && memory == nil }

    /// The draw for a trace and the source it comes from; nil when the trace names no conversation and the fallback is
    /// `none`.
    func draw(_ trace: TraceSummary) -> (value: UInt64, source: RandomSource)? {
        if trace.conversation != 0 { return (Self.conversationDraw(trace.conversation, seed: seed), .conversation(seed: seed)) }
        guard fallback == .traceID else { return nil }
        return (trace.traceID.xxh3(seed: seed), .hash(seed: seed))
    }

    /// XXH3-64 of the conversation hash's 8 big-endian bytes with `seed`.
    package static func conversationDraw(_ conversation: UInt64, seed: UInt64) -> UInt64 {
        var bytes = conversation.bigEndian
        return withUnsafeBytes(of: &bytes) { xxh3($0, seed: seed) }
    }

    /// Kept for certain by `keep_after_error`: the trace names a conversation and has an ERROR span, or its conversation
    /// is remembered.
    func keptAfterError(_ trace: TraceSummary) -> Bool {
        guard let memory, trace.conversation != 0 else { return false }
        return trace.has(.error) || memory.contains(trace.conversation, at: trace.decidedAt)
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict {
        if keptAfterError(trace) { return .sampled }
        guard let (value, _) = draw(trace), percentage > 0 else { return .notSampled }
        guard let threshold else { return .sampled }
        return value < threshold ? .sample(.hashed(probability: percentage / 100)) : .notSampled
    }

    /// nil (deterministic) when `keep_after_error` keeps the trace: the verdict is the whole story, and a dropped turn
    /// whose late spans carry an error is revised like one kept by `status_code`.
    package func chance(_ trace: TraceSummary) -> Chance? {
        if keptAfterError(trace) { return nil }
        guard let (_, source) = draw(trace), percentage > 0 else { return .never }
        if percentage >= 100 { return .certain }
        return .random(probability: percentage / 100, source: source)
    }

    /// Feeds the memory with a decided trace (called by the engine for every trace, before policies are evaluated).
    package func observe(_ trace: TraceSummary) {
        guard let memory, trace.conversation != 0 else { return }
        memory.observe(trace.conversation, error: trace.has(.error), at: trace.decidedAt)
    }

    /// What the memory holds and has forgotten (zero without `keep_after_error`).
    package var memoryStatistics: ConversationMemory.Statistics { memory?.statistics ?? .init() }

    /// The `conversation` policies with `keep_after_error` among `policies`, at any depth: those the engine feeds.
    static func remembering(_ policies: [NamedPolicy]) -> [ConversationPolicy] {
        policies.flatMap { named -> [ConversationPolicy] in
            if let c = named.policy as? ConversationPolicy { return c.memory == nil ? [] : [c] }
            return remembering(subPolicies(of: named.policy))
        }
    }
}

/// Conversations that had a turn with an error: at most `capacity`, each forgotten `rememberFor` after its latest turn
/// (decision clock), the least recently active forgotten first when full (counted: those could have kept more turns).
package final class ConversationMemory: Sendable {
    package struct Statistics: Sendable, Equatable {
        /// Conversations remembered now.
        package var size = 0
        /// Conversations that started being remembered (an erring turn of a conversation not remembered).
        package var remembered = 0
        /// Forgotten while still within `remember_for` because the memory was full.
        package var forgottenEarly = 0
        /// Forgotten `remember_for` after their latest turn.
        package var expired = 0

        package init() {}
    }

    struct State {
        /// Conversation → decision time of its latest turn.
        var lastSeen: [UInt64: UInt64] = [:]
        /// (conversation, time) in the order turns were observed; an entry whose time is not the conversation's
        /// `lastSeen` is stale (a later turn refreshed it) and skipped.
        var queue: [(conversation: UInt64, at: UInt64)] = []
        var head = 0
        var statistics = Statistics()
    }

    let capacity: Int
    let rememberFor: UInt64
    private let state = Mutex(State())

    init(capacity: Int, rememberFor: Duration) {
        self.capacity = max(1, capacity)
        let (s, atto) = rememberFor.components
        self.rememberFor = UInt64(max(0, s)) &* 1_000_000_000 &+ UInt64(max(0, atto) / 1_000_000_000)
    }

    private func expired(_ seen: UInt64, _ now: UInt64) -> Bool { now > seen && now - seen > rememberFor }

    func contains(_ conversation: UInt64, at now: UInt64) -> Bool {
        state.withLock { s in s.lastSeen[conversation].map { !expired($0, now) } ?? false }
    }

    /// A decided turn: an error remembers its conversation; any turn of a remembered conversation refreshes it.
    func observe(_ conversation: UInt64, error: Bool, at now: UInt64) {
        state.withLock { s in
            if let seen = s.lastSeen[conversation], !expired(seen, now) {
                guard now > seen else { return }
            } else {
                if s.lastSeen.removeValue(forKey: conversation) != nil { s.statistics.expired += 1 }
                guard error else { return }
                s.statistics.remembered += 1
            }
            s.lastSeen[conversation] = now
            s.queue.append((conversation, now))
            // Forget from the front: expired conversations, then the least recently active while over capacity.
            while s.head < s.queue.count {
                let (c, at) = s.queue[s.head]
                guard s.lastSeen[c] == at else { s.head += 1; continue }  // stale
                if expired(at, now) {
                    s.lastSeen[c] = nil
                    s.statistics.expired += 1
                } else if s.lastSeen.count > capacity {
                    s.lastSeen[c] = nil
                    s.statistics.forgottenEarly += 1
                } else {
                    break
                }
                s.head += 1
            }
            // Drop consumed and stale entries now and then (bounded: at most 2 entries per live one, plus slack).
            if s.head > 1024 && s.head * 2 > s.queue.count {
                s.queue.removeFirst(s.head)
                s.head = 0
            }
            if s.queue.count - s.head > 2 * s.lastSeen.count + 1024 {
                s.queue = s.queue[s.head...].filter { s.lastSeen[$0.conversation] == $0.at }
                s.head = 0
            }
            s.statistics.size = s.lastSeen.count
        }
    }

    package var statistics: Statistics {
        state.withLock { s in
            var out = s.statistics
            out.size = s.lastSeen.count
            return out
        }
    }
}
