// What the scanner must read from each span, chosen by the loaded policies. Everything a policy asks about
// a span's attributes is compiled into this plan once per policies file: conditions become bits of a 64-bit
// mask, numbers become slots summed per trace. The scanner evaluates the plan while it walks the bytes; the
// buffer only ORs and adds; policies read bits and sums.

import Foundation

/// Span attributes to read, and what to compute from them.
package struct AttributePlan: Sendable, Equatable {
    package static let maxSlots = 8
    package static let maxBits = 64

    /// Where a condition looks for its attribute.
    package enum Target: String, Sendable, Equatable {
        /// Span attributes only.
        case span
        /// Resource attributes only (they apply to every span of the resource).
        case resource
        /// Span or resource attributes (the Collector's default for attribute policies).
        case any
    }

    /// How an attribute's value is tested.
    package enum Matcher: Sendable, Equatable {
        /// Numeric (int, double or decimal string) within the closed range.
        case numeric(min: Double, max: Double)
        /// String equal to one of the values (for string arrays: any element).
        case strings([String])
        /// String matching one of the regular expressions (for string arrays: any element).
        case regex([String])
        /// Boolean equal to the value.
        case bool(Bool)
        /// The attribute is present, whatever its value.
        case exists
    }

    /// A condition on one attribute; its bit is set on a span that satisfies it.
    package struct Condition: Sendable, Equatable {
        package var key: String
        package var target: Target
        package var matcher: Matcher
    }

    /// A condition on other bits of the same span, evaluated after the attribute conditions, in order:
    /// set when every bit of `allOf` is set and (`anyOf` is empty, or any of its bits is set, or
    /// `orStatusError` and the span's status is ERROR).
    package struct Derived: Sendable, Equatable {
        package var allOf: UInt64
        package var anyOf: UInt64
        package var orStatusError: Bool
    }

    /// A number summed per trace.
    package enum Slot: Sendable, Equatable {
        /// The value of the first of `keys` that the span carries (so a current and a deprecated name count once),
        /// counted only on spans with bit `condition` (when set).
        case firstOf(keys: [String], condition: Int?)
        /// 1 for each span with bit `bit`.
        case count(bit: Int)
    }

    package private(set) var conditions: [Condition] = []
    /// Bit of each condition; derived bits follow.
    package private(set) var derived: [(bit: Int, rule: Derived)] = []
    package private(set) var slots: [Slot] = []
    /// Bits of `tracestate` conditions: `key=value` list members of the span's trace_state.
    package private(set) var traceStates: [(bit: Int, key: String, values: [String])] = []
    package private(set) var bitCount = 0
    /// Attributes naming a span's conversation (first of them, span attributes only); empty when no policy asks.
    /// A span's `SpanFacts.conversation` is the XXH3 of the value's UTF-8 bytes.
    package private(set) var conversationKeys: [String] = []

    package init() {}

    /// Asks the scanner for each span's conversation: the first of `keys` the span carries. Every policy of a file
    /// must name the same keys (a trace has one conversation).
    package mutating func conversation(keys: [String]) throws(PlanError) {
        if !conversationKeys.isEmpty && conversationKeys != keys { throw .conflictingConversationKeys(conversationKeys, keys) }
        conversationKeys = keys
    }

    package static func == (a: AttributePlan, b: AttributePlan) -> Bool {
        a.conditions == b.conditions && a.slots == b.slots && a.bitCount == b.bitCount
            && a.derived.map(\.rule) == b.derived.map(\.rule) && a.derived.map(\.bit) == b.derived.map(\.bit)
            && a.traceStates.map(\.bit) == b.traceStates.map(\.bit) && a.conversationKeys == b.conversationKeys
    }

    package var isEmpty: Bool { conditions.isEmpty && slots.isEmpty && traceStates.isEmpty && conversationKeys.isEmpty }

    package enum PlanError: Error, Equatable, CustomStringConvertible {
        case tooManyConditions
        case tooManySlots
        case badRegex(String, String)
        case conflictingConversationKeys([String], [String])

        package var description: String {
            switch self {
            case .tooManyConditions: "the policies use more than \(AttributePlan.maxBits) attribute conditions"
            case .tooManySlots: "the policies sum more than \(AttributePlan.maxSlots) attribute values per trace"
            case .badRegex(let pattern, let why): "invalid regular expression '\(pattern)': \(why)"
            case .conflictingConversationKeys(let a, let b):
                "policies name different conversation keys (\(a.joined(separator: ", ")) and \(b.joined(separator: ", "))): a trace has one conversation, so every policy must use the same keys"
            }
        }
    }

    private mutating func newBit() throws(PlanError) -> Int {
        guard bitCount < Self.maxBits else { throw .tooManyConditions }
        defer { bitCount += 1 }
        return bitCount
    }

    /// The bit of a condition (an existing bit when the same condition was added before).
    package mutating func bit(key: String, target: Target = .span, _ matcher: Matcher) throws(PlanError) -> Int {
        if case .regex(let patterns) = matcher {
            for p in patterns {
                do { _ = try NSRegularExpression(pattern: p) } catch {
                    // ICU's error says little; Swift's regex parser explains most syntax errors.
                    var why = "not a valid ICU regular expression"
                    do { _ = try Regex(p) } catch let swiftError { why = "\(swiftError)" }
                    throw .badRegex(p, why)
                }
            }
        }
        let condition = Condition(key: key, target: target, matcher: matcher)
        if let i = conditions.firstIndex(of: condition) { return conditionBits[i] }
        let bit = try newBit()
        conditions.append(condition)
        conditionBits.append(bit)
        return bit
    }

    package private(set) var conditionBits: [Int] = []

    /// The bit of a derived condition.
    package mutating func bit(allOf: [Int] = [], anyOf: [Int] = [], orStatusError: Bool = false) throws(PlanError) -> Int {
        let rule = Derived(allOf: mask(allOf), anyOf: mask(anyOf), orStatusError: orStatusError)
        if let existing = derived.first(where: { $0.rule == rule }) { return existing.bit }
        let bit = try newBit()
        derived.append((bit, rule))
        return bit
    }

    /// The bit of a `tracestate` condition (`key` has one of `values`; any value when empty).
    package mutating func traceStateBit(key: String, values: [String]) throws(PlanError) -> Int {
        if let existing = traceStates.first(where: { $0.key == key && $0.values == values }) { return existing.bit }
        let bit = try newBit()
        traceStates.append((bit, key, values))
        return bit
    }

    /// A slot (an existing one when the same slot was added before).
    package mutating func slot(_ slot: Slot) throws(PlanError) -> Int {
        if let i = slots.firstIndex(of: slot) { return i }
        guard slots.count < Self.maxSlots else { throw .tooManySlots }
        slots.append(slot)
        return slots.count - 1
    }

    func mask(_ bits: [Int]) -> UInt64 { bits.reduce(0) { $0 | (1 << UInt64($1)) } }

    /// The compiled form the scanner runs.
    func compile() -> CompiledPlan { CompiledPlan(self) }
}

