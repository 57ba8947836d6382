import Foundation

// The hot path: walks an encoded ExportTraceServiceRequest and reads, per span, only what decisions
// need. Span payloads are not decoded or copied here; they are reported as byte ranges of the input.

/// The resource of a group of spans, kept encoded: every field of `ResourceSpans` except `scope_spans`
/// (that is `resource` and `schema_url`), with their tags, exactly as received.
package final class ResourceOrigin: Sendable {
    package let header: [UInt8]
    /// XXH3 of `header`, so that grouping by content never rehashes the bytes.
    package let key: HeaderKey
    package init(header: [UInt8]) {
        self.header = header
        key = HeaderKey(header)
    }

    init(header: [UInt8], key: HeaderKey) {
        self.header = header
        self.key = key
    }
}

/// Header bytes compared by content, hashed once.
package struct HeaderKey: Hashable, Sendable {
    package let hash: UInt64
    package let bytes: [UInt8]

    package init(_ bytes: [UInt8]) {
        self.bytes = bytes
        hash = bytes.withUnsafeBytes { xxh3($0) }
    }

    package func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    /// Equal hashes, then equal bytes compared with `memcmp` (the same header arrives in every request of a client,
    /// each time in its own array, so a match usually compares every byte; `Array.==` would do it one at a time).
    package static func == (a: HeaderKey, b: HeaderKey) -> Bool {
        guard a.hash == b.hash, a.bytes.count == b.bytes.count else { return false }
        return a.bytes.withUnsafeBytes { x in
            b.bytes.withUnsafeBytes { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 }
        }
    }
}

/// The instrumentation scope of a group of spans: every field of `ScopeSpans` except `spans`, with tags.
package final class ScopeOrigin: Sendable {
    package let resource: ResourceOrigin
    package let header: [UInt8]
    package let key: HeaderKey
    package init(resource: ResourceOrigin, header: [UInt8]) {
        self.resource = resource
        self.header = header
        key = HeaderKey(header)
    }

    init(resource: ResourceOrigin, header: [UInt8], key: HeaderKey) {
        self.resource = resource
        self.header = header
        self.key = key
    }
}

/// Status codes of `Status.code`.
package enum StatusCode: UInt8, Sendable, CaseIterable {
    case unset = 0
    case ok = 1
    case error = 2

    /// Bit of this code in a status mask.
    package var bit: UInt8 { 1 << rawValue }
}

/// What a decision needs to know about one span, plus where its bytes are.
package struct SpanFacts: Sendable {
    package var traceID: TraceID
    package var spanID: UInt64
    /// 0 when the span has no parent (a root span).
    package var parentSpanID: UInt64
    package var startTime: UInt64
    package var endTime: UInt64
    package var status: StatusCode
    /// Bits of the `AttributePlan` conditions the span (or its resource) satisfies.
    package var bits: UInt64
    /// Per-slot values of the `AttributePlan` (0 where the span lacks the attribute).
    package var sums: SIMD8<Int64>
    /// Index into `ScannedRequest.scopes`.
    package var scope: Int32
    /// The span message's payload (without its tag and length) within the request.
    package var bytes: Range<Int>
    /// `Span.flags`: the W3C trace flags (low byte) and whether the parent is remote (bits 8 and 9).
    package var flags: UInt32 = 0
    /// The explicit randomness `rv` of the span's tracestate (`ot=…;rv:<14 hex digits>`), 56 bits; `.max` when absent.
    package var randomness: UInt64 = .max
    /// XXH3 of the span's conversation ID (`AttributePlan.conversationKeys`); 0 when it has none.
    package var conversation: UInt64 = 0
    /// Index of the span's GenAI facts in `ScannedRequest.genAI`; -1 when it has none.
    package var genAI: Int32 = -1

    package var isRoot: Bool { parentSpanID == 0 }

    /// Whether the parent span lives in another process (true) or in the same one (false), when the exporter says so
    /// (OTLP `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK` 0x100 and `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK` 0x200); nil when
    /// it does not.
    package var parentIsRemote: Bool? {
        flags & 0x100 != 0 ? flags & 0x200 != 0 : nil
    }
}

