import DequeModule
import HeapModule
import Synchronization
package import TailgateWire

/// When and how much the buffer holds. Every field has a documented default.
package struct BufferConfiguration: Sendable, Equatable {
    /// Number of independently locked shards (rounded up to a power of two). Default 16.
    package var shardCount: Int = 16
    /// Once a trace's root span (no parent) has arrived and no span waits for a parent of its own process, decide
    /// after this long, to let other services' exporters deliver their spans. Default 5 s.
    package var waitAfterRoot: Duration = .seconds(5)
    /// Decide a trace whose tree is complete after this long without a new span. Default 30 s.
    package var idleTimeout: Duration = .seconds(30)
    /// A trace whose only missing parents are remote (another process, which may never export to Tailgate: a
    /// gateway, a browser) or of unknown locality is decided after this long without a new span. Default 2 min: long
    /// enough for a caller that exports here to finish a reasoning-model call, short enough that an invisible caller
    /// costs at most 4× the memory of `idleTimeout`.
    package var remoteParentTimeout: Duration = .seconds(120)
    /// Decide a trace at the latest this long after its first span — in particular a run whose spans name a parent
    /// of their own process that has not arrived (the run is still going: SDKs export a span when it ends, so the
    /// root comes last). Default 30 min, the length of a long agent run (deep research, human-in-the-loop tools).
    package var maxTraceAge: Duration = .seconds(1800)
    /// A trace reaching this many spans is decided at once; its later spans follow that decision. Default 10,000.
    package var maxSpansPerTrace: Int = 10_000
    /// Over this many buffered bytes, the oldest traces are decided early (never dropped undecided). Default 512 MiB.
    package var maxBufferedBytes: Int = 512 << 20
    /// How many decided trace IDs are remembered at most, per outcome (kept and dropped), for late spans. A decision
    /// is remembered for `maxTraceAge` + 5 min (a late span of a run can come no later); one forgotten sooner (the
    /// cache is full) is counted (`earlyEvictions`), as its trace's late spans could get a second decision.
    /// Default 100,000 (≈ 20 MiB): enough for 50 traces/s of each outcome; raise it with the rate.
    package var decisionCacheSize: Int = 100_000
    /// With a trace store (`data_dir`): a trace's spans move to disk once it has been this long without a new span
    /// (its summary stays in memory; a keep reads them back). Default 10 s: past the common window of a trace that
    /// completes, well inside the minutes an agent run waits for a model.
    package var spillAfter: Duration = .seconds(10)
    /// With a trace store: the spans of a dropped trace are kept on disk this long, so that a late span that makes a
    /// deterministic policy keep it (an error, a token budget crossed) revises the drop and the whole trace is
    /// forwarded (`tailgate.decision.trigger=revised`). 0 turns it off. Default 5 min.
    package var reviseWindow: Duration = .seconds(300)
    /// Seed of the hash that picks a trace's shard; nil (the default): random per buffer, so that a client cannot aim
    /// all of its traffic at one shard (sampling decisions do not depend on it).
    package var shardSeed: UInt64? = nil

    package init() {}
}

/// Why a trace was decided when it was.
package enum DecisionTrigger: String, Sendable, CaseIterable {
    /// `waitAfterRoot` passed after the root span arrived.
    case root
    /// `idleTimeout` passed without new spans.
    case idle
    /// `maxTraceAge` passed since the first span.
    case maxAge = "max_age"
    /// The trace reached `maxSpansPerTrace`.
    case spanLimit = "span_limit"
    /// The buffer was over `maxBufferedBytes` (and the store, if any, had no room); the oldest traces were decided
    /// early.
    case memoryPressure = "memory_pressure"
    /// The proxy is shutting down.
    case shutdown
    /// A dropped trace was kept after all: a late span made a deterministic policy keep it.
    case revised
}

/// Where a span's missing parent lives, by the span's flags.
enum ParentLocality: UInt8 {
    /// The same process: it has not ended yet, so the run is still going.
    case local
    /// Another process, which may or may not export to Tailgate.
    case remote
    /// The exporter did not say (older SDKs): treated like `remote`.
    case unknown
}

/// Running aggregates of one trace: everything a policy may look at, without rescanning spans.
package struct TraceSummary: Sendable, Equatable {
    package var traceID: TraceID
    package var spanCount: Int = 0
    /// Bits of `StatusCode.bit` for every status seen.
    package var statusMask: UInt8 = 0
    /// `AttributePlan` condition bits satisfied by any span.
    package var bits: UInt64 = 0
    /// `AttributePlan` condition bits satisfied by the root span.
    package var rootBits: UInt64 = 0
    /// Per-slot sums of the `AttributePlan` over all spans.
    package var sums = SIMD8<Int64>()
    package var earliestStart: UInt64 = .max
    package var latestEnd: UInt64 = 0
    package var rootSeen = false
    /// Span payload bytes of the trace.
    package var spanBytes: Int = 0
    package var trigger: DecisionTrigger = .idle
    /// Clock time of the decision (nanoseconds of the buffer's clock): what rate limits count with.
    package var decidedAt: UInt64 = 0
    /// Clock time the trace's first span arrived.
    package var firstSeenAt: UInt64 = 0
    /// At the decision: a root had arrived and no span was waiting for its parent.
    package var complete = false
    /// The explicit randomness (`ot=rv`) a span of the trace carried; `.max` when none did.
    package var randomness: UInt64 = .max
    /// The conversation (`SpanFacts.conversation`) of the first span that named one; 0 when none did.
    package var conversation: UInt64 = 0
    /// The trace's GenAI spans (model calls, agents, tools) and the tokens each counts for; nil when it has none.
    package var genAI: GenAILedger? {
        _read { yield storedGenAI }
        _modify {
            defer { genAIAccountedBytes = storedGenAI?.accountedBytes ?? 0 }
            yield &storedGenAI
        }
    }
    /// `genAI`'s storage: a plain stored property, so that it can be addressed in place (`prefetchGenAI`).
    private var storedGenAI: GenAILedger? = nil
    /// `genAI`'s `accountedBytes`, kept up to date with it: the buffer reads it twice per span, and reading it through
    /// the optional ledger copied the ledger (retaining and releasing each of its arrays) every time.
    package private(set) var genAIAccountedBytes = 0

    /// Runs `body` on the ledger, when there is one, in place: moved out and back. (Optional chaining through the
    /// observed property, `genAI?.pack()`, copied the ledger first.)
    @inline(__always)
    package mutating func withGenAI(_ body: (inout GenAILedger) -> Void) {
        guard var ledger = genAI.take() else { return }
        body(&ledger)
        genAI = ledger
    }

    package init(traceID: TraceID) {
        self.traceID = traceID
    }

    /// See `TraceEntry.prefetch`.
    @inline(__always)
    mutating func prefetchGenAI() {
        // Addressed as memory: testing or unwrapping the optional copied the ledger, retaining each of its arrays.
        withUnsafeMutablePointer(to: &storedGenAI) { GenAILedger.prefetch(at: UnsafeMutableRawPointer($0)) }
    }

    /// Earliest start to latest end, in nanoseconds (0 when unknown).
    package var durationNanos: UInt64 {
        latestEnd > earliestStart ? latestEnd - earliestStart : 0
    }

    package func has(_ status: StatusCode) -> Bool { statusMask & status.bit != 0 }

    /// Adds one span's facts.
    @inline(__always)
    package mutating func add(_ span: SpanFacts) {
        spanCount += 1
        statusMask |= span.status.bit
        sums.addSaturating(span.sums)  // client numbers: a sum saturates, it never wraps below a threshold
        bits |= span.bits
        if span.isRoot { rootBits |= span.bits }
        if span.startTime != 0 && span.startTime < earliestStart { earliestStart = span.startTime }
        if span.endTime > latestEnd { latestEnd = span.endTime }
        if span.isRoot { rootSeen = true }
        if span.randomness != .max && randomness == .max { randomness = span.randomness }
        if conversation == 0 { conversation = span.conversation }
        spanBytes += span.bytes.count
    }

    /// Adds one span's facts and its GenAI facts (when it has any).
    @inline(__always)
    package mutating func add(_ span: SpanFacts, genAI facts: GenAISpan?) {
        add(span)
        if let facts {
            // Moved out and back (`genAI == nil` and `genAI!.append` each copied the ledger, retaining its arrays).
            var ledger = genAI.take() ?? GenAILedger()
            ledger.append(facts)
            genAI = ledger
        }
    }

    /// Adds one span's facts and, when it has any, its GenAI facts where the request holds them: borrowed, not copied
    /// out (`request.genAI(of:)` retained the span's names and released them again, for every GenAI span).
    @inline(__always)
    package mutating func add(_ span: SpanFacts, in request: ScannedRequest) {
        add(span)
        guard span.genAI >= 0 else { return }
        var ledger = genAI.take() ?? GenAILedger()
        request.genAI.withUnsafeBufferPointer { ledger.append($0[Int(span.genAI)]) }
        genAI = ledger
    }

    /// Tokens the trace counts (see `GenAILedger`) over the spans `matching` accepts; 0 without GenAI spans. Resolves
    /// the ledger from its own parent links if the buffer has not.
    package func totalTokens(matching: (GenAISpan) -> Bool = { _ in true }) -> Int64 {
        guard var ledger = genAI else { return 0 }
        if !ledger.resolved { ledger.resolve() }
        return ledger.totalTokens(matching: matching)
    }
}

/// The outcome of evaluating policies on a trace.
package struct Decision: Sendable, Equatable {
    package var keep: Bool
    /// Index of the policy that decided (-1: no policy matched, the trace is dropped).
    package var policy: Int
    /// How the keep's weight is stated downstream (`.certain` for drops and rules such as "any error").
    package var weight: KeepWeight
    /// Dry run: what the policies decided, while `keep` is true so that everything is forwarded.
    package var dryRunKeep: Bool?
    /// Generation of the policies that decided (tells which file `policy` indexes into after a reload).
    package var generation: UInt64
    /// Name of the policy that decided, as reported (`tailgate.policy`, metrics, the store); "" for none. Set by
    /// the decider, so that it stays right however many reloads happen before the decision is handled.
    package var policyName: String = ""
    /// What closed the trace's window, set by the buffer when it decides (nil: not known, e.g. a decision restored
    /// from the store after a restart, or one a decider returned that the buffer has not recorded yet).
    package var trigger: DecisionTrigger? = nil
    /// Clock reading (the buffer's clock) of the decision; 0 when not known (restored after a restart).
    package var decidedAt: UInt64 = 0

    /// Probability with which a kept trace was kept (1: certainly, e.g. an error).
    package var probability: Double { weight.probability }

    package init(keep: Bool, policy: Int, weight: KeepWeight = .certain, dryRunKeep: Bool? = nil, generation: UInt64 = 0) {
        self.keep = keep
        self.policy = policy
        self.weight = weight
        self.dryRunKeep = dryRunKeep
        self.generation = generation
    }

    /// A keep stated as a plain probability (`hashed` below 1).
    package init(keep: Bool, policy: Int, probability: Double, dryRunKeep: Bool? = nil, generation: UInt64 = 0) {
        self.init(keep: keep, policy: policy, weight: probability >= 1 ? .certain : .hashed(probability: probability),
                  dryRunKeep: dryRunKeep, generation: generation)
    }

    package static let noMatch = Decision(keep: false, policy: -1)

    /// Two decisions are equal when they decide the same (keep, policy, weight, dry run, generation); when and by
    /// which trigger they were made is not part of the verdict.
    package static func == (a: Decision, b: Decision) -> Bool {
        a.keep == b.keep && a.policy == b.policy && a.weight == b.weight && a.dryRunKeep == b.dryRunKeep
            && a.generation == b.generation
    }
}

