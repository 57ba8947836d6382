import CTailgateSupport
import Foundation
import TailgateBuffer

/// An append-only log of checksummed records in numbered segment files: `<prefix>-<16 hex digits>.tgs`.
///
/// File: a 16-byte header (`TGSTORE\0`, format version as a little-endian UInt32, 4 reserved bytes), then records.
/// Record: payload length (UInt32 LE), CRC-32C of the payload (UInt32 LE, hardware-computed where possible), payload; the payload's first byte is its
/// kind. Appends go to a write buffer that is written sequentially when it fills (or on `flush`/`commit`); reads of
/// records still in the buffer are served from it. Where the file system allows, the active segment is written with
/// `O_DIRECT` from a block-aligned buffer: whole blocks when the buffer fills, and on `flush`/`commit` the last
/// block padded with zeros and the file cut back to its true length (the partial block stays in the buffer and is
/// written again, completed, next time). That spares the copy into the page cache, which cost more CPU than
/// everything else the store does (about 1 ns per byte against 0.05). A full buffer is handed to a writer queue and
/// written outside the lock: appends are made under a trace buffer shard's lock, and must not wait for the disk.
/// While a write is under way the buffer keeps growing, and the writer takes all of it next (one larger write: a
/// burst of decisions costs fewer writes, wake-ups and device kicks); appends wait only when the disk falls
/// `backlogBytes` behind. A new segment starts when the active one passes `segmentBytes`;
/// segments are only ever deleted from the oldest (`deleteSegments(before:)`), so a record that marks earlier ones
/// dead (a decision, a consolidation) always outlives them.
final class SegmentLog: @unchecked Sendable {
    static let magic: [UInt8] = Array("TGSTORE".utf8) + [0]
    static let formatVersion: UInt32 = 1
    static let fileHeaderBytes = 16
    static let recordHeaderBytes = 8
    /// A record longer than this is taken for damage (a length field gone wrong).
    static let maxRecordBytes = 1 << 30

    struct Segment {
        var seq: UInt64
        var fd: Int32
        var path: String
        /// Bytes of the file, including what is still in the write buffer (for the active segment).
        var size: UInt64
        /// The active segment's descriptor for direct writes (nil: buffered writes through `fd`).
        var direct: Int32? = nil
    }

    /// A place in the log (segment, end offset), ordered.
    struct Position: Comparable {
        var segment: UInt64
        var offset: UInt64
        static func < (a: Position, b: Position) -> Bool { (a.segment, a.offset) < (b.segment, b.offset) }
        static let zero = Position(segment: 0, offset: 0)
    }

    let directory: String
    let prefix: String
    let files: any StoreFiles
    let segmentBytes: UInt64
    let writeBufferBytes: Int
    /// Bytes the write buffer may hold while a write is under way before appends wait for the disk: a decision
    /// tick's burst of retained traces (megabytes at full rate) must not stall the deciding thread, which holds a
    /// shard's lock.
    let backlogBytes: Int
    /// Sync durability: each segment is made durable before the next one starts.
    let syncOnRoll: Bool
    private let lock = NSCondition()
    private var segments: [Segment] = []  // ascending seq; the last is the active one
    private var buffer: AlignedBytes
    /// Whole blocks handed to the writer queue, not written yet; they end where `buffer` starts. Reads of their records
    /// are served from here meanwhile. At most one at a time.
    private var pending: AlignedBytes? = nil
    private var pendingStart: UInt64 = 0
    /// A written buffer kept for the next hand-off.
    private var spare: AlignedBytes? = nil
    private let writer = DispatchQueue(label: "tailgate.store.writer")
    /// File offset (in the active segment) of the buffer's first byte (a whole number of blocks with direct writes).
    private var bufferStart: UInt64 = 0
    private var totalBytes: UInt64 = 0
    private var syncedThrough = Position.zero
    private var committing = false
    /// The last write failed (e.g. the disk is full): appends are refused until this instant, when a flush is tried
    /// again.
    private var failedUntil: ContinuousClock.Instant? = nil
    private(set) var lastError: StoreIOError? = nil

