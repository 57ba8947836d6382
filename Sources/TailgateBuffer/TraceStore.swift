package import TailgateWire

/// Where one record of a trace's spans lies in the on-disk tier.
package struct SpillRef: Sendable, Hashable, Comparable {
    /// Sequence number of the segment file (segments are written in increasing order).
    package var segment: UInt64
    /// Byte offset of the record in that segment.
    package var offset: UInt64
    /// Record length, header included.
    package var length: UInt32

    package init(segment: UInt64, offset: UInt64, length: UInt32) {
        self.segment = segment
        self.offset = offset
        self.length = length
    }

    package static func < (a: SpillRef, b: SpillRef) -> Bool {
        (a.segment, a.offset) < (b.segment, b.offset)
    }
}

/// The arrival times of a trace, in wall-clock nanoseconds (Unix time), as written with its spans so that a restart
/// continues its decision timers.
package struct SpillTiming: Sendable, Equatable {
    package var firstSeen: UInt64
    package var lastSeen: UInt64
    /// When a finished root arrived; 0: not yet.
    package var rootArrived: UInt64

    package init(firstSeen: UInt64, lastSeen: UInt64, rootArrived: UInt64) {
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
        self.rootArrived = rootArrived
    }
}

/// One undecided trace as the store's index keeps it over a graceful restart: what the buffer holds in memory for a
/// trace whose spans are all on disk.
package struct IndexedTrace: Sendable {
    package var summary: TraceSummary
    package var timing: SpillTiming
    /// Parents that have not arrived: span ID and where they live (`ParentLocality` raw value).
    package var missing: [(UInt64, UInt8)]
    package var refs: [SpillRef]
    package var headers: [(String, String)]
    /// The summary's plan-dependent aggregates were computed under one plan (not mixed across a reload).
    package var aggregatesCurrent: Bool
    /// A cold trace: the buffer held only its records' places and times (`summary` has just the trace ID and span
    /// count, `missing` is empty); it is rebuilt from its records when a span arrives or at `deadline`.
    package var cold = false
    /// Cold traces: when the trace is due for a decision, wall-clock nanoseconds.
    package var deadline: UInt64 = 0

    package init(summary: TraceSummary, timing: SpillTiming, missing: [(UInt64, UInt8)], refs: [SpillRef],
                headers: [(String, String)], aggregatesCurrent: Bool) {
        self.summary = summary
        self.timing = timing
        self.missing = missing
        self.refs = refs
        self.headers = headers
        self.aggregatesCurrent = aggregatesCurrent
    }
}

/// The on-disk tier under the buffer (implemented by `TailgateStore`; a unit test may give an in-memory one).
///
/// The buffer calls it with a shard's lock held, so every call must be quick: appends go to a write buffer and
/// reads are single `pread`s of records that are usually still in the page cache.
package protocol TraceStore: AnyObject, Sendable {
    /// Appends one trace's spans as one record. `supersedes`: the record holds every span of the trace stored before
    /// it (a consolidation), so earlier records of the trace are dead. Returns nil when there is no room (disk
    /// budget) or the write failed: the caller keeps the spans in memory.
    func append(trace: TraceID, spans: BufferedSpans, timing: SpillTiming, supersedes: Bool, headers: [(String, String)]) -> SpillRef?
    /// Reads records back, appending their spans to `spans` in order. False when a record could not be read (it is
    /// counted and logged by the store); the spans read so far are kept.
    func read(_ refs: [SpillRef], into spans: inout BufferedSpans) -> Bool
    /// The trace was decided; `stored` tells whether any of its spans are on disk (then a decision record is written,
    /// so that a restart does not resurrect it).
    func decided(trace: TraceID, decision: Decision, policyName: String, stored: Bool)
    /// Wall-clock time, nanoseconds since 1970.
    func wallNow() -> UInt64
    /// Sync durability: the segment holding every request acknowledged so far is written ahead of the buffer, so a
    /// trace's in-memory spans pin the segment they arrived in. nil: not in sync mode.
    var walSegment: UInt64? { get }
}

