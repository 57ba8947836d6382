import Foundation
import TailgateBuffer
import TailgateWire

/// The store's index at a graceful stop (`index.tgi`): every undecided trace's summary, timing, missing parents and
/// record places, and the remembered decisions — so that the next start restores them without reading and scanning
/// every span record (a restart must fit inside an SDK's retry window). Valid only for the segments exactly as they
/// were written: the last segment's number and size are in it, and a start that finds anything else (a crash after
/// the stop, a damaged file) ignores the index and scans. Deleted once read, so a later crash never uses it.
///
/// Layout (little-endian): `TGINDEX\0`, version u32, policies plan key u64, last segment u64, its size u64, trace
/// count u32, traces, decision count u32, decisions (as decision records), CRC-32 of everything before it u32.
enum IndexFile {
    static let magic: [UInt8] = Array("TGINDEX".utf8) + [0]
    /// 3: the flags byte after the timing may say the trace is cold (bit 1), followed by its deadline (u64, wall
    /// clock). Version 2 files (no cold traces) are read too.
    static let version: UInt32 = 3

    struct Contents {
        var planKey: UInt64
        var lastSegment: UInt64
        var lastSegmentSize: UInt64
        var traces: [IndexedTrace]
        var decisions: [(TraceID, Bool, KeepWeight, String)]
    }