/// The result of scanning one request.
package struct ScannedRequest: Sendable {
    package var spans: [SpanFacts] = []
    package var scopes: [ScopeOrigin] = []
    /// Spans that were not accepted (invalid trace or span ID) and why (first reason only).
    package var rejectedSpans: Int = 0
    package var rejectionMessage: String?
    /// Generation of the plan the spans were scanned with (see `OTLPScanner.generation`).
    package var planGeneration: UInt64 = 0
    /// GenAI facts of the spans that have any (`SpanFacts.genAI` indexes it).
    package var genAI: [GenAISpan] = []

    package init() {}

    /// The GenAI facts of a span of this request, if it has any.
    package func genAI(of span: SpanFacts) -> GenAISpan? { span.genAI >= 0 ? genAI[Int(span.genAI)] : nil }

    package mutating func removeAll() {
        spans.removeAll(keepingCapacity: true)
        scopes.removeAll(keepingCapacity: true)
        genAI.removeAll(keepingCapacity: true)
        rejectedSpans = 0
        rejectionMessage = nil
    }
}

/// A request that is not a valid `ExportTraceServiceRequest`: where and what.
package struct ScanError: Error, Sendable, CustomStringConvertible, Equatable {
    package var path: String
    package var wire: WireError
    package var description: String { "malformed protobuf: \(wire.message) in \(path) (byte \(wire.offset))" }
}