    init(directory: String, prefix: String, files: any StoreFiles, segmentBytes: UInt64, writeBufferBytes: Int, syncOnRoll: Bool) {
        self.directory = directory
        self.prefix = prefix
        self.files = files
        self.segmentBytes = segmentBytes
        self.writeBufferBytes = writeBufferBytes
        backlogBytes = max(writeBufferBytes * 4, 8 << 20)
        self.syncOnRoll = syncOnRoll
        buffer = AlignedBytes(capacity: writeBufferBytes + AlignedBytes.blockBytes)
    }

    deinit {
        buffer.release()
        spare?.release()
    }

    // MARK: Names

    func path(_ seq: UInt64) -> String {
        let hex = String(seq, radix: 16)
        return "\(directory)/\(prefix)-\(String(repeating: "0", count: max(0, 16 - hex.count)))\(hex).tgs"
    }

    /// Existing segment numbers, ascending.
    func existingSegments() throws(StoreIOError) -> [UInt64] {
        try files.list(directory).compactMap { name -> UInt64? in
            guard name.hasPrefix(prefix + "-"), name.hasSuffix(".tgs") else { return nil }
            return UInt64(name.dropFirst(prefix.count + 1).dropLast(4), radix: 16)
        }.sorted()
    }

    // MARK: Opening

    /// Adopts the segments found at start (read-only from now on: recovery reads them, deletion removes them) and
    /// starts a new active segment after them.
    func open(existing: [(seq: UInt64, size: UInt64)]) throws(StoreIOError) {
        lock.lock()
        defer { lock.unlock() }
        for (seq, size) in existing {
            let fd = try files.open(path(seq), create: false)
            segments.append(Segment(seq: seq, fd: fd, path: path(seq), size: size))
            totalBytes += size
        }
        try startSegment((existing.last?.seq ?? 0) + 1)
    }

    private func startSegment(_ seq: UInt64) throws(StoreIOError) {
        let p = path(seq)
        let fd = try files.open(p, create: true)
        var header = Self.magic
        withUnsafeBytes(of: Self.formatVersion.littleEndian) { header += $0 }
        header += [0, 0, 0, 0]
        segments.append(Segment(seq: seq, fd: fd, path: p, size: UInt64(header.count), direct: files.openForDirectWrites(p)))
        totalBytes += UInt64(header.count)
        buffer.removeAll()
        buffer.shrink(to: writeBufferBytes + AlignedBytes.blockBytes)
        buffer.append(header)
        bufferStart = 0
    }

    var activeSegment: UInt64 { lock.lock(); defer { lock.unlock() }; return segments.last?.seq ?? 0 }
    var diskBytes: UInt64 { lock.lock(); defer { lock.unlock() }; return totalBytes }
    var segmentCount: Int { lock.lock(); defer { lock.unlock() }; return segments.count }
    var oldestSegment: UInt64? { lock.lock(); defer { lock.unlock() }; return segments.first?.seq }
    /// The active segment's number and size (what is buffered included).
    var lastSegment: (seq: UInt64, size: UInt64)? { lock.lock(); defer { lock.unlock() }; return segments.last.map { ($0.seq, $0.size) } }

    // MARK: Appending

    /// Appends one record (payload = `kind` byte followed by the parts) within `budget` bytes of log in total.
    /// nil: no room, or writing is failing (the disk is full).
    func append(kind: UInt8, _ parts: [[UInt8]], budget: UInt64) -> (SpillRef, Position)? {
        append(kind: kind, parts, trailingBytes: 0, trailing: { _ in }, budget: budget)
    }

