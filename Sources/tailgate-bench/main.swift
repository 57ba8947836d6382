// Hot-path benchmarks. Run in a release build: `make bench` (swift run -c release tailgate-bench).
// Prints numbers; asserts nothing about time.
import Dispatch
import Foundation
import TailgateBuffer
import TailgateLoadtest
import TailgatePolicies
import TailgateWire

/// Agent-shaped traffic like the OpenTelemetry SDK sends: 512-span requests, 5 spans per trace, gen_ai attributes.
func makeRequests(count: Int, spansPerRequest: Int = 512, seed: UInt64) -> [[UInt8]] {
    var rng = seed
    func next() -> UInt64 { rng &+= 0x9E37_79B9_7F4A_7C15; var z = rng; z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9; z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB; return z ^ (z >> 31) }
    var out: [[UInt8]] = []
    for _ in 0..<count {
        var spans: [BenchSpan] = []
        while spans.count < spansPerRequest {
            let trace = TraceID(hi: next(), lo: next())
            let t0: UInt64 = 1_700_000_000_000_000_000 + next() % 1_000_000_000
            let common = [("gen_ai.provider.name", "openai"), ("gen_ai.request.model", "gpt-4o-mini"), ("code.function", "run_agent_step")]
            spans.append(BenchSpan(trace: trace, span: next() | 1, parent: next() | 1, name: "retrieval.vector_search", start: t0 + 1_000, end: t0 + 40_000_000,
                                   strings: [("db.system", "qdrant"), ("db.collection.name", "docs")]))
            spans.append(BenchSpan(trace: trace, span: next() | 1, parent: next() | 1, name: "llm.call", start: t0 + 41_000_000, end: t0 + 900_000_000,
                                   ints: [("gen_ai.usage.input_tokens", Int64(next() % 4000)), ("gen_ai.usage.output_tokens", Int64(next() % 800))],
                                   strings: common + [("gen_ai.operation.name", "chat"), ("gen_ai.response.id", "chatcmpl-\(next() % 1_000_000)")]))
            spans.append(BenchSpan(trace: trace, span: next() | 1, parent: next() | 1, name: "tool.execute", start: t0 + 901_000_000, end: t0 + 950_000_000,
                                   strings: [("gen_ai.tool.name", "search"), ("gen_ai.operation.name", "execute_tool")]))
            spans.append(BenchSpan(trace: trace, span: next() | 1, parent: next() | 1, name: "llm.call", start: t0 + 951_000_000, end: t0 + 1_500_000_000,
                                   ints: [("gen_ai.usage.input_tokens", Int64(next() % 4000)), ("gen_ai.usage.output_tokens", Int64(next() % 800))],
                                   strings: common + [("gen_ai.operation.name", "chat")]))
            spans.append(BenchSpan(trace: trace, span: next() | 1, name: "agent.run", start: t0, end: t0 + 1_600_000_000,
                                   status: next() % 20 == 0 ? .error : .ok, strings: [("gen_ai.agent.name", "support-bot")]))
        }
        out.append(encodeRequest(service: "agent", spans: Array(spans.prefix(spansPerRequest))))
    }
    return out
}

struct Result {
    var name: String
    var value: Double
    var unit: String
    var note: String = ""
}

var results: [Result] = []

@MainActor
func measure(_ name: String, unit: String = "ns/span", items: Int, rounds: Int = 5, note: String = "", setup: () -> Void = {}, _ body: () -> Void) {
    // `tailgate-bench memory` (only the memory of held agent runs, section 10), `profile-agents` and `store-idle`
    // time nothing here.
    guard !["memory", "profile-agents", "store-idle"].contains(CommandLine.arguments.dropFirst().first) else { return }
    // `tailgate-bench only TEXT`: only the rows whose names contain TEXT (e.g. `only JSON`).
    let args = Array(CommandLine.arguments.dropFirst())
    if args.first == "only", args.count > 1, !name.contains(args[1]) { return }
    var best = Double.infinity
    for _ in 0..<rounds {
        setup()
        let start = ContinuousClock.now
        body()
        let elapsed = ContinuousClock.now - start
        let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
        best = min(best, ns / Double(items))
    }
    results.append(Result(name: name, value: best, unit: unit, note: note))
}