extension BufferedSpans {
    /// Appends every span of `other` (its scopes are shared, not copied).
    package mutating func append(contentsOf other: BufferedSpans) {
        guard !other.isEmpty else { return }
        other.data.withUnsafeBytes { raw in
            for ref in other.refs {
                let scope = other.origins[Int(ref.origin)]
                let lower = Int(ref.offset)
                appendRaw(scope: scope, bytes: UnsafeRawBufferPointer(rebasing: raw[lower..<lower + Int(ref.length)]))
            }
        }
    }

    /// Appends one span payload with its scope.
    package mutating func appendRaw(scope: ScopeOrigin, bytes: UnsafeRawBufferPointer) {
        let origin: Int
        if let last = origins.indices.last, origins[last] === scope {
            origin = last
        } else if let found = origins.lastIndex(where: { $0 === scope }) {
            origin = found
        } else {
            origin = origins.count
            appendOrigin(scope)
        }
        Self.grow(&data, by: bytes.count)
        Self.grow(&refs, by: 1)
        refs.append(SpanRef(origin: UInt32(origin), offset: UInt32(data.count), length: UInt32(bytes.count)))
        data.append(contentsOf: bytes)
        updateAllocation()
    }

    /// The spans of an encoded ExportTraceServiceRequest (as written by `RequestFramer`), with their resources and
    /// scopes. Throws on malformed bytes.
    package static func decode(_ body: UnsafeRawBufferPointer) throws(WireError) -> BufferedSpans {
        var out = BufferedSpans()
        var request = ProtoReader(body)
        while let (field, wt) = try request.readTag() {
            guard field == 1 && wt == .lengthDelimited else { try request.skip(wt); continue }
            let resourceRange = try request.readLengthDelimited()
            let resource = ResourceOrigin(header: try header(body, resourceRange))
            var rs = ProtoReader(body, range: resourceRange)
            while let (f, w) = try rs.readTag() {
                guard f == 2 && w == .lengthDelimited else { try rs.skip(w); continue }
                let scopeRange = try rs.readLengthDelimited()
                let scope = ScopeOrigin(resource: resource, header: try header(body, scopeRange))
                var ss = ProtoReader(body, range: scopeRange)
                while let (f2, w2) = try ss.readTag() {
                    guard f2 == 2 && w2 == .lengthDelimited else { try ss.skip(w2); continue }
                    let span = try ss.readLengthDelimited()
                    out.appendRaw(scope: scope, bytes: UnsafeRawBufferPointer(rebasing: body[span]))
                }
            }
        }
        return out
    }

    /// Every field of the message in `range` except field 2 (the repeated children), with tags.
    private static func header(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) throws(WireError) -> [UInt8] {
        var reader = ProtoReader(base, range: range)
        var header: [UInt8] = []
        while true {
            let start = reader.offset
            guard let (field, wt) = try reader.readTag() else { break }
            try reader.skip(wt)
            if !(field == 2 && wt == .lengthDelimited) {
                header.append(contentsOf: UnsafeRawBufferPointer(rebasing: base[start..<reader.offset]))
            }
        }
        return header
    }

    /// The encoded ExportTraceServiceRequest of these spans: one ResourceSpans per resource object and one ScopeSpans
    /// per scope of origin (the spans' origins are distinct objects already), sized first and written in one pass —
    /// no hashing of header bytes, which the store does not need (this runs for every trace written to disk).
    package func encodeRequest() -> [UInt8] {
        let encoding = RequestEncoding(self)
        return [UInt8](unsafeUninitializedCapacity: encoding.size) { out, count in
            encoding.write(to: UnsafeMutableRawBufferPointer(out))
            count = encoding.size
        }
    }