/// Decides whole traces. Called with the shard's lock held, so it must be quick and must not block.
package protocol TraceDecider: Sendable {
    func decide(_ trace: TraceSummary) -> Decision
    /// Generation of the attribute plan the decider expects summaries to be aggregated with.
    var planGeneration: UInt64 { get }
    /// The name of the policy behind a decision of this decider ("" for none).
    func policyName(_ decision: Decision) -> String
    /// Recomputes the plan-dependent aggregates (bits and sums) of a trace from its spans, for traces aggregated
    /// under another generation (after a policies reload).
    func reaggregate(_ summary: inout TraceSummary, spans: BufferedSpans)
    /// A dropped trace with late spans: the keep a deterministic policy now gives it, or nil (see
    /// `BufferConfiguration.reviseWindow`).
    func revise(_ trace: TraceSummary) -> Decision?
    /// Scans an encoded request as ingest does (a cold trace's records read back, to rebuild its summary); false when
    /// the bytes do not scan. A decider that returns false from `canRescan` never sees a trace go cold.
    func rescan(_ body: UnsafeRawBufferPointer, into request: inout ScannedRequest) -> Bool
    /// Whether `rescan` works: only then may a spilled trace's summary leave memory (`ColdTrace`).
    var canRescan: Bool { get }
}

extension TraceDecider {
    package var planGeneration: UInt64 { 0 }
    package func policyName(_ decision: Decision) -> String { decision.policy >= 0 ? "policy \(decision.policy)" : "" }
    package func reaggregate(_ summary: inout TraceSummary, spans: BufferedSpans) {}
    package func revise(_ trace: TraceSummary) -> Decision? { nil }
    package func rescan(_ body: UnsafeRawBufferPointer, into request: inout ScannedRequest) -> Bool { false }
    package var canRescan: Bool { false }
}

/// A span kept encoded: which scope it came from and where its payload sits in `BufferedSpans.data`.
package struct SpanRef: Sendable {
    var origin: UInt32
    var offset: UInt32
    var length: UInt32
}

/// Spans held as their original bytes, with the scopes (and so resources) they came from.
package struct BufferedSpans: Sendable {
    package private(set) var origins: [ScopeOrigin] = []
    var refs: [SpanRef] = []
    var data: [UInt8] = []

    package init() {}

    package var count: Int { refs.count }
    package var isEmpty: Bool { refs.isEmpty }
    /// Payload bytes of the spans.
    package var payloadBytes: Int { data.count }

    mutating func appendOrigin(_ scope: ScopeOrigin) {
        origins.append(scope)
        updateAllocation()
    }
    /// Memory the spans hold, as allocated (capacity, not count, plus each allocation's array header and malloc
    /// overhead), used for the buffer's accounting. Kept up to date by every change (`updateAllocation`): the buffer
    /// reads it twice per span, and computing it there touched three arrays' headers.
    private(set) var accountedBytes = 0

    mutating func updateAllocation() {
        func allocation(_ capacity: Int, _ stride: Int) -> Int { capacity == 0 ? 0 : capacity * stride + arrayAllocationOverhead }
        accountedBytes = allocation(data.capacity, 1) + allocation(refs.capacity, MemoryLayout<SpanRef>.stride)
            + allocation(origins.capacity, MemoryLayout<ScopeOrigin>.stride)
    }

    /// Makes room for `n` more elements growing by `1 / step` (a half by default), not doubling: a buffered trace's
    /// arrays are only partly full when it is decided or while it waits, and with doubling the unused capacity
    /// averaged half the span bytes held (`tailgate-bench memory`). Smaller steps cost more copies: growing by a
    /// half copies the bytes twice in their life on average, by a quarter four times.
    @inline(__always)
    static func grow<T>(_ array: inout [T], by n: Int, step: Int = 2) {
        let needed = array.count + n
        if needed > array.capacity { array.reserveCapacity(max(needed, array.count + array.count / step, 4)) }
    }

    @inline(__always)
    mutating func append(_ span: SpanFacts, scope: ScopeOrigin, body: UnsafeRawBufferPointer) {
        let origin: Int
        if let last = origins.indices.last, origins[last] === scope {
            origin = last
        } else if let found = origins.lastIndex(where: { $0 === scope }) {
            origin = found
        } else {
            origin = origins.count
            origins.append(scope)
        }
        if refs.isEmpty {
            // Room for a typical trace's first spans at once: growing 1, 2, 4, … costs an allocation and a copy each.
            refs.reserveCapacity(8)
            data.reserveCapacity(max(1024, 4 * span.bytes.count))
        }
        Self.grow(&data, by: span.bytes.count, step: 4)  // the bulk of a waiting trace's memory
        Self.grow(&refs, by: 1)
        refs.append(SpanRef(origin: UInt32(origin), offset: UInt32(data.count), length: UInt32(span.bytes.count)))
        data.append(contentsOf: UnsafeRawBufferPointer(rebasing: body[span.bytes]))
        updateAllocation()
    }

    /// The arrays that appending a span reads and writes (see `TraceEntry.prefetch`).
    @inline(__always)
    mutating func prefetch() {
        prefetchArray(at: &refs)
        prefetchArray(at: &data)
        prefetchArray(at: &origins)
    }

    /// The spans' payloads, one after the other (`forEachRange` tells where each lies).
    package var bytes: [UInt8] { data }

    /// Calls `body` with each span's scope and where its payload lies in `bytes`, in arrival order.
    package func forEachRange(_ body: (ScopeOrigin, _ offset: Int, _ length: Int) -> Void) {
        for ref in refs { body(origins[Int(ref.origin)], Int(ref.offset), Int(ref.length)) }
    }

    /// Calls `body` with each span's scope and payload, in arrival order.
    package func forEach(_ body: (ScopeOrigin, UnsafeRawBufferPointer) -> Void) {
        data.withUnsafeBytes { raw in
            for ref in refs {
                let lower = Int(ref.offset)
                body(origins[Int(ref.origin)], UnsafeRawBufferPointer(rebasing: raw[lower..<lower + Int(ref.length)]))
            }
        }
    }
}

/// A trace with its decision; `spans` is nil for dropped traces (their bytes are released at once).
package struct DecidedTrace: Sendable {
    package var summary: TraceSummary
    package var decision: Decision
    package var spans: BufferedSpans?
    /// Spans of a kept trace that could not be read back from the store (a damaged record): lost, to be counted.
    package var unreadableSpans = 0
    /// Pass-through headers of the trace (`HeaderSets` ID).
    package var headers: UInt32 = HeaderSets.none
}

/// Spans of an already kept trace, with that trace's decision.
package struct LateSpans: Sendable {
    package var decision: Decision
    package var spans: BufferedSpans
    /// Pass-through headers of the request they came in (`HeaderSets` ID).
    package var headers: UInt32 = HeaderSets.none
}

/// What happened to the spans of one request.
package struct InsertOutcome: Sendable {
    /// Spans added to buffered traces.
    package var buffered = 0
    /// Spans whose span ID their buffered trace already had (an exporter retrying after a timeout): dropped, so that
    /// a trace's aggregates (token sums) count each span once and nothing is forwarded twice.
    package var duplicates = 0
    /// Spans of traces already decided "keep": to be forwarded now.
    package var lateKept: [LateSpans] = []
    package var lateKeptCount: Int { lateKept.reduce(0) { $0 + $1.spans.count } }
    /// Spans of traces already decided "drop": dropped.
    package var lateDropped = 0
    /// Traces decided during the insert (span limit or memory pressure).
    package var decided: [DecidedTrace] = []
    /// The request's pass-through headers (`HeaderSets` ID).
    package var headers: UInt32 = HeaderSets.none
    /// GenAI facts of the spans that arrived after their trace's decision (late kept, late dropped, or added to a
    /// retained dropped trace), for the GenAI metrics.
    package var lateGenAI: [GenAISpan] = []

    package init() {}
}

