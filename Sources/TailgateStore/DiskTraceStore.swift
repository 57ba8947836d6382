import Foundation
package import Logging
import Synchronization
package import TailgateBuffer
import TailgateExport
package import TailgateWire

/// The on-disk tier. Every field has a documented default.
package struct StoreConfiguration: Sendable, Equatable {
    /// What an acknowledgement to a client means.
    package enum Durability: String, Sendable, Equatable {
        /// After the in-memory insert (default): a SIGKILL or power loss loses what is not yet on disk — traces
        /// younger than `spill_after` and the forward queue's memory part; a graceful stop loses nothing.
        case buffered
        /// After the request is written ahead to the store and made durable (`fdatasync`, shared by every request
        /// waiting at the same moment): a SIGKILL loses nothing acknowledged.
        case sync
    }

    /// The data directory (`data_dir`, `--data-dir`). Locked against a second instance.
    package var directory: String
    /// Disk the store may use: spilled traces, write-ahead records, the forward queue's overflow. Default 10 GiB.
    package var maxDiskBytes: Int = 10 << 30
    /// Default `buffered`.
    package var durability: Durability = .buffered
    /// A segment file is closed and a new one started past this size: 64 KiB to 1 GiB (record places are kept in 32
    /// bits for cold traces). Default 64 MiB.
    package var segmentBytes: Int = 64 << 20
    /// Appends are written to the file in chunks of this size (or every second). Default 1 MiB: fewer writes, device
    /// kicks and writer wake-ups than 256 KiB (measured side by side at 20,000 spans/s: `PAIRED=1 loadtest/store-ab.sh`).
    package var writeBufferBytes: Int = 1 << 20

    package init(directory: String) {
        self.directory = directory
    }
}

/// Receives the store's counts (implemented by the runtime's metrics).
package protocol StoreObserver: Sendable {
    func storeWrote(bytes: Int)
    func storeRead(bytes: Int)
    /// An append was refused: the disk budget is used up or writing fails.
    func storeFull()
    func storeDamaged(records: Int)
}

/// What recovery found at start.
package struct RecoveryReport: Sendable {
    package var traces = 0
    package var records = 0
    package var bytes: UInt64 = 0
    package var damagedRecords = 0
    package var decisions = 0
    package var forwardBatches = 0
    /// Sync durability: late spans of kept traces written ahead before a crash, sent again.
    package var lateKeptSpans = 0
    /// Restored from the index of a graceful stop (no record was scanned).
    package var fromIndex = false
    package var seconds: Double = 0
}

/// Record kinds (the first payload byte).
enum RecordKind: UInt8 {
    /// A trace's spans that moved to disk: trace ID, timing, then an encoded ExportTraceServiceRequest.
    case spans = 1
    /// Like `spans`, holding every span of the trace stored before it (earlier records are dead).
    case consolidated = 2
    /// A trace's decision (earlier records of the trace are dead).
    case decision = 3
    /// Sync durability: an acknowledged request as received (arrival time, encoded request).
    case writeAhead = 4
    /// The remembered decisions at a graceful stop.
    case decisions = 5
    /// Forward queue: an encoded batch waiting for the downstream (span count, request).
    case batch = 6
    /// Forward queue: a batch was delivered (or dropped, counted): segment and offset of its record.
    case batchDone = 7
}