let policies = PolicySet.builtIn()
let scanner = OTLPScanner(plan: policies.plan)
let requests = makeRequests(count: 200, seed: 42)
let totalSpans = 200 * 512
let totalBytes = requests.reduce(0) { $0 + $1.count }
print("workload: \(requests.count) requests × 512 spans = \(totalSpans) spans, \(totalBytes / 1024) KiB, \(totalBytes / totalSpans) bytes/span (default policies)")

// Pre-scan once for the insert-only measurement.
var scannedAll: [ScannedRequest] = requests.map { req in
    var s = ScannedRequest()
    req.withUnsafeBytes { try! scanner.scan($0, into: &s) }
    return s
}

// `tailgate-bench store`: the durable store's benchmarks (StoreBench.swift) but the idle runs; `store-idle [IDLE_SPANS]`:
// only idle runs held beyond the memory budget, alone in the process (so that its RSS growth is its own).
if let mode = CommandLine.arguments.dropFirst().first, mode == "store" || mode == "store-idle" {
    runStoreBenchmarks(policies: policies, idleSpans: CommandLine.arguments.dropFirst(2).first.flatMap { Int($0) } ?? 10_000_000,
                       idle: mode == "store-idle")
    exit(0)
}

// `tailgate-bench profile-insert`: only the insert loop, many rounds, for a profiler.
if CommandLine.arguments.dropFirst().first == "profile-insert" {
    var c = BufferConfiguration()
    c.maxBufferedBytes = 4 << 30
    for _ in 0..<20 {
        let b = TraceBuffer(configuration: c, decider: PolicyEngine(policies), clock: ManualClock())
        for (i, req) in requests.enumerated() { req.withUnsafeBytes { _ = b.insert(scannedAll[i], body: $0) } }
    }
    exit(0)
}

// 1. Scanner alone.
var sink = 0
measure("scan (wire scanner)", items: totalSpans) {
    var s = ScannedRequest()
    for req in requests {
        req.withUnsafeBytes { try! scanner.scan($0, into: &s) }
        sink &+= s.spans.count
    }
}

var config = BufferConfiguration()
config.maxBufferedBytes = 4 << 30
config.decisionCacheSize = 1_000_000
let engine = PolicyEngine(policies)
var buffer = TraceBuffer(configuration: config, decider: engine, clock: ManualClock())

// 2. Buffer insert, one writer.
measure("buffer insert, 1 writer", items: totalSpans, setup: { buffer = TraceBuffer(configuration: config, decider: engine, clock: ManualClock()) }) {
    for (i, req) in requests.enumerated() {
        req.withUnsafeBytes { sink &+= buffer.insert(scannedAll[i], body: $0).buffered }
    }
}

// 3. Scan + insert: the per-span hot path of ingest.
measure("scan + insert (hot path), 1 writer", items: totalSpans, setup: { buffer = TraceBuffer(configuration: config, decider: engine, clock: ManualClock()) }) {
    var s = ScannedRequest()
    for req in requests {
        req.withUnsafeBytes {
            try! scanner.scan($0, into: &s)
            sink &+= buffer.insert(s, body: $0).buffered
        }
    }
}

// 4. Two concurrent writers (each its own half of the requests), wall time per span over both.
let half = requests.count / 2
measure("scan + insert, 2 concurrent writers (wall)", items: totalSpans, note: "2 cores",
        setup: { buffer = TraceBuffer(configuration: config, decider: engine, clock: ManualClock()) }) {
    let shared = buffer, reqs = requests, scan = scanner
    DispatchQueue.concurrentPerform(iterations: 2) { w in
        var s = ScannedRequest()
        for req in reqs[(w * half)..<((w + 1) * half)] {
            req.withUnsafeBytes {
                try! scan.scan($0, into: &s)
                _ = shared.insert(s, body: $0)
            }
        }
    }
}

// 5. Decide everything: policy evaluation plus release of the buffer (per trace).
let traceCount = totalSpans / 5
var decided: [DecidedTrace] = []
measure("decide all (policies + release)", unit: "ns/trace", items: traceCount, setup: {
    buffer = TraceBuffer(configuration: config, decider: engine, clock: ManualClock())
    for (i, req) in requests.enumerated() { req.withUnsafeBytes { _ = buffer.insert(scannedAll[i], body: $0) } }
}) {
    decided = buffer.decideAll()
}
let keptTraces = decided.filter { $0.decision.keep }
print("default policies kept \(keptTraces.count) of \(decided.count) traces (\(String(format: "%.1f", Double(keptTraces.count) * 100 / Double(decided.count)))%)")