    /// Appends one record whose payload is `kind`, the parts, then `trailingBytes` written by `trailing` straight
    /// into the write buffer (an encoded request, without an intermediate copy). `trailing` runs under the log's lock.
    func append(kind: UInt8, _ parts: [[UInt8]], trailingBytes: Int, trailing: (UnsafeMutableRawBufferPointer) -> Void,
                budget: UInt64) -> (SpillRef, Position)? {
        var length = 1 + trailingBytes
        for p in parts { length += p.count }
        let recordBytes = Self.recordHeaderBytes + length
        lock.lock()
        defer { lock.unlock() }
        if let until = failedUntil {
            guard ContinuousClock.now >= until, (try? flushLocked()) != nil else { return nil }
        }
        guard totalBytes + UInt64(recordBytes) <= budget else { return nil }
        if let active = segments.last, active.size > Self.fileHeaderBytes, active.size + UInt64(recordBytes) > segmentBytes {
            do { try rollLocked() } catch { return nil }
        }
        guard let active = segments.last else { return nil }
        let offset = active.size
        let recordStart = buffer.count
        // Length, a checksum filled in below, the kind byte, then the payload's parts.
        var head = (UInt32(length).littleEndian, UInt32(0), kind)
        withUnsafeBytes(of: &head) { buffer.append(UnsafeRawBufferPointer(rebasing: $0[0..<Self.recordHeaderBytes + 1])) }
        for p in parts { buffer.append(p) }
        if trailingBytes > 0 { trailing(buffer.appendUninitialized(trailingBytes)) }
        buffer.store(buffer.checksum(recordStart + Self.recordHeaderBytes, length), at: recordStart + 4)
        segments[segments.count - 1].size += UInt64(recordBytes)
        totalBytes += UInt64(recordBytes)
        if buffer.count >= writeBufferBytes {
            if pending == nil {
                handOffLocked()
            } else if buffer.count >= backlogBytes {
                try? flushLocked()  // the disk is behind: wait for it here
            }
        }
        let end = Position(segment: active.seq, offset: offset + UInt64(recordBytes))
        return (SpillRef(segment: active.seq, offset: offset, length: UInt32(recordBytes)), end)
    }

    /// Hands the buffer's whole blocks (everything, without direct writes) to the writer queue; the rest starts the
    /// next buffer.
    private func handOffLocked() {
        guard pending == nil, let active = segments.last else { return }
        let length = active.direct != nil ? buffer.count / AlignedBytes.blockBytes * AlignedBytes.blockBytes : buffer.count
        guard length > 0 else { return }
        var next = spare ?? AlignedBytes(capacity: writeBufferBytes + AlignedBytes.blockBytes)
        spare = nil
        next.removeAll()
        if length < buffer.count { next.append(UnsafeRawBufferPointer(rebasing: buffer.bytes(buffer.count)[length...])) }
        var full = buffer
        full.truncate(to: length)
        buffer = next
        pending = full
        pendingStart = bufferStart
        bufferStart += UInt64(length)
        let fd = active.fd, direct = active.direct, path = active.path
        writer.async { self.writePending(fd: fd, direct: direct, path: path) }
    }

    /// The writer queue: writes the pending blocks. On failure they go back in front of the buffer (nothing is lost;
    /// the next flush tries again), the file is cut back, and appends are refused for a second.
    private func writePending(fd: Int32, direct: Int32?, path: String) {
        lock.lock()
        guard let blocks = pending else { lock.unlock(); return }
        let start = pendingStart
        lock.unlock()
        // `pending` is not changed by anyone else until it is cleared below: its bytes stay put.
        var failure: StoreIOError? = nil
        do throws(StoreIOError) {
            if let direct {
                try files.write(direct, blocks.bytes(blocks.count), at: start, path: path)
            } else {
                try files.append(fd, blocks.bytes(blocks.count), path: path)
            }
        } catch {
            failure = error
        }
        lock.lock()
        pending = nil
        if let failure {
            var merged = blocks
            merged.append(buffer.bytes(buffer.count))
            buffer.release()
            buffer = merged
            bufferStart = start
            try? files.truncate(fd, to: start, path: path)
            failedUntil = .now + .seconds(1)
            lastError = failure
        } else {
            if spare == nil { spare = blocks } else { blocks.release() }
            // What accumulated meanwhile goes next, in one write.
            if buffer.count >= writeBufferBytes { handOffLocked() }
        }
        lock.broadcast()
        lock.unlock()
    }

    /// Writes the whole buffer to the active segment (after any pending hand-off): the file then holds every record.
    /// With direct writes the last block goes padded and the file is cut back to its length. On failure the buffer
    /// is kept (reads still find its records), any partial write is cut off, and appends are refused for a second.
    private func flushLocked() throws(StoreIOError) {
        while pending != nil { lock.wait() }
        guard !buffer.isEmpty, let active = segments.last else { failedUntil = nil; return }
        let block = AlignedBytes.blockBytes
        do throws(StoreIOError) {
            if let direct = active.direct {
                let length = AlignedBytes.roundUp(buffer.count)
                try files.write(direct, buffer.padded(to: length), at: bufferStart, path: active.path)
                if length > buffer.count {
                    try files.truncate(active.fd, to: bufferStart + UInt64(buffer.count), path: active.path)
                }
                // The partial last block stays: the next write rewrites it, completed.
                let blocks = buffer.count / block * block
                bufferStart += UInt64(blocks)
                buffer.removeFirst(blocks)
            } else {
                try files.append(active.fd, buffer.bytes(buffer.count), path: active.path)
                bufferStart += UInt64(buffer.count)
                buffer.removeAll()
            }
        } catch {
            try? files.truncate(active.fd, to: bufferStart, path: active.path)
            failedUntil = .now + .seconds(1)
            lastError = error
            throw error
        }
        if buffer.isEmpty { buffer.shrink(to: writeBufferBytes + block) }
        failedUntil = nil
    }