/// Groups spans by trace ID until each trace's decision window closes. Sharded by XXH3 of the trace ID,
/// one lock per shard. Thread-safe.
package final class TraceBuffer: Sendable {
    package let configuration: BufferConfiguration
    let shards: [Shard]
    private let shardMask: UInt64
    private let shardSeed: UInt64
    let clock: any NanoClock
    let deciderBox: Mutex<any TraceDecider>
    private let tracesGauge = Atomic<Int>(0)
    private let bytesGauge = Atomic<Int>(0)
    private let storedBytesGauge = Atomic<Int>(0)
    private let storedTracesGauge = Atomic<Int>(0)
    private let coldGauge = Atomic<Int>(0)
    /// The on-disk tier, if any.
    package let store: (any TraceStore)?
    /// Pass-through header sets of traces (written with their records in the store).
    package let headerSets: HeaderSets

    package init(configuration: BufferConfiguration, decider: any TraceDecider, clock: any NanoClock = SystemClock(),
                store: (any TraceStore)? = nil, headerSets: HeaderSets = HeaderSets()) {
        self.store = store
        self.headerSets = headerSets
        var config = configuration
        var n = 1
        while n < max(1, config.shardCount) { n <<= 1 }
        config.shardCount = n
        self.configuration = config
        self.clock = clock
        deciderBox = Mutex(decider)
        shardMask = UInt64(n - 1)
        shardSeed = config.shardSeed ?? UInt64.random(in: .min ... .max)
        let timing = Timing(config)
        shards = (0..<n).map { _ in Shard(timing: timing, store: store, headerSets: headerSets) }
    }

    /// The decider in use.
    package var decider: any TraceDecider { deciderBox.withLock { $0 } }

    /// Replaces the decider (a policies reload): traces decided from now on use it. Traces aggregated under another
    /// plan generation are re-aggregated from their spans when they are decided.
    package func replaceDecider(_ decider: any TraceDecider) {
        deciderBox.withLock { $0 = decider }
    }

    /// Traces currently buffered.
    package var bufferedTraces: Int { tracesGauge.load(ordering: .relaxed) }

    /// Undecided traces that are cold (`ColdTrace`: only their records' places and timers in memory).
    package var coldTraces: Int { coldGauge.load(ordering: .relaxed) }

    /// Where the undecided traces' accounted memory goes (benchmarks): bytes per part, summed over every trace.
    package func memoryBreakdown() -> [(part: String, bytes: Int)] {
        var parts: [String: Int] = [:]
        eachShard { state in
            for entry in state.traces.values {
                parts["span bytes (used)", default: 0] += entry.spans.payloadBytes
                parts["span refs, array headers, spare capacity", default: 0] += entry.spans.accountedBytes - entry.spans.payloadBytes
                parts["seen/missing span IDs", default: 0] += entry.seen.accountedBytes + entry.missing.accountedBytes
                    + (entry.spilledIDs.isEmpty ? 0 : entry.spilledIDs.capacity * 8 + arrayAllocationOverhead)
                parts["GenAI ledger", default: 0] += entry.summary.genAIAccountedBytes
                parts["per-trace overhead", default: 0] += traceOverheadBytes
            }
            for c in state.cold.values {
                parts["cold traces (record places, timers)", default: 0] += c.accountedBytes
            }
        }
        return parts.sorted { $0.value > $1.value }.map { ($0.key, $0.value) }
    }
    /// Sizes of the shards' bookkeeping (benchmarks): entries and capacity of the trace tables, queues and heaps,
    /// summed over the shards.
    package func bookkeeping() -> [(part: String, count: Int, capacity: Int)] {
        var out: [String: (Int, Int)] = [:]
        func add(_ part: String, _ count: Int, _ capacity: Int) {
            out[part, default: (0, 0)].0 += count
            out[part, default: (0, 0)].1 += capacity
        }
        eachShard { state in
            add("traces", state.traces.count, state.traces.capacity)
            add("cold", state.cold.count, state.cold.capacity)
            add("deadline heap", state.deadlines.count, state.deadlines.count)
            add("spill queue", state.spillQueue.count, state.spillQueue.count)
            add("spill heap", state.spillLater.count, state.spillLater.count)
            add("arrival", state.arrival.count, state.arrival.count)
            add("spilledArrival", state.spilledArrival.count, state.spilledArrival.count)
            add("coldArrival", state.coldArrival.count, state.coldArrival.count)
            add("retained", state.retained.count, state.retained.capacity)
        }
        return out.sorted { $0.key < $1.key }.map { ($0.key, $0.value.0, $0.value.1) }
    }

    /// Bytes currently buffered (span payloads plus index).
    package var bufferedBytes: Int { bytesGauge.load(ordering: .relaxed) }
    /// Bytes of undecided traces' records in the store.
    package var storedBytes: Int { storedBytesGauge.load(ordering: .relaxed) }
    /// Undecided traces with spans in the store.
    package var storedTraces: Int { storedTracesGauge.load(ordering: .relaxed) }

    @inline(__always)
    func shardIndex(_ id: TraceID) -> Int {
        Int(truncatingIfNeeded: id.xxh3(seed: shardSeed) & shardMask)
    }

    /// Adds the spans of a scanned request. `body` is the request the span ranges refer to; `headers`, the
    /// request's pass-through headers (a trace keeps those of its first request that had any).
    package func insert(_ request: ScannedRequest, body: UnsafeRawBufferPointer, headers: UInt32 = HeaderSets.none) -> InsertOutcome {
        var outcome = InsertOutcome()
        outcome.headers = headers
        let spans = request.spans
        guard !spans.isEmpty else { return outcome }
        let now = clock.now()
        let decider = self.decider

        if shards.count == 1 {
            shards[0].state.withLock { $0.traces.prefetchEntries(spans.lazy.map(\.traceID)) }
            apply(shard: 0, indices: Array(spans.indices)[...], request, body, now, decider, &outcome)
            return outcome
        }
        // Counting sort of span indices by shard, so each shard's lock is taken once per request.
        var shardOf = [UInt32](repeating: 0, count: spans.count)
        var starts = [Int](repeating: 0, count: shards.count + 1)
        for i in spans.indices {
            let s = shardIndex(spans[i].traceID)
            shardOf[i] = UInt32(s)
            starts[s + 1] += 1
        }
        for s in 0..<shards.count { starts[s + 1] += starts[s] }
        var order = [Int](repeating: 0, count: spans.count)
        var fill = starts
        for i in spans.indices {
            let s = Int(shardOf[i])
            order[fill[s]] = i
            fill[s] += 1
        }
        // Every shard's traces of the request are looked up and their entries asked for before any is touched, so that
        // their cache misses overlap (a trace waits long enough between requests to have left the caches). Only a
        // hint: a shard whose lock is busy is passed over.
        for s in 0..<shards.count where starts[s] < starts[s + 1] {
            let slice = order[starts[s]..<starts[s + 1]]
            _ = shards[s].state.withLockIfAvailable { $0.traces.prefetchEntries(slice.lazy.map { spans[$0].traceID }) }
        }
        // Shards whose lock is busy (the decision tick deciding in one, another request inserting) are done after the
        // others rather than waited for at once: waiting for a lock held that long ends in the kernel (a futex wait
        // and a context switch each way).
        var busy: [Int] = []
        for s in 0..<shards.count where starts[s] < starts[s + 1] {
            if !apply(shard: s, indices: order[starts[s]..<starts[s + 1]], request, body, now, decider, &outcome, wait: false) {
                busy.append(s)
            }
        }
        for s in busy {
            apply(shard: s, indices: order[starts[s]..<starts[s + 1]], request, body, now, decider, &outcome, wait: true)
        }
        return outcome
    }

    /// Inserts a shard's spans of a request. Without `wait`, only if the shard's lock is free (returns whether it was).
    @discardableResult
    private func apply(
        shard s: Int, indices: ArraySlice<Int>, _ request: ScannedRequest, _ body: UnsafeRawBufferPointer,
        _ now: UInt64, _ decider: any TraceDecider, _ outcome: inout InsertOutcome, wait: Bool = true
    ) -> Bool {
        let budget = configuration.maxBufferedBytes / shards.count
        func insert(_ state: inout ShardState) -> Delta {
            let before = state.snapshot
            state.insert(indices: indices, request, body, now, budget, decider, &outcome)
            return state.delta(since: before)
        }
        let delta: Delta
        if wait {
            delta = shards[s].state.withLock { insert(&$0) }
        } else {
            guard let d = shards[s].state.withLockIfAvailable({ insert(&$0) }) else { return false }
            delta = d
        }
        apply(delta)
        return true
    }

    struct Delta { var traces: Int; var bytes: Int; var storedBytes: Int; var storedTraces: Int; var cold: Int }

    private func apply(_ delta: Delta) {
        if delta.traces != 0 { tracesGauge.add(delta.traces, ordering: .relaxed) }
        if delta.bytes != 0 { bytesGauge.add(delta.bytes, ordering: .relaxed) }
        if delta.storedBytes != 0 { storedBytesGauge.add(delta.storedBytes, ordering: .relaxed) }
        if delta.storedTraces != 0 { storedTracesGauge.add(delta.storedTraces, ordering: .relaxed) }
        if delta.cold != 0 { coldGauge.add(delta.cold, ordering: .relaxed) }
    }

    /// Runs `body` on every shard's state under its lock, keeping the gauges right.
    private func eachShard(_ body: (inout ShardState) -> Void) {
        for shard in shards {
            let delta = shard.state.withLock { state -> Delta in
                let before = state.snapshot
                body(&state)
                return state.delta(since: before)
            }
            apply(delta)
        }
    }

    /// Decides every trace whose decision window has closed by now.
    package func decideExpired() -> [DecidedTrace] {
        let now = clock.now()
        let decider = self.decider
        var out: [DecidedTrace] = []
        eachShard { $0.decideExpired(now: now, decider: decider, into: &out) }
        return out
    }

    /// Decides every buffered trace now (shutdown).
    package func decideAll(trigger: DecisionTrigger = .shutdown) -> [DecidedTrace] {
        let now = clock.now()
        let decider = self.decider
        var out: [DecidedTrace] = []
        eachShard { $0.decideAll(trigger: trigger, now: now, decider: decider, into: &out) }
        return out
    }

    /// Shutdown with a store (`on_shutdown: persist`): writes every trace's in-memory spans to the store instead of
    /// deciding, so that the next start on the same data directory resumes them. Traces the store has no room for
    /// are decided (returned). Returns the traces persisted as well.
    package func persistAll() -> (persisted: Int, decided: [DecidedTrace]) {
        let now = clock.now()
        let decider = self.decider
        var out: [DecidedTrace] = []
        var persisted = 0
        eachShard { state in
            persisted += state.cold.count  // on disk already
            for entry in Array(state.traces.values) {
                if entry.spans.isEmpty || state.spill(entry, now) {
                    persisted += 1
                } else {
                    out.append(state.decide(entry, .shutdown, now, decider))
                }
            }
        }
        return (persisted, out)
    }

    /// The oldest store segment an undecided trace still needs (its records, or in sync mode the write-ahead
    /// records of its in-memory spans); nil when none does. Segments before it hold nothing live.
    ///
    /// `floor`: the oldest segment there is. When retained dropped traces (counted per segment, so cheap to look at)
    /// already pin it, nothing can be deleted and it is returned without walking every undecided trace — the common
    /// case while the revise window is on, and this runs every second under the shard locks.
    package func oldestPinnedSegment(floor: UInt64? = nil) -> UInt64? {
        if let floor {
            var pinned: UInt64? = nil
            for shard in shards {
                if let p = shard.state.withLock({ $0.retainedPins.keys.min() }) { pinned = min(pinned ?? p, p) }
            }
            if let pinned, pinned <= floor { return pinned }
        }
        var oldest: UInt64? = nil
        for shard in shards {
            let m = shard.state.withLock { state -> UInt64? in
                var m: UInt64? = nil
                for entry in state.traces.values {
                    let p = min(entry.diskRefs.first?.segment ?? .max, entry.walSince)
                    if p != .max { m = min(m ?? p, p) }
                }
                for c in state.cold.values {
                    if let p = c.firstSegment { m = min(m ?? p, p) }
                }
                if let p = state.retainedPins.keys.min() { m = min(m ?? p, p) }
                return m
            }
            if let m { oldest = min(oldest ?? m, m) }
        }
        return oldest
    }

    /// Rewrites the traces that pin a segment before `segment` as one record each (with their in-memory spans), so
    /// that old, mostly dead segments can be deleted; at most about `maxBytes`. Returns the bytes rewritten.
    package func consolidate(below segment: UInt64, maxBytes: Int) -> Int {
        let now = clock.now()
        var written = 0
        eachShard { state in
            guard written < maxBytes else { return }
            for entry in Array(state.traces.values) where written < maxBytes {
                let p = min(entry.diskRefs.first?.segment ?? .max, entry.walSince)
                guard p < segment else { continue }
                guard let n = state.consolidate(entry, now) else { return }
                written += n
            }
            for (id, c) in Array(state.cold) where written < maxBytes {
                guard let p = c.firstSegment, p < segment else { continue }
                guard let n = state.consolidateCold(id, now) else { return }
                written += n
            }
        }
        return written
    }

    /// Recovery: adds the spans of one record found in the store at start. `ref` is the record's place when its spans
    /// stay on disk; nil for spans held in memory (write-ahead records of sync mode). Records must come in log order.
    package func restore(trace: TraceID, request: ScannedRequest, body: UnsafeRawBufferPointer, timing: SpillTiming,
                        ref: SpillRef?, headers: [(String, String)] = []) {
        let shard = shardIndex(trace)
        let now = clock.now()
        let wall = store?.wallNow() ?? 0
        let headerID = headerSets.id(headers)
        let delta = shards[shard].state.withLock { state -> Delta in
            let before = state.snapshot
            state.restore(trace: trace, request: request, body: body, timing: timing, ref: ref, now: now, wall: wall)
            if headerID != HeaderSets.none, let entry = state.traces[trace], entry.headers == HeaderSets.none { entry.headers = headerID }
            return state.delta(since: before)
        }
        apply(delta)
    }

    /// A graceful stop with the store: what the buffer holds of each undecided trace, all of whose spans are on disk
    /// by now (`persistAll`), for the store's index — so that the next start needs no scan of the span records.
    /// nil when some trace still has spans in memory only.
    package func exportIndex() -> [IndexedTrace]? {
        let now = clock.now()
        let wall = store?.wallNow() ?? 0
        let plan = decider.planGeneration
        var out: [IndexedTrace] = []
        for shard in shards {
            let ok = shard.state.withLock { state -> Bool in
                for entry in state.traces.values {
                    guard entry.spans.isEmpty, !entry.diskRefs.isEmpty else { return false }
                    let timing = state.timing(entry, now: now, wallNow: wall)
                    out.append(IndexedTrace(summary: entry.summary, timing: timing,
                                            missing: entry.missing.entries.map { ($0.0, $0.1.rawValue) },
                                            refs: entry.diskRefs, headers: headerSets.pairs(entry.headers),
                                            aggregatesCurrent: entry.planGeneration == plan))
                }
                for (id, c) in state.cold {
                    var summary = TraceSummary(traceID: id)
                    summary.spanCount = Int(c.spanCount)
                    let timing = SpillTiming(firstSeen: state.wall(c.firstSeen, now: now, wallNow: wall),
                                             lastSeen: state.wall(c.lastSeen, now: now, wallNow: wall),
                                             rootArrived: state.wall(c.rootArrived, now: now, wallNow: wall))
                    var t = IndexedTrace(summary: summary, timing: timing, missing: [], refs: c.refs,
                                         headers: headerSets.pairs(c.headers), aggregatesCurrent: false)
                    t.cold = true
                    t.deadline = state.wall(c.scheduled, now: now, wallNow: wall)
                    out.append(t)
                }
                return true
            }
            if !ok { return nil }
        }
        return out
    }

    /// Recovery from the store's index: the traces as they were at the graceful stop (their spans stay on disk).
    /// `aggregatesValid`: the policies read the same attributes as when the index was written; otherwise each trace
    /// is re-aggregated from its spans when it is decided.
    package func importIndex(_ traces: [IndexedTrace], aggregatesValid: Bool) {
        let now = clock.now()
        let wall = store?.wallNow() ?? 0
        let plan = aggregatesValid ? decider.planGeneration : UInt64.max
        for t in traces {
            let headerID = headerSets.id(t.headers)
            let delta = shards[shardIndex(t.summary.traceID)].state.withLock { state -> Delta in
                let before = state.snapshot
                state.importIndexed(t, planGeneration: t.aggregatesCurrent ? plan : UInt64.max, headers: headerID, now: now, wall: wall)
                return state.delta(since: before)
            }
            apply(delta)
        }
    }

    /// Recovery: a trace decided before the restart (late spans follow that decision).
    package func restoreDecision(trace: TraceID, decision: Decision) {
        let now = clock.now()
        shards[shardIndex(trace)].state.withLock { state in
            guard state.traces[trace] == nil, state.cold[trace] == nil else { return }
            if decision.keep { state.kept.insert(trace, decision, now: now) } else { state.dropped.insert(trace, decision, now: now) }
        }
    }

    /// Decisions forgotten before `maxTraceAge` + 5 min had passed (the cache was full): a late span of such a trace
    /// gets a decision of its own. Raise `decisionCacheSize` when this grows.
    package var decisionCacheEarlyEvictions: Int {
        shards.reduce(0) { $0 + $1.state.withLock { $0.kept.earlyEvictions + $0.dropped.earlyEvictions } }
    }

    /// Recovery is over: restored traces get their deadlines (timers continue from the times in their records).
    package func finishRestore() {
        let now = clock.now()
        eachShard { $0.finishRestore(now: now) }
    }

    /// Remembered decisions (trace ID, decision) of every shard, for persisting them at shutdown.
    package func rememberedDecisions() -> [(TraceID, Decision)] {
        var out: [(TraceID, Decision)] = []
        for shard in shards {
            shard.state.withLock { state in
                out += state.kept.entries
                out += state.dropped.entries
            }
        }
        return out
    }

    /// The earliest pending deadline, if any (for tests and for sizing the decision tick).
    package func nextDeadline() -> UInt64? {
        shards.compactMap { $0.state.withLock { $0.deadlines.min?.deadline } }.min()
    }
}

