import Foundation
import Synchronization
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgateStore

/// The segment log on the real file system (`FullDisk`: a disk that can fill up), with direct writes (where the file system has them) and without: every
/// record reads back the same wherever it is (write buffer, file, or across the boundary of the two), and what a
/// scan finds after a flush is exactly what was appended.
@Suite struct SegmentLogTests {
    /// Payloads of uneven lengths (some longer than a block, some longer than the write buffer), distinct bytes.
    static func payloads(_ n: Int, seed: UInt64) -> [[UInt8]] {
        var x = seed
        return (0..<n).map { i in
            x = x &* 6364136223846793005 &+ 1442695040888963407
            let length = i % 17 == 0 ? 9000 + Int(x >> 52) : 1 + Int(x >> 56) * 13
            return (0..<length).map { UInt8(truncatingIfNeeded: Int(x >> 33) &+ $0 &* 31) }
        }
    }

    /// A log in a new temporary directory on `FullDisk` (no limit until a test sets one), with a small write
    /// buffer (8 KiB) so that whole-block writes happen often and leave partial blocks behind.
    static func openLog(direct: Bool, segmentBytes: UInt64) throws -> (SegmentLog, FullDisk, String) {
        let dir = scratchDirectory("tailgate-segmentlog")
        let files = FullDisk(limit: .max, direct: direct)
        try files.makeDirectory(dir)
        let log = SegmentLog(directory: dir, prefix: "t", files: files, segmentBytes: segmentBytes, writeBufferBytes: 8 << 10,
                             syncOnRoll: false)
        try log.open(existing: [])
        return (log, files, dir)
    }

