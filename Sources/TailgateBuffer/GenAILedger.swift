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
    /// The GenAI spans, in arrival order (decoded from the encoded forms while the ledger holds one).
    package var spans: [GenAISpan] {
        if let packed { return packed.decoded().spans }
        if appendedCount > 0 { return decodeAppended().spans }
        return expanded
    }
    private var expanded: [GenAISpan] = []
    /// While the trace buffers: its spans encoded as they arrive (`GenAIEncoding`, ~30 bytes a span where a
    /// `GenAISpan` takes 112), decoded once, when the decision resolves the ledger (`unpack`). Its names are the
    /// distinct `GenAINames` of those spans. Holds spans only while `expanded` is empty and nothing is packed.
    private var appended: [UInt8] = []
    private var appendedNames: [GenAINames] = []
    private var appendedCount = 0
    /// While a trace waits on disk: its spans in a compact form (see `pack`); `expanded` is then empty.
    /// (Immutable once made; `ManagedBuffer` cannot declare itself `Sendable`.)
    nonisolated(unsafe) private var packed: PackedGenAISpans? = nil
    /// Per span of `spans`: the tokens it counts for (by `GenAISpan.Lane`), once `resolve` ran.
    package var counted: [SIMD8<Int64>] { packed.map { $0.decoded().counted ?? [] } ?? expandedCounted }
    private var expandedCounted: [SIMD8<Int64>] = []
    package private(set) var resolved = false
    /// Spans beyond this are not recorded (a trace is decided at `maxSpansPerTrace` anyway).
    package static let maxSpans = 20_000

    package init() {}

    package init(spans: [GenAISpan]) {
        expanded = spans
        updateAllocation()
    }

    /// Bytes held (see `accountedBytes`), kept up to date by every change: the buffer reads it on every span of the
    /// trace, and recomputing it there touched the arrays' headers (cold cache lines) for nothing.
    private var allocated = 0

    private mutating func updateAllocation() {
        func allocation(_ capacity: Int, _ stride: Int) -> Int { capacity == 0 ? 0 : capacity * stride + arrayAllocationOverhead }
        allocated = allocation(expanded.capacity, MemoryLayout<GenAISpan>.stride)
            + allocation(expandedCounted.capacity, MemoryLayout<SIMD8<Int64>>.stride) + (packed?.accountedBytes ?? 0)
            + allocation(appended.capacity, 1) + allocation(appendedNames.capacity, MemoryLayout<GenAINames>.stride)
    }

    package static func == (a: GenAILedger, b: GenAILedger) -> Bool {
        a.spans == b.spans && a.counted == b.counted && a.resolved == b.resolved
    }

    /// The number of GenAI spans.
    package var count: Int { packed?.count ?? (appendedCount > 0 ? appendedCount : expanded.count) }
    /// The spans are held packed (see `pack`).
    package var isPacked: Bool { packed != nil }

    /// Prefetches the arrays `append` reads and writes, of the ledger stored at `ledger` (see `TraceEntry.prefetch`):
    /// the storage of a `GenAILedger?`, whose payload is at its start. When the optional is nil the addresses read are
    /// meaningless, and the hints harmless.
    @inline(__always)
    static func prefetch(at ledger: UnsafeMutableRawPointer) {
        let (bytes, names) = arrayOffsets
        prefetchArray(at: (ledger + bytes).assumingMemoryBound(to: [UInt8].self))
        prefetchArray(at: (ledger + names).assumingMemoryBound(to: [GenAINames].self))
    }
    /// Where `appended` and `appendedNames` sit in a ledger.
    static let arrayOffsets = (MemoryLayout<GenAILedger>.offset(of: \GenAILedger.appended)!,
                               MemoryLayout<GenAILedger>.offset(of: \GenAILedger.appendedNames)!)

    /// The storage references of `appended` and `appendedNames`, as bits (tests).
    var arrayStorageBits: (UInt, UInt) { (unsafeBitCast(appended, to: UInt.self), unsafeBitCast(appendedNames, to: UInt.self)) }

    /// Room for about 8 encoded spans at a trace's first GenAI span (was 96 bytes, about 3): each growth is an
    /// allocation and a copy, and growing was 1.7 % of the proxy's CPU at 60k spans/s; it costs ~6 bytes per span.
    static let initialEncodedCapacity = 256

    package mutating func append(_ span: GenAISpan) {
        if packed != nil { unpack() }
        guard count < Self.maxSpans else { return }
        resolved = false
        if expanded.isEmpty {
            // A run repeats a handful of names, the latest most often: searched from the end.
            let name: Int
            if let found = appendedNames.lastIndex(where: { $0 === span.names }) {
                name = found
            } else {
                name = appendedNames.count
                if appendedNames.isEmpty { appendedNames.reserveCapacity(4) }
                appendedNames.append(span.names)
            }
            let size = GenAIEncoding.size(span, name: name, counted: nil)
            if appended.isEmpty { appended.reserveCapacity(max(Self.initialEncodedCapacity, size)) }
            BufferedSpans.grow(&appended, by: size)
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: size) { buffer in
                var p = buffer.baseAddress!
                GenAIEncoding.write(span, name: name, counted: nil, to: &p)
                appended.append(contentsOf: buffer)
            }
            appendedCount += 1
        } else {
            // Spans after a resolve (late spans of a decided trace) join the decoded ones.
            BufferedSpans.grow(&expanded, by: 1)
            expanded.append(span)
        }
        updateAllocation()
    }

    private func decodeAppended() -> (spans: [GenAISpan], counted: [SIMD8<Int64>]?) {
        appended.withUnsafeBytes { GenAIEncoding.decode(names: appendedNames, raw: $0, count: appendedCount, resolved: false) }
    }

    /// Packs the spans (and what `resolve` counted, if it ran) for a trace that waits, on disk or retained after a
    /// drop: 112 bytes per span (plus spare capacity, plus 64 per counted span) become ~30, in one allocation of the
    /// exact size, and that decides how many idle runs the memory budget holds while their spans are on disk. Whatever
    /// reads the ledger next gets the same spans and counts back (`unpack`).
    package mutating func pack() {
        guard packed == nil else { return }
        if appendedCount > 0 {
            packed = PackedGenAISpans.make(names: appendedNames, encoded: appended, count: appendedCount)
            appended = []
            appendedNames = []
            appendedCount = 0
            updateAllocation()
            return
        }
        guard !expanded.isEmpty else { return }
        resolved = resolved && expandedCounted.count == expanded.count
        packed = PackedGenAISpans.make(expanded, counted: resolved ? expandedCounted : nil)
        expanded = []
        expandedCounted = []
        updateAllocation()
    }

    /// Undoes `pack`, and decodes the spans encoded as they arrived (`append` and `resolve` do it themselves).
    package mutating func unpack() {
        if let p = packed {
            let back = p.decoded()
            expanded = back.spans
            expandedCounted = back.counted ?? []
            packed = nil
        } else if appendedCount > 0 {
            expanded = decodeAppended().spans
            appended = []
            appendedNames = []
            appendedCount = 0
        } else {
            return
        }
        updateAllocation()
    }

    /// Bytes held, for the buffer's memory accounting: the arrays' allocations, or the packed form's one.
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
        unpack()
        let spans = expanded
        expandedCounted = Array(repeating: SIMD8(), count: spans.count)
        resolved = true
        updateAllocation()
        guard needsAncestry else {
            for i in spans.indices where spans[i].hasUsage { expandedCounted[i] = spans[i].tokens }
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
            expandedCounted[i] = mine
            var total = below
            total.addSaturating(mine)
            effective[i] = total
        }
        // Reporters on a cycle of parent links (never reached from a root) count their own usage.
        for i in reporterAt.values where !visited.contains(i) { expandedCounted[i] = spans[i].tokens }
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
        if packed != nil {
            var copy = self
            copy.unpack()
            return copy.totalTokens(matching: matching)
        }
        var sum: Int64 = 0
        // Through the buffer: `spans[i]` would copy each span (retaining its strings) to pass it to `matching`.
        expanded.withUnsafeBufferPointer { spans in
            for i in spans.indices where i < expandedCounted.count {
                let c = expandedCounted[i]
                guard c != SIMD8(), matching(spans[i]) else { continue }
                sum = saturatingAdd(sum, saturatingAdd(saturatingAdd(c[GenAISpan.Lane.input], c[GenAISpan.Lane.output]), c[GenAISpan.Lane.totalOnly]))
            }
        }
        return sum
    }
}