/// Scans encoded `ExportTraceServiceRequest`s. A value type; make one per policy set.
package struct OTLPScanner: Sendable {
    package let plan: AttributePlan
    /// Identifies the policies the plan came from; facts scanned under different generations are not mixed.
    package let generation: UInt64
    let compiled: CompiledPlan
    /// Whether spans' GenAI attributes are read (`SpanFacts.genAI`). Default true: the GenAI metrics and token
    /// policies need them.
    package let readsGenAI: Bool

    package init(plan: AttributePlan = AttributePlan(), generation: UInt64 = 0, readsGenAI: Bool = true) {
        self.plan = plan
        self.generation = generation
        self.readsGenAI = readsGenAI
        compiled = plan.compile()
    }

    /// Scans `body` into `result` (which is cleared first). Span ranges refer to `body`.
    ///
    /// What is refused, and how much:
    /// - A request whose own framing is broken (the ExportTraceServiceRequest, a ResourceSpans or a ScopeSpans
    ///   is not well-formed at the wire level: truncated tag, length past its end, …) throws `ScanError`: there is
    ///   no telling where its spans are.
    /// - A span that a protobuf parser would reject (see `OTLPValidator`: malformed nested messages, invalid UTF-8
    ///   in a string, messages nested deeper than 100 levels, a known field of the wrong wire type), or that has
    ///   invalid trace or span IDs, is rejected alone: counted in `rejectedSpans`, the first reason kept in
    ///   `rejectionMessage` with its path; the other spans are accepted.
    /// - A resource or scope header that fails the same validation (e.g. invalid UTF-8 in a resource attribute)
    ///   rejects every span of that resource or scope the same way (they could not be forwarded without it), and
    ///   the rest of the request is accepted.
    ///
    /// Working memory is proportional to the accepted spans: a resource or scope without accepted spans costs no
    /// allocation (no `ResourceOrigin`, `ScopeOrigin` or header copy), so `result.scopes` holds only scopes that
    /// hold spans, and `SpanFacts.scope` indexes it.
    package func scan(_ body: UnsafeRawBufferPointer, into result: inout ScannedRequest) throws(ScanError) {
        result.removeAll()
        result.planGeneration = generation
        var path = Path()
        do {
            var request = ProtoReader(body)
            while let (field, wt) = try request.readTag() {
                if field == 1 && wt == .lengthDelimited {
                    let range = try request.readLengthDelimited()
                    try scanResourceSpans(body, range, &result, &path)
                    path.resource += 1
                } else {
                    try OTLPValidator.skipUnknown(field, wt, &request, depth: 0)
                }
            }
        } catch {
            throw ScanError(path: path.description, wire: error)
        }
    }

    struct Path: CustomStringConvertible {
        var resource = 0
        var scope = -1
        var span = -1
        var description: String {
            var s = "resourceSpans[\(resource)]"
            if scope >= 0 { s += ".scopeSpans[\(scope)]" }
            if span >= 0 { s += ".spans[\(span)]" }
            return s
        }
    }

    /// Per ResourceSpans: its header (built when its first scope with accepted spans needs it) and resource bits.
    private struct ResourceState {
        let range: Range<Int>
        var origin: ResourceOrigin? = nil
        var bits: UInt64? = nil
    }

    private func scanResourceSpans(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ result: inout ScannedRequest, _ path: inout Path
    ) throws(WireError) {
        // Pass 1: validate the header fields (all but scope_spans).
        let headerProblem = try validateHeader(.resourceSpansHeader, base, range, depth: OTLPValidator.resourceSpansDepth)
        // Pass 2: the scopes.
        var resource = ResourceState(range: range)
        var reader = ProtoReader(base, range: range)
        path.scope = 0
        while let (field, wt) = try reader.readTag() {
            guard field == 2 && wt == .lengthDelimited else { try reader.skip(wt); continue }
            let scopeRange = try reader.readLengthDelimited()
            if let headerProblem {
                let count = try countSpans(base, scopeRange)
                if count > 0 { reject(&result, count: count, "\(headerProblem.message) at \(Path(resource: path.resource)) (every span of the resource rejected)") }
            } else {
                try scanScopeSpans(base, scopeRange, &resource, &result, &path)
            }
            path.scope += 1
        }
        path.scope = -1
    }

    /// Validates the fields of a ResourceSpans or ScopeSpans other than its scopes or spans. Returns the first
    /// problem of the header (its spans are then rejected); throws when the message's own framing is broken.
    private func validateHeader(
        _ kind: OTLPValidator.Message, _ base: UnsafeRawBufferPointer, _ range: Range<Int>, depth: Int
    ) throws(WireError) -> WireError? {
        var reader = ProtoReader(base, range: range)
        var problem: WireError? = nil
        while let (field, wt) = try reader.readTag() {
            if field == 2 && wt == .lengthDelimited { _ = try reader.readLengthDelimited(); continue }
            let valueStart = reader.offset
            if problem != nil { try reader.skip(wt); continue }
            do {
                try OTLPValidator.validateField(kind, field, wt, &reader, depth: depth, root: true)
            } catch {
                problem = error
                // Framing errors of the message itself are the request's problem: skipping again throws them.
                reader.offset = valueStart
                try reader.skip(wt)
            }
        }
        return problem
    }

    /// The number of spans of a ScopeSpans (framing errors of the ScopeSpans throw).
    private func countSpans(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) throws(WireError) -> Int {
        var reader = ProtoReader(base, range: range)
        var count = 0
        while let (field, wt) = try reader.readTag() {
            if field == 2 && wt == .lengthDelimited { count += 1 }
            try reader.skip(wt)
        }
        return count
    }

    /// The fields of a ResourceSpans or ScopeSpans other than field 2 (scope_spans, spans), with their tags.
    private func headerBytes(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) throws(WireError) -> [UInt8] {
        var reader = ProtoReader(base, range: range)
        var size = 0
        while true {
            let fieldStart = reader.offset
            guard let (field, wt) = try reader.readTag() else { break }
            try reader.skip(wt)
            if !(field == 2 && wt == .lengthDelimited) { size += reader.offset - fieldStart }
        }
        var header: [UInt8] = []
        guard size > 0 else { return header }
        header.reserveCapacity(size)
        reader = ProtoReader(base, range: range)
        while true {
            let fieldStart = reader.offset
            guard let (field, wt) = try reader.readTag() else { break }
            try reader.skip(wt)
            if !(field == 2 && wt == .lengthDelimited) {
                header.append(contentsOf: UnsafeRawBufferPointer(rebasing: base[fieldStart..<reader.offset]))
            }
        }
        return header
    }

    private func scanScopeSpans(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ resource: inout ResourceState,
        _ result: inout ScannedRequest, _ path: inout Path
    ) throws(WireError) {
        // Pass 1: validate the header (all but spans). A scope without spans ends here, at no cost.
        var reader = ProtoReader(base, range: range)
        var headerProblem: WireError? = nil
        var spanCount = 0
        while let (field, wt) = try reader.readTag() {
            if field == 2 && wt == .lengthDelimited {
                _ = try reader.readLengthDelimited()
                spanCount += 1
                continue
            }
            let valueStart = reader.offset
            if headerProblem != nil { try reader.skip(wt); continue }
            do {
                try OTLPValidator.validateField(
                    .scopeSpansHeader, field, wt, &reader, depth: OTLPValidator.scopeSpansDepth, root: true)
            } catch {
                headerProblem = error
                reader.offset = valueStart
                try reader.skip(wt)
            }
        }
        guard spanCount > 0 else { return }
        if let headerProblem {
            reject(&result, count: spanCount, "\(headerProblem.message) at \(path) (every span of the scope rejected)")
            return
        }

        // Pass 2: the spans. Their scope gets the next index, and is created only if one of them is accepted.
        if resource.bits == nil {
            resource.bits = compiled.hasResourceActions ? try resourceBits(base, resource.range) : 0
        }
        let resourceBits = resource.bits ?? 0
        let firstSpan = result.spans.count
        try scanSpans(base, range, Int32(result.scopes.count), resourceBits, &result, &path)
        path.span = -1
        guard result.spans.count > firstSpan else { return }

        let origin: ResourceOrigin
        if let existing = resource.origin {
            origin = existing
        } else {
            origin = OriginInterner.shared.resource(try headerBytes(base, resource.range))
            resource.origin = origin
        }
        result.scopes.append(OriginInterner.shared.scope(origin, try headerBytes(base, range)))
    }

    /// Pass 2 of a ScopeSpans: validates and scans each span (scope `scopeIndex`).
    private func scanSpans(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ scopeIndex: Int32, _ resourceBits: UInt64,
        _ result: inout ScannedRequest, _ path: inout Path
    ) throws(WireError) {
        var reader = ProtoReader(base, range: range)
        path.span = 0
        while let (field, wt) = try reader.readTag() {
            guard field == 2 && wt == .lengthDelimited else { try reader.skip(wt); continue }
            let spanRange = try reader.readLengthDelimited()
            if OTLPValidator.isValid(.span, base, spanRange, depth: OTLPValidator.spanDepth) {
                // A valid span cannot fail to scan: a WireError here would be a scanner bug, reported for the request.
                try scanSpan(base, spanRange, scopeIndex, resourceBits, &result)
            } else {
                reject(&result, count: 1, "\(OTLPValidator.problem(.span, base, spanRange, depth: OTLPValidator.spanDepth)) at \(path)")
            }
            path.span += 1
        }
    }

    @inline(__always)
    private func scanSpan(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ scopeIndex: Int32, _ resourceBits: UInt64,
        _ result: inout ScannedRequest
    ) throws(WireError) {
        var reader = ProtoReader(base, range: range)
        var traceID = TraceID(hi: 0, lo: 0)
        var traceIDLength = -1
        var spanID: UInt64 = 0
        var spanIDLength = -1
        var parent: UInt64 = 0
        var parentLength = 0
        var start: UInt64 = 0
        var end: UInt64 = 0
        var status = StatusCode.unset
        var flags: UInt32 = 0
        var state = SpanPlanState(bits: resourceBits)
        let wantAttributes = !compiled.isEmpty || readsGenAI

        while let (field, wt) = try reader.readTag() {
            switch (field, wt) {
            case (1, .lengthDelimited):
                let r = try reader.readLengthDelimited()
                traceIDLength = r.count
                if r.count == 16 { traceID = TraceID(loadingFrom: base, at: r.lowerBound) }
            case (2, .lengthDelimited):
                let r = try reader.readLengthDelimited()
                spanIDLength = r.count
                if r.count == 8 { spanID = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: r.lowerBound, as: UInt64.self)) }
            case (3, .lengthDelimited):
                state.traceState = try reader.readLengthDelimited()
            case (4, .lengthDelimited):
                let r = try reader.readLengthDelimited()
                parentLength = r.count
                parent = r.count == 8 ? UInt64(bigEndian: base.loadUnaligned(fromByteOffset: r.lowerBound, as: UInt64.self)) : 0
            case (7, .fixed64):
                start = try reader.readFixed64()
            case (8, .fixed64):
                end = try reader.readFixed64()
            case (9, .lengthDelimited) where wantAttributes:
                let r = try reader.readLengthDelimited()
                try scanAttribute(base, r, span: true, &state)
            case (15, .lengthDelimited):
                let r = try reader.readLengthDelimited()
                status = try scanStatus(base, r)
            case (16, .fixed32):
                flags = try reader.readFixed32()
            default:
                try reader.skip(wt)
            }
        }

        guard traceIDLength == 16, traceID.isValid else {
            reject(&result, count: 1, traceIDLength == -1 ? "span without trace_id" : "trace_id must be 16 bytes and not all zero")
            return
        }
        guard spanIDLength == 8, spanID != 0 else {
            reject(&result, count: 1, spanIDLength == -1 ? "span without span_id" : "span_id must be 8 bytes and not all zero")
            return
        }
        guard parentLength == 0 || parentLength == 8 else {
            reject(&result, count: 1, "parent_span_id must be empty or 8 bytes")
            return
        }
        let (bits, sums) = !compiled.isEmpty ? finish(base, &state, status) : (resourceBits, SIMD8<Int64>())
        var facts = SpanFacts(
            traceID: traceID, spanID: spanID, parentSpanID: parent, startTime: start, endTime: end,
            status: status, bits: bits, sums: sums, scope: scopeIndex, bytes: range, flags: flags)
        if let ts = state.traceState, !ts.isEmpty { facts.randomness = Self.explicitRandomness(base, ts) }
        if let r = state.conversation { facts.conversation = Self.conversationHash(UnsafeRawBufferPointer(rebasing: base[r])) }
        if state.genAI.seen {
            facts.genAI = Int32(result.genAI.count)
            result.genAI.append(state.genAI.span(base, spanID: spanID, parent: parent, start: start, end: end, statusError: status == .error))
        }
        result.spans.append(facts)
    }

    /// The conversation hash of an ID's UTF-8 bytes (never 0, which means "none").
    package static func conversationHash(_ id: UnsafeRawBufferPointer) -> UInt64 {
        let h = xxh3(id)
        return h == 0 ? 1 : h
    }

    /// The `rv` sub-key of the `ot` member of a W3C tracestate (14 hex digits), or `.max`.
    static func explicitRandomness(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) -> UInt64 {
        let bytes = UnsafeRawBufferPointer(rebasing: base[range])
        var i = 0
        let n = bytes.count
        // Members are comma-separated; find one starting with "ot=" (after optional spaces).
        while i < n {
            while i < n && (bytes[i] == 0x20 || bytes[i] == 0x09) { i += 1 }
            let memberEnd = bytes[i...].firstIndex(of: 0x2C) ?? n
            if memberEnd - i > 3 && bytes[i] == 0x6F && bytes[i + 1] == 0x74 && bytes[i + 2] == 0x3D {
                var j = i + 3
                while j < memberEnd {
                    let fieldEnd = bytes[j..<memberEnd].firstIndex(of: 0x3B) ?? memberEnd
                    if fieldEnd - j == 17 && bytes[j] == 0x72 && bytes[j + 1] == 0x76 && bytes[j + 2] == 0x3A {
                        var value: UInt64 = 0
                        for k in (j + 3)..<fieldEnd {
                            let c = bytes[k]
                            let d: UInt8
                            switch c {
                            case 0x30...0x39: d = c - 0x30
                            case 0x61...0x66: d = c - 0x61 + 10
                            default: return .max
                            }
                            value = value << 4 | UInt64(d)
                        }
                        return value
                    }
                    j = fieldEnd + 1
                }
                return .max
            }
            i = memberEnd + 1
        }
        return .max
    }

    /// Counts `count` rejected spans; the message is built only when it is the first.
    private func reject(_ result: inout ScannedRequest, count: Int, _ message: @autoclosure () -> String) {
        result.rejectedSpans += count
        if result.rejectionMessage == nil { result.rejectionMessage = message() }
    }

    private func scanStatus(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) throws(WireError) -> StatusCode {
        var reader = ProtoReader(base, range: range)
        var code: UInt64 = 0
        while let (field, wt) = try reader.readTag() {
            if field == 3 && wt == .varint {
                code = try reader.readVarint()
            } else {
                try reader.skip(wt)
            }
        }
        // Unknown codes count as UNSET (forward-compatible).
        return StatusCode(rawValue: UInt8(truncatingIfNeeded: min(code, 255))) ?? .unset
    }

    /// Bits of the resource conditions, from the `resource` field of a ResourceSpans.
    private func resourceBits(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) throws(WireError) -> UInt64 {
        var reader = ProtoReader(base, range: range)
        var state = SpanPlanState(bits: 0)
        while let (field, wt) = try reader.readTag() {
            guard field == 1, wt == .lengthDelimited else { try reader.skip(wt); continue }
            var resource = ProtoReader(base, range: try reader.readLengthDelimited())
            while let (f, w) = try resource.readTag() {
                if f == 1 && w == .lengthDelimited {
                    try scanAttribute(base, try resource.readLengthDelimited(), span: false, &state)
                } else {
                    try resource.skip(w)
                }
            }
        }
        return state.bits
    }

    /// Resource-condition bits of an encoded ResourceSpans header (as kept in `ResourceOrigin.header`).
    package func resourceBits(header: [UInt8]) -> UInt64 {
        guard compiled.hasResourceActions else { return 0 }
        return header.withUnsafeBytes { raw in (try? resourceBits(raw, 0..<raw.count)) ?? 0 }
    }

    /// The facts of one span payload under this plan (used to re-aggregate buffered traces after a reload).
    package func evaluate(span payload: UnsafeRawBufferPointer, resourceBits: UInt64) -> SpanFacts? {
        var result = ScannedRequest()
        do { try scanSpan(payload, 0..<payload.count, 0, resourceBits, &result) } catch { return nil }
        return result.spans.first
    }

    /// Per-span scratch while the plan is evaluated.
    struct SpanPlanState {
        var bits: UInt64
        var values = SIMD8<Int64>()
        var ranks = SIMD8<Int64>(repeating: .max)
        var traceState: Range<Int>? = nil
        var conversationRank = Int.max
        var conversation: Range<Int>? = nil
        var genAI = GenAIScratch()
    }

    /// Reads one KeyValue; when its key is in the plan, applies the plan's actions to its value.
    private func scanAttribute(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, span: Bool, _ state: inout SpanPlanState
    ) throws(WireError) {
        var reader = ProtoReader(base, range: range)
        var entryIndex: Int? = nil
        var genAIKey: (field: GenAIKeys.Field, rank: Int)? = nil
        var valueRange: Range<Int>? = nil
        while let (field, wt) = try reader.readTag() {
            if field == 1 && wt == .lengthDelimited {
                let key = try reader.readLengthDelimited()
                entryIndex = compiled.isEmpty ? nil : compiled.entry(base, key)
                if span && readsGenAI { genAIKey = GenAIKeys.lookup(base, key) }
                if entryIndex == nil && genAIKey == nil { return }  // not a key we need: skip the rest of this attribute
            } else if field == 2 && wt == .lengthDelimited {
                valueRange = try reader.readLengthDelimited()
            } else {
                try reader.skip(wt)
            }
        }
        guard entryIndex != nil || genAIKey != nil else { return }
        let value = try AnyValueView(base, valueRange ?? range.upperBound..<range.upperBound)
        if let genAIKey { state.genAI.take(genAIKey.field, rank: genAIKey.rank, value, base) }
        guard let entryIndex else { return }
        let actions = span ? compiled.entries[entryIndex].spanActions : compiled.entries[entryIndex].resourceActions
        for action in actions {
            switch action {
            case .condition(let bit, let matcher):
                if try value.matches(matcher, base) { state.bits |= 1 << UInt64(bit) }
            case .value(let slot, let rank):
                if Int64(rank) < state.ranks[slot], let v = value.integer(base) {
                    state.ranks[slot] = Int64(rank)
                    state.values[slot] = v
                }
            case .conversation(let rank):
                if rank < state.conversationRank, case .string(let r) = value.kind, !r.isEmpty {
                    state.conversationRank = rank
                    state.conversation = r
                }
            }
        }
    }

    /// Trace-state and derived conditions, then the slots.
    private func finish(_ base: UnsafeRawBufferPointer, _ state: inout SpanPlanState, _ status: StatusCode) -> (UInt64, SIMD8<Int64>) {
        var bits = state.bits
        if !compiled.traceStates.isEmpty, let ts = state.traceState {
            for (bit, key, values) in compiled.traceStates where traceStateHas(base, ts, key, values) {
                bits |= 1 << UInt64(bit)
            }
        }
        for (bit, rule) in compiled.derived {
            guard bits & rule.allOf == rule.allOf else { continue }
            if rule.anyOf == 0 && !rule.orStatusError || bits & rule.anyOf != 0 || (rule.orStatusError && status == .error) {
                bits |= 1 << UInt64(bit)
            }
        }
        var sums = SIMD8<Int64>()
        for (s, slot) in compiled.slots.enumerated() {
            switch slot {
            case .firstOf(_, let condition):
                if let condition, bits & (1 << UInt64(condition)) == 0 { continue }
                sums[s] = state.values[s]
            case .count(let bit):
                sums[s] = bits & (1 << UInt64(bit)) != 0 ? 1 : 0
            }
        }
        return (bits, sums)
    }

    /// Whether a W3C tracestate (`k1=v1,k2=v2`) has `key` with one of `values` (any value when empty).
    private func traceStateHas(_ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ key: [UInt8], _ values: [[UInt8]]) -> Bool {
        let text = Array(UnsafeRawBufferPointer(rebasing: base[range]))
        for member in text.split(separator: UInt8(ascii: ",")) {
            let trimmed = member.drop { $0 == 32 || $0 == 9 }
            guard let eq = trimmed.firstIndex(of: UInt8(ascii: "=")) else { continue }
            guard Array(trimmed[..<eq]) == key else { continue }
            var value = Array(trimmed[trimmed.index(after: eq)...])
            while value.last == 32 || value.last == 9 { value.removeLast() }
            if values.isEmpty || values.contains(value) { return true }
        }
        return false
    }
}