    static func encode(_ c: Contents) -> [UInt8] {
        var w = Writer()
        w.bytes += magic
        w.u32(version)
        w.u64(c.planKey)
        w.u64(c.lastSegment)
        w.u64(c.lastSegmentSize)
        w.u32(UInt32(c.traces.count))
        for t in c.traces {
            let s = t.summary
            w.bytes += s.traceID.bytes
            w.u64(UInt64(s.spanCount))
            w.bytes.append(s.statusMask)
            w.u64(s.bits)
            w.u64(s.rootBits)
            for i in 0..<8 { w.u64(UInt64(bitPattern: s.sums[i])) }
            w.u64(s.earliestStart)
            w.u64(s.latestEnd)
            w.bytes.append(s.rootSeen ? 1 : 0)
            w.u64(UInt64(s.spanBytes))
            w.u64(s.randomness)
            w.u64(s.conversation)
            w.genAI(s.genAI)
            w.u64(t.timing.firstSeen)
            w.u64(t.timing.lastSeen)
            w.u64(t.timing.rootArrived)
            w.bytes.append((t.aggregatesCurrent ? 1 : 0) | (t.cold ? 2 : 0))
            if t.cold { w.u64(t.deadline) }
            w.u32(UInt32(t.missing.count))
            for (id, locality) in t.missing {
                w.u64(id)
                w.bytes.append(locality)
            }
            w.u32(UInt32(t.refs.count))
            for r in t.refs {
                w.u64(r.segment)
                w.u64(r.offset)
                w.u32(r.length)
            }
            DiskTraceStore.appendHeaders(t.headers, to: &w.bytes)
        }
        w.u32(UInt32(c.decisions.count))
        for (id, keep, weight, name) in c.decisions {
            w.bytes += DiskTraceStore.encode(id, Decision(keep: keep, policy: -1, weight: weight), name)
        }
        w.u32(SegmentLog.checksum(w.bytes))
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) -> Contents? {
        guard bytes.count >= 48, Array(bytes[0..<8]) == magic else { return nil }
        let body = Array(bytes[..<(bytes.count - 4)])
        let crc = bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self)) }
        guard SegmentLog.checksum(body) == crc else { return nil }
        var r = Reader(bytes: body, offset: 8)
        guard let version = r.u32(), version == Self.version || version == 2, let planKey = r.u64(), let lastSegment = r.u64(),
              let lastSize = r.u64(), let count = r.u32() else { return nil }
        var traces: [IndexedTrace] = []
        traces.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let idBytes = r.take(16) else { return nil }
            let id = idBytes.withUnsafeBytes { TraceID(loadingFrom: $0, at: 0) }
            var s = TraceSummary(traceID: id)
            guard let spanCount = r.u64(), let mask = r.u8(), let bits = r.u64(), let rootBits = r.u64() else { return nil }
            s.spanCount = Int(spanCount)
            s.statusMask = mask
            s.bits = bits
            s.rootBits = rootBits
            for i in 0..<8 {
                guard let v = r.u64() else { return nil }
                s.sums[i] = Int64(bitPattern: v)
            }
            guard let es = r.u64(), let le = r.u64(), let rootSeen = r.u8(), let spanBytes = r.u64(), let rv = r.u64(),
                  let conversation = r.u64(), let genAI = r.genAI(), let first = r.u64(), let last = r.u64(), let root = r.u64(), let current = r.u8()
            else { return nil }
            s.earliestStart = es
            s.latestEnd = le
            s.rootSeen = rootSeen != 0
            s.spanBytes = Int(spanBytes)
            s.randomness = rv
            s.conversation = conversation
            s.genAI = genAI.isEmpty ? nil : GenAILedger(spans: genAI)
            var deadline: UInt64 = 0
            if current & 2 != 0 {
                guard let d = r.u64() else { return nil }
                deadline = d
            }
            guard let nMissing = r.u32() else { return nil }
            var missing: [(UInt64, UInt8)] = []
            for _ in 0..<nMissing {
                guard let pid = r.u64(), let l = r.u8() else { return nil }
                missing.append((pid, l))
            }
            guard let nRefs = r.u32() else { return nil }
            var refs: [SpillRef] = []
            for _ in 0..<nRefs {
                guard let seg = r.u64(), let off = r.u64(), let len = r.u32() else { return nil }
                refs.append(SpillRef(segment: seg, offset: off, length: len))
            }
            guard let (headers, next) = DiskTraceStore.headers(in: body, at: r.offset) else { return nil }
            r.offset = next
            traces.append(IndexedTrace(summary: s, timing: SpillTiming(firstSeen: first, lastSeen: last, rootArrived: root),
                                       missing: missing, refs: refs, headers: headers, aggregatesCurrent: current & 1 != 0))
            // A cold trace's places must fit the buffer's packed form (they always do: segments are at most 1 GiB).
            if current & 2 != 0 && !refs.allSatisfy({ $0.segment <= UInt32.max && $0.offset <= UInt32.max }) { return nil }
            traces[traces.count - 1].cold = current & 2 != 0
            traces[traces.count - 1].deadline = deadline
        }
        guard let nDecisions = r.u32() else { return nil }
        var decisions: [(TraceID, Bool, KeepWeight, String)] = []
        let slice = body[...]
        var o = r.offset
        for _ in 0..<nDecisions {
            guard let d = DiskTraceStore.decodeDecision(slice, &o) else { return nil }
            decisions.append(d)
        }
        return Contents(planKey: planKey, lastSegment: lastSegment, lastSegmentSize: lastSize, traces: traces, decisions: decisions)
    }

    struct Writer {
        var bytes: [UInt8] = []
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func string(_ s: String) {
            let utf8 = Array(s.utf8.prefix(Int(UInt16.max)))
            withUnsafeBytes(of: UInt16(utf8.count).littleEndian) { bytes += $0 }
            bytes += utf8
        }
        /// A trace's GenAI spans: count u32, then per span its IDs, role, status, duration, six token lanes and
        /// seven strings (u16 length + UTF-8).
        mutating func genAI(_ ledger: GenAILedger?) {
            let spans = ledger?.spans ?? []
            u32(UInt32(spans.count))
            for g in spans {
                u64(g.spanID)
                u64(g.parentSpanID)
                bytes.append(g.role.rawValue)
                bytes.append(g.statusError ? 1 : 0)
                u64(g.durationNanos)
                for lane in 0..<6 { u64(UInt64(bitPattern: g.tokens[lane])) }
                for text in [g.operation, g.provider, g.model, g.requestModel, g.errorType, g.toolName, g.agentName] { string(text) }
            }
        }
    }

    struct Reader {
        let bytes: [UInt8]
        var offset: Int
        mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard bytes.count - offset >= n else { return nil }
            defer { offset += n }
            return bytes[offset..<offset + n]
        }
        mutating func u8() -> UInt8? { take(1).map { $0.first! } }
        mutating func u32() -> UInt32? {
            take(4).map { s in s.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) } }
        }
        mutating func u64() -> UInt64? {
            take(8).map { s in s.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } }
        }
        mutating func string() -> String? {
            guard let n = take(2).map({ s in s.withUnsafeBytes { UInt16(littleEndian: $0.loadUnaligned(as: UInt16.self)) } }),
                  let utf8 = take(Int(n)) else { return nil }
            return String(decoding: utf8, as: UTF8.self)
        }
        /// See `Writer.genAI`; an empty array for none, nil when damaged.
        mutating func genAI() -> [GenAISpan]? {
            guard let count = u32(), Int(count) <= GenAILedger.maxSpans else { return nil }
            var spans: [GenAISpan] = []
            for _ in 0..<count {
                guard let id = u64(), let parent = u64(), let role = u8().flatMap(GenAISpan.Role.init(rawValue:)),
                      let error = u8(), let duration = u64() else { return nil }
                var tokens = SIMD8<Int64>()
                for lane in 0..<6 {
                    guard let v = u64() else { return nil }
                    tokens[lane] = Int64(bitPattern: v)
                }
                var texts: [String] = []
                for _ in 0..<7 {
                    guard let t = string() else { return nil }
                    texts.append(t)
                }
                spans.append(GenAISpan(spanID: id, parentSpanID: parent, role: role, operation: texts[0], provider: texts[1],
                                       model: texts[2], requestModel: texts[3], errorType: texts[4], toolName: texts[5],
                                       agentName: texts[6], statusError: error != 0, durationNanos: duration, tokens: tokens))
            }
            return spans
        }
    }
}