    /// `encodeRequest()` in two steps: the size, then the bytes written straight into memory the caller provides
    /// (the store's write buffer), without an intermediate array.
    ///
    /// A trace's spans usually arrive in many requests, each with its own resource and scope objects: origins are
    /// merged by content (the XXH3 keys computed at ingest, then the bytes), so that the record holds one
    /// ResourceSpans per distinct resource and one ScopeSpans per distinct scope within it — not one per request.
    package struct RequestEncoding {
        let spans: BufferedSpans
        /// Span indices grouped by origin, nil when the spans are grouped by origin already (the common case):
        /// origin `i`'s spans are `starts[i]..<starts[i + 1]` of this, or of `spans.refs` when nil.
        let order: [Int]?
        /// The whole layout in one allocation (this runs for every trace written to disk), with `n` origins:
        /// - `0...n`: `starts`;
        /// - from `n + 1`: the origins that have spans, in writing order (by resource, then scope, then arrival);
        /// - from `2n + 1`: per scope, in writing order, (end of its origins in the list above, the origin whose
        ///   header it writes, its size);
        /// - from `5n + 1`: per resource, in writing order, (end of its scopes, the origin whose resource header it
        ///   writes, its size).
        let plan: [Int]
        let resourceCount: Int
        /// Bytes `write(to:)` writes.
        package let size: Int

        package init(_ spans: BufferedSpans) {
            self.spans = spans
            let origins = spans.origins
            let n = origins.count
            var grouped = true
            var plan = [Int](repeating: 0, count: 8 * n + 1)
            var resourceCount = 0
            var size = 0
            // Scratch per origin: span bytes, scope; per scope (in order of creation): header origin, size,
            // resource; per resource: header origin.
            withUnsafeTemporaryAllocation(of: Int.self, capacity: 6 * max(n, 1)) { scratch in
                let spanBytes = scratch.baseAddress!, scopeOf = spanBytes + n
                let scopeHeader = scopeOf + n, scopeSize = scopeHeader + n, scopeResource = scopeSize + n
                let resourceHeader = scopeResource + n
                spanBytes.initialize(repeating: 0, count: n)
                plan.withUnsafeMutableBufferPointer { plan in
                    // Span counts (into `starts`) and bytes per origin, and whether the spans come grouped by origin.
                    spans.refs.withUnsafeBufferPointer { refs in
                        var previous: UInt32 = 0
                        for ref in refs {
                            let o = Int(ref.origin)
                            plan[o + 1] += 1
                            spanBytes[o] += 1 + ProtoWriter.varintSize(UInt64(ref.length)) + Int(ref.length)
                            if ref.origin < previous { grouped = false }
                            previous = ref.origin
                        }
                    }
                    for i in 0..<n { plan[i + 1] += plan[i] }
                    // Origins merged by content: one resource per distinct resource, one scope per distinct scope
                    // within it, each in order of first arrival.
                    var scopes = 0
                    for (i, origin) in origins.enumerated() {
                        scopeOf[i] = -1
                        guard plan[i + 1] > plan[i] else { continue }
                        var r = 0
                        while r < resourceCount {
                            let other = origins[resourceHeader[r]].resource
                            if other === origin.resource || other.key == origin.resource.key { break }
                            r += 1
                        }
                        if r == resourceCount {
                            resourceHeader[r] = i
                            resourceCount += 1
                        }
                        var g = 0
                        while g < scopes && !(scopeResource[g] == r && origins[scopeHeader[g]].key == origin.key) { g += 1 }
                        if g == scopes {
                            scopeHeader[g] = i
                            scopeSize[g] = origin.header.count
                            scopeResource[g] = r
                            scopes += 1
                        }
                        scopeOf[i] = g
                        scopeSize[g] += spanBytes[i]
                    }
                    // The writing order and the sizes of scopes and resources.
                    var emit = n + 1, scopeEntry = 2 * n + 1, scopeIndex = 0
                    for r in 0..<resourceCount {
                        var resourceSize = origins[resourceHeader[r]].resource.header.count
                        for g in 0..<scopes where scopeResource[g] == r {
                            for i in 0..<n where scopeOf[i] == g {
                                plan[emit] = i
                                emit += 1
                            }
                            plan[scopeEntry] = emit
                            plan[scopeEntry + 1] = scopeHeader[g]
                            plan[scopeEntry + 2] = scopeSize[g]
                            scopeEntry += 3
                            scopeIndex += 1
                            resourceSize += 1 + ProtoWriter.varintSize(UInt64(scopeSize[g])) + scopeSize[g]
                        }
                        let resourceEntry = 5 * n + 1 + 3 * r
                        plan[resourceEntry] = scopeIndex
                        plan[resourceEntry + 1] = resourceHeader[r]
                        plan[resourceEntry + 2] = resourceSize
                        size += 1 + ProtoWriter.varintSize(UInt64(resourceSize)) + resourceSize
                    }
                }
            }
            if grouped {
                order = nil
            } else {
                // A counting sort: grouped by origin, in arrival order within each.
                var sorted = [Int](repeating: 0, count: spans.refs.count)
                var fill = Array(plan[0..<n])
                for (k, ref) in spans.refs.enumerated() {
                    sorted[fill[Int(ref.origin)]] = k
                    fill[Int(ref.origin)] += 1
                }
                order = sorted
            }
            self.plan = plan
            self.resourceCount = resourceCount
            self.size = size
        }

        /// Writes the request into `out` (at least `size` bytes).
        package func write(to out: UnsafeMutableRawBufferPointer) {
            precondition(out.count >= size)
            var w = RawProtoWriter(out.baseAddress!)
            let origins = spans.origins, refs = spans.refs
            let n = origins.count
            spans.data.withUnsafeBytes { raw in
                plan.withUnsafeBufferPointer { plan in
                    var emit = n + 1, scope = 0
                    for r in 0..<resourceCount {
                        let resourceEntry = 5 * n + 1 + 3 * r
                        w.lengthDelimitedHeader(1, plan[resourceEntry + 2])
                        w.bytes(origins[plan[resourceEntry + 1]].resource.header)
                        while scope < plan[resourceEntry] {
                            let scopeEntry = 2 * n + 1 + 3 * scope
                            w.lengthDelimitedHeader(2, plan[scopeEntry + 2])
                            w.bytes(origins[plan[scopeEntry + 1]].header)
                            while emit < plan[scopeEntry] {
                                let i = plan[emit]
                                for k in plan[i]..<plan[i + 1] {
                                    let ref = refs[order?[k] ?? k]
                                    w.lengthDelimitedHeader(2, Int(ref.length))
                                    w.bytes(UnsafeRawBufferPointer(rebasing: raw[Int(ref.offset)..<Int(ref.offset) + Int(ref.length)]))
                                }
                                emit += 1
                            }
                            scope += 1
                        }
                    }
                }
            }
            assert(w.position - out.baseAddress! == size)
        }
    }