// MARK: - Shards

struct Timing: Sendable {
    var waitAfterRoot: UInt64
    var idle: UInt64
    var remoteParent: UInt64
    var maxAge: UInt64
    var maxSpans: Int
    var cacheSize: Int
    var spillAfter: UInt64
    var reviseWindow: UInt64

    init(_ c: BufferConfiguration) {
        waitAfterRoot = c.waitAfterRoot.nanoseconds
        idle = c.idleTimeout.nanoseconds
        remoteParent = c.remoteParentTimeout.nanoseconds
        maxAge = c.maxTraceAge.nanoseconds
        maxSpans = max(1, c.maxSpansPerTrace)
        cacheSize = max(1, c.decisionCacheSize / max(1, c.shardCount))
        spillAfter = c.spillAfter.nanoseconds
        reviseWindow = c.reviseWindow.nanoseconds
    }
}

final class Shard: Sendable {
    let state: Mutex<ShardState>
    init(timing: Timing, store: (any TraceStore)?, headerSets: HeaderSets) {
        state = Mutex(ShardState(timing: timing, store: store, headerSets: headerSets))
    }
}

/// Fixed per-trace overhead counted against the memory bound: the entry object with its summary (~300 B with malloc
/// rounding), its dictionary slot at the table's load factor, its deadline heap and arrival queue items (with their
/// arrays' spare capacity), measured at ~750 B on Linux; rounded up.
let traceOverheadBytes = 768
/// Swift array header (32 B) plus malloc's chunk overhead (16 B) per allocation.
let arrayAllocationOverhead = 48

/// Mutable per-trace state. Only ever touched with its shard's lock held (hence the unchecked conformance).
final class TraceEntry: @unchecked Sendable {
    var summary: TraceSummary
    var spans = BufferedSpans()
    let generation: UInt64
    var firstSeen: UInt64
    var lastSeen: UInt64
    var rootArrived: UInt64 = 0
    /// Deadline of this trace's live heap item.
    var scheduled: UInt64
    /// Plan generation of the aggregates; nil when spans of several generations were mixed.
    var planGeneration: UInt64?
    /// Span IDs of the trace, with their parents (to drop duplicates, to tell which parents are missing, and to walk
    /// the tree for the GenAI token rule).
    var seen = SmallIDMap<UInt64>()
    /// Parents named by spans of the trace that have not arrived, with where they live.
    var missing = SmallIDMap<ParentLocality>()
    /// How many of `missing` are local: while any is, the run is still going.
    var missingLocal = 0
    /// Records of the trace's spans in the store, in log order (`spans` holds the spans that arrived since).
    var diskRefs: [SpillRef] = []
    /// Sorted IDs of spans moved to the store since `seen` last held them all (8 bytes a span instead of a map entry
    /// with its parent). Enough to recognise duplicates and arrived parents, so a span reaching a spilled trace does
    /// not read the trace back; the parents themselves are read back only when the token rule needs them.
    var spilledIDs: [UInt64] = []
    /// `seen` and `spilledIDs` hold every span of the trace. False after a restart from the index (which has no
    /// span IDs): read back at the trace's next span.
    var seenComplete = true
    /// `seen` has every span with its parent.
    var linksInMemory: Bool { seenComplete && spilledIDs.isEmpty }
    /// Sync durability: the oldest write-ahead segment holding spans of `spans` (`.max`: none).
    var walSince: UInt64 = .max
    /// An item of this trace is in the shard's spill queue.
    var spillQueued = false
    /// An item of this trace is in the shard's `arrival` queue (traces whose spans may be in memory).
    var queuedInMemory = true
    /// An item of this trace is in the shard's `spilledArrival` queue.
    var queuedSpilled = false
    /// Being rebuilt from the store at start.
    var restoring = false
    /// Pass-through headers (`HeaderSets` ID) of the first request of the trace that had any.
    var headers: UInt32 = HeaderSets.none

    var storedBytes: Int { diskRefs.reduce(0) { $0 + Int($1.length) } }

    init(id: TraceID, generation: UInt64, now: UInt64, scheduled: UInt64, planGeneration: UInt64) {
        self.planGeneration = planGeneration
        summary = TraceSummary(traceID: id)
        self.generation = generation
        firstSeen = now
        lastSeen = now
        self.scheduled = scheduled
    }

    var accountedBytes: Int {
        spans.accountedBytes + traceOverheadBytes + seen.accountedBytes + missing.accountedBytes
            + (spilledIDs.isEmpty ? 0 : spilledIDs.capacity * 8 + arrayAllocationOverhead) + summary.genAIAccountedBytes
    }

    /// The spans in memory went to the store: their IDs join `spilledIDs` (exact capacity) and `seen` is emptied.
    func moveSeenToSpilledIDs() {
        guard !seen.isEmpty else { return }
        var ids = spilledIDs
        ids.append(contentsOf: seen.entries.lazy.map { $0.0 })
        ids.sort()
        spilledIDs = ids.withUnsafeBufferPointer { Array($0) }
        seen = SmallIDMap()
    }

    /// A root has arrived and no span waits for a parent.
    var isComplete: Bool { rootArrived != 0 && missing.isEmpty }

    /// Whether spans with these IDs have arrived (one pass over `seen` for both while it is small).
    @inline(__always)
    func hasSpans(_ a: UInt64, _ b: UInt64) -> (Bool, Bool) {
        let (inA, inB) = seen.find(a, b)
        return (inA != nil || hasSpilled(a), inB != nil || hasSpilled(b))
    }

    /// A span with this ID went to the store (binary search of `spilledIDs`).
    @inline(__always)
    func hasSpilled(_ id: UInt64) -> Bool {
        guard !spilledIDs.isEmpty else { return false }
        return spilledIDs.withUnsafeBufferPointer { ids in
            var lo = 0, hi = ids.count
            while lo < hi {
                let mid = (lo + hi) >> 1
                if ids[mid] < id { lo = mid + 1 } else { hi = mid }
            }
            return lo < ids.count && ids[lo] == id
        }
    }

    /// Records a span's IDs; false when the trace already has a span with this ID (a duplicate delivery). On the
    /// insert path of every span: `seen` and `missing` are each walked once (while small) for the span and its parent.
    func record(spanID: UInt64, parent: UInt64, parentIsRemote: Bool?) -> Bool {
        let (duplicate, parentArrived) = hasSpans(spanID, parent)
        guard !duplicate else { return false }
        seen.insertNew(spanID, parent)
        let (was, parentMissing) = missing.isEmpty ? (nil, nil) : missing.find(spanID, parent)
        if was != nil {
            missing.remove(spanID)
            if was == .local { missingLocal -= 1 }
        }
        if parent != 0 && parent != spanID && !parentArrived {
            let locality: ParentLocality = parentIsRemote.map { $0 ? .remote : .local } ?? .unknown
            // One span of its own process saying "local" settles it, whichever span named the parent first (a callee
            // in another service names the same span as its remote parent, and often exports first).
            switch parentMissing {
            case nil:
                missing.insertNew(parent, locality)
                if locality == .local { missingLocal += 1 }
            case .remote?, .unknown?:
                if locality == .local {
                    missing.set(parent, .local)
                    missingLocal += 1
                }
            case .local?:
                break
            }
        }
        return true
    }

