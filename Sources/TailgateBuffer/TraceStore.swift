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
        struct Scope {
            /// Origins (indices into `origins`) with this scope header, in order of first arrival.
            var origins: [Int]
            var size: Int
        }
        struct Resource {
            var resource: ResourceOrigin
            var scopes: [Scope]
            var size: Int
        }
        let spans: BufferedSpans
        /// Span indices grouped by origin, `starts[i]..<starts[i + 1]` being origin `i`'s; nil when the spans are
        /// grouped by origin already (the common case), in which case `starts` indexes `refs`.
        let order: [Int]?
        let starts: [Int]
        let resources: [Resource]
        /// Bytes `write(to:)` writes.
        package let size: Int

        package init(_ spans: BufferedSpans) {
            self.spans = spans
            let origins = spans.origins
            // The common case since origins are interned at ingest: one origin, no grouping to do.
            if origins.count == 1 {
                var spanBytes = 0
                spans.refs.withUnsafeBufferPointer { refs in
                    for ref in refs { spanBytes += 1 + ProtoWriter.varintSize(UInt64(ref.length)) + Int(ref.length) }
                }
                let origin = origins[0]
                let scope = Scope(origins: [0], size: origin.header.count + spanBytes)
                let resourceSize = origin.resource.header.count + 1 + ProtoWriter.varintSize(UInt64(scope.size)) + scope.size
                order = nil
                starts = [0, spans.refs.count]
                resources = [Resource(resource: origin.resource, scopes: [scope], size: resourceSize)]
                size = 1 + ProtoWriter.varintSize(UInt64(resourceSize)) + resourceSize
                return
            }
            // Span counts and bytes per origin, and whether the spans already come grouped by origin.
            var starts = [Int](repeating: 0, count: origins.count + 1)
            var spanBytes = [Int](repeating: 0, count: origins.count)
            var grouped = true
            spans.refs.withUnsafeBufferPointer { refs in
                var previous: UInt32 = 0
                for ref in refs {
                    let o = Int(ref.origin)
                    starts[o + 1] += 1
                    spanBytes[o] += 1 + ProtoWriter.varintSize(UInt64(ref.length)) + Int(ref.length)
                    if ref.origin < previous { grouped = false }
                    previous = ref.origin
                }
            }
            for i in 0..<origins.count { starts[i + 1] += starts[i] }
            if grouped {
                order = nil
            } else {
                // A counting sort: grouped by origin, in arrival order within each.
                var sorted = [Int](repeating: 0, count: spans.refs.count)
                var fill = starts
                for (k, ref) in spans.refs.enumerated() {
                    sorted[fill[Int(ref.origin)]] = k
                    fill[Int(ref.origin)] += 1
                }
                order = sorted
            }
            var resources: [Resource] = []
            for (i, origin) in origins.enumerated() where starts[i + 1] > starts[i] {
                let r: Int
                if let found = resources.firstIndex(where: { $0.resource === origin.resource || $0.resource.key == origin.resource.key }) {
                    r = found
                } else {
                    resources.append(Resource(resource: origin.resource, scopes: [], size: origin.resource.header.count))
                    r = resources.count - 1
                }
                if let g = resources[r].scopes.firstIndex(where: { origins[$0.origins[0]].key == origin.key }) {
                    resources[r].scopes[g].origins.append(i)
                    resources[r].scopes[g].size += spanBytes[i]
                } else {
                    resources[r].scopes.append(Scope(origins: [i], size: origin.header.count + spanBytes[i]))
                }
            }
            for r in resources.indices {
                resources[r].size = resources[r].resource.header.count
                    + resources[r].scopes.reduce(0) { $0 + 1 + ProtoWriter.varintSize(UInt64($1.size)) + $1.size }
            }
            self.starts = starts
            self.resources = resources
            size = resources.reduce(0) { $0 + 1 + ProtoWriter.varintSize(UInt64($1.size)) + $1.size }
        }

        /// Writes the request into `out` (at least `size` bytes).
        package func write(to out: UnsafeMutableRawBufferPointer) {
            precondition(out.count >= size)
            var w = RawProtoWriter(out.baseAddress!)
            let origins = spans.origins, refs = spans.refs
            spans.data.withUnsafeBytes { raw in
                for r in resources {
                    w.lengthDelimitedHeader(1, r.size)
                    w.bytes(r.resource.header)
                    for scope in r.scopes {
                        w.lengthDelimitedHeader(2, scope.size)
                        w.bytes(origins[scope.origins[0]].header)
                        for i in scope.origins {
                            for n in starts[i]..<starts[i + 1] {
                                let ref = refs[order?[n] ?? n]
                                w.lengthDelimitedHeader(2, Int(ref.length))
                                w.bytes(UnsafeRawBufferPointer(rebasing: raw[Int(ref.offset)..<Int(ref.offset) + Int(ref.length)]))
                            }
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

/// Writes protobuf framing into memory already sized for it (no bounds checks: the caller sized it exactly).
struct RawProtoWriter {
    var position: UnsafeMutableRawPointer

    init(_ start: UnsafeMutableRawPointer) { position = start }

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            position.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, as: UInt8.self)
            position += 1
            v >>= 7
        }
        position.storeBytes(of: UInt8(v), as: UInt8.self)
        position += 1
    }

    /// Tag (wire type 2) and length.
    mutating func lengthDelimitedHeader(_ field: UInt32, _ length: Int) {
        varint(UInt64(field) << 3 | 2)
        varint(UInt64(length))
    }

    mutating func bytes(_ source: UnsafeRawBufferPointer) {
        guard source.count > 0 else { return }
        position.copyMemory(from: source.baseAddress!, byteCount: source.count)
        position += source.count
    }

    mutating func bytes(_ source: [UInt8]) { source.withUnsafeBytes { bytes($0) } }
}