/// One GenAI span as bytes, the form of the ledger's spans while a trace buffers (`GenAILedger.append`) and of
/// `PackedGenAISpans`: span ID and parent span ID (8 bytes each, little-endian); a flags byte (bit 0: aggregate role,
/// bit 1: ERROR status); the index of its names (in the names that go with the bytes) and its duration as varints;
/// its tokens as a byte with one bit per lane that is not zero followed by each such lane's bit pattern as a varint;
/// when the ledger was resolved, what the span counts for in the same form. Exact for every value.
enum GenAIEncoding {
    @inline(__always) static func varintSize(_ v: UInt64) -> Int { v < 0x80 ? 1 : (64 - v.leadingZeroBitCount + 6) / 7 }

    @inline(__always) static func lanesSize(_ t: SIMD8<Int64>) -> Int {
        var n = 1
        for lane in 0..<8 where t[lane] != 0 { n += varintSize(UInt64(bitPattern: t[lane])) }
        return n
    }

    /// Bytes `write` takes for `span`.
    @inline(__always) static func size(_ span: GenAISpan, name: Int, counted: SIMD8<Int64>?) -> Int {
        17 + varintSize(UInt64(name)) + varintSize(span.durationNanos) + lanesSize(span.tokens) + (counted.map(lanesSize) ?? 0)
    }

