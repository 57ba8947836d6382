package import TailgateWire

/// The GenAI spans of one trace and the tokens each one counts for: the rule that keeps one model call from being
/// counted twice (README, "How tokens are counted").
///
/// Usage is reported at two levels. A model call (chat, text_completion, generate_content, embeddings, or a span with
/// usage and no operation name) reports its own tokens. An agent, workflow or chain span may report the sum of the
/// calls made under it (several agent frameworks do, and the GenAI conventions put usage on `invoke_agent`). So:
/// - a model call's usage always counts;
/// - an aggregate span's usage counts only for what the reporting spans below it do not already account for: per
///   subtree, the trace counts the larger of what the aggregate span reports and what its descendants report. An agent
///   reporting 6,000 tokens over two chat spans of 3,000 counts 6,000 in total, not 12,000; a remote agent whose calls
///   are not traced counts its own 6,000; an agent over one traced call of 3,000 and one untraced call counts 6,000.
/// - nested agents follow the same rule level by level (the innermost reports count first).
/// Cache-read and cache-creation tokens are part of input tokens, reasoning tokens part of output tokens: they are
/// never added on top. A span that reports only a total counts it as `totalOnly`.
package struct GenAILedger: Sendable, Equatable {
    package private(set) var spans: [GenAISpan] = []
    /// Per span of `spans`: the tokens it counts for (by `GenAISpan.Lane`), once `resolve` ran.
    package private(set) var counted: [SIMD8<Int64>] = []
    package private(set) var resolved = false
    /// Spans beyond this are not recorded (a trace is decided at `maxSpansPerTrace` anyway).
    package static let maxSpans = 20_000

    package init() {}

    package init(spans: [GenAISpan]) {
        self.spans = spans
        updateAllocation()
    }

    /// Bytes held (see `accountedBytes`), kept up to date by every change: the buffer reads it on every span of the
    /// trace, and recomputing it there touched the arrays' headers (cold cache lines) for nothing.
    private var allocated = 96

    private mutating func updateAllocation() {
        allocated = spans.capacity * MemoryLayout<GenAISpan>.stride + counted.capacity * MemoryLayout<SIMD8<Int64>>.stride + 96
    }

    package static func == (a: GenAILedger, b: GenAILedger) -> Bool {
        a.spans == b.spans && a.counted == b.counted && a.resolved == b.resolved
    }

    package mutating func append(_ span: GenAISpan) {
        guard spans.count < Self.maxSpans else { return }
        BufferedSpans.grow(&spans, by: 1)
        spans.append(span)
        resolved = false
        updateAllocation()
    }

    /// Bytes held, for the buffer's memory accounting (strings of up to 15 bytes are stored inline).
    package var accountedBytes: Int { allocated }

    /// Whether the rule needs the trace's span tree: an aggregate span reports usage and another span does too.
    package var needsAncestry: Bool {
        var reporters = 0, aggregates = 0
        for s in spans where s.hasUsage {
            reporters += 1
            if s.role == .aggregate { aggregates += 1 }
        }
        return aggregates > 0 && reporters > 1
    }

    /// Computes `counted`. `parentOf` gives the parent of any span of the trace the caller knows (nil when unknown);
    /// the ledger's own spans' parents are used too, so spans linked directly resolve without it.
    package mutating func resolve(parentOf: (UInt64) -> UInt64? = { _ in nil }) {
        counted = Array(repeating: SIMD8(), count: spans.count)
        resolved = true
        updateAllocation()
        guard needsAncestry else {
            for i in spans.indices where spans[i].hasUsage { counted[i] = spans[i].tokens }
            return
        }
        var reporterAt: [UInt64: Int] = [:]
        var ledgerParent: [UInt64: UInt64] = [:]
        for (i, s) in spans.enumerated() {
            ledgerParent[s.spanID] = s.parentSpanID
            if s.hasUsage { reporterAt[s.spanID] = i }
        }
        // The nearest reporting ancestor of each reporter (bounded walk: a cycle in client IDs cannot loop).
        var children: [Int: [Int]] = [:]
        var roots: [Int] = []
        for (id, i) in reporterAt {
            var p = spans[i].parentSpanID
            var nearest: Int? = nil
            var steps = 0
            while p != 0 && p != id && steps < 10_000 {
                if let r = reporterAt[p] { nearest = r; break }
                guard let next = parentOf(p) ?? ledgerParent[p] else { break }
                p = next
                steps += 1
            }
            if let nearest { children[nearest, default: []].append(i) } else { roots.append(i) }
        }
        // Post-order without recursion: the whole subtree's usage of each reporter.
        var effective: [Int: SIMD8<Int64>] = [:]
        var stack: [(Int, Bool)] = roots.sorted().map { ($0, false) }
        var visited = Set<Int>()
        while let (i, expanded) = stack.popLast() {
            if !expanded {
                guard visited.insert(i).inserted else { continue }
                stack.append((i, true))
                for c in children[i] ?? [] where !visited.contains(c) { stack.append((c, false)) }
                continue
            }
            var below = SIMD8<Int64>()
            for c in children[i] ?? [] { below.addSaturating(effective[c] ?? SIMD8()) }
            let own = spans[i].tokens
            let mine = spans[i].role == .inference ? own : Self.residual(own: own, below: below)
            counted[i] = mine
            var total = below
            total.addSaturating(mine)
            effective[i] = total
        }
        // Reporters on a cycle of parent links (never reached from a root) count their own usage.
        for i in reporterAt.values where !visited.contains(i) { counted[i] = spans[i].tokens }
    }

    /// What an aggregate span's usage adds over what its subtree's reports already count.
    static func residual(own: SIMD8<Int64>, below: SIMD8<Int64>) -> SIMD8<Int64> {
        typealias L = GenAISpan.Lane
        func grand(_ v: SIMD8<Int64>) -> Int64 { saturatingAdd(saturatingAdd(v[L.input], v[L.output]), v[L.totalOnly]) }
        let extra = max(0, grand(own) - grand(below))
        var r = SIMD8<Int64>()
        guard extra > 0 else { return r }
        r[L.input] = min(max(0, own[L.input] - below[L.input]), extra)
        r[L.output] = min(max(0, own[L.output] - below[L.output]), extra - r[L.input])
        r[L.totalOnly] = extra - r[L.input] - r[L.output]
        r[L.cacheRead] = min(max(0, own[L.cacheRead] - below[L.cacheRead]), r[L.input])
        r[L.cacheCreation] = min(max(0, own[L.cacheCreation] - below[L.cacheCreation]), r[L.input] - r[L.cacheRead])
        r[L.reasoning] = min(max(0, own[L.reasoning] - below[L.reasoning]), r[L.output])
        return r
    }

    /// Tokens the trace counts (input + output + totals reported alone) over the spans `matching` accepts.
    package func totalTokens(matching: (GenAISpan) -> Bool = { _ in true }) -> Int64 {
        var sum: Int64 = 0
        // Through the buffer: `spans[i]` would copy each span (retaining its strings) to pass it to `matching`.
        spans.withUnsafeBufferPointer { spans in
            for i in spans.indices where i < counted.count {
                let c = counted[i]
                guard c != SIMD8(), matching(spans[i]) else { continue }
                sum = saturatingAdd(sum, saturatingAdd(saturatingAdd(c[GenAISpan.Lane.input], c[GenAISpan.Lane.output]), c[GenAISpan.Lane.totalOnly]))
            }
        }
        return sum
    }
}