// 6. Policy evaluation alone.
let summaries = decided.map(\.summary)
measure("policy evaluation (engine.decide)", unit: "ns/trace", items: summaries.count) {
    for s in summaries { sink &+= engine.decide(s).policy }
}

// 7. Re-framing the kept spans into export requests.
let keptSpans = keptTraces.reduce(0) { $0 + ($1.spans?.count ?? 0) }
measure("re-frame kept spans", items: keptSpans) {
    var framer = RequestFramer()
    for t in keptTraces {
        t.spans?.forEach { scope, bytes in framer.append(scope: scope, span: bytes) }
        if framer.spanCount >= 8192 { sink &+= framer.encode().count; framer = RequestFramer() }
    }
    sink &+= framer.encode().count
}

// 8. End to end in process, one core: scan + insert + decide + re-frame kept.
measure("in-process pipeline: scan+insert+decide+reframe", items: totalSpans, setup: { buffer = TraceBuffer(configuration: config, decider: engine, clock: ManualClock()) }) {
    var s = ScannedRequest()
    for req in requests {
        req.withUnsafeBytes {
            try! scanner.scan($0, into: &s)
            _ = buffer.insert(s, body: $0)
        }
    }
    var framer = RequestFramer()
    for t in buffer.decideAll() where t.decision.keep {
        t.spans?.forEach { scope, bytes in framer.append(scope: scope, span: bytes) }
        if framer.spanCount >= 8192 { sink &+= framer.encode().count; framer = RequestFramer() }
    }
    sink &+= framer.encode().count
}

// 9. The same hot path on generated agent traffic: SDK-like requests where each trace's spans are spread over
// several requests from two services (so most spans need a lookup of an existing trace), ~430 bytes per span.
var generatorOptions = AgentTrafficGenerator.Options()
generatorOptions.traces = 20_000
generatorOptions.seed = 42
let generated = AgentTrafficGenerator(generatorOptions).generate().requests.map(\.protobuf)
let generatedSpans = generated.reduce(0) { acc, req in
    var s = ScannedRequest()
    req.withUnsafeBytes { try! scanner.scan($0, into: &s) }
    return acc + s.spans.count
}
let generatedBytes = generated.reduce(0) { $0 + $1.count }
print("generated agent traffic: \(generated.count) requests, \(generatedSpans) spans, \(generatedBytes / generatedSpans) bytes/span")

// `tailgate-bench profile-agents`: only scan + insert of the generated agent traffic, many rounds, for a profiler.
if CommandLine.arguments.dropFirst().first == "profile-agents" {
    var c = BufferConfiguration()
    c.maxBufferedBytes = 4 << 30
    var s = ScannedRequest()
    for _ in 0..<10 {
        let b = TraceBuffer(configuration: c, decider: PolicyEngine(policies), clock: ManualClock())
        for req in generated { req.withUnsafeBytes { try! scanner.scan($0, into: &s); sink &+= b.insert(s, body: $0).buffered } }
    }
    exit(0)
}
measure("scan + insert, generated agent traffic", items: generatedSpans, setup: { buffer = TraceBuffer(configuration: config, decider: engine, clock: ManualClock()) }) {
    var s = ScannedRequest()
    for req in generated {
        req.withUnsafeBytes {
            try! scanner.scan($0, into: &s)
            sink &+= buffer.insert(s, body: $0).buffered
        }
    }
}

// 9b. What reading every span's GenAI facts costs the scanner (for the GenAI metrics and the token rule), on the
// same generated agent traffic: the same scanner with and without them, in one run.
let scannerWithoutGenAI = OTLPScanner(plan: policies.plan, readsGenAI: false)
measure("scan, generated agent traffic, GenAI facts read", items: generatedSpans) {
    var s = ScannedRequest()
    for req in generated { req.withUnsafeBytes { try! scanner.scan($0, into: &s); sink &+= s.genAI.count } }
}
measure("scan, generated agent traffic, GenAI facts not read", items: generatedSpans) {
    var s = ScannedRequest()
    for req in generated { req.withUnsafeBytes { try! scannerWithoutGenAI.scan($0, into: &s); sink &+= s.spans.count } }
}
do {
    var s = ScannedRequest()
    var withFacts = 0
    for req in generated { req.withUnsafeBytes { try! scanner.scan($0, into: &s); withFacts += s.genAI.count } }
    print("generated agent traffic: \(withFacts) of \(generatedSpans) spans carry GenAI facts")
}