    /// When the trace is decided, and why (README, "How a trace's decision is timed"):
    /// - a span waits for a parent of its own process: the run is still going — only `maxAge` applies;
    /// - the root arrived: `waitAfterRoot` after it, or `idle` after the last span, whichever is first;
    /// - no root, and only remote (or unknown) parents are missing: `remoteParent` after the last span;
    /// - in every case at the latest `maxAge` after the first span.
    func deadline(_ t: Timing) -> (UInt64, DecisionTrigger) {
        var best = (firstSeen &+ t.maxAge, DecisionTrigger.maxAge)
        guard missingLocal == 0 else { return best }
        if rootArrived != 0 {
            let idle = lastSeen &+ t.idle
            if idle < best.0 { best = (idle, .idle) }
            let root = rootArrived &+ t.waitAfterRoot
            if root <= best.0 { best = (root, .root) }
        } else {
            let quiet = lastSeen &+ (missing.isEmpty ? t.idle : t.remoteParent)
            if quiet < best.0 { best = (quiet, .idle) }
        }
        return best
    }
}

/// Span IDs → value for one trace: a linear array while small (most traces hold a few dozen spans; no hashing, one
/// small allocation), a dictionary beyond `limit`. On the insert path of every span.
struct SmallIDMap<Value> {
    private var small: [(id: UInt64, value: Value)] = []
    private var large: [UInt64: Value]? = nil
    static var limit: Int { 32 }

    var isEmpty: Bool { large?.isEmpty ?? small.isEmpty }

    /// See `TraceEntry.prefetch`.
    @inline(__always)
    mutating func prefetch() {
        if large == nil { prefetchArray(at: &small) }
    }

    /// Every (ID, value), in no particular order.
    var entries: [(UInt64, Value)] { large.map { $0.map { ($0.key, $0.value) } } ?? small.map { ($0.id, $0.value) } }

    subscript(id: UInt64) -> Value? {
        if let large { return large[id] }
        for entry in small where entry.id == id { return entry.value }
        return nil
    }

    /// The values of `a` and `b`, in one pass while small.
    @inline(__always)
    func find(_ a: UInt64, _ b: UInt64) -> (Value?, Value?) {
        if let large { return (large[a], large[b]) }
        var va: Value? = nil, vb: Value? = nil
        for entry in small {
            if entry.id == a { va = entry.value }
            if entry.id == b { vb = entry.value }
        }
        return (va, vb)
    }

    /// Adds a key that is known not to be there (no search).
    mutating func insertNew(_ id: UInt64, _ value: Value) {
        if large != nil {
            large![id] = value
            updateAllocation()
            return
        }
        append(id, value)
    }

    mutating func set(_ id: UInt64, _ value: Value) {
        if large != nil {
            large?[id] = value
            updateAllocation()
            return
        }
        if let i = small.firstIndex(where: { $0.id == id }) {
            small[i].value = value
            return
        }
        append(id, value)
    }

    private mutating func append(_ id: UInt64, _ value: Value) {
        defer { updateAllocation() }
        if small.isEmpty { small.reserveCapacity(8) }
        small.append((id, value))
        if small.count > Self.limit {
            var map = [UInt64: Value](minimumCapacity: small.count * 2)
            for entry in small { map[entry.id] = entry.value }
            large = map
            small = []
        }
    }

    @discardableResult
    mutating func remove(_ id: UInt64) -> Value? {
        if large != nil { return large?.removeValue(forKey: id) }
        guard let i = small.firstIndex(where: { $0.id == id }) else { return nil }
        let value = small[i].value
        small.swapAt(i, small.count - 1)
        small.removeLast()
        return value
    }

    /// Bytes allocated, for the buffer's accounting (kept up to date by `set`; removing never shrinks the storage).
    private(set) var accountedBytes = 0

    mutating func updateAllocation() {
        if let large {
            accountedBytes = large.capacity * (MemoryLayout<UInt64>.stride + MemoryLayout<Value>.stride + 1) + arrayAllocationOverhead
        } else {
            accountedBytes = small.capacity == 0 ? 0 : small.capacity * MemoryLayout<(id: UInt64, value: Value)>.stride + arrayAllocationOverhead
        }
    }
}

/// A dropped trace whose spans are kept in the store for the revise window.
///
/// With a decider that can rescan records (the real policies), it is compact: no summary is kept, only where its
/// records are. The first late span rebuilds the summary from them (read back and scanned, the token rule resolved
/// over the whole tree), as the decision saw it; late spans are rare, and a dropped trace is most of the traffic.
final class RetainedTrace: @unchecked Sendable {
    /// The summary as decided (or rebuilt at the first late span), with late spans added; nil while compact.
    var summaryBox: SummaryBox?
    var refs: [SpillRef]
    /// Late spans that arrived since the drop.
    var late = BufferedSpans()
    let expires: UInt64
    let headers: UInt32
    let firstSeen: UInt64
    init(summary: TraceSummary?, refs: [SpillRef], expires: UInt64, headers: UInt32, firstSeen: UInt64) {
        summaryBox = summary.map(SummaryBox.init)
        self.refs = refs
        self.expires = expires
        self.headers = headers
        self.firstSeen = firstSeen
    }

    /// Memory counted against the buffer's bound: the fixed overhead, the summary with the GenAI ledger it carries
    /// (kept so that a late span can revise the drop on a token budget) unless compact, and late spans held since the
    /// drop.
    var accountedBytes: Int {
        (summaryBox.map { retainedSummaryBytes + $0.summary.genAIAccountedBytes } ?? 0) + retainedOverheadBytes
            + late.accountedBytes + refs.capacity * MemoryLayout<SpillRef>.stride + arrayAllocationOverhead
    }
}

final class SummaryBox {
    var summary: TraceSummary
    init(_ summary: TraceSummary) { self.summary = summary }
}

/// Memory counted per retained dropped trace: the object, its dictionary slot and its `retainedOrder` item.
let retainedOverheadBytes = 176
/// … and for its summary, when it has one (a decider that cannot rescan records, or after a late span).
let retainedSummaryBytes = 224

/// A spilled trace whose summary left memory too, when the memory bound was reached with every span already on disk:
/// only where its records are and its timers. Its summary, span IDs, missing parents and GenAI ledger are rebuilt
/// from the records (read back and scanned as at recovery) when a span of it arrives or when it is due; its decision
/// is the one it would have had. About 270–320 B a trace (with a handful of records) where a spilled one keeps
/// ~1.4 KiB, so that waiting agent runs in the hundreds of thousands fit a memory bound of a few hundred MiB.
struct ColdTrace {
    /// The trace's records, in log order, packed.
    var packedRefs: [PackedSpillRef]
    var refs: [SpillRef] { packedRefs.map(\.ref) }
    let generation: UInt64
    /// Deadline of the trace's live heap item: the decision it is due for (computed when it went cold).
    var scheduled: UInt64
    var firstSeen: UInt64
    var lastSeen: UInt64
    var rootArrived: UInt64
    var headers: UInt32
    /// Spans the trace had (those that cannot be read back are reported as unreadable at the decision).
    var spanCount: UInt32

    var accountedBytes: Int { coldTraceOverheadBytes + packedRefs.capacity * MemoryLayout<PackedSpillRef>.stride + arrayAllocationOverhead }
    var storedBytes: Int { packedRefs.reduce(0) { $0 + Int($1.length) } }
    var firstSegment: UInt64? { packedRefs.first.map { UInt64($0.segment) } }

    /// The records' places packed, with exact capacity; nil when one does not fit (the trace then stays warm).
    static func pack(_ refs: [SpillRef]) -> [PackedSpillRef]? {
        guard refs.allSatisfy({ $0.segment <= UInt32.max && $0.offset <= UInt32.max }) else { return nil }
        return [PackedSpillRef](unsafeUninitializedCapacity: refs.count) { out, count in
            for (i, r) in refs.enumerated() {
                out[i] = PackedSpillRef(segment: UInt32(r.segment), offset: UInt32(r.offset), length: r.length)
            }
            count = refs.count
        }
    }
}

/// A `SpillRef` in 12 bytes instead of 24 (segment numbers and offsets within a segment below 2³²).
struct PackedSpillRef {
    var segment: UInt32
    var offset: UInt32
    var length: UInt32
    var ref: SpillRef { SpillRef(segment: UInt64(segment), offset: UInt64(offset), length: length) }
}

/// Memory counted per cold trace besides its records' places: its dictionary slot (16-byte key and 56-byte value at
/// the table's typical load, ~128 B), its deadline heap item and its `coldArrival` item with their arrays' spare
/// capacity (~48 and ~32 B).
let coldTraceOverheadBytes = 208

struct DeadlineItem: Comparable {
    var deadline: UInt64
    var id: TraceID
    var generation: UInt64
    static func < (a: DeadlineItem, b: DeadlineItem) -> Bool { a.deadline < b.deadline }
    static func == (a: DeadlineItem, b: DeadlineItem) -> Bool { a.deadline == b.deadline && a.id == b.id }
}

/// A bounded map of decided trace IDs that forgets the oldest first: those older than `retention` at once, younger
/// ones only when over `capacity` (counted in `earlyEvictions`).
struct DecisionCache {
    private var members: [TraceID: Decision] = [:]
    private var order: Deque<(TraceID, UInt64)> = []
    let capacity: Int
    let retention: UInt64
    private(set) var earlyEvictions = 0

    init(capacity: Int, retention: UInt64 = .max) {
        self.capacity = capacity
        self.retention = retention
    }

    func contains(_ id: TraceID) -> Bool { members[id] != nil }

    subscript(_ id: TraceID) -> Decision? { members[id] }

    /// Every remembered decision, oldest first.
    var entries: [(TraceID, Decision)] { order.compactMap { id, _ in members[id].map { (id, $0) } } }

    mutating func insert(_ id: TraceID, _ decision: Decision = .noMatch, now: UInt64 = 0) {
        guard members.updateValue(decision, forKey: id) == nil else { return }
        order.append((id, now))
        while let (oldest, at) = order.first, now &- at > retention && now > at {
            order.removeFirst()
            members.removeValue(forKey: oldest)
        }
        if order.count > capacity, let (oldest, at) = order.popFirst() {
            members.removeValue(forKey: oldest)
            if now &- at <= retention || now < at { earlyEvictions += 1 }
        }
    }
}

