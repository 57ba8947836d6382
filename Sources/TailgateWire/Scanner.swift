// The hot path: walks an encoded ExportTraceServiceRequest and reads, per span, only what decisions
// need. Span payloads are not decoded or copied here; they are reported as byte ranges of the input.

/// The resource of a group of spans, kept encoded: every field of `ResourceSpans` except `scope_spans`
/// (that is `resource` and `schema_url`), with their tags, exactly as received.
public final class ResourceOrigin: Sendable {
    public let header: [UInt8]
    public init(header: [UInt8]) { self.header = header }
}

/// The instrumentation scope of a group of spans: every field of `ScopeSpans` except `spans`, with tags.
public final class ScopeOrigin: Sendable {
    public let resource: ResourceOrigin
    public let header: [UInt8]
    public init(resource: ResourceOrigin, header: [UInt8]) {
        self.resource = resource
        self.header = header
    }
}

/// Numeric span attributes to extract, chosen by the loaded policies. Each slot sums, per span, the value of
/// the first of its keys that the span carries (so a span with both a current and a deprecated name counts once).
public struct AttributePlan: Sendable, Equatable {
    public static let maxSlots = 4

    public private(set) var slots: [[String]] = []
    @usableFromInline var keyBytes: [[UInt8]] = []
    /// For each entry of `keyBytes`: slot and rank (position within its slot's keys).
    @usableFromInline var keySlot: [(slot: Int, rank: Int)] = []

    public init() {}

    /// Adds a slot (or returns the existing one with the same keys). Returns nil when all slots are taken.
    public mutating func slot(forFirstOf keys: [String]) -> Int? {
        if let existing = slots.firstIndex(of: keys) { return existing }
        guard slots.count < Self.maxSlots, !keys.isEmpty else { return nil }
        let slot = slots.count
        slots.append(keys)
        for (rank, key) in keys.enumerated() {
            keyBytes.append(Array(key.utf8))
            keySlot.append((slot, rank))
        }
        return slot
    }

    public var isEmpty: Bool { slots.isEmpty }

    public static func == (a: AttributePlan, b: AttributePlan) -> Bool { a.slots == b.slots }

