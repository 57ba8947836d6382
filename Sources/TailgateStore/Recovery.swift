import Foundation
import Logging
package import TailgateBuffer
package import TailgateWire

extension DiskTraceStore {
    /// Rebuilds the buffer from the segments found at start (before any ingest): undecided traces come back with
    /// their summaries (their spans stay on disk), timers continuing from the times written with them; decisions
    /// come back into the decision cache; queued forward batches are handed to `forward` (they stay in the store
    /// until delivered). Damaged records are skipped, each segment's damage logged once with file and offset.
    ///
    /// - Parameters:
    ///   - scan: scans an encoded request with the policies in use (false: it does not scan).
    ///   - decision: builds the decision to remember for a trace from what was written (keep, weight, policy name).
    package func recover(
        into buffer: TraceBuffer,
        scan: (UnsafeRawBufferPointer, inout ScannedRequest) -> Bool,
        decision: (Bool, KeepWeight, String) -> Decision,
        forward: (SpillRef, Int, [(String, String)]) -> Void,
        lateKept: (BufferedSpans, Decision, [(String, String)]) -> Void = { _, _, _ in },
        planKey: UInt64 = 0
    ) -> RecoveryReport {
        let started = ContinuousClock.now
        var report = RecoveryReport()
        let traceSegments = foundTraces
        let queueSegments = foundQueue
        defer { report.seconds = Double((ContinuousClock.now - started).nanoseconds) / 1e9 }
        if let index = validIndex() {
            // A graceful stop's index: no record needs reading.
            buffer.importIndex(index.traces, aggregatesValid: index.planKey == planKey)
            for (trace, keep, weight, name) in index.decisions {
                buffer.restoreDecision(trace: trace, decision: decision(keep, weight, name))
            }
            buffer.finishRestore()
            report.traces = index.traces.count
            report.decisions = index.decisions.count
            report.fromIndex = true
            report.bytes = foundSizes.reduce(0) { $0 + $1.size }
            recoverQueue(queueSegments, &report, forward)
            report.seconds = Double((ContinuousClock.now - started).nanoseconds) / 1e9
            return report
        }

        // Pass 1: which records are live. Positions count records in log order.
        var lastSupersede: [TraceID: Int] = [:]
        var lastStored: [TraceID: Int] = [:]
        var decided: [TraceID: (Int, Bool, KeepWeight, String)] = [:]
        var position = 0
        func note(_ scan: SegmentLog.SegmentScan, _ path: String) {
            guard !scan.damage.isEmpty else { return }
            report.damagedRecords += scan.damage.count
            observer?.storeDamaged(records: scan.damage.count)
            let first = scan.damage[0]
            logger.error("trace store: damaged records skipped", metadata: [
                "file": "\(path)", "offset": "\(first.offset)", "what": "\(first.what)", "damaged_records": "\(scan.damage.count)"])
        }
        for seq in traceSegments {
            let path = traceLog.path(seq)
            let s = SegmentLog.scan(files: files, path: path, seq: seq)
            note(s, path)
            report.bytes += s.size
            for record in s.records {
                defer { position += 1 }
                let p = record.payload
                guard let kind = p.first.flatMap(RecordKind.init(rawValue:)) else { continue }
                switch kind {
                case .spans, .consolidated:
                    guard p.count >= 43 else { continue }
                    let trace = p.withUnsafeBytes { TraceID(loadingFrom: $0, at: 1) }
                    lastStored[trace] = position
                    if kind == .consolidated { lastSupersede[trace] = position }
                case .decision:
                    var o = p.startIndex + 1
                    if let (trace, keep, weight, name) = Self.decodeDecision(p, &o) {
                        decided[trace] = (position, keep, weight, name)
                    }
                case .decisions:
                    var o = p.startIndex + 1
                    while let (trace, keep, weight, name) = Self.decodeDecision(p, &o) {
                        if decided[trace] == nil { decided[trace] = (-1, keep, weight, name) }
                    }
                case .writeAhead, .batch, .batchDone:
                    break
                }
            }
        }

        // Pass 2: rebuild the live traces, in log order.
        position = 0
        var restored = Set<TraceID>()
        var scanned = ScannedRequest()
        for seq in traceSegments {
            let s = SegmentLog.scan(files: files, path: traceLog.path(seq), seq: seq)
            for record in s.records {
                defer { position += 1 }
                let p = record.payload
                guard let kind = p.first.flatMap(RecordKind.init(rawValue:)) else { continue }
                switch kind {
                case .spans, .consolidated:
                    guard p.count >= 43, let (headers, bodyStart) = Self.headers(in: p, at: 41) else { continue }
                    let (trace, timing) = p.withUnsafeBytes { raw -> (TraceID, SpillTiming) in
                        (TraceID(loadingFrom: raw, at: 1),
                         SpillTiming(firstSeen: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 17, as: UInt64.self)),
                                     lastSeen: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 25, as: UInt64.self)),
                                     rootArrived: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 33, as: UInt64.self))))
                    }
                    guard position >= (lastSupersede[trace] ?? -1), position > (decided[trace]?.0 ?? -1) else { continue }
                    let ok = p.withUnsafeBytes { raw -> Bool in
                        let body = UnsafeRawBufferPointer(rebasing: raw[(bodyStart - p.startIndex)...])
                        guard scan(body, &scanned) else { return false }
                        buffer.restore(trace: trace, request: scanned, body: body, timing: timing, ref: record.ref, headers: headers)
                        return true
                    }
                    if ok {
                        report.records += 1
                        restored.insert(trace)
                    } else {
                        report.damagedRecords += 1
                    }
                case .writeAhead:
                    guard p.count >= 11, let (headers, bodyStart) = Self.headers(in: p, at: 9) else { continue }
                    let arrival = p.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 1, as: UInt64.self)) }
                    let here = position
                    p.withUnsafeBytes { raw in
                        let body = UnsafeRawBufferPointer(rebasing: raw[(bodyStart - p.startIndex)...])
                        guard scan(body, &scanned) else { return }
                        var traces = Set<TraceID>()
                        for span in scanned.spans { traces.insert(span.traceID) }
                        for trace in traces {
                            // Late spans of a trace kept before them: they may not have reached the downstream
                            // (acknowledged, then the crash): sent again.
                            if let (at, keep, weight, name) = decided[trace], keep, here > at {
                                var late = BufferedSpans()
                                for span in scanned.spans where span.traceID == trace {
                                    late.appendRaw(scope: scanned.scopes[Int(span.scope)],
                                                   bytes: UnsafeRawBufferPointer(rebasing: body[span.bytes]))
                                }
                                lateKept(late, decision(keep, weight, name), headers)
                                report.lateKeptSpans += late.count
                                continue
                            }
                            // Spans written ahead before the trace's last spill are in that spill; after its decision
                            // they were late spans, handled then.
                            guard here > (lastStored[trace] ?? -1), decided[trace] == nil else { continue }
                            buffer.restore(trace: trace, request: scanned, body: body,
                                           timing: SpillTiming(firstSeen: arrival, lastSeen: arrival, rootArrived: 0), ref: nil,
                                           headers: headers)
                            restored.insert(trace)
                        }
                    }
                    report.records += 1
                default:
                    break
                }
            }
        }
        for (trace, (_, keep, weight, name)) in decided where !restored.contains(trace) {
            buffer.restoreDecision(trace: trace, decision: decision(keep, weight, name))
            report.decisions += 1
        }
        buffer.finishRestore()
        report.traces = restored.count

        recoverQueue(queueSegments, &report, forward)
        report.seconds = Double((ContinuousClock.now - started).nanoseconds) / 1e9
        return report
    }

    /// The index of the last graceful stop, if it describes the segments exactly as found (then deleted: it is
    /// good for this start only).
    func validIndex() -> IndexFile.Contents? {
        let path = indexPath
        guard let fd = try? files.open(path, create: false) else { return nil }
        defer {
            files.close(fd)
            try? files.remove(path)
        }
        guard let size = try? files.size(fd, path: path), let bytes = try? files.read(fd, offset: 0, count: Int(size), path: path),
              let contents = IndexFile.decode(bytes) else {
            logger.warning("trace store: the index of the last stop is damaged; scanning the records instead", metadata: ["file": "\(path)"])
            return nil
        }
        guard let last = foundSizes.last, last.seq == contents.lastSegment, last.size == contents.lastSegmentSize else {
            logger.notice("trace store: the records changed after the last stop's index was written (a crash since?); scanning them", metadata: [
                "file": "\(path)"])
            return nil
        }
        // Every record's checksum is still verified (a read, no parsing): damage found now is reported by the scan.
        for seq in foundTraces where !SegmentLog.scan(files: files, path: traceLog.path(seq), seq: seq).damage.isEmpty {
            logger.notice("trace store: damaged records since the last stop; scanning the records instead of using its index", metadata: [
                "file": "\(traceLog.path(seq))"])
            return nil
        }
        return contents
    }

    /// The forward queue: batches without a "done" record go to the forwarder again.
    func recoverQueue(_ queueSegments: [UInt64], _ report: inout RecoveryReport, _ forward: (SpillRef, Int, [(String, String)]) -> Void) {
        var done = Set<SpillRef.Key>()
        var batches: [(SpillRef, Int, [(String, String)])] = []
        for seq in queueSegments {
            let path = queueLog.path(seq)
            let s = SegmentLog.scan(files: files, path: path, seq: seq)
            if !s.damage.isEmpty {
                report.damagedRecords += s.damage.count
                observer?.storeDamaged(records: s.damage.count)
                logger.error("trace store: damaged records skipped", metadata: [
                    "file": "\(path)", "offset": "\(s.damage[0].offset)", "what": "\(s.damage[0].what)", "damaged_records": "\(s.damage.count)"])
            }
            report.bytes += s.size
            for record in s.records {
                let p = record.payload
                if p.first == RecordKind.batch.rawValue, p.count >= 7,
                   let (headers, _) = Self.headers(in: p, at: 5) {
                    let spans = p.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 1, as: UInt32.self))) }
                    batches.append((record.ref, spans, headers))
                } else if p.first == RecordKind.batchDone.rawValue, p.count >= 17 {
                    let key = p.withUnsafeBytes {
                        SpillRef.Key(segment: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 1, as: UInt64.self)),
                                     offset: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 9, as: UInt64.self)))
                    }
                    done.insert(key)
                }
            }
        }
        for (ref, spans, headers) in batches where !done.contains(ref.key) {
            adoptBatch(ref)
            forward(ref, spans, headers)
            report.forwardBatches += 1
        }
    }
}

extension SpillRef {
    struct Key: Hashable {
        var segment: UInt64
        var offset: UInt64
    }

    var key: Key { Key(segment: segment, offset: offset) }
}