struct ShardState {
    let timing: Timing
    /// Undecided traces in memory (see `TraceTable`).
    let traces = TraceTable()
    var deadlines = Heap<DeadlineItem>()
    /// Traces in creation order (with generation), for deciding the oldest first under memory pressure.
    var arrival: Deque<(TraceID, UInt64)> = []
    /// Traces that `relieve` found or made spilled, in the order it did (about arrival order): kept apart so that
    /// relieving memory never walks them again (it did, for every request, once the budget was full of spilled
    /// traces: quadratic).
    var spilledArrival: Deque<(TraceID, UInt64)> = []
    /// Cold traces (`ColdTrace`): spilled traces whose summary left memory too, and the order they went cold in.
    var cold: [TraceID: ColdTrace] = [:]
    var coldArrival: Deque<(TraceID, UInt64)> = []
    var bytes = 0
    var nextGeneration: UInt64 = 1
    var kept: DecisionCache
    var dropped: DecisionCache
    let store: (any TraceStore)?
    let headerSets: HeaderSets
    /// Traces whose spans wait for `spillAfter` of quiet before moving to the store.
    /// Items of traces' first spans, due `spillAfter` later: appended in clock order, so a queue (no heap work per
    /// trace; most traces are decided before theirs comes up).
    var spillQueue = Deque<DeadlineItem>()
    /// Items due at other times (a trace still active when its first item came up, restored traces), in a heap.
    var spillLater = Heap<DeadlineItem>()
    /// Record bytes of undecided traces in the store, and how many traces have any.
    var storedBytes = 0
    var storedTraces = 0
    /// Dropped traces kept for the revise window, oldest first.
    var retained: [TraceID: RetainedTrace] = [:]
    var retainedOrder: Deque<TraceID> = []
    /// Retained traces by the segment of their first record: the oldest segment they pin, without walking them all.
    var retainedPins: [UInt64: Int] = [:]

    var snapshot: TraceBuffer.Delta {
        .init(traces: traces.count + cold.count, bytes: bytes, storedBytes: storedBytes, storedTraces: storedTraces, cold: cold.count)
    }
    func delta(since s: TraceBuffer.Delta) -> TraceBuffer.Delta {
        .init(traces: traces.count + cold.count - s.traces, bytes: bytes - s.bytes, storedBytes: storedBytes - s.storedBytes,
              storedTraces: storedTraces - s.storedTraces, cold: cold.count - s.cold)
    }

    init(timing: Timing, store: (any TraceStore)?, headerSets: HeaderSets) {
        self.timing = timing
        self.store = store
        self.headerSets = headerSets
        kept = DecisionCache(capacity: timing.cacheSize, retention: timing.maxAge &+ 300_000_000_000)
        dropped = DecisionCache(capacity: timing.cacheSize, retention: timing.maxAge &+ 300_000_000_000)
    }

    mutating func insert(
        indices: ArraySlice<Int>, _ request: ScannedRequest, _ body: UnsafeRawBufferPointer, _ now: UInt64,
        _ budget: Int, _ decider: any TraceDecider, _ outcome: inout InsertOutcome
    ) {
        var current: TraceEntry? = nil
        var lastLateTrace: TraceID? = nil
        var revisit: [(TraceID, Int)] = []
        // Read once per request, not per span (each read of the existential is a retain and a release).
        let hasStore = store != nil
        let walSegment = store?.walSegment
        defer {
            for (id, late) in revisit where !revise(id, now, decider, &outcome) { outcome.lateDropped += late }
        }
        for i in indices {
            let span = request.spans[i]
            let scope = request.scopes[Int(span.scope)]
            let entry: TraceEntry
            if let c = current, c.summary.traceID == span.traceID {
                entry = c
            } else if let found = traces[span.traceID] {
                entry = found
                entry.prefetch()
            } else if !cold.isEmpty, let thawed = thaw(span.traceID, decider) {
                entry = thawed
            } else if let decision = kept[span.traceID] {
                if let g = request.genAI(of: span) { outcome.lateGenAI.append(g) }
                if let last = outcome.lateKept.indices.last, lastLateTrace == span.traceID {
                    outcome.lateKept[last].spans.append(span, scope: scope, body: body)
                } else {
                    var spans = BufferedSpans()
                    spans.append(span, scope: scope, body: body)
                    outcome.lateKept.append(LateSpans(decision: decision, spans: spans, headers: outcome.headers))
                    lastLateTrace = span.traceID
                }
                current = nil
                continue
            } else if dropped.contains(span.traceID) {
                if let g = request.genAI(of: span) { outcome.lateGenAI.append(g) }
                if let r = retained[span.traceID], r.expires > now {
                    let before = r.accountedBytes
                    let box = r.summaryBox ?? materialize(span.traceID, r, decider)
                    box.summary.add(span, in: request)
                    r.late.append(span, scope: scope, body: body)
                    bytes += r.accountedBytes - before
                    // Counted as dropped only if the trace is not revised (below).
                    if revisit.last?.0 == span.traceID { revisit[revisit.count - 1].1 += 1 } else { revisit.append((span.traceID, 1)) }
                } else {
                    outcome.lateDropped += 1
                }
                current = nil
                continue
            } else {
                let deadline = now &+ min(timing.idle, timing.maxAge)
                entry = TraceEntry(id: span.traceID, generation: nextGeneration, now: now, scheduled: deadline,
                                   planGeneration: request.planGeneration)
                nextGeneration += 1
                traces[span.traceID] = entry
                if let w = walSegment { entry.walSince = w }
                deadlines.insert(DeadlineItem(deadline: deadline, id: span.traceID, generation: entry.generation))
                arrival.append((span.traceID, entry.generation))
                bytes += traceOverheadBytes
            }
            current = entry
            if entry.headers == HeaderSets.none { entry.headers = outcome.headers }
            if !entry.seenComplete { rehydrate(entry) }
            let before = entry.accountedBytes
            let wasOpen = entry.missingLocal > 0 || !entry.missing.isEmpty
            guard entry.record(spanID: span.spanID, parent: span.parentSpanID, parentIsRemote: span.parentIsRemote) else {
                outcome.duplicates += 1
                continue
            }
            if entry.planGeneration != request.planGeneration { entry.planGeneration = nil }
            entry.summary.add(span, in: request)
            if entry.spans.isEmpty {
                if let w = walSegment { entry.walSince = min(entry.walSince, w) }
                if !entry.queuedInMemory {  // spilled, now in memory again: spillable under pressure
                    entry.queuedInMemory = true
                    arrival.append((span.traceID, entry.generation))
                }
            }
            entry.spans.append(span, scope: scope, body: body)
            if hasStore && !entry.spillQueued {
                entry.spillQueued = true
                spillQueue.append(DeadlineItem(deadline: now &+ timing.spillAfter, id: span.traceID, generation: entry.generation))
            }
            bytes += entry.accountedBytes - before
            entry.lastSeen = now
            outcome.buffered += 1
            // A root that has not ended (a streaming exporter sending it first) does not count as the root.
            var rootArrivedNow = false
            if span.isRoot && span.endTime != 0 && entry.rootArrived == 0 {
                entry.rootArrived = now
                rootArrivedNow = true
            }
            // The deadline can only move earlier when the root arrives or the last missing parent does.
            if rootArrivedNow || (wasOpen && entry.missingLocal == 0) {
                let (deadline, _) = entry.deadline(timing)
                if deadline < entry.scheduled {
                    entry.scheduled = deadline
                    deadlines.insert(DeadlineItem(deadline: deadline, id: span.traceID, generation: entry.generation))
                }
            }
            if entry.summary.spanCount >= timing.maxSpans {
                outcome.decided.append(decide(entry, .spanLimit, now, decider))
                current = nil
            }
        }
        relieve(budget: budget, now: now, decider: decider, into: &outcome.decided)
    }

    /// Late spans reached a retained dropped trace: kept (whole, from the store) if a deterministic policy keeps it now.
    /// True when the trace was revised (kept).
    mutating func revise(_ id: TraceID, _ now: UInt64, _ decider: any TraceDecider, _ outcome: inout InsertOutcome) -> Bool {
        guard let r = retained[id], let box = r.summaryBox else { return false }
        guard var decision = decider.revise(box.summary) else {
            let before = r.accountedBytes
            box.summary.withGenAI { $0.pack() }  // a late GenAI span unpacked it
            bytes += r.accountedBytes - before
            // The late spans stay with the trace (a later span may still revise it), within the span limit.
            if box.summary.spanCount > timing.maxSpans { forget(id) }
            return false
        }
        decision.keep = true
        decision.trigger = .revised
        decision.decidedAt = now
        var spans = BufferedSpans()
        _ = store?.read(r.refs, into: &spans)
        spans.append(contentsOf: r.late)
        forget(id)
        var summary = box.summary
        summary.withGenAI { $0.unpack() }
        summary.trigger = .revised
        summary.decidedAt = now
        kept.insert(id, decision, now: now)
        if store?.walSegment == nil {
            store?.decided(trace: id, decision: decision, policyName: decider.policyName(decision), stored: true)
        }
        outcome.decided.append(DecidedTrace(summary: summary, decision: decision, spans: spans,
                                            unreadableSpans: max(0, summary.spanCount - spans.count), headers: r.headers))
        return true
    }

    /// A compact retained trace's summary, rebuilt from its records (and kept from now on, with the late spans).
    mutating func materialize(_ id: TraceID, _ r: RetainedTrace, _ decider: any TraceDecider) -> SummaryBox {
        let before = r.accountedBytes
        let box = SummaryBox(retainedSummary(id, r, decider))
        box.summary.withGenAI { $0.pack() }
        r.summaryBox = box
        bytes += r.accountedBytes - before
        return box
    }

    /// The summary of a retained dropped trace as it was decided: kept, or rebuilt from its records with the token
    /// rule resolved over the whole tree. Late spans since the drop are in a kept one only.
    func retainedSummary(_ id: TraceID, _ r: RetainedTrace, _ decider: any TraceDecider) -> TraceSummary {
        if let box = r.summaryBox { return box.summary }
        let entry = TraceEntry(id: id, generation: 0, now: r.firstSeen, scheduled: 0, planGeneration: decider.planGeneration)
        scanRecords(r.refs, into: entry, decider)
        var summary = entry.summary
        summary.firstSeenAt = r.firstSeen
        summary.complete = summary.rootSeen && entry.missing.isEmpty
        let seen = entry.seen
        summary.withGenAI { $0.resolve { seen[$0] } }
        return summary
    }

    /// Stops retaining a dropped trace.
    mutating func forget(_ id: TraceID) {
        guard let r = retained.removeValue(forKey: id) else { return }
        bytes -= r.accountedBytes
        if let segment = r.refs.first?.segment {
            if retainedPins[segment, default: 0] <= 1 { retainedPins[segment] = nil } else { retainedPins[segment]! -= 1 }
        }
    }

    /// Over the memory bound: retained dropped traces go first, then the oldest traces' spans move to the store; when
    /// it has no room (or there is none), or the traces' summaries alone exceed the bound, the oldest traces are
    /// decided early.
    mutating func relieve(budget: Int, now: UInt64, decider: any TraceDecider, into decided: inout [DecidedTrace]) {
        guard bytes > budget else { return }
        while bytes > budget, let id = retainedOrder.popFirst() { forget(id) }
        if store != nil {
            while bytes > budget, let (id, generation) = arrival.popFirst() {
                guard let entry = traces[id], entry.generation == generation else { continue }
                if entry.spans.isEmpty || spill(entry, now) {
                    // Stays undecided; its spans are on disk until it gets new ones (then back in `arrival`).
                    entry.queuedInMemory = false
                    if !entry.queuedSpilled {
                        entry.queuedSpilled = true
                        spilledArrival.append((id, generation))
                    }
                    continue
                }
                arrival.prepend((id, generation))  // the store is full: spilled traces go cold first, then early decisions
                break
            }
            // Spilled traces' summaries leave memory too, the longest-spilled first.
            if decider.canRescan {
                while bytes > budget, let (id, generation) = spilledArrival.popFirst() {
                    guard let entry = traces[id], entry.generation == generation else { continue }
                    entry.queuedSpilled = false
                    // (One with spans in memory again is in `arrival` already.)
                    guard entry.spans.isEmpty, !entry.diskRefs.isEmpty, !entry.restoring else { continue }
                    if !freeze(entry) && !entry.queuedInMemory {
                        // It cannot go cold (its records' places do not pack): it waits to be decided early.
                        entry.queuedInMemory = true
                        arrival.append((id, generation))
                    }
                }
            }
        }
        while bytes > budget, let entry = popOldest() {
            decided.append(decide(entry, .memoryPressure, now, decider))
        }
        // Only cold traces left, and still over: the oldest of them are decided early.
        while bytes > budget, let (id, generation) = coldArrival.popFirst() {
            guard cold[id]?.generation == generation, let entry = thaw(id, decider) else { continue }
            decided.append(decide(entry, .memoryPressure, now, decider))
        }
    }

