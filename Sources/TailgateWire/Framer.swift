// Re-framing: builds a valid ExportTraceServiceRequest out of spans kept as their original bytes,
// grouped by resource and scope. Origins with equal bytes (the same service sending several requests)
// share one ResourceSpans / ScopeSpans in the output.

package struct RequestFramer: Sendable {
    /// One span of a scope: where its payload lies, and the annotation suffix written after it.
    struct Piece: Sendable {
        /// Index into `sources`, or `Piece.copied` for `copies`.
        var source: UInt32
        var offset: UInt32
        var length: UInt32
        /// Index into `suffixes`, or `Piece.noSuffix`.
        var suffix: UInt32
        static let copied = UInt32.max
        static let noSuffix = UInt32.max
    }

    struct ScopeGroup: Sendable {
        var header: [UInt8]
        var pieces: [Piece] = []
        /// Encoded size of the `spans` fields (tag, length, payload, suffix).
        var spanFieldBytes = 0
    }

    struct ResourceGroup: Sendable {
        var header: [UInt8]
        var scopes: [ScopeGroup] = []
        var scopeByHeader: [HeaderKey: Int] = [:]
    }

    private var resources: [ResourceGroup] = []
    private var resourceByHeader: [HeaderKey: Int] = [:]
    /// Identity cache: origin object → (resource index, scope index). The framer retains the origins it saw,
    /// so identifiers stay unique while it lives.
    private var scopeByIdentity: [ObjectIdentifier: (Int, Int)] = [:]
    private var retained: [ScopeOrigin] = []
    /// The origin of the last span appended, with its group (its object is in `retained`).
    private var lastGroup: (id: ObjectIdentifier, group: (Int, Int))? = nil

    /// The arrays that spans appended with `append(scope:source:…)` lie in (a kept trace's own bytes), held until the
    /// framer is encoded instead of copied: `encode` writes each span once. The last one's address (its bits: the
    /// framer is Sendable), to add an array once for all its spans.
    private var sources: [[UInt8]] = []
    private var lastSource = 0
    /// Spans appended by pointer, copied.
    private var copies: [UInt8] = []
    /// Annotation suffixes, and the last one's address (spans of a trace share one).
    private var suffixes: [[UInt8]] = []
    private var lastSuffix = 0

    /// The last annotation suffix computed for a probabilistic keep, by the span's raw trace_state: spans of one trace
    /// (and usually of one service) share it, and merging a tracestate is far dearer than comparing bytes.
    private var suffixCache: (annotation: KeepAnnotation, traceState: [UInt8], suffix: [UInt8])? = nil

    package private(set) var spanCount = 0
    /// Sum of the span payload sizes appended so far.
    package private(set) var spanBytes = 0

    package init() {}

    package var isEmpty: Bool { spanCount == 0 }

    /// Appends one span lying in `source` at `offset..<offset + length`, with an annotation appended to its bytes (see
    /// `KeepAnnotation`). `source` is held, not copied, until `encode`.
    package mutating func append(scope: ScopeOrigin, source: [UInt8], offset: Int, length: Int, annotation: KeepAnnotation?) {
        source.withUnsafeBytes { raw in
            let span = UnsafeRawBufferPointer(rebasing: raw[offset..<offset + length])
            var suffix: [UInt8]? = nil
            if let annotation {
                if appendReannotated(scope: scope, span: span, annotation: annotation) { return }
                suffix = self.suffix(annotation, span)
            }
            let base = Int(bitPattern: raw.baseAddress)
            if base != lastSource || sources.isEmpty {
                sources.append(source)
                lastSource = base
            }
            let suffixAt = suffix.map { suffixIndex($0) } ?? Piece.noSuffix
            append(scope: scope, Piece(source: UInt32(sources.count - 1), offset: UInt32(offset), length: UInt32(length),
                                       suffix: suffixAt))
        }
    }

    /// Appends one span with an annotation appended to its bytes (see `KeepAnnotation`), copying it.
    package mutating func append(scope: ScopeOrigin, span: UnsafeRawBufferPointer, annotation: KeepAnnotation?) {
        guard let annotation else { return appendCopy(scope: scope, span: span) }
        if appendReannotated(scope: scope, span: span, annotation: annotation) { return }
        let suffix = self.suffix(annotation, span)
        appendCopy(scope: scope, span: span, suffix: suffixIndex(suffix))
    }

    /// Appends one span (its payload bytes, without tag and length), copying it.
    package mutating func append(scope: ScopeOrigin, span: UnsafeRawBufferPointer) {
        appendCopy(scope: scope, span: span)
    }

    /// A span that already carries what the annotation writes (a second tier) is rewritten with its attributes
    /// replaced, not repeated, and appended as a copy (rare); false for any other span, which takes a suffix.
    private mutating func appendReannotated(scope: ScopeOrigin, span: UnsafeRawBufferPointer, annotation: KeepAnnotation) -> Bool {
        guard KeepAnnotation.mayCarryOwnAttributes(span), annotation.withoutOwnAttributes(span) != nil else { return false }
        annotation.annotate(span).withUnsafeBytes { appendCopy(scope: scope, span: $0) }
        return true
    }

    private mutating func appendCopy(scope: ScopeOrigin, span: UnsafeRawBufferPointer, suffix: UInt32 = Piece.noSuffix) {
        let offset = copies.count
        copies.append(contentsOf: span)
        append(scope: scope, Piece(source: Piece.copied, offset: UInt32(offset), length: UInt32(span.count), suffix: suffix))
    }

    private mutating func append(scope: ScopeOrigin, _ piece: Piece) {
        let suffixLength = piece.suffix == Piece.noSuffix ? 0 : suffixes[Int(piece.suffix)].count
        let payload = Int(piece.length) + suffixLength
        let (r, s) = group(for: scope)
        resources[r].scopes[s].pieces.append(piece)
        resources[r].scopes[s].spanFieldBytes += 1 + ProtoWriter.varintSize(UInt64(payload)) + payload
        spanCount += 1
        spanBytes += payload
    }

    private mutating func suffix(_ annotation: KeepAnnotation, _ span: UnsafeRawBufferPointer) -> [UInt8] {
        if annotation.weight.isCertain { return annotation.suffix(for: span) }  // constant, precomputed
        let state = KeepAnnotation.rawTraceState(of: span)
        if let cached = suffixCache, cached.annotation == annotation, cached.traceState == state { return cached.suffix }
        let suffix = annotation.suffix(for: span)
        suffixCache = (annotation, state, suffix)
        return suffix
    }

    private mutating func suffixIndex(_ suffix: [UInt8]) -> UInt32 {
        let base = suffix.withUnsafeBytes { Int(bitPattern: $0.baseAddress) }
        if base == 0 || base != lastSuffix || suffixes.isEmpty {
            suffixes.append(suffix)
            lastSuffix = base
        }
        return UInt32(suffixes.count - 1)
    }

    private mutating func group(for scope: ScopeOrigin) -> (Int, Int) {
        let id = ObjectIdentifier(scope)
        // Consecutive spans (a trace's, a request's) mostly share their origin: no table lookup for those.
        if let last = lastGroup, last.id == id { return last.group }
        if let hit = scopeByIdentity[id] {
            lastGroup = (id, hit)
            return hit
        }
        let r: Int
        if let existing = resourceByHeader[scope.resource.key] {
            r = existing
        } else {
            r = resources.count
            resources.append(ResourceGroup(header: scope.resource.header))
            resourceByHeader[scope.resource.key] = r
        }
        let s: Int
        if let existing = resources[r].scopeByHeader[scope.key] {
            s = existing
        } else {
            s = resources[r].scopes.count
            resources[r].scopes.append(ScopeGroup(header: scope.header))
            resources[r].scopeByHeader[scope.key] = s
        }
        scopeByIdentity[id] = (r, s)
        lastGroup = (id, (r, s))
        retained.append(scope)
        return (r, s)
    }

    /// The encoded ExportTraceServiceRequest holding every appended span: sized first, so that every length prefix
    /// and every span is written once.
    package func encode() -> [UInt8] {
        var total = 0
        for resource in resources {
            let rsize = resourceSize(resource)
            total += 1 + ProtoWriter.varintSize(UInt64(rsize)) + rsize
        }
        return [UInt8](unsafeUninitializedCapacity: total) { out, count in
            var w = RawProtoWriter(UnsafeMutableRawPointer(out.baseAddress!))
            for resource in resources {
                w.lengthDelimitedHeader(1, resourceSize(resource))
                w.bytes(resource.header)
                for scope in resource.scopes {
                    w.lengthDelimitedHeader(2, scope.header.count + scope.spanFieldBytes)
                    w.bytes(scope.header)
                    for piece in scope.pieces {
                        let suffix = piece.suffix == Piece.noSuffix ? nil : suffixes[Int(piece.suffix)]
                        w.lengthDelimitedHeader(2, Int(piece.length) + (suffix?.count ?? 0))
                        let bytes = piece.source == Piece.copied ? copies : sources[Int(piece.source)]
                        bytes.withUnsafeBytes { raw in
                            w.bytes(UnsafeRawBufferPointer(rebasing: raw[Int(piece.offset)..<Int(piece.offset) + Int(piece.length)]))
                        }
                        if let suffix { w.bytes(suffix) }
                    }
                }
            }
            count = total
            assert(w.position - UnsafeMutableRawPointer(out.baseAddress!) == total)
        }
    }

    private func resourceSize(_ resource: ResourceGroup) -> Int {
        var size = resource.header.count
        for scope in resource.scopes {
            let ssize = scope.header.count + scope.spanFieldBytes
            size += 1 + ProtoWriter.varintSize(UInt64(ssize)) + ssize
        }
        return size
    }
}