    private func rollLocked() throws(StoreIOError) {
        try flushLocked()
        if syncOnRoll, let active = segments.last {
            try files.sync(active.fd, path: active.path)
            syncedThrough = max(syncedThrough, Position(segment: active.seq, offset: active.size))
        }
        closeDirect()
        try startSegment((segments.last?.seq ?? 0) + 1)
    }

    /// The active segment is finished: its direct-write descriptor goes (reads use the other one).
    private func closeDirect() {
        guard let last = segments.indices.last, let direct = segments[last].direct else { return }
        files.close(direct)
        segments[last].direct = nil
    }

    /// Writes buffered records to the file (not necessarily durable).
    func flush() throws(StoreIOError) {
        lock.lock()
        defer { lock.unlock() }
        try flushLocked()
    }

    /// Makes every record up to `position` durable, with one `fdatasync` shared by every caller waiting meanwhile
    /// (group commit).
    func commit(through position: Position) throws(StoreIOError) {
        lock.lock()
        defer { lock.unlock() }
        while syncedThrough < position {
            if committing {
                lock.wait()
                continue
            }
            committing = true
            guard let active = segments.last else { committing = false; return }
            let target = Position(segment: active.seq, offset: active.size)
            do {
                try flushLocked()
            } catch {
                committing = false
                lock.broadcast()
                throw error
            }
            lock.unlock()
            var failure: StoreIOError? = nil
            do { try files.sync(active.fd, path: active.path) } catch { failure = error }
            lock.lock()
            committing = false
            if failure == nil { syncedThrough = max(syncedThrough, target) }
            lock.broadcast()
            if let failure { throw failure }
        }
    }

    // MARK: Reading

    /// The payload of a record (kind byte first), checked against its checksum; nil when damaged or unreadable.
    func read(_ ref: SpillRef) -> [UInt8]? {
        lock.lock()
        guard let segment = segments.first(where: { $0.seq == ref.segment }) else { lock.unlock(); return nil }
        var raw: [UInt8]
        let end = ref.offset + UInt64(ref.length)
        let memoryStart = pending != nil ? pendingStart : bufferStart
        if segment.seq == segments.last?.seq, end > memoryStart {
            // Wholly or partly in memory (pending blocks, then the write buffer); the part before (if any) is in the
            // file.
            guard end <= bufferStart + UInt64(buffer.count) else { lock.unlock(); return nil }
            var tail: [UInt8] = []
            tail.reserveCapacity(Int(ref.length))
            if let pending, ref.offset < bufferStart {
                tail += pending.slice(Int(max(ref.offset, pendingStart) - pendingStart)..<Int(min(end, bufferStart) - pendingStart))
            }
            if end > bufferStart {
                tail += buffer.slice(Int(max(ref.offset, bufferStart) - bufferStart)..<Int(end - bufferStart))
            }
            let head = ref.offset < memoryStart ? memoryStart - ref.offset : 0
            let fd = segment.fd, path = segment.path
            lock.unlock()
            if head > 0 {
                guard let bytes = try? files.read(fd, offset: ref.offset, count: Int(head), path: path), bytes.count == Int(head) else { return nil }
                raw = bytes + tail
            } else {
                raw = tail
            }
        } else {
            lock.unlock()
            guard let bytes = try? files.read(segment.fd, offset: ref.offset, count: Int(ref.length), path: segment.path) else { return nil }
            raw = bytes
        }
        return Self.payload(raw)
    }