    /// A spilled trace (no span in memory) goes cold: its summary and span IDs leave memory; `ColdTrace` keeps where
    /// its records are and its timers.
    @discardableResult
    mutating func freeze(_ entry: TraceEntry) -> Bool {
        guard let packed = ColdTrace.pack(entry.diskRefs) else { return false }
        let id = entry.summary.traceID
        traces.removeValue(forKey: id)
        bytes -= entry.accountedBytes
        var scheduled = entry.scheduled
        // The decision it is due for now, so that no earlier heap item makes it read back before then.
        let (due, _) = entry.deadline(timing)
        if due > scheduled {
            scheduled = due
            deadlines.insert(DeadlineItem(deadline: due, id: id, generation: entry.generation))
        }
        let c = ColdTrace(packedRefs: packed, generation: entry.generation,
                          scheduled: scheduled, firstSeen: entry.firstSeen, lastSeen: entry.lastSeen,
                          rootArrived: entry.rootArrived, headers: entry.headers,
                          spanCount: UInt32(clamping: entry.summary.spanCount))
        cold[id] = c
        coldArrival.append((id, entry.generation))
        bytes += c.accountedBytes
        return true
    }

    /// A cold trace back in memory, as it was when it went cold (spilled); nil when it is not cold.
    mutating func thaw(_ id: TraceID, _ decider: any TraceDecider) -> TraceEntry? {
        guard let c = cold.removeValue(forKey: id) else { return nil }
        bytes -= c.accountedBytes
        let entry = rebuild(id, c, decider)
        traces[id] = entry
        bytes += entry.accountedBytes
        // Spilled again: it may go cold again under pressure (after the traces that have waited longer).
        entry.queuedSpilled = true
        spilledArrival.append((id, c.generation))
        return entry
    }

    /// The in-memory state of a cold trace, rebuilt from its records with the decider's scanner (as at recovery).
    /// Spans that cannot be read back still count in `spanCount` (reported as unreadable at the decision).
    func rebuild(_ id: TraceID, _ c: ColdTrace, _ decider: any TraceDecider) -> TraceEntry {
        let entry = TraceEntry(id: id, generation: c.generation, now: c.firstSeen, scheduled: c.scheduled,
                               planGeneration: decider.planGeneration)
        entry.lastSeen = c.lastSeen
        entry.rootArrived = c.rootArrived
        entry.headers = c.headers
        entry.diskRefs = c.refs
        entry.queuedInMemory = false
        scanRecords(c.refs, into: entry, decider)
        entry.summary.spanCount = max(entry.summary.spanCount, Int(c.spanCount))
        entry.moveSeenToSpilledIDs()
        entry.summary.withGenAI { $0.pack() }
        return entry
    }

    /// Reads a trace's records back and adds their spans to `entry` (IDs, parents, summary), scanned with the
    /// decider's scanner as at ingest. Spans that cannot be read or scanned are left out.
    func scanRecords(_ refs: [SpillRef], into entry: TraceEntry, _ decider: any TraceDecider) {
        var stored = BufferedSpans()
        if let store { _ = store.read(refs, into: &stored) }
        guard !stored.isEmpty else { return }
        var request = ScannedRequest()
        guard stored.encodeRequest().withUnsafeBytes({ decider.rescan($0, into: &request) }) else { return }
        if request.planGeneration != decider.planGeneration { entry.planGeneration = nil }
        let id = entry.summary.traceID
        for span in request.spans where span.traceID == id {
            guard entry.record(spanID: span.spanID, parent: span.parentSpanID, parentIsRemote: span.parentIsRemote) else { continue }
            entry.summary.add(span, in: request)
        }
    }

    /// Rewrites a cold trace's records as one (see `consolidate(_:_:)`); the bytes written, nil when there is no room.
    mutating func consolidateCold(_ id: TraceID, _ now: UInt64) -> Int? {
        guard let store, var c = cold[id] else { return nil }
        var all = BufferedSpans()
        _ = store.read(c.refs, into: &all)
        let wallNow = store.wallNow()
        let t = SpillTiming(firstSeen: wall(c.firstSeen, now: now, wallNow: wallNow), lastSeen: wall(c.lastSeen, now: now, wallNow: wallNow),
                            rootArrived: wall(c.rootArrived, now: now, wallNow: wallNow))
        // (Should the new place not pack, the old records stay in use: they hold the same spans.)
        guard let ref = store.append(trace: id, spans: all, timing: t, supersedes: true, headers: headerSets.pairs(c.headers)),
              let packed = ColdTrace.pack([ref]) else { return nil }
        bytes -= c.accountedBytes
        storedBytes += Int(ref.length) - c.storedBytes
        c.packedRefs = packed
        cold[id] = c
        bytes += c.accountedBytes
        return Int(ref.length)
    }

    /// The live trace that arrived first, taken off the queues that hold it (stale items are skipped).
    mutating func popOldest() -> TraceEntry? {
        while true {
            let fromSpilled: Bool
            switch (arrival.first, spilledArrival.first) {
            case (nil, nil): return nil
            case (nil, _?): fromSpilled = true
            case (_?, nil): fromSpilled = false
            case let (a?, s?): fromSpilled = s.1 < a.1  // generations grow with arrival
            }
            let (id, generation) = fromSpilled ? spilledArrival.removeFirst() : arrival.removeFirst()
            guard let entry = traces[id], entry.generation == generation else { continue }
            if fromSpilled { entry.queuedSpilled = false } else { entry.queuedInMemory = false }
            return entry
        }
    }

    /// Wall-clock time of a clock reading.
    func wall(_ mono: UInt64, now: UInt64, wallNow: UInt64) -> UInt64 {
        mono == 0 ? 0 : wallNow &- (now &- min(mono, now))
    }

    /// A clock reading of a wall-clock time written earlier (a time in the future counts as now).
    func mono(_ wallTime: UInt64, now: UInt64, wallNow: UInt64) -> UInt64 {
        wallTime == 0 ? 0 : now &- min(now &- 1, wallNow &- min(wallTime, wallNow))
    }

    /// A trace's arrival times as wall-clock times, as written with its records.
    func timing(_ entry: TraceEntry, now: UInt64, wallNow: UInt64) -> SpillTiming {
        SpillTiming(firstSeen: wall(entry.firstSeen, now: now, wallNow: wallNow), lastSeen: wall(entry.lastSeen, now: now, wallNow: wallNow),
                    rootArrived: wall(entry.rootArrived, now: now, wallNow: wallNow))
    }

    /// Moves a trace's in-memory spans to the store. False when the store has no room (the spans stay).
    mutating func spill(_ entry: TraceEntry, _ now: UInt64) -> Bool {
        guard let store, !entry.spans.isEmpty else { return false }
        let timing = timing(entry, now: now, wallNow: store.wallNow())
        guard let ref = store.append(trace: entry.summary.traceID, spans: entry.spans, timing: timing, supersedes: false,
                                     headers: headerSets.pairs(entry.headers)) else {
            return false
        }
        let before = entry.accountedBytes
        if entry.diskRefs.isEmpty { storedTraces += 1 }
        entry.diskRefs.append(ref)
        storedBytes += Int(ref.length)
        entry.spans = BufferedSpans()
        entry.moveSeenToSpilledIDs()
        entry.walSince = .max
        entry.summary.withGenAI { $0.pack() }  // the trace waits: its ledger shrinks until its next GenAI span
        bytes += entry.accountedBytes - before
        return true
    }

    /// Rewrites every stored span of a trace, with its in-memory ones, as one record that supersedes the earlier
    /// ones. Returns the bytes written, nil when the store has no room.
    mutating func consolidate(_ entry: TraceEntry, _ now: UInt64) -> Int? {
        guard let store else { return nil }
        var all = BufferedSpans()
        _ = store.read(entry.diskRefs, into: &all)
        all.append(contentsOf: entry.spans)
        let timing = timing(entry, now: now, wallNow: store.wallNow())
        guard let ref = store.append(trace: entry.summary.traceID, spans: all, timing: timing, supersedes: true,
                                     headers: headerSets.pairs(entry.headers)) else { return nil }
        let before = entry.accountedBytes
        if entry.diskRefs.isEmpty { storedTraces += 1 }
        storedBytes += Int(ref.length) - entry.storedBytes
        entry.diskRefs = [ref]
        entry.spans = BufferedSpans()
        entry.moveSeenToSpilledIDs()
        entry.walSince = .max
        entry.summary.withGenAI { $0.pack() }  // the trace waits: its ledger shrinks until its next GenAI span
        bytes += entry.accountedBytes - before
        return Int(ref.length)
    }

    /// Reads back the IDs and parents of a spilled trace's stored spans into `seen`.
    mutating func rehydrate(_ entry: TraceEntry) {
        let before = entry.accountedBytes
        entry.seenComplete = true
        entry.spilledIDs = []  // `seen` gets them back, with their parents
        if let store, !entry.diskRefs.isEmpty {
            var stored = BufferedSpans()
            _ = store.read(entry.diskRefs, into: &stored)
            for (id, parent) in stored.spanLinks() { entry.seen.set(id, parent) }
        }
        bytes += entry.accountedBytes - before
    }

    mutating func decide(_ entry: TraceEntry, _ trigger: DecisionTrigger, _ now: UInt64, _ decider: any TraceDecider) -> DecidedTrace {
        traces.removeValue(forKey: entry.summary.traceID)
        bytes -= entry.accountedBytes
        entry.summary.trigger = trigger
        entry.summary.decidedAt = now
        entry.summary.firstSeenAt = entry.firstSeen
        entry.summary.complete = entry.isComplete
        var spans = entry.spans
        var unreadable = 0
        var readBack = false
        func readAll() {
            guard !readBack, let store, !entry.diskRefs.isEmpty else { return }
            readBack = true
            var all = BufferedSpans()
            _ = store.read(entry.diskRefs, into: &all)
            all.append(contentsOf: entry.spans)
            unreadable = max(0, entry.summary.spanCount - all.count)
            spans = all
        }
        if entry.planGeneration != decider.planGeneration {
            readAll()
            decider.reaggregate(&entry.summary, spans: spans)
        }
        if var ledger = entry.summary.genAI.take() {
            ledger.unpack()
            // The token rule walks the span tree: a spilled trace's IDs and parents are read back first.
            if ledger.needsAncestry && !entry.linksInMemory { rehydrate(entry) }
            let seen = entry.seen
            ledger.resolve { seen[$0] }
            entry.summary.genAI = ledger
        }
        var decision = decider.decide(entry.summary)
        decision.trigger = trigger
        decision.decidedAt = now
        if !entry.diskRefs.isEmpty {
            storedTraces -= 1
            storedBytes -= entry.storedBytes
        }
        func recordDecision(retained: Bool) {
            if let store, retained || !entry.diskRefs.isEmpty || entry.walSince != .max {
                store.decided(trace: entry.summary.traceID, decision: decision, policyName: decider.policyName(decision), stored: true)
            }
        }
        if decision.keep {
            // Sync durability: a keep is recorded by the caller once the kept spans are durably queued for the
            // downstream (before that, a crash must leave the trace undecided, so that it is decided again).
            if store?.walSegment == nil { recordDecision(retained: false) }
            readAll()
            kept.insert(entry.summary.traceID, decision, now: now)
            return DecidedTrace(summary: entry.summary, decision: decision, spans: spans, unreadableSpans: unreadable, headers: entry.headers)
        } else {
            dropped.insert(entry.summary.traceID, decision, now: now)
            // The decision record follows the retained spans' record, so that a restart does not resurrect them.
            recordDecision(retained: retain(entry, now, compact: decider.canRescan))
            return DecidedTrace(summary: entry.summary, decision: decision, spans: nil, headers: entry.headers)
        }
    }