/// The plan in the form the scanner uses on the hot path: keys as bytes, one table entry per key.
struct CompiledPlan: Sendable {
    enum Action: Sendable {
        /// Evaluate condition `index` (its bit is `bit`) on the value.
        case condition(bit: Int, matcher: CompiledMatcher)
        /// Candidate for slot `slot` with rank `rank` (lower wins).
        case value(slot: Int, rank: Int)
        /// Candidate conversation ID, rank `rank`.
        case conversation(rank: Int)
    }

    enum CompiledMatcher: @unchecked Sendable {  // NSRegularExpression is immutable and thread-safe to use
        case numeric(min: Double, max: Double)
        case strings([[UInt8]])
        case regex([NSRegularExpression])
        case bool(Bool)
        case exists
    }

    struct Entry: Sendable {
        var key: [UInt8]
        var spanActions: [Action]
        var resourceActions: [Action]
    }

    var entries: [Entry] = []
    var hasResourceActions = false
    var derived: [(bit: Int, rule: AttributePlan.Derived)]
    var traceStates: [(bit: Int, key: [UInt8], values: [[UInt8]])]
    var slots: [AttributePlan.Slot]
    var isEmpty: Bool

    init(_ plan: AttributePlan) {
        derived = plan.derived
        traceStates = plan.traceStates.map { ($0.bit, Array($0.key.utf8), $0.values.map { Array($0.utf8) }) }
        slots = plan.slots
        isEmpty = plan.isEmpty
        func add(_ key: String, span: Action?, resource: Action?) {
            let bytes = Array(key.utf8)
            var i = entries.firstIndex { $0.key == bytes } ?? -1
            if i < 0 {
                entries.append(Entry(key: bytes, spanActions: [], resourceActions: []))
                i = entries.count - 1
            }
            if let span { entries[i].spanActions.append(span) }
            if let resource { entries[i].resourceActions.append(resource); hasResourceActions = true }
        }
        for (i, c) in plan.conditions.enumerated() {
            let matcher: CompiledMatcher
            switch c.matcher {
            case .numeric(let lo, let hi): matcher = .numeric(min: lo, max: hi)
            case .strings(let values): matcher = .strings(values.map { Array($0.utf8) })
            case .regex(let patterns): matcher = .regex(patterns.compactMap { try? NSRegularExpression(pattern: $0) })
            case .bool(let b): matcher = .bool(b)
            case .exists: matcher = .exists
            }
            let action = Action.condition(bit: plan.conditionBits[i], matcher: matcher)
            add(c.key, span: c.target == .resource ? nil : action, resource: c.target == .span ? nil : action)
        }
        for (s, slot) in plan.slots.enumerated() {
            switch slot {
            case .firstOf(let keys, _):
                for (rank, key) in keys.enumerated() { add(key, span: .value(slot: s, rank: rank), resource: nil) }
            case .count:
                break
            }
        }
        for (rank, key) in plan.conversationKeys.enumerated() { add(key, span: .conversation(rank: rank), resource: nil) }
    }

    @inline(__always)
    func entry(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        let count = range.count
        for i in entries.indices where entries[i].key.count == count {
            let equal = entries[i].key.withUnsafeBytes { key in
                memcmpBytes(key.baseAddress!, base.baseAddress! + range.lowerBound, count)
            }
            if equal { return i }
        }
        return nil
    }
}

@inlinable
func memcmpBytes(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    var i = 0
    while i + 8 <= n {
        if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
        i += 8
    }
    while i < n {
        if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
        i += 1
    }
    return true
}