    /// Span IDs and parent span IDs (fields 2 and 4 of each span, 8 bytes read big-endian, as the scanner does).
    func spanLinks() -> [(UInt64, UInt64)] {
        var links: [(UInt64, UInt64)] = []
        links.reserveCapacity(count)
        forEach { _, bytes in
            if let link = try? Self.spanLink(bytes) { links.append(link) }
        }
        return links
    }

    /// Span IDs (for tests and tools).
    func spanIDs() -> [UInt64] { spanLinks().map(\.0) }

    private static func spanLink(_ span: UnsafeRawBufferPointer) throws(WireError) -> (UInt64, UInt64)? {
        var reader = ProtoReader(span)
        var id: UInt64? = nil
        var parent: UInt64 = 0
        while let (field, wt) = try reader.readTag() {
            if (field == 2 || field == 4) && wt == .lengthDelimited {
                let r = try reader.readLengthDelimited()
                let value = r.count == 8 ? UInt64(bigEndian: span.loadUnaligned(fromByteOffset: r.lowerBound, as: UInt64.self)) : 0
                if field == 2 {
                    guard r.count == 8 else { return nil }
                    id = value
                } else {
                    parent = value
                }
                continue
            }
            try reader.skip(wt)
        }
        return id.map { ($0, parent) }
    }
}