    /// Keeps a dropped trace's spans in the store for the revise window (its in-memory spans are written first).
    @discardableResult
    mutating func retain(_ entry: TraceEntry, _ now: UInt64, compact: Bool) -> Bool {
        guard let store, timing.reviseWindow > 0, entry.summary.trigger != .shutdown else { return false }
        var refs = entry.diskRefs
        if !entry.spans.isEmpty {
            let t = timing(entry, now: now, wallNow: store.wallNow())
            guard let ref = store.append(trace: entry.summary.traceID, spans: entry.spans, timing: t, supersedes: false,
                                         headers: headerSets.pairs(entry.headers)) else { return false }
            refs.append(ref)
        }
        let id = entry.summary.traceID
        if retained[id] != nil { forget(id) }
        var summary: TraceSummary? = nil
        if !compact {
            summary = entry.summary
            summary!.withGenAI { $0.pack() }  // with what the decision counted, so that a revision counts the same
        }
        let r = RetainedTrace(summary: summary, refs: refs, expires: now &+ timing.reviseWindow, headers: entry.headers,
                              firstSeen: entry.firstSeen)
        retained[id] = r
        retainedOrder.append(id)
        if let segment = refs.first?.segment { retainedPins[segment, default: 0] += 1 }
        bytes += r.accountedBytes
        return true
    }

    /// Recovery: one record's spans (see `TraceBuffer.restore`).
    mutating func restore(trace: TraceID, request: ScannedRequest, body: UnsafeRawBufferPointer, timing: SpillTiming,
                          ref: SpillRef?, now: UInt64, wall: UInt64) {
        // Wall-clock times of the record, as readings of this process's clock (a time in the future counts as now).
        func mono(_ w: UInt64) -> UInt64 { self.mono(w, now: now, wallNow: wall) }
        let entry: TraceEntry
        if let found = traces[trace] {
            entry = found
        } else {
            entry = TraceEntry(id: trace, generation: nextGeneration, now: mono(timing.firstSeen), scheduled: .max,
                               planGeneration: request.planGeneration)
            entry.restoring = true
            nextGeneration += 1
            traces[trace] = entry
            arrival.append((trace, entry.generation))
            bytes += traceOverheadBytes
        }
        let before = entry.accountedBytes
        entry.firstSeen = min(entry.firstSeen, mono(timing.firstSeen))
        entry.lastSeen = max(entry.lastSeen, mono(timing.lastSeen))
        if timing.rootArrived != 0 && entry.rootArrived == 0 { entry.rootArrived = mono(timing.rootArrived) }
        for span in request.spans where span.traceID == trace {
            guard entry.record(spanID: span.spanID, parent: span.parentSpanID, parentIsRemote: span.parentIsRemote) else { continue }
            if entry.planGeneration != request.planGeneration { entry.planGeneration = nil }
            entry.summary.add(span, in: request)
            if span.isRoot && span.endTime != 0 && entry.rootArrived == 0 { entry.rootArrived = mono(timing.lastSeen) }
            if ref == nil {
                if !entry.queuedInMemory {
                    entry.queuedInMemory = true
                    arrival.append((trace, entry.generation))
                }
                entry.spans.append(span, scope: request.scopes[Int(span.scope)], body: body)
                if let w = store?.walSegment { entry.walSince = min(entry.walSince, w) }
            }
        }
        if let ref {
            if entry.diskRefs.isEmpty { storedTraces += 1 }
            entry.diskRefs.append(ref)
            storedBytes += Int(ref.length)
        }
        bytes += entry.accountedBytes - before
    }

    mutating func importIndexed(_ t: IndexedTrace, planGeneration: UInt64, headers: UInt32, now: UInt64, wall: UInt64) {
        func mono(_ w: UInt64) -> UInt64 { self.mono(w, now: now, wallNow: wall) }
        let id = t.summary.traceID
        guard traces[id] == nil, cold[id] == nil else { return }
        if t.cold, let packed = ColdTrace.pack(t.refs) {  // (`IndexFile` rejects an index whose cold places do not pack)
            // The deadline is in the future (unlike the other times): as far ahead of this clock as of the wall clock.
            let scheduled = t.deadline > wall ? now &+ (t.deadline - wall) : mono(t.deadline)
            let c = ColdTrace(packedRefs: packed, generation: nextGeneration, scheduled: scheduled, firstSeen: mono(t.timing.firstSeen),
                              lastSeen: mono(t.timing.lastSeen), rootArrived: mono(t.timing.rootArrived), headers: headers,
                              spanCount: UInt32(clamping: t.summary.spanCount))
            nextGeneration += 1
            cold[id] = c
            coldArrival.append((id, c.generation))
            deadlines.insert(DeadlineItem(deadline: c.scheduled, id: id, generation: c.generation))
            bytes += c.accountedBytes
            storedTraces += 1
            storedBytes += c.storedBytes
            return
        }
        let entry = TraceEntry(id: id, generation: nextGeneration, now: mono(t.timing.firstSeen), scheduled: .max,
                               planGeneration: planGeneration)
        nextGeneration += 1
        entry.restoring = true
        entry.summary = t.summary
        entry.lastSeen = max(entry.firstSeen, mono(t.timing.lastSeen))
        entry.rootArrived = mono(t.timing.rootArrived)
        for (parent, locality) in t.missing {
            let l = ParentLocality(rawValue: locality) ?? .unknown
            entry.missing.set(parent, l)
            if l == .local { entry.missingLocal += 1 }
        }
        entry.diskRefs = t.refs
        entry.seenComplete = false
        entry.headers = headers
        traces[id] = entry
        arrival.append((id, entry.generation))
        bytes += entry.accountedBytes
        storedTraces += 1
        storedBytes += entry.storedBytes
    }

    mutating func finishRestore(now: UInt64) {
        for entry in traces.values where entry.restoring {
            entry.restoring = false
            let before = entry.accountedBytes
            if entry.spans.isEmpty && !entry.diskRefs.isEmpty { entry.moveSeenToSpilledIDs() }
            bytes += entry.accountedBytes - before
            let (deadline, _) = entry.deadline(timing)
            entry.scheduled = deadline
            deadlines.insert(DeadlineItem(deadline: deadline, id: entry.summary.traceID, generation: entry.generation))
            if !entry.spans.isEmpty && store != nil && !entry.spillQueued {
                entry.spillQueued = true
                spillLater.insert(DeadlineItem(deadline: entry.lastSeen &+ timing.spillAfter, id: entry.summary.traceID,
                                               generation: entry.generation))
            }
        }
    }

    mutating func decideExpired(now: UInt64, decider: any TraceDecider, into out: inout [DecidedTrace]) {
        // The traces due are gathered first and decided after, each while the next one's arrays are prefetched
        // (`TraceEntry.prefetch`): a trace due has waited seconds, so its arrays have left the caches.
        var due: [(TraceEntry, DecisionTrigger)] = []
        while let top = deadlines.min, top.deadline <= now {
            _ = deadlines.removeMin()
            var found = traces[top.id]
            var wasCold = false
            if found == nil, let c = cold[top.id], c.generation == top.generation, c.scheduled == top.deadline {
                found = thaw(top.id, decider)
                wasCold = true
            }
            guard let entry = found, entry.generation == top.generation, entry.scheduled == top.deadline else {
                continue  // decided already, or a superseded item
            }
            let (deadline, trigger) = entry.deadline(timing)
            if deadline <= now {
                due.append((entry, trigger))
            } else {
                entry.scheduled = deadline
                deadlines.insert(DeadlineItem(deadline: deadline, id: top.id, generation: top.generation))
                if wasCold { freeze(entry) }
            }
        }
        for i in due.indices {
            if i + 1 < due.count { due[i + 1].0.prefetch() }
            out.append(decide(due[i].0, due[i].1, now, decider))
        }
        // Traces quiet for `spillAfter` move to the store.
        while true {
            let top: DeadlineItem
            if let q = spillQueue.first, q.deadline <= now, spillLater.min.map({ $0.deadline >= q.deadline }) ?? true {
                top = spillQueue.removeFirst()
            } else if let l = spillLater.min, l.deadline <= now {
                top = spillLater.removeMin()
            } else {
                break
            }
            guard let entry = traces[top.id], entry.generation == top.generation else { continue }
            let due = entry.lastSeen &+ timing.spillAfter
            if due > now {
                spillLater.insert(DeadlineItem(deadline: due, id: top.id, generation: top.generation))
                continue
            }
            entry.spillQueued = false
            _ = spill(entry, now)
        }
        // Retained dropped traces whose revise window closed.
        while let id = retainedOrder.first {
            guard let r = retained[id] else { retainedOrder.removeFirst(); continue }
            guard r.expires <= now else { break }
            retainedOrder.removeFirst()
            forget(id)
        }
        // Forget arrival records of traces decided already, so the queue stays as long as the live traces.
        while let (id, generation) = arrival.first, traces[id]?.generation != generation {
            arrival.removeFirst()
        }
        while let (id, generation) = spilledArrival.first, traces[id]?.generation != generation {
            spilledArrival.removeFirst()
        }
        while let (id, generation) = coldArrival.first, cold[id]?.generation != generation {
            coldArrival.removeFirst()
        }
    }

    mutating func decideAll(trigger: DecisionTrigger, now: UInt64, decider: any TraceDecider, into out: inout [DecidedTrace]) {
        // Oldest first, so output order follows arrival.
        while let entry = popOldest() {
            out.append(decide(entry, trigger, now, decider))
        }
        for entry in Array(traces.values) {
            out.append(decide(entry, trigger, now, decider))
        }
        // Cold traces, oldest first, each read back to be decided.
        while let (id, _) = coldArrival.popFirst() {
            if let entry = thaw(id, decider) { out.append(decide(entry, trigger, now, decider)) }
        }
        for id in Array(cold.keys) {
            if let entry = thaw(id, decider) { out.append(decide(entry, trigger, now, decider)) }
        }
        deadlines = Heap()
        spillQueue = Deque()
        spillLater = Heap()
    }
}
