// Throughput of OTLP/JSON -> protobuf transcoding. Disabled by default; run with
//   TAILGATE_JSON_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter OTLPJSONThroughput
// (a release build: debug builds are ~20x slower and say nothing about production).

import Foundation
import Testing
import TailgateTestSupport
import TailgateWire

/// Builds OTLP/JSON bodies shaped like real exporters write them.
enum OTLPJSONCorpus {
    /// Seeded, so every run transcodes the same bytes.
    struct Random {
        var generator: SplitMix64
        init(state: UInt64) { generator = SplitMix64(seed: state) }
        mutating func next() -> UInt64 { generator.next() }
        mutating func hex(_ bytes: Int) -> String {
            var s = ""
            for _ in 0..<bytes { s += String(format: "%02x", next() & 0xFF) }
            return s
        }
    }

    /// An OpenTelemetry-JS-like request (key order as its JSON serializer writes them: status before links,
    /// 64-bit integers as strings, kind and status code as integers) of at least `size` bytes: LLM-agent spans
    /// with string, int, double and bool attributes, an event with a prompt text (escapes, non-ASCII).
    static func sdkLike(size: Int, seed: UInt64 = 1) -> [UInt8] {
        var rng = Random(state: seed)
        var spans: [String] = []
        var total = 0
        let prompt = #"You are a helpful assistant.\nAnswer the question about \"shipping\" in one paragraph. Café, naïve, 東京 — ok? Tab:\t end."#
        while total < size {
            let trace = rng.hex(16)
            let root = rng.hex(8)
            let t0 = 1_700_000_000_000_000_000 + rng.next() % 1_000_000_000_000
            for k in 0..<5 {
                let start = t0 + UInt64(k) * 1_000_000
                let end = start + 1_000 + rng.next() % 900_000_000
                let spanID = k == 0 ? root : rng.hex(8)
                let parent = k == 0 ? "" : #""parentSpanId":"\#(root)","#
                let span = #"""
                {"traceId":"\#(trace)","spanId":"\#(spanID)",\#(parent)"name":"\#(k == 0 ? "agent.run" : "llm.call")","kind":\#(k == 0 ? 1 : 3),"startTimeUnixNano":"\#(start)","endTimeUnixNano":"\#(end)","attributes":[{"key":"gen_ai.system","value":{"stringValue":"openai"}},{"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o-mini-2024-07-18"}},{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},{"key":"gen_ai.usage.input_tokens","value":{"intValue":\#(rng.next() % 4000)}},{"key":"gen_ai.usage.output_tokens","value":{"intValue":"\#(rng.next() % 800)"}},{"key":"gen_ai.request.temperature","value":{"doubleValue":0.7}},{"key":"http.response.status_code","value":{"intValue":200}},{"key":"gen_ai.response.finish_reasons","value":{"arrayValue":{"values":[{"stringValue":"stop"}]}}},{"key":"retry","value":{"boolValue":false}},{"key":"gen_ai.response.id","value":{"stringValue":"chatcmpl-\#(rng.next() % 1_000_000_000)"}}],"droppedAttributesCount":0,"events":[{"attributes":[{"key":"gen_ai.prompt","value":{"stringValue":"\#(prompt)"}}],"name":"gen_ai.content.prompt","timeUnixNano":"\#(start + 10)","droppedAttributesCount":0}],"droppedEventsCount":0,"status":{"code":\#(rng.next() % 20 == 0 ? 2 : 0)},"links":[],"droppedLinksCount":0}
                """#
                total += span.utf8.count + 1
                spans.append(span)
            }
        }
        let body = #"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"agent"}},{"key":"telemetry.sdk.language","value":{"stringValue":"nodejs"}},{"key":"telemetry.sdk.version","value":{"stringValue":"1.30.0"}}],"droppedAttributesCount":0},"scopeSpans":[{"scope":{"name":"@opentelemetry/instrumentation-openai","version":"0.5.0"},"spans":["#
            + spans.joined(separator: ",") + "]}]}]}"
        return Array(body.utf8)
    }

    /// `{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},…]}]}]}` of `size` bytes.
    static func emptySpansBomb(size: Int) -> [UInt8] {
        let head = Array(#"{"resourceSpans":[{"scopeSpans":[{"spans":["#.utf8)
        let tail = Array("]}]}]}".utf8)
        let count = (size - head.count - tail.count + 1) / 3
        var body = head
        body.reserveCapacity(size)
        for i in 0..<count {
            if i > 0 { body.append(UInt8(ascii: ",")) }
            body += [UInt8(ascii: "{"), UInt8(ascii: "}")]
        }
        return body + tail
    }
}

@Suite("OTLP JSON throughput", .enabled(if: ProcessInfo.processInfo.environment["TAILGATE_JSON_BENCH"] != nil))
struct OTLPJSONThroughputTests {
    /// Best-of-`runs` MB/s (1 MB = 10^6 bytes) of protobufFromJSON on `body`.
    func measure(_ label: String, _ body: [UInt8], runs: Int) throws {
        var best = Double.infinity
        var outBytes = 0
        for _ in 0..<runs {
            let clock = ContinuousClock()
            let start = clock.now
            let out = try OTLPJSON.protobufFromJSON(body)
            let elapsed = clock.now - start
            let s = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            best = min(best, s)
            outBytes = out.count
        }
        let mbps = Double(body.count) / best / 1e6
        print("OTLPJSON-BENCH \(label): \(body.count) B in \(String(format: "%.4f", best)) s = \(String(format: "%.1f", mbps)) MB/s -> \(outBytes) B protobuf")
    }

    @Test func sdkLike4MiB() throws {
        try measure("sdk-like 4 MiB", OTLPJSONCorpus.sdkLike(size: 4 << 20), runs: 5)
    }

    @Test func collectorFileExporter4MiB() throws {
        // The Collector file exporter's shape (schema order, as jsonFromProtobuf writes it).
        let json = try OTLPJSON.jsonFromProtobuf(OTLPJSON.protobufFromJSON(OTLPJSONCorpus.sdkLike(size: 4 << 20, seed: 2)))
        try measure("file-exporter 4 MiB", json, runs: 5)
    }

    @Test func emptySpansBomb16MiB() throws {
        try measure("empty-spans bomb 16 MiB", OTLPJSONCorpus.emptySpansBomb(size: 16 << 20), runs: 2)
    }
}