/// A decoded view of an AnyValue: the kind and where its payload sits.
struct AnyValueView {
    enum Kind {
        case none
        case string(Range<Int>)
        case bool(Bool)
        case int(Int64)
        case double(Double)
        case array(Range<Int>)
        case other
    }

    var kind: Kind = .none

    init(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) throws(WireError) {
        var reader = ProtoReader(base, range: range)
        while let (field, wt) = try reader.readTag() {
            switch (field, wt) {
            case (1, .lengthDelimited): kind = .string(try reader.readLengthDelimited())
            case (2, .varint): kind = .bool(try reader.readVarint() != 0)
            case (3, .varint): kind = .int(Int64(bitPattern: try reader.readVarint()))
            case (4, .fixed64): kind = .double(Double(bitPattern: try reader.readFixed64()))
            case (5, .lengthDelimited): kind = .array(try reader.readLengthDelimited())
            default: try reader.skip(wt); kind = .other
            }
        }
    }

    /// An int, a double (rounded) or a decimal string ("6000", "6000.0", "6e3"; rounded), saturated to the
    /// `Int64` range (NaN is 0). Never traps, whatever the client sent.
    func integer(_ base: UnsafeRawBufferPointer) -> Int64? {
        switch kind {
        case .int(let v): return v
        case .double(let d): return saturatingInt64(d)
        case .string(let r):
            // Longer strings are no number anyone means (and are not worth a copy).
            guard r.count <= Self.maxNumberLength else { return nil }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: base[r]), as: UTF8.self)
            if let v = Int64(text) { return v }
            guard let d = Double(text) else { return nil }
            return saturatingInt64(d)
        default: return nil
        }
    }

    /// Longest decimal string read as a number.
    static let maxNumberLength = 64

    func number(_ base: UnsafeRawBufferPointer) -> Double? {
        switch kind {
        case .int(let v): return Double(v)
        case .double(let d): return d
        case .string(let r):
            guard r.count <= Self.maxNumberLength else { return nil }
            return Double(String(decoding: UnsafeRawBufferPointer(rebasing: base[r]), as: UTF8.self))
        default: return nil
        }
    }


    func matches(_ matcher: CompiledPlan.CompiledMatcher, _ base: UnsafeRawBufferPointer) throws(WireError) -> Bool {
        switch matcher {
        case .exists:
            return true
        case .numeric(let lo, let hi):
            guard let v = number(base) else { return false }
            return v >= lo && v <= hi
        case .bool(let expected):
            if case .bool(let b) = kind { return b == expected }
            return false
        case .strings, .regex:
            switch kind {
            case .string(let r):
                return Self.stringMatches(base, r, matcher)
            case .array(let arrayRange):
                var reader = ProtoReader(base, range: arrayRange)
                while let (field, wt) = try reader.readTag() {
                    guard field == 1, wt == .lengthDelimited else { try reader.skip(wt); continue }
                    let element = try AnyValueView(base, try reader.readLengthDelimited())
                    if case .string(let r) = element.kind, Self.stringMatches(base, r, matcher) { return true }
                }
                return false
            default:
                return false
            }
        }
    }

    static func stringMatches(_ base: UnsafeRawBufferPointer, _ r: Range<Int>, _ matcher: CompiledPlan.CompiledMatcher) -> Bool {
        switch matcher {
        case .strings(let values):
            for v in values where v.count == r.count {
                if v.withUnsafeBytes({ memcmpBytes($0.baseAddress!, base.baseAddress! + r.lowerBound, r.count) }) { return true }
            }
            return false
        case .regex(let expressions):
            let s = String(decoding: UnsafeRawBufferPointer(rebasing: base[r]), as: UTF8.self)
            let whole = NSRange(s.startIndex..., in: s)
            return expressions.contains { $0.firstMatch(in: s, range: whole) != nil }
        default:
            return false
        }
    }
}
