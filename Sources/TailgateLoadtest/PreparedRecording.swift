package import TailgateRecording
package import TailgateWire

/// A recording ready for replay: each request's bytes, where its trace IDs sit, and how many spans it holds.
/// Replaying a recording several times gives each pass fresh trace IDs: every trace ID of pass k is XORed with
/// a mask derived from k, so a trace keeps one ID across all its spans and requests, and passes never collide.
package struct PreparedRecording: Sendable {
    package let requests: [RecordedRequest]
    /// Byte offsets of the 16-byte trace ID payloads, per request.
    let traceIDOffsets: [[Int]]
    package let spanCounts: [Int]
    /// Spans before request i (prefix sums), and in the whole recording.
    let spansBefore: [Int]
    package let spans: Int
    package let bytes: Int
    /// Recorded arrival offsets from the first request, in nanoseconds.
    let arrivalOffsets: [UInt64]
    /// Duration of one pass (first to last arrival, at least 1 ms).
    let passNanos: UInt64

    package struct Invalid: Error, CustomStringConvertible {
        package var index: Int
        package var message: String
        package var description: String { "request \(index) of the recording: \(message)" }
    }

    package init(_ requests: [RecordedRequest]) throws {
        let sorted = requests.sorted { $0.arrival < $1.arrival }
        self.requests = sorted
        var offsets: [[Int]] = []
        var counts: [Int] = []
        var before: [Int] = []
        var total = 0
        var bytes = 0
        for (i, r) in sorted.enumerated() {
            let o: [Int]
            do { o = try r.protobuf.withUnsafeBytes { try Self.traceIDOffsets($0) } } catch {
                throw Invalid(index: i, message: "\(error)")
            }
            offsets.append(o)
            counts.append(o.count)
            before.append(total)
            total += o.count
            bytes += r.protobuf.count
        }
        traceIDOffsets = offsets
        spanCounts = counts
        spansBefore = before
        spans = total
        self.bytes = bytes
        let first = sorted.first?.arrival ?? 0
        arrivalOffsets = sorted.map { $0.arrival &- first }
        passNanos = max(1_000_000, (sorted.last?.arrival ?? 0) &- first)
    }

    /// Offsets of every span's trace_id payload (only 16-byte ones).
    static func traceIDOffsets(_ base: UnsafeRawBufferPointer) throws(WireError) -> [Int] {
        var out: [Int] = []
        var request = ProtoReader(base)
        while let (f, wt) = try request.readTag() {
            guard f == 1, wt == .lengthDelimited else { try request.skip(wt); continue }
            var rs = ProtoReader(base, range: try request.readLengthDelimited())
            while let (f2, wt2) = try rs.readTag() {
                guard f2 == 2, wt2 == .lengthDelimited else { try rs.skip(wt2); continue }
                var ss = ProtoReader(base, range: try rs.readLengthDelimited())
                while let (f3, wt3) = try ss.readTag() {
                    guard f3 == 2, wt3 == .lengthDelimited else { try ss.skip(wt3); continue }
                    var span = ProtoReader(base, range: try ss.readLengthDelimited())
                    while let (f4, wt4) = try span.readTag() {
                        if f4 == 1, wt4 == .lengthDelimited {
                            let r = try span.readLengthDelimited()
                            if r.count == 16 { out.append(r.lowerBound) }
                        } else {
                            try span.skip(wt4)
                        }
                    }
                }
            }
        }
        return out
    }

    package var count: Int { requests.count }

    /// The XOR mask of pass `pass` (zero for the first pass: the recording's own IDs).
    package static func mask(pass: Int) -> TraceID {
        guard pass > 0 else { return TraceID(hi: 0, lo: 0) }
        let a = xxh3("tailgate-pass-\(pass)")
        let b = xxh3("tailgate-pass-\(pass)", seed: 1)
        return TraceID(hi: a, lo: b | 1)
    }

    package static func traceID(_ id: TraceID, pass: Int) -> TraceID {
        let m = mask(pass: pass)
        return TraceID(hi: id.hi ^ m.hi, lo: id.lo ^ m.lo)
    }

    /// The bytes of request `index` as sent in pass `pass`.
    package func request(_ index: Int, pass: Int) -> [UInt8] {
        var bytes = requests[index].protobuf
        guard pass > 0 else { return bytes }
        let m = Self.mask(pass: pass)
        let hi = m.hi.bigEndian, lo = m.lo.bigEndian
        bytes.withUnsafeMutableBytes { raw in
            for o in traceIDOffsets[index] {
                raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self) ^ hi, toByteOffset: o, as: UInt64.self)
                raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: o + 8, as: UInt64.self) ^ lo, toByteOffset: o + 8, as: UInt64.self)
            }
        }
        return bytes
    }

    /// Spans sent before sequence number `seq` (pass × count + index).
    func spans(before seq: Int) -> Int {
        let pass = seq / count, index = seq % count
        return pass * spans + spansBefore[index]
    }

    /// Recorded time of sequence number `seq`, from the start, in nanoseconds.
    func recordedOffset(_ seq: Int) -> UInt64 {
        let pass = seq / count, index = seq % count
        return UInt64(pass) * passNanos + arrivalOffsets[index]
    }
}
