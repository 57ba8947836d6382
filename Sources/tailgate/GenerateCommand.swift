import ArgumentParser
import Foundation
import TailgateLoadtest
import TailgateRecording
import TailgateWire

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate realistic LLM-agent traffic as a recording.",
        discussion: """
            Agent runs with retrieval, several LLM calls with gen_ai.* attributes and token usage, tool calls in a second \
            service, retries, a few percent of errors, and a long tail of expensive, long-running and runaway traces, \
            batched per service as the OpenTelemetry SDK exports them. Writes the compact .tgrec form, or OTLP/JSON lines \
            when the output ends in .jsonl (add .gz for gzip).
            """)

    @Option(help: "Agent runs (traces) to generate.")
    var traces: Int = 10_000

    @Option(help: "Random seed (the same seed gives the same bytes).")
    var seed: UInt64 = 1

    @Option(help: "New agent runs per second (sets the recorded timing).")
    var rate: Double = 100

    @Option(name: .shortAndLong, help: "Output file (.tgrec, .jsonl, optionally .gz).")
    var output: String

    func run() throws {
        var options = AgentTrafficGenerator.Options()
        options.traces = traces
        options.seed = seed
        options.tracesPerSecond = rate
        let (requests, generated) = AgentTrafficGenerator(options).generate()
        let recorded = requests.map { RecordedRequest(arrival: $0.time, protobuf: $0.protobuf) }
        var bytes: [UInt8]
        if output.hasSuffix(".jsonl") || output.hasSuffix(".jsonl.gz") {
            bytes = []
            for r in recorded {
                bytes += try OTLPJSON.jsonFromProtobuf(r.protobuf)
                bytes.append(UInt8(ascii: "\n"))
            }
        } else {
            bytes = Recording.encodeCompact(recorded)
        }
        if output.hasSuffix(".gz") { bytes = Gzip.compress(bytes) }
        guard FileManager.default.createFile(atPath: output, contents: Data(bytes)) else {
            throw ValidationError("cannot write \(output)")
        }
        var byCategory: [String: Int] = [:]
        for t in generated { byCategory[t.category.rawValue, default: 0] += 1 }
        let spans = requests.reduce(0) { $0 + $1.spans }
        print("wrote \(output): \(generated.count) traces, \(spans) spans, \(requests.count) requests, \(bytes.count / 1024) KiB")
        print("categories: " + byCategory.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
    }
}