    /// Writes `span` at `p` (which must have `size` bytes) and moves `p` past it.
    @inline(__always) static func write(_ span: GenAISpan, name: Int, counted: SIMD8<Int64>?, to p: inout UnsafeMutablePointer<UInt8>) {
        @inline(__always) func varint(_ value: UInt64) {
            var v = value
            while v >= 0x80 {
                p.pointee = UInt8(truncatingIfNeeded: v) | 0x80
                p += 1
                v >>= 7
            }
            p.pointee = UInt8(v)
            p += 1
        }
        @inline(__always) func fixed(_ value: UInt64) {
            UnsafeMutableRawPointer(p).storeBytes(of: value.littleEndian, as: UInt64.self)
            p += 8
        }
        @inline(__always) func lanes(_ tokens: SIMD8<Int64>) {
            var mask: UInt8 = 0
            for lane in 0..<8 where tokens[lane] != 0 { mask |= 1 << lane }
            p.pointee = mask
            p += 1
            for lane in 0..<8 where mask & (1 << lane) != 0 { varint(UInt64(bitPattern: tokens[lane])) }
        }
        fixed(span.spanID)
        fixed(span.parentSpanID)
        p.pointee = (span.role == .aggregate ? 1 : 0) | (span.statusError ? 2 : 0)
        p += 1
        varint(UInt64(name))
        varint(span.durationNanos)
        lanes(span.tokens)
        if let counted { lanes(counted) }
    }

    /// The `count` spans written in `raw` (with what they count for, when `resolved`).
    static func decode(names: [GenAINames], raw: UnsafeRawBufferPointer, count: Int, resolved: Bool)
        -> (spans: [GenAISpan], counted: [SIMD8<Int64>]?)
    {
        var spans: [GenAISpan] = []
        spans.reserveCapacity(count)
        var counted: [SIMD8<Int64>] = []
        if resolved { counted.reserveCapacity(count) }
        var o = 0
        func fixed() -> UInt64 {
            defer { o += 8 }
            return UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self))
        }
        func varint() -> UInt64 {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                let b = raw[o]
                o += 1
                v |= UInt64(b & 0x7F) << shift
                if b < 0x80 { return v }
                shift += 7
            }
        }
        func lanes() -> SIMD8<Int64> {
            let mask = raw[o]
            o += 1
            var tokens = SIMD8<Int64>()
            for lane in 0..<8 where mask & (1 << lane) != 0 { tokens[lane] = Int64(bitPattern: varint()) }
            return tokens
        }
        for _ in 0..<count {
            let id = fixed(), parent = fixed()
            let flags = raw[o]
            o += 1
            let names = names[Int(varint())]
            let duration = varint()
            let tokens = lanes()
            spans.append(GenAISpan(spanID: id, parentSpanID: parent, role: flags & 1 != 0 ? .aggregate : .inference,
                                   names: names, statusError: flags & 2 != 0, durationNanos: duration, tokens: tokens))
            if resolved { counted.append(lanes()) }
        }
        precondition(o == raw.count, "GenAI encoding: \(raw.count - o) bytes left over")
        return (spans, resolved ? counted : nil)
    }
}