    /// The payload of one whole record (header included in `raw`), or nil when its length or checksum is wrong.
    static func payload(_ raw: [UInt8]) -> [UInt8]? {
        guard raw.count >= recordHeaderBytes + 1 else { return nil }
        let (length, crc) = raw.withUnsafeBytes {
            (UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
             UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        }
        guard Int(length) == raw.count - recordHeaderBytes else { return nil }
        let payload = Array(raw[recordHeaderBytes...])
        guard checksum(payload) == crc else { return nil }
        return payload
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { tailgate_crc32c(0, $0.baseAddress, $0.count) }
    }

    // MARK: Deleting

    /// Deletes every segment before `seq` (never the active one). Returns the bytes freed.
    @discardableResult
    func deleteSegments(before seq: UInt64) -> UInt64 {
        lock.lock()
        var doomed: [Segment] = []
        while segments.count > 1, let first = segments.first, first.seq < seq {
            doomed.append(segments.removeFirst())
            totalBytes -= first.size
        }
        lock.unlock()
        var freed: UInt64 = 0
        for s in doomed {
            files.close(s.fd)
            try? files.remove(s.path)
            freed += s.size
        }
        return freed
    }

    /// Flushes, syncs and closes every file (shutdown).
    func close(sync: Bool) throws(StoreIOError) {
        lock.lock()
        defer { lock.unlock() }
        try flushLocked()
        if sync, let active = segments.last { try files.sync(active.fd, path: active.path) }
        closeDirect()
        for s in segments { files.close(s.fd) }
        segments.removeAll()
    }

    /// Closes every file without writing what is buffered (tests: a crash).
    func abandon() {
        lock.lock()
        defer { lock.unlock() }
        while pending != nil { lock.wait() }
        closeDirect()
        for s in segments { files.close(s.fd) }
        segments.removeAll()
        buffer.removeAll()
    }

    // MARK: Recovery

    /// One record found when reading a segment at start.
    struct FoundRecord {
        var ref: SpillRef
        var payload: ArraySlice<UInt8>
    }

    /// What reading one segment found: its records, and damage (file offset, what).
    struct SegmentScan {
        var records: [FoundRecord] = []
        var damage: [(offset: UInt64, what: String)] = []
        var size: UInt64 = 0
    }

    /// Reads a whole segment file, checking every record: a record whose checksum fails is skipped (one damage
    /// entry); a length that runs past the end of the file (a crash mid-write) ends the segment there.
    static func scan(files: any StoreFiles, path: String, seq: UInt64) -> SegmentScan {
        var out = SegmentScan()
        guard let fd = try? files.open(path, create: false) else {
            out.damage.append((0, "cannot open"))
            return out
        }
        defer { files.close(fd) }
        guard let size = try? files.size(fd, path: path), let bytes = try? files.read(fd, offset: 0, count: Int(size), path: path) else {
            out.damage.append((0, "cannot read"))
            return out
        }
        out.size = UInt64(bytes.count)
        // A segment that was started but never written to (a crash before its first write) is simply empty.
        if bytes.isEmpty { return out }
        guard bytes.count >= fileHeaderBytes, Array(bytes[0..<8]) == magic else {
            out.damage.append((0, "not a Tailgate store segment (bad header)"))
            return out
        }
        let version = bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) }
        guard version == formatVersion else {
            out.damage.append((8, "format version \(version) is not supported (this build reads version \(formatVersion))"))
            return out
        }
        var offset = fileHeaderBytes
        bytes.withUnsafeBytes { raw in
            while offset < bytes.count {
                guard bytes.count - offset >= recordHeaderBytes else {
                    out.damage.append((UInt64(offset), "truncated record header (\(bytes.count - offset) bytes at the end)"))
                    return
                }
                let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                let crc = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
                let start = offset + recordHeaderBytes
                guard length >= 1, length <= maxRecordBytes, start + length <= bytes.count else {
                    out.damage.append((UInt64(offset), "record length \(length) runs past the end of the file (truncated write); the rest of the segment is skipped"))
                    return
                }
                let payload = bytes[start..<start + length]
                let actual = tailgate_crc32c(0, raw.baseAddress!.advanced(by: start), length)
                if actual == crc {
                    out.records.append(FoundRecord(ref: SpillRef(segment: seq, offset: UInt64(offset), length: UInt32(recordHeaderBytes + length)),
                                                   payload: payload))
                } else {
                    out.damage.append((UInt64(offset), "checksum mismatch: record of \(length) bytes skipped"))
                }
                offset = start + length
            }
        }
        return out
    }
}
