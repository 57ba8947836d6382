// `tailgate-bench store [SPANS]`: what the durable store costs and how fast it moves, in a release build. Prints numbers;
// asserts nothing about time. Uses the system's temporary directory (each run cleans up after itself).
import CTailgateSupport
import Foundation
import Logging
import TailgateBuffer
import TailgateLoadtest
import TailgatePolicies
import TailgateStore
import TailgateWire

/// Agent runs of the generated mix, `chunk` runs per call, each call with new trace IDs.
struct AgentChunks {
    var seed: UInt64 = 100
    let chunk: Int
    mutating func next() -> [[UInt8]] {
        var o = AgentTrafficGenerator.Options()
        o.traces = chunk
        o.seed = seed
        seed += 1
        return AgentTrafficGenerator(o).generate().requests.map(\.protobuf)
    }
}

/// Prints a line at once (unbuffered), so that results measured before an interruption are kept.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func storeDirectory() -> String {
    let path = NSTemporaryDirectory() + "tailgate-bench-store-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

func rss() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

func directoryBytes(_ dir: String) -> Int {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    return names.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: dir + "/" + $1)[.size] as? Int) ?? 0) }
}

@MainActor
func runStoreBenchmarks(policies: PolicySet, idleSpans: Int, idle: Bool) {
    let logger = Logger(label: "bench")
    let runtime = PolicyRuntime(policies, generation: 1)
    var chunks = AgentChunks(chunk: 4000)
    let requests = chunks.next() + chunks.next()
    var scanned: [ScannedRequest] = []
    for r in requests {
        var s = ScannedRequest()
        r.withUnsafeBytes { try! runtime.scanner.scan($0, into: &s) }
        scanned.append(s)
    }
    let spans = scanned.reduce(0) { $0 + $1.spans.count }
    let bytes = requests.reduce(0) { $0 + $1.count }
    say("workload: generated agent runs, \(requests.count) requests, \(spans) spans, \(bytes >> 20) MiB (default policies)")

    func buffer(store: DiskTraceStore?, spillAfter: Duration = .seconds(10), waitAfterRoot: Duration = .seconds(5), memory: Int = 4 << 30,
                reviseWindow: Duration = .seconds(300)) -> (TraceBuffer, ManualClock) {
        var c = BufferConfiguration()
        c.reviseWindow = reviseWindow
        c.maxBufferedBytes = memory
        c.decisionCacheSize = 1_000_000
        c.spillAfter = spillAfter
        c.waitAfterRoot = waitAfterRoot
        c.idleTimeout = .seconds(30)
        c.remoteParentTimeout = .seconds(120)
        c.maxTraceAge = .seconds(1800)
        let clock = ManualClock()
        return (TraceBuffer(configuration: c, decider: runtime, clock: clock, store: store), clock)
    }
    func store(_ durability: StoreConfiguration.Durability = .buffered, dir: String = storeDirectory()) -> DiskTraceStore {
        var c = StoreConfiguration(directory: dir)
        c.durability = durability
        c.maxDiskBytes = 64 << 30
        return try! DiskTraceStore(configuration: c, logger: logger)
    }

    // `store-idle`: resident memory holding idle agent runs far beyond the memory budget (256 MiB): spans wait on disk.
    func idleRuns() {
        let dir = storeDirectory()
        let s = store(dir: dir)
        let budget = 256 << 20
        let (b, _) = buffer(store: s, waitAfterRoot: .seconds(3600), memory: budget)
        var c = AgentChunks(seed: 9000, chunk: 4000)
        let rss0 = rss()
        var held = 0, wire = 0, early = 0, requests = 0
        let start = ContinuousClock.now
        while held < idleSpans {
            for r in c.next() {
                // The server's decision tick (the clock stands still, so nothing is due): it tidies the queues.
                requests += 1
                if requests % 10 == 0 { early += b.decideExpired().count }
                var sc = ScannedRequest()
                r.withUnsafeBytes {
                    try! runtime.scanner.scan($0, into: &sc)
                    let out = b.insert(sc, body: $0)
                    held += out.buffered
                    early += out.decided.count
                }
                wire += r.count
            }
        }
        let t = seconds(ContinuousClock.now - start)
        say(String(format: "idle runs: %.1f M spans (%d traces, %.0f MiB wire) held with a %d MiB memory budget in %.0f s: accounted %.0f MiB, RSS %.0f → %.0f MiB, store %.0f MiB on disk, %d traces decided early",
                     Double(held) / 1e6, b.bufferedTraces, Double(wire) / 1048576, budget >> 20, t, Double(b.bufferedBytes) / 1048576,
                     Double(rss0) / 1048576, Double(rss()) / 1048576, Double(directoryBytes(dir)) / 1048576, early))
        // Alone in its process (`store-idle`), the growth is this benchmark's own.
        say(String(format: "  RSS growth %.0f B per held trace (accounted %.0f B)", Double(rss() - rss0) / Double(max(b.bufferedTraces, 1)),
                     Double(b.bufferedBytes) / Double(max(b.bufferedTraces, 1))))
        for (part, bytes) in b.memoryBreakdown() {
            say(String(format: "  %@ %.0f B per held trace", part.padding(toLength: 42, withPad: " ", startingAt: 0), Double(bytes) / Double(max(b.bufferedTraces, 1))))
        }
        // As the server does every 10 s (it keeps a cushion of 64 MiB; here all of it goes): memory freed but held by
        // the allocator goes back to the system.
        _ = tailgate_trim_malloc(0)
        say(String(format: "  RSS after the allocator's trim: %.0f MiB", Double(rss()) / 1048576))
        for (part, count, capacity) in b.bookkeeping() {
            say("  \(part.padding(toLength: 16, withPad: " ", startingAt: 0)) \(count) entries (capacity \(capacity))")
        }
        s.close(decisions: [])
        try? FileManager.default.removeItem(atPath: dir)
    }
    if idle {
        idleRuns()
        return
    }

    // 1. CPU per span of the normal flow (insert, then decide once every trace's window closed), store off / on.
    // With a store, dropped traces are written for the revise window; in sync mode each request is also written
    // ahead and fdatasync'ed before the (virtual) acknowledgement.
    func flow(_ s: DiskTraceStore?, reviseWindow: Duration = .seconds(300)) -> Double {
        let (b, clock) = buffer(store: s, reviseWindow: reviseWindow)
        let start = ContinuousClock.now
        for (i, r) in requests.enumerated() {
            r.withUnsafeBytes { raw in
                if let s, s.configuration.durability == .sync { _ = s.writeAhead(raw) }
                _ = b.insert(scanned[i], body: raw)
            }
        }
        clock.advance(by: .seconds(1900))
        _ = b.decideExpired()
        s?.maintain(buffer: b)
        return seconds(ContinuousClock.now - start) * 1e9 / Double(spans)
    }
    var off = Double.infinity, buffered = Double.infinity, sync = Double.infinity, noRevise = Double.infinity
    for _ in 0..<3 {
        off = min(off, flow(nil))
        let sb = store()
        buffered = min(buffered, flow(sb))
        sb.close(decisions: [])
        try? FileManager.default.removeItem(atPath: sb.configuration.directory)
        let sn = store()
        noRevise = min(noRevise, flow(sn, reviseWindow: .zero))
        sn.close(decisions: [])
        try? FileManager.default.removeItem(atPath: sn.configuration.directory)
    }
    let ss = store(.sync)
    sync = flow(ss)
    ss.close(decisions: [])
    try? FileManager.default.removeItem(atPath: ss.configuration.directory)
    say(String(format: "insert + decide, store off:       %6.0f ns/span", off))
    say(String(format: "insert + decide, store buffered:  %6.0f ns/span (+%.1f%%; dropped traces written for the revise window)", buffered, (buffered / off - 1) * 100))
    say(String(format: "insert + decide, store buffered, revise_window 0: %6.0f ns/span (+%.1f%%)", noRevise, (noRevise / off - 1) * 100))
    say(String(format: "insert + decide, store sync:      %6.0f ns/span (+%.1f%%; one fdatasync per %d-span request, single writer)", sync, (sync / off - 1) * 100, spans / requests.count))

    // 2. Spill throughput: every trace idle past spill_after, windows still open.
    do {
        let s = store()
        let (b, clock) = buffer(store: s, spillAfter: .seconds(1), waitAfterRoot: .seconds(600))
        for (i, r) in requests.enumerated() { r.withUnsafeBytes { _ = b.insert(scanned[i], body: $0) } }
        clock.advance(by: .seconds(2))
        let start = ContinuousClock.now
        _ = b.decideExpired()
        s.flush()
        let t = seconds(ContinuousClock.now - start)
        let written = b.storedBytes
        say(String(format: "spill: %d traces, %.0f MiB in %.2f s = %.0f MB/s, %.2f M spans/s", b.storedTraces, Double(written) / 1048576, t,
                     Double(written) / t / 1e6, Double(spans) / t / 1e6))

        // 3. Read-back of kept traces (every trace decided: the kept ones are read back whole).
        clock.advance(by: .seconds(1900))
        let r0 = ContinuousClock.now
        let decided = b.decideExpired()
        let rt = seconds(ContinuousClock.now - r0)
        let kept = decided.filter { $0.decision.keep }
        let keptSpans = kept.reduce(0) { $0 + ($1.spans?.count ?? 0) }
        say(String(format: "decide %d stored traces (read back %d kept, %d spans): %.2f s", decided.count, kept.count, keptSpans, rt))
        s.close(decisions: [])
        try? FileManager.default.removeItem(atPath: s.configuration.directory)
    }

    // 4. Recovery time per GB: persist ~1 GiB of undecided traces, stop, start again.
    do {
        let dir = storeDirectory()
        let s = store(dir: dir)
        let (b, _) = buffer(store: s, waitAfterRoot: .seconds(600))
        var c = AgentChunks(seed: 5000, chunk: 4000)
        var total = 0
        while directoryBytes(dir) + b.bufferedBytes < 1 << 30 && total < 40_000_000 {
            for r in c.next() {
                var sc = ScannedRequest()
                r.withUnsafeBytes {
                    try! runtime.scanner.scan($0, into: &sc)
                    total += b.insert(sc, body: $0).buffered
                }
            }
            _ = b.persistAll()
            s.flush()
        }
        let traces = b.bufferedTraces
        s.close(decisions: b.rememberedDecisions().map { ($0.0, $0.1, "") })
        let onDisk = directoryBytes(dir)
        let s2 = store(dir: dir)
        let (b2, _) = buffer(store: s2, waitAfterRoot: .seconds(600))
        let report = s2.recover(into: b2, scan: { body, sc in (try? runtime.scanner.scan(body, into: &sc)) != nil },
                                decision: { k, w, _ in Decision(keep: k, policy: 0, weight: w) }, forward: { _, _, _ in })
        say(String(format: "recovery: %d traces (%d spans) from %.0f MiB in %.2f s = %.2f s/GiB (%d of %d traces back)",
                     report.traces, total, Double(onDisk) / 1048576, report.seconds, report.seconds / (Double(onDisk) / Double(1 << 30)),
                     b2.bufferedTraces, traces))
        s2.close(decisions: [])
        try? FileManager.default.removeItem(atPath: dir)
    }
}