    @Test(arguments: [true, false])
    func recordsReadBackFromBufferFileAndAcrossTheirBoundary(direct: Bool) throws {
        let (log, files, dir) = try Self.openLog(direct: direct, segmentBytes: 256 << 10)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let payloads = Self.payloads(300, seed: direct ? 1 : 2)
        var refs: [SpillRef] = []
        for (i, p) in payloads.enumerated() {
            let (ref, _) = try #require(log.append(kind: 1, [p], budget: 1 << 30))
            refs.append(ref)
            // Every record written so far reads back, wherever it is now.
            for j in Set([0, i / 2, max(0, i - 1), i]) {
                #expect(log.read(refs[j]) == [1] + payloads[j], "record \(j) after \(i) appends")
            }
            if i % 50 == 49 { try log.flush() }  // a padded last block, cut back, then continued
        }
        #expect(log.segmentCount > 1, "the test should cross a segment roll")
        try log.flush()
        // After a flush, each file holds exactly its records: a scan finds them all, no damage, nothing after.
        var found: [[UInt8]] = []
        for seq in try log.existingSegments() {
            let scan = SegmentLog.scan(files: files, path: log.path(seq), seq: seq)
            #expect(scan.damage.isEmpty, "\(scan.damage)")
            found += scan.records.map { Array($0.payload) }
        }
        #expect(found == payloads.map { [1] + $0 })
        for (j, ref) in refs.enumerated() { #expect(log.read(ref) == [1] + payloads[j]) }
        try log.close(sync: false)
    }

    @Test func aCrashLosesOnlyWhatWasNotFlushedAndTheFileStaysClean() throws {
        let (log, files, dir) = try Self.openLog(direct: true, segmentBytes: 64 << 20)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let payloads = Self.payloads(120, seed: 3)
        for p in payloads.prefix(100) { _ = try #require(log.append(kind: 2, [p], budget: 1 << 30)) }
        try log.flush()
        // More records, some of them written as whole blocks when the buffer fills; then the process dies.
        for p in payloads.suffix(20) { _ = try #require(log.append(kind: 2, [p], budget: 1 << 30)) }
        log.abandon()
        let seq = try #require(try log.existingSegments().last)
        let scan = SegmentLog.scan(files: files, path: log.path(seq), seq: seq)
        let found = scan.records.map { Array($0.payload) }
        // Everything flushed is there, in order; of the rest, a prefix at most (a record cut by the crash is
        // reported as a truncated tail, never read as a record).
        #expect(found.count >= 100 && found.count <= 120)
        #expect(found == payloads.prefix(found.count).map { [2] + $0 })
        #expect(scan.damage.count <= 1)
    }

    @Test(arguments: [true, false])
    func aFailedWriteLosesNoAcceptedRecord(direct: Bool) throws {
        let (log, files, dir) = try Self.openLog(direct: direct, segmentBytes: 64 << 20)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let payloads = Self.payloads(200, seed: direct ? 4 : 5)
        var accepted: [(SpillRef, [UInt8])] = []
        for (i, p) in payloads.prefix(140).enumerated() {
            // The disk fills after 60 records.
            if i == 60 { files.limit.store(files.written.load(ordering: .relaxed), ordering: .relaxed) }
            if let (ref, _) = log.append(kind: 3, [p], budget: 1 << 30) { accepted.append((ref, [3] + p)) }
            if i == 100 { #expect(throws: StoreIOError.self) { try log.flush() } }
        }
        #expect(log.lastError?.isNoSpace == true)
        // Appends were refused once writing failed; what was accepted still reads back (from memory).
        #expect(accepted.count >= 60 && accepted.count < 140)
        for (ref, payload) in accepted { #expect(log.read(ref) == payload) }
        // Room again: a flush writes everything held back, and appends are accepted again.
        files.limit.store(.max, ordering: .relaxed)
        try log.flush()
        for p in payloads.suffix(60) {
            let (ref, _) = try #require(log.append(kind: 3, [p], budget: 1 << 30))
            accepted.append((ref, [3] + p))
        }
        for (ref, payload) in accepted { #expect(log.read(ref) == payload) }
        try log.flush()
        let seq = try #require(try log.existingSegments().last)
        let scan = SegmentLog.scan(files: files, path: log.path(seq), seq: seq)
        #expect(scan.damage.isEmpty, "\(scan.damage)")
        #expect(scan.records.map { Array($0.payload) } == accepted.map(\.1))
        try log.close(sync: false)
    }

    /// A slow disk for `FullDisk.onWrite`: the first write waits at a gate; every write's size is counted.
    final class Gate: Sendable {
        let entered = DispatchSemaphore(value: 0)
        let gate = DispatchSemaphore(value: 0)
        let sizes = Mutex<[Int]>([])
        /// The gate opened by its time bound, not by the test (appends waited for the disk).
        let timedOut = Atomic<Bool>(false)
        func writing(_ n: Int) {
            let first = sizes.withLock { $0.append(n); return $0.count == 1 }
            guard first else { return }
            entered.signal()
            if gate.wait(timeout: .now() + 10) == .timedOut { timedOut.store(true, ordering: .relaxed) }
        }
    }

    /// A burst of appends while the disk is slow neither waits for it (appends run under a shard's lock) nor turns
    /// into one write per buffer: what accumulated goes in one write when the first is done.
    @Test func aBurstDuringASlowWriteIsWrittenAfterItInOneWrite() throws {
        let dir = NSTemporaryDirectory() + "tailgate-segmentlog-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let slow = Gate()
        let files = FullDisk(limit: .max, direct: true, onWrite: { slow.writing($0) })
        try files.makeDirectory(dir)
        let log = SegmentLog(directory: dir, prefix: "t", files: files, segmentBytes: 64 << 20, writeBufferBytes: 8 << 10,
                             syncOnRoll: false)
        try log.open(existing: [])
        let payloads = Self.payloads(400, seed: 6)
        var refs: [SpillRef] = []
        for (i, p) in payloads.enumerated() {
            refs.append(try #require(log.append(kind: 4, [p], budget: 1 << 30)).0)
            if i == 0 { continue }
            // The first full buffer went to the writer, which now waits at the gate.
            if refs.count == 40 { #expect(slow.entered.wait(timeout: .now() + 10) == .success) }
        }
        let burst = payloads.reduce(0) { $0 + $1.count }
        #expect(burst > 40 * (8 << 10), "the burst should be many write buffers long")
        #expect(slow.sizes.withLock { $0.count } == 1, "one write under way, none by the appends")
        // Records are read from memory meanwhile.
        for j in [0, 150, 399] { #expect(log.read(refs[j]) == [4] + payloads[j]) }
        slow.gate.signal()
        try log.flush()
        let waited = slow.timedOut.load(ordering: .relaxed)
        #expect(!waited, "appends waited for the slow write")
        let sizes = slow.sizes.withLock { $0 }
        #expect(sizes.count <= 3, "the burst should go in one write after the first (and the flush's tail): \(sizes)")
        #expect(sizes.max()! >= burst - 2 * (8 << 10))
        let scan = SegmentLog.scan(files: files, path: log.path(try #require(try log.existingSegments().last)), seq: 1)
        #expect(scan.damage.isEmpty, "\(scan.damage)")
        #expect(scan.records.map { Array($0.payload) } == payloads.map { [4] + $0 })
        try log.close(sync: false)
    }
}
