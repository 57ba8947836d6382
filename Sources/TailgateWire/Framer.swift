// Re-framing: builds a valid ExportTraceServiceRequest out of spans kept as their original bytes,
// grouped by resource and scope. Origins with equal bytes (the same service sending several requests)
// share one ResourceSpans / ScopeSpans in the output.

package struct RequestFramer: Sendable {
    struct ScopeGroup: Sendable {
        var header: [UInt8]
        /// Concatenated `spans` fields (tag, length, payload).
        var spans: [UInt8] = []
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

    /// The last annotation suffix computed for a probabilistic keep, by the span's raw trace_state: spans of one trace
    /// (and usually of one service) share it, and merging a tracestate is far dearer than comparing bytes.
    private var suffixCache: (annotation: KeepAnnotation, traceState: [UInt8], suffix: [UInt8])? = nil

    package private(set) var spanCount = 0
    /// Sum of the span payload sizes appended so far.
    package private(set) var spanBytes = 0

    package init() {}

    package var isEmpty: Bool { spanCount == 0 }

    /// Appends one span with an annotation appended to its bytes (see `KeepAnnotation`).
    package mutating func append(scope: ScopeOrigin, span: UnsafeRawBufferPointer, annotation: KeepAnnotation?) {
        guard let annotation else { return append(scope: scope, span: span) }
        // A span that already carries what the annotation writes (a second tier): replaced, not repeated (rare).
        if KeepAnnotation.mayCarryOwnAttributes(span), annotation.withoutOwnAttributes(span) != nil {
            let annotated = annotation.annotate(span)
            return annotated.withUnsafeBytes { append(scope: scope, span: $0) }
        }
        let suffix: [UInt8]
        if annotation.weight.isCertain {
            suffix = annotation.suffix(for: span)  // constant, precomputed
        } else {
            let state = KeepAnnotation.rawTraceState(of: span)
            if let cached = suffixCache, cached.annotation == annotation, cached.traceState == state {
                suffix = cached.suffix
            } else {
                suffix = annotation.suffix(for: span)
                suffixCache = (annotation, state, suffix)
            }
        }
        let (r, s) = group(for: scope)
        var w = ProtoWriter()
        swap(&w.bytes, &resources[r].scopes[s].spans)
        w.appendTag(2, .lengthDelimited)
        w.appendVarint(UInt64(span.count + suffix.count))
        w.bytes.append(contentsOf: span)
        w.bytes.append(contentsOf: suffix)
        swap(&w.bytes, &resources[r].scopes[s].spans)
        spanCount += 1
        spanBytes += span.count + suffix.count
    }

    /// Appends one span (its payload bytes, without tag and length).
    package mutating func append(scope: ScopeOrigin, span: UnsafeRawBufferPointer) {
        let (r, s) = group(for: scope)
        var w = ProtoWriter()
        swap(&w.bytes, &resources[r].scopes[s].spans)
        w.appendBytesField(2, span)
        swap(&w.bytes, &resources[r].scopes[s].spans)
        spanCount += 1
        spanBytes += span.count
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

    /// The encoded ExportTraceServiceRequest holding every appended span.
    package func encode() -> [UInt8] {
        // Sizes first, so every length prefix is written once and nothing is copied twice.
        var scopeSizes: [[Int]] = []
        var resourceSizes: [Int] = []
        var total = 0
        for resource in resources {
            var sizes: [Int] = []
            var rsize = resource.header.count
            for scope in resource.scopes {
                let ssize = scope.header.count + scope.spans.count
                sizes.append(ssize)
                rsize += 1 + ProtoWriter.varintSize(UInt64(ssize)) + ssize
            }
            scopeSizes.append(sizes)
            resourceSizes.append(rsize)
            total += 1 + ProtoWriter.varintSize(UInt64(rsize)) + rsize
        }
        var w = ProtoWriter(capacity: total)
        for (i, resource) in resources.enumerated() {
            w.appendTag(1, .lengthDelimited)
            w.appendVarint(UInt64(resourceSizes[i]))
            w.bytes.append(contentsOf: resource.header)
            for (j, scope) in resource.scopes.enumerated() {
                w.appendTag(2, .lengthDelimited)
                w.appendVarint(UInt64(scopeSizes[i][j]))
                w.bytes.append(contentsOf: scope.header)
                w.bytes.append(contentsOf: scope.spans)
            }
        }
        return w.bytes
    }
}