// 9c. Ingest encodings on the same generated traffic: gzip (the Collector's exporter compresses by default) and
// OTLP/JSON (transcoded to protobuf bytes without a JSON object model), each before the scan.
let gzipped = generated.map { Gzip.compress($0) }
measure("gunzip + scan, generated agent traffic", items: generatedSpans) {
    var s = ScannedRequest()
    for req in gzipped {
        let body = try! Gzip.decompress(req, limit: 64 << 20)
        body.withUnsafeBytes { try! scanner.scan($0, into: &s); sink &+= s.spans.count }
    }
}
let jsonBodies = generated.map { try! OTLPJSON.jsonFromProtobuf($0) }
let jsonBytes = jsonBodies.reduce(0) { $0 + $1.count }
measure("OTLP/JSON → protobuf + scan, generated agent traffic", items: generatedSpans,
        note: "\(jsonBytes / generatedSpans) JSON bytes/span") {
    var s = ScannedRequest()
    for req in jsonBodies {
        let body = try! OTLPJSON.protobufFromJSON(req)
        body.withUnsafeBytes { try! scanner.scan($0, into: &s); sink &+= s.spans.count }
    }
}
if let json = results.last {
    print(String(format: "OTLP/JSON ingest (transcode + scan): %.0f MB/s of JSON per core", Double(jsonBytes) / Double(generatedSpans) / json.value * 1000))
}

// 10. The memory of waiting: whole agent runs of the generated mix held in the buffer (decisions held back), the
// buffer's accounted footprint against the process's resident memory growth.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}
var heldOptions = AgentTrafficGenerator.Options()
heldOptions.traces = 10_000
heldOptions.seed = 9
let held = AgentTrafficGenerator(heldOptions).generate().requests.map(\.protobuf)
var holdConfig = config
holdConfig.waitAfterRoot = .seconds(3600)
holdConfig.idleTimeout = .seconds(3600)
holdConfig.remoteParentTimeout = .seconds(3600)
holdConfig.maxTraceAge = .seconds(7200)
holdConfig.maxBufferedBytes = 1 << 40
buffer = TraceBuffer(configuration: holdConfig, decider: engine, clock: ManualClock())
let rssBefore = residentBytes()
var heldSpans = 0, heldWire = 0
for req in held {
    var s = ScannedRequest()
    req.withUnsafeBytes {
        try! scanner.scan($0, into: &s)
        heldSpans += buffer.insert(s, body: $0).buffered
    }
    heldWire += req.count
}
let rssGrowth = residentBytes() - rssBefore
for (part, bytes) in buffer.memoryBreakdown() {
    print("  " + part.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: "%6.0f B/span", Double(bytes) / Double(max(heldSpans, 1))))
}
let perRun = Double(buffer.bufferedBytes) / Double(buffer.bufferedTraces)
print(String(format: "held agent runs: %d runs, %d spans, %.1f KiB wire/run; accounted %.1f KiB/run, RSS growth %.1f KiB/run → 1,000 concurrent runs ≈ %.1f MiB",
             buffer.bufferedTraces, heldSpans, Double(heldWire) / 1024 / Double(buffer.bufferedTraces), perRun / 1024,
             Double(rssGrowth) / 1024 / Double(buffer.bufferedTraces), perRun * 1000 / 1048576))

print("")
print("benchmark".padding(toLength: 52, withPad: " ", startingAt: 0) + "result")
for r in results {
    let value = String(format: "%8.1f", r.value)
    print(r.name.padding(toLength: 52, withPad: " ", startingAt: 0) + "\(value) \(r.unit)" + (r.note.isEmpty ? "" : "  (\(r.note))"))
}
if let hot = results.first(where: { $0.name.hasPrefix("scan + insert (hot path)") }) {
    print(String(format: "\nhot path: %.0f ns/span ≈ %.2f M spans/s per core", hot.value, 1000 / hot.value))
}
if sink == 42 { print("") }  // keep the work observable