/// GenAI spans packed for a trace that waits (see `GenAILedger.pack`), in `GenAIEncoding`.
struct PackedGenAIHeader {
    /// Spans packed.
    var count: Int32
    /// Distinct names (references at the start of the elements).
    var nameCount: Int32
    /// Bytes of packed spans after the references.
    var byteCount: Int32
    /// `counted` is packed too.
    var resolved: Bool
}

/// One allocation: the header, the references to the distinct names (retained, released in `deinit`), then the
/// packed spans.
final class PackedGenAISpans: ManagedBuffer<PackedGenAIHeader, UInt8> {
    /// Packs `spans` (and `counted`, when given) in two passes: sizes and distinct names, then the bytes written in
    /// place.
    static func make(_ spans: [GenAISpan], counted: [SIMD8<Int64>]?) -> PackedGenAISpans {
        // A run repeats a handful of names, the latest most often: searched from the end.
        func index(_ names: [GenAINames], _ n: GenAINames) -> Int? { names.lastIndex { $0 === n } }
        var names: [GenAINames] = []
        var size = 0
        for (i, span) in spans.enumerated() {
            let k: Int
            if let found = index(names, span.names) { k = found } else { k = names.count; names.append(span.names) }
            size += GenAIEncoding.size(span, name: k, counted: counted?[i])
        }
        return make(names: names, count: spans.count, byteCount: size, resolved: counted != nil) { start in
            var p = start
            for (i, span) in spans.enumerated() {
                GenAIEncoding.write(span, name: index(names, span.names)!, counted: counted?[i], to: &p)
            }
            precondition(p == start + size, "packed size")
        }
    }

    /// Packs spans already encoded (unresolved) with their names: a copy of the bytes (the trace buffered them so).
    static func make(names: [GenAINames], encoded: [UInt8], count: Int) -> PackedGenAISpans {
        make(names: names, count: count, byteCount: encoded.count, resolved: false) { start in
            encoded.withUnsafeBufferPointer { start.update(from: $0.baseAddress!, count: $0.count) }
        }
    }

    private static func make(names: [GenAINames], count: Int, byteCount: Int, resolved: Bool,
                             write: (UnsafeMutablePointer<UInt8>) -> Void) -> PackedGenAISpans {
        let header = PackedGenAIHeader(count: Int32(count), nameCount: Int32(names.count), byteCount: Int32(byteCount),
                                       resolved: resolved)
        let made = unsafeDowncast(create(minimumCapacity: names.count * 8 + byteCount) { _ in header }, to: PackedGenAISpans.self)
        made.withUnsafeMutablePointerToElements { elements in
            let raw = UnsafeMutableRawPointer(elements)
            for (i, n) in names.enumerated() {
                raw.storeBytes(of: UInt(bitPattern: Unmanaged.passRetained(n).toOpaque()), toByteOffset: i * 8, as: UInt.self)
            }
            write(raw.advanced(by: names.count * 8).assumingMemoryBound(to: UInt8.self))
        }
        return made
    }

    deinit {
        withUnsafeMutablePointers { header, elements in
            let raw = UnsafeRawPointer(elements)
            for i in 0..<Int(header.pointee.nameCount) {
                let bits = raw.loadUnaligned(fromByteOffset: i * 8, as: UInt.self)
                Unmanaged<GenAINames>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).release()
            }
        }
    }

    var count: Int { Int(header.count) }
    var resolved: Bool { header.resolved }

    /// Memory held: the object header, `PackedGenAIHeader`, the elements, and malloc's overhead (16-byte granules).
    var accountedBytes: Int {
        let size = 16 + MemoryLayout<PackedGenAIHeader>.stride + Int(header.nameCount) * 8 + Int(header.byteCount)
        return (size + 16 + 15) & ~15
    }

    func decoded() -> (spans: [GenAISpan], counted: [SIMD8<Int64>]?) {
        let h = header
        return withUnsafeMutablePointerToElements { elements in
            let base = UnsafeRawPointer(elements)
            var names: [GenAINames] = []
            names.reserveCapacity(Int(h.nameCount))
            for i in 0..<Int(h.nameCount) {
                let bits = base.loadUnaligned(fromByteOffset: i * 8, as: UInt.self)
                names.append(Unmanaged<GenAINames>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).takeUnretainedValue())
            }
            let raw = UnsafeRawBufferPointer(start: base.advanced(by: Int(h.nameCount) * 8), count: Int(h.byteCount))
            return GenAIEncoding.decode(names: names, raw: raw, count: Int(h.count), resolved: h.resolved)
        }
    }
}