/// Tailgate's data directory: spilled traces and write-ahead records (`traces-*.tgs`), the forward queue's overflow
/// (`queue-*.tgs`), and a `LOCK` file. See the README's "Durable store" for the format and what each durability
/// setting guarantees.
package final class DiskTraceStore: TraceStore, BatchSpool, @unchecked Sendable {
    package let configuration: StoreConfiguration
    let files: any StoreFiles
    let logger: Logger
    let observer: (any StoreObserver)?
    let traceLog: SegmentLog
    let queueLog: SegmentLog
    private let lockFD: Int32
    private let activeSeq = Atomic<UInt64>(0)
    /// Segments found at start, not read yet.
    private(set) var foundTraces: [UInt64] = []
    private(set) var foundSizes: [(seq: UInt64, size: UInt64)] = []
    private(set) var foundQueue: [UInt64] = []
    /// Forward queue: live batch records per segment (a segment goes once none is left).
    private let liveBatches = Mutex<[UInt64: Int]>([:])
    private let fullLogged = Mutex<ContinuousClock.Instant?>(nil)
    /// Bytes reserved beyond `maxDiskBytes` for decision records, so that a full store can still say a trace was
    /// decided (a restart must not resurrect it).
    static let decisionReserve: UInt64 = 16 << 20

    /// Opens (creating) the data directory and takes its lock. Throws when another process holds it, or the
    /// directory cannot be used.
    package init(configuration: StoreConfiguration, files: any StoreFiles = POSIXStoreFiles(), logger: Logger,
                observer: (any StoreObserver)? = nil) throws(StoreIOError) {
        self.configuration = configuration
        self.files = files
        self.logger = logger
        self.observer = observer
        let dir = configuration.directory
        try files.makeDirectory(dir)
        lockFD = try files.lock("\(dir)/LOCK")
        let sync = configuration.durability == .sync
        traceLog = SegmentLog(directory: dir, prefix: "traces", files: files, segmentBytes: UInt64(configuration.segmentBytes),
                              writeBufferBytes: configuration.writeBufferBytes, syncOnRoll: sync)
        queueLog = SegmentLog(directory: dir, prefix: "queue", files: files, segmentBytes: UInt64(configuration.segmentBytes),
                              writeBufferBytes: configuration.writeBufferBytes, syncOnRoll: sync)
        foundTraces = try traceLog.existingSegments()
        foundQueue = try queueLog.existingSegments()
        foundSizes = try sizes(traceLog, foundTraces)
        try traceLog.open(existing: foundSizes)
        try queueLog.open(existing: try sizes(queueLog, foundQueue))
        activeSeq.store(traceLog.activeSegment, ordering: .relaxed)
    }

    private func sizes(_ log: SegmentLog, _ seqs: [UInt64]) throws(StoreIOError) -> [(seq: UInt64, size: UInt64)] {
        var out: [(seq: UInt64, size: UInt64)] = []
        for seq in seqs {
            let fd = try files.open(log.path(seq), create: false)
            defer { files.close(fd) }
            out.append((seq, try files.size(fd, path: log.path(seq))))
        }
        return out
    }

    /// Bytes the store's files take.
    package var diskBytes: Int { Int(traceLog.diskBytes + queueLog.diskBytes) }

    private var budget: UInt64 { UInt64(configuration.maxDiskBytes) }

    private func refused() {
        observer?.storeFull()
        let now = ContinuousClock.now
        let log = fullLogged.withLock { last -> Bool in
            if let l = last, now - l < .seconds(60) { return false }
            last = now
            return true
        }
        if log {
            let why = traceLog.lastError.map { "writing fails: \($0)" } ?? "max_disk_bytes (\(configuration.maxDiskBytes)) is used up"
            logger.warning("trace store refused a write: traces stay in memory, and are decided early if memory runs out too", metadata: [
                "why": "\(why)", "data_dir": "\(configuration.directory)"])
        }
    }

    // MARK: TraceStore

    package var walSegment: UInt64? {
        guard configuration.durability == .sync else { return nil }
        // One segment back: the request's record may sit in the segment before a roll that happened meanwhile.
        let seq = activeSeq.load(ordering: .relaxed)
        return seq > 0 ? seq - 1 : 0
    }

    package func wallNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    package func append(trace: TraceID, spans: BufferedSpans, timing: SpillTiming, supersedes: Bool,
                       headers: [(String, String)]) -> SpillRef? {
        let otlp = BufferedSpans.RequestEncoding(spans)
        // Trace ID, the three times, the pass-through headers, then the request: written straight into the log's
        // buffer (this runs for every dropped trace that is retained, so it allocates nothing it can avoid).
        let headerText = Self.headerText(headers)
        let headBytes = 16 + 24 + 2 + headerText.count
        guard let (ref, _) = traceLog.append(kind: (supersedes ? RecordKind.consolidated : .spans).rawValue, [],
                                             trailingBytes: headBytes + otlp.size, trailing: { out in
            out.storeBytes(of: trace.hi.bigEndian, toByteOffset: 0, as: UInt64.self)
            out.storeBytes(of: trace.lo.bigEndian, toByteOffset: 8, as: UInt64.self)
            out.storeBytes(of: timing.firstSeen.littleEndian, toByteOffset: 16, as: UInt64.self)
            out.storeBytes(of: timing.lastSeen.littleEndian, toByteOffset: 24, as: UInt64.self)
            out.storeBytes(of: timing.rootArrived.littleEndian, toByteOffset: 32, as: UInt64.self)
            out.storeBytes(of: UInt16(headerText.count).littleEndian, toByteOffset: 40, as: UInt16.self)
            if !headerText.isEmpty {
                headerText.withUnsafeBytes { out.baseAddress!.advanced(by: 42).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
            otlp.write(to: UnsafeMutableRawBufferPointer(rebasing: out[headBytes...]))
        }, budget: budget) else {
            refused()
            return nil
        }
        activeSeq.store(ref.segment, ordering: .relaxed)
        observer?.storeWrote(bytes: Int(ref.length))
        return ref
    }

    package func read(_ refs: [SpillRef], into spans: inout BufferedSpans) -> Bool {
        var ok = true
        for ref in refs {
            guard let payload = traceLog.read(ref), payload.count >= 43,
                  payload[0] == RecordKind.spans.rawValue || payload[0] == RecordKind.consolidated.rawValue,
                  let (_, bodyStart) = Self.headers(in: payload, at: 41) else {
                ok = false
                observer?.storeDamaged(records: 1)
                logger.error("trace store: a record could not be read back; its spans are lost", metadata: [
                    "file": "\(traceLog.path(ref.segment))", "offset": "\(ref.offset)"])
                continue
            }
            observer?.storeRead(bytes: Int(ref.length))
            let decoded = payload.withUnsafeBytes { raw in
                try? BufferedSpans.decode(UnsafeRawBufferPointer(rebasing: raw[bodyStart...]))
            }
            if let decoded { spans.append(contentsOf: decoded) } else { ok = false }
        }
        return ok
    }

    package func decided(trace: TraceID, decision: Decision, policyName: String, stored: Bool) {
        guard stored else { return }
        // As `encode` lays it out, written straight into the log's buffer (one per dropped trace that is retained).
        var name = policyName
        name.withUTF8 { utf8 in
            let nameBytes = min(utf8.count, 1000)
            _ = traceLog.append(kind: RecordKind.decision.rawValue, [], trailingBytes: 28 + nameBytes, trailing: { out in
                Self.writeDecisionHead(trace, decision, nameBytes: nameBytes, to: out)
                if nameBytes > 0 {
                    out.baseAddress!.advanced(by: 28).copyMemory(from: utf8.baseAddress!, byteCount: nameBytes)
                }
            }, budget: budget + Self.decisionReserve)
        }
    }

    /// The fixed 28 bytes of a decision entry: trace ID, keep, weight kind and value, name length.
    static func writeDecisionHead(_ trace: TraceID, _ decision: Decision, nameBytes: Int, to out: UnsafeMutableRawBufferPointer) {
        out.storeBytes(of: trace.hi.bigEndian, toByteOffset: 0, as: UInt64.self)
        out.storeBytes(of: trace.lo.bigEndian, toByteOffset: 8, as: UInt64.self)
        out.storeBytes(of: decision.keep ? 1 : 0, toByteOffset: 16, as: UInt8.self)
        let (kind, value): (UInt8, UInt64) = switch decision.weight {
        case .certain: (0, 0)
        case .consistent(let t): (1, t)
        case .hashed(let p): (2, p.bitPattern)
        }
        out.storeBytes(of: kind, toByteOffset: 17, as: UInt8.self)
        out.storeBytes(of: value.littleEndian, toByteOffset: 18, as: UInt64.self)
        out.storeBytes(of: UInt16(nameBytes).littleEndian, toByteOffset: 26, as: UInt16.self)
    }

    static func encode(_ trace: TraceID, _ decision: Decision, _ name: String) -> [UInt8] {
        let nameBytes = Array(name.utf8.prefix(1000))
        var out = [UInt8](repeating: 0, count: 28)
        out.withUnsafeMutableBytes { writeDecisionHead(trace, decision, nameBytes: nameBytes.count, to: $0) }
        return out + nameBytes
    }

    /// Decodes one decision entry at `offset`, advancing it.
    static func decodeDecision(_ p: ArraySlice<UInt8>, _ offset: inout Int) -> (TraceID, Bool, KeepWeight, String)? {
        guard p.endIndex - offset >= 28 else { return nil }
        let base = offset
        let (trace, keep, kind, value, n) = p.withUnsafeBytes { raw -> (TraceID, Bool, UInt8, UInt64, Int) in
            let o = base - p.startIndex
            return (TraceID(loadingFrom: raw, at: o), raw[o + 16] != 0, raw[o + 17],
                    UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o + 18, as: UInt64.self)),
                    Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o + 26, as: UInt16.self))))
        }
        guard p.endIndex - offset >= 28 + n else { return nil }
        let name = String(decoding: p[(offset + 28)..<(offset + 28 + n)], as: UTF8.self)
        offset += 28 + n
        let weight: KeepWeight = switch kind {
        case 1: .consistent(threshold: value)
        case 2: .hashed(probability: Double(bitPattern: value))
        default: .certain
        }
        return (trace, keep, weight, name)
    }

    // MARK: Sync durability

    /// Writes an accepted request ahead (sync durability) and waits until it is durable. False when it could not be
    /// written (the disk is full): the request is then held in memory only, which the caller counts.
    package func writeAhead(_ body: UnsafeRawBufferPointer, headers: [(String, String)] = []) -> Bool {
        var head: [UInt8] = []
        withUnsafeBytes(of: wallNow().littleEndian) { head += $0 }
        Self.appendHeaders(headers, to: &head)
        guard let (ref, end) = traceLog.append(kind: RecordKind.writeAhead.rawValue, [head, Array(body)], budget: budget) else {
            refused()
            return false
        }
        activeSeq.store(ref.segment, ordering: .relaxed)
        observer?.storeWrote(bytes: Int(ref.length))
        do {
            try traceLog.commit(through: end)
            return true
        } catch {
            logger.error("trace store: fdatasync failed; the request is acknowledged from memory", metadata: ["error": "\(error)"])
            return false
        }
    }

    // MARK: Forward queue (BatchSpool)

    package func write(_ request: [UInt8], spans: Int, headers: [(String, String)]) -> SpillRef? {
        var head: [UInt8] = []
        withUnsafeBytes(of: UInt32(clamping: spans).littleEndian) { head += $0 }
        Self.appendHeaders(headers, to: &head)
        guard let (ref, end) = queueLog.append(kind: RecordKind.batch.rawValue, [head, request], budget: budget) else {
            refused()
            return nil
        }
        if configuration.durability == .sync { try? queueLog.commit(through: end) }
        liveBatches.withLock { $0[ref.segment, default: 0] += 1 }
        observer?.storeWrote(bytes: Int(ref.length))
        return ref
    }

    package func read(_ ref: SpillRef) -> [UInt8]? {
        guard let payload = queueLog.read(ref), payload.count >= 7, payload[0] == RecordKind.batch.rawValue,
              let (_, bodyStart) = Self.headers(in: payload, at: 5) else {
            observer?.storeDamaged(records: 1)
            return nil
        }
        observer?.storeRead(bytes: Int(ref.length))
        return Array(payload[bodyStart...])
    }

    /// Pass-through headers as written in a record: a UInt16 length, then `HeaderSets.key` text.
    static func appendHeaders(_ headers: [(String, String)], to out: inout [UInt8]) {
        let text = headerText(headers)
        withUnsafeBytes(of: UInt16(text.count).littleEndian) { out += $0 }
        out += text
    }

    /// The `HeaderSets.key` text of pass-through headers as a record holds it (at most UInt16.max bytes; none for
    /// no headers, the common case, without building a string).
    static func headerText(_ headers: [(String, String)]) -> [UInt8] {
        headers.isEmpty ? [] : Array(HeaderSets.key(headers).utf8.prefix(Int(UInt16.max)))
    }

    /// The headers at `offset` of a payload, and where what follows them starts.
    static func headers<C: RandomAccessCollection>(in payload: C, at offset: Int) -> ([(String, String)], Int)?
    where C.Element == UInt8, C.Index == Int {
        let base = payload.startIndex + offset
        guard payload.endIndex - base >= 2 else { return nil }
        let n = Int(payload[base]) | Int(payload[base + 1]) << 8
        guard payload.endIndex - base - 2 >= n else { return nil }
        let text = String(decoding: payload[(base + 2)..<(base + 2 + n)], as: UTF8.self)
        return (HeaderSets.parse(text), base + 2 + n)
    }

    package var spoolsEveryBatch: Bool { configuration.durability == .sync }

    /// A batch found at start is live until released.
    func adoptBatch(_ ref: SpillRef) {
        liveBatches.withLock { $0[ref.segment, default: 0] += 1 }
    }

    package func release(_ ref: SpillRef) {
        var body: [UInt8] = []
        withUnsafeBytes(of: ref.segment.littleEndian) { body += $0 }
        withUnsafeBytes(of: ref.offset.littleEndian) { body += $0 }
        _ = queueLog.append(kind: RecordKind.batchDone.rawValue, [body], budget: budget + Self.decisionReserve)
        liveBatches.withLock { live in
            if let n = live[ref.segment] { live[ref.segment] = n > 1 ? n - 1 : nil }
        }
    }

    // MARK: Maintenance

    /// Called about every second: writes buffered records out, deletes segments nothing live needs, and rewrites
    /// the traces that keep old segments alive when the files hold far more than the live data. Returns bytes freed.
    @discardableResult
    package func maintain(buffer: TraceBuffer) -> UInt64 {
        try? traceLog.flush()
        try? queueLog.flush()
        var freed: UInt64 = 0
        let pinned = buffer.oldestPinnedSegment(floor: traceLog.oldestSegment) ?? traceLog.activeSegment
        freed += traceLog.deleteSegments(before: pinned)
        // Old segments held by a few long-lived traces: rewrite those traces so the segments can go.
        let live = UInt64(buffer.storedBytes)
        let onDisk = traceLog.diskBytes
        if onDisk > max(UInt64(configuration.segmentBytes) * 2, live * 2), let oldest = traceLog.oldestSegment, oldest < traceLog.activeSegment {
            _ = buffer.consolidate(below: oldest + 1, maxBytes: configuration.segmentBytes)
            if let p = buffer.oldestPinnedSegment() { freed += traceLog.deleteSegments(before: p) }
        }
        let oldestLiveBatch = liveBatches.withLock { $0.keys.min() } ?? queueLog.activeSegment
        freed += queueLog.deleteSegments(before: oldestLiveBatch)
        return freed
    }

    /// Writes buffered records to the files (not necessarily durable).
    package func flush() {
        try? traceLog.flush()
        try? queueLog.flush()
    }

    /// Closes the files without writing anything buffered: what a SIGKILL leaves (tests).
    func abandon() {
        traceLog.abandon()
        queueLog.abandon()
        files.close(lockFD)
    }

    /// Graceful stop: the remembered decisions are written, everything is flushed and made durable, files closed.
    ///
    /// `index`: every undecided trace (all of whose spans are on disk), written to the index file so that the next
    /// start restores them without scanning the records; `planKey` identifies the policies they were aggregated with.
    package func close(decisions: [(TraceID, Decision, String)], index: [IndexedTrace]? = nil, planKey: UInt64 = 0) {
        if !decisions.isEmpty {
            var body: [UInt8] = []
            for (id, d, name) in decisions { body += Self.encode(id, d, name) }
            _ = traceLog.append(kind: RecordKind.decisions.rawValue, [body], budget: budget + Self.decisionReserve)
        }
        let last = traceLog.lastSegment
        do {
            try traceLog.close(sync: true)
            try queueLog.close(sync: true)
            if let index, let last {
                let contents = IndexFile.Contents(
                    planKey: planKey, lastSegment: last.seq, lastSegmentSize: last.size, traces: index,
                    decisions: decisions.map { ($0.0, $0.1.keep, $0.1.weight, $0.2) })
                let bytes = IndexFile.encode(contents)
                let path = indexPath
                try? files.remove(path)
                let fd = try files.open(path, create: true)
                defer { files.close(fd) }
                let failure: StoreIOError? = bytes.withUnsafeBytes { raw -> StoreIOError? in
                    do throws(StoreIOError) { try files.append(fd, raw, path: path) } catch { return error }
                    return nil
                }
                if let failure { throw failure }
                try files.sync(fd, path: path)
            }
        } catch {
            logger.error("trace store: could not write everything at stop", metadata: ["error": "\(error)"])
        }
        files.close(lockFD)
    }

    var indexPath: String { "\(configuration.directory)/index.tgi" }
}