    /// Index into `keyBytes` of the key equal to `base[range]`, if any.
    @inlinable
    func match(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        let count = range.count
        for i in keyBytes.indices where keyBytes[i].count == count {
            let equal = keyBytes[i].withUnsafeBytes { key in
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

/// Status codes of `Status.code`.
public enum StatusCode: UInt8, Sendable, CaseIterable {
    case unset = 0
    case ok = 1
    case error = 2

    /// Bit of this code in a status mask.
    public var bit: UInt8 { 1 << rawValue }
}

/// What a decision needs to know about one span, plus where its bytes are.
public struct SpanFacts: Sendable {
    public var traceID: TraceID
    public var spanID: UInt64
    /// 0 when the span has no parent (a root span).
    public var parentSpanID: UInt64
    public var startTime: UInt64
    public var endTime: UInt64
    public var status: StatusCode
    /// Per-slot values of the `AttributePlan` (0 where the span lacks the attribute).
    public var sums: SIMD4<Int64>
    /// Index into `ScannedRequest.scopes`.
    public var scope: Int32
    /// The span message's payload (without its tag and length) within the request.
    public var bytes: Range<Int>

    public var isRoot: Bool { parentSpanID == 0 }
}

/// The result of scanning one request.
public struct ScannedRequest: Sendable {
    public var spans: [SpanFacts] = []
    public var scopes: [ScopeOrigin] = []
    /// Spans that were not accepted (invalid trace or span ID) and why (first reason only).
    public var rejectedSpans: Int = 0
    public var rejectionMessage: String?

    public init() {}

    public mutating func removeAll() {
        spans.removeAll(keepingCapacity: true)
        scopes.removeAll(keepingCapacity: true)
        rejectedSpans = 0
        rejectionMessage = nil
    }
}

/// A request that is not a valid `ExportTraceServiceRequest`: where and what.
public struct ScanError: Error, Sendable, CustomStringConvertible, Equatable {
    public var path: String
    public var wire: WireError
    public var description: String { "malformed protobuf: \(wire.message) in \(path) (byte \(wire.offset))" }
}

/// Scans encoded `ExportTraceServiceRequest`s. A value type; make one per policy set.
public struct OTLPScanner: Sendable {
    public let plan: AttributePlan

    public init(plan: AttributePlan = AttributePlan()) {
        self.plan = plan
    }

    /// Scans `body` into `result` (which is cleared first). Span ranges refer to `body`.
    public func scan(_ body: UnsafeRawBufferPointer, into result: inout ScannedRequest) throws(ScanError) {
        result.removeAll()
        var path = Path()
        do {
            var request = ProtoReader(body)
            while let (field, wt) = try request.readTag() {
                if field == 1 && wt == .lengthDelimited {
                    let range = try request.readLengthDelimited()
                    try scanResourceSpans(body, range, &result, &path)
                    path.resource += 1
                } else {
                    try request.skip(wt)
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

    private func scanResourceSpans(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ result: inout ScannedRequest, _ path: inout Path
    ) throws(WireError) {
        var reader = ProtoReader(base, range: range)
        var header: [UInt8] = []
        // Scopes of this resource: their header bytes, and where their spans start in result.spans.
        var scopeHeaders: [[UInt8]] = []
        path.scope = 0
        while true {
            let fieldStart = reader.offset
            guard let (field, wt) = try reader.readTag() else { break }
            if field == 2 && wt == .lengthDelimited {
                let scopeRange = try reader.readLengthDelimited()
                scopeHeaders.append(try scanScopeSpans(base, scopeRange, Int32(result.scopes.count + scopeHeaders.count), &result, &path))
                path.scope += 1
            } else {
                try reader.skip(wt)
                header.append(contentsOf: UnsafeRawBufferPointer(rebasing: base[fieldStart..<reader.offset]))
            }
        }
        path.scope = -1
        let resource = ResourceOrigin(header: header)
        for h in scopeHeaders {
            result.scopes.append(ScopeOrigin(resource: resource, header: h))
        }
    }

    private func scanScopeSpans(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ scopeIndex: Int32, _ result: inout ScannedRequest, _ path: inout Path
    ) throws(WireError) -> [UInt8] {
        var reader = ProtoReader(base, range: range)
        var header: [UInt8] = []
        path.span = 0
        while true {
            let fieldStart = reader.offset
            guard let (field, wt) = try reader.readTag() else { break }
            if field == 2 && wt == .lengthDelimited {
                let spanRange = try reader.readLengthDelimited()
                try scanSpan(base, spanRange, scopeIndex, &result)
                path.span += 1
            } else {
                try reader.skip(wt)
                header.append(contentsOf: UnsafeRawBufferPointer(rebasing: base[fieldStart..<reader.offset]))
            }
        }
        path.span = -1
        return header
    }

    @inline(__always)
    private func scanSpan(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ scopeIndex: Int32, _ result: inout ScannedRequest
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
        var sums = SIMD4<Int64>()
        var ranks = SIMD4<Int64>(repeating: Int64.max)
        let wantAttributes = !plan.isEmpty

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
                try scanAttribute(base, r, &sums, &ranks)
            case (15, .lengthDelimited):
                let r = try reader.readLengthDelimited()
                status = try scanStatus(base, r)
            default:
                try reader.skip(wt)
            }
        }

        guard traceIDLength == 16, traceID.isValid else {
            reject(&result, traceIDLength == -1 ? "span without trace_id" : "trace_id must be 16 bytes and not all zero")
            return
        }
        guard spanIDLength == 8, spanID != 0 else {
            reject(&result, spanIDLength == -1 ? "span without span_id" : "span_id must be 8 bytes and not all zero")
            return
        }
        guard parentLength == 0 || parentLength == 8 else {
            reject(&result, "parent_span_id must be empty or 8 bytes")
            return
        }
        result.spans.append(SpanFacts(
            traceID: traceID, spanID: spanID, parentSpanID: parent, startTime: start, endTime: end,
            status: status, sums: sums, scope: scopeIndex, bytes: range))
    }

    private func reject(_ result: inout ScannedRequest, _ message: String) {
        result.rejectedSpans += 1
        if result.rejectionMessage == nil { result.rejectionMessage = message }
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

    /// Reads one KeyValue; when its key is in the plan and its value is numeric, records it.
    private func scanAttribute(
        _ base: UnsafeRawBufferPointer, _ range: Range<Int>, _ sums: inout SIMD4<Int64>, _ ranks: inout SIMD4<Int64>
    ) throws(WireError) {
        var reader = ProtoReader(base, range: range)
        var keyIndex: Int? = nil
        var valueRange: Range<Int>? = nil
        while let (field, wt) = try reader.readTag() {
            if field == 1 && wt == .lengthDelimited {
                keyIndex = plan.match(base, try reader.readLengthDelimited())
                if keyIndex == nil { return }  // not a key we need: skip the rest of this attribute
            } else if field == 2 && wt == .lengthDelimited {
                valueRange = try reader.readLengthDelimited()
            } else {
                try reader.skip(wt)
            }
        }
        guard let keyIndex, let valueRange, let value = try numericValue(base, valueRange) else { return }
        let (slot, rank) = plan.keySlot[keyIndex]
        if Int64(rank) < ranks[slot] {
            ranks[slot] = Int64(rank)
            sums[slot] = value
        }
    }

    /// An AnyValue holding an int, a double (rounded) or a decimal string; nil otherwise.
    private func numericValue(_ base: UnsafeRawBufferPointer, _ range: Range<Int>) throws(WireError) -> Int64? {
        var reader = ProtoReader(base, range: range)
        var value: Int64? = nil
        while let (field, wt) = try reader.readTag() {
            switch (field, wt) {
            case (3, .varint):
                value = Int64(bitPattern: try reader.readVarint())
            case (4, .fixed64):
                let d = Double(bitPattern: try reader.readFixed64())
                value = d.isFinite && abs(d) < 9.2e18 ? Int64(d.rounded()) : nil
            case (1, .lengthDelimited):
                value = Int64(reader.string(try reader.readLengthDelimited()))
            default:
                try reader.skip(wt)
            }
        }
        return value
    }
}
