// A fast, deterministic generator of LLM-agent traffic as encoded OTLP `ExportTraceServiceRequest`s, for
// load tests and simulations.
//
// The simulated deployment has two services, each with its own SDK and exporter:
//
// * `agent` (Python SDK): the agent loop. Per run, a root `invoke_agent support-bot` (SERVER, custom scope
//   `agent`), one `retrieval.vector_search` (qdrant), then steps of `chat {model}` calls (scope of the
//   provider's instrumentation, e.g. `opentelemetry.instrumentation.openai`), sometimes with an httpx
//   `POST` child, and tool calls sent over HTTP to the tools service (httpx `POST` client span when the
//   run's code path is instrumented).
// * `tools` (Node.js SDK): `execute_tool {name}` (SERVER, parent in the agent process), with an undici
//   HTTP or a pg query child for most tools. Node's exporter writes explicit zero counts and
//   `status { code: 0 }`, as protobufjs does.
//
// Time is simulated: runs arrive as a Poisson process; every duration comes from the seeded RNG (lognormal
// LLM latencies growing with output tokens, per-tool latencies, backoff between retries). Each service's
// exporter behaves like the SDKs' BatchSpanProcessor: a span is queued when it ends, and the queue is
// exported at the exporter's next periodic flush, or at once when it reaches `maxBatchSpans`. Requests
// therefore hold spans of many runs, grouped by scope under the service's resource, and a root span
// arrives with or after the children of its own service (children in the other service may arrive later,
// as in real deployments).
//
// Everything derives from `Options.seed` through one xoshiro256** stream (plus per-span streams seeded
// from it), with no use of hashing or `Dictionary`/`Set` order, so a seed reproduces byte-identical output.
//
// The parts, in AgentTraffic/: RNG.swift (the random stream), Vocabulary.swift (roles, scopes, models, tools,
// errors), Simulation.swift (planning runs and spans), Simulation+Export.swift (the simulated exporters' batches),
// ProtoBuffer.swift and RequestEncoder.swift (encoding the requests).

import Foundation
package import TailgateWire

package struct AgentTrafficGenerator: Sendable {
    package struct Options: Sendable {
        package var traces: Int = 1000
        package var seed: UInt64 = 1
        /// Unix nanoseconds of the first trace's start.
        package var startTime: UInt64 = 1_767_225_600_000_000_000
        /// New agent runs per second (arrival process; exponential inter-arrival times from the seeded RNG).
        package var tracesPerSecond: Double = 50
        /// Spans per export request at most (the SDK's BatchSpanProcessor default is 512).
        package var maxBatchSpans: Int = 512
        /// How often each service's exporter flushes (SDK default 5 s; smaller makes more, smaller requests).
        package var flushInterval: Double = 1.0
        package init() {}
    }

    /// What kind of run a trace is. Every trace is exactly one category.
    package enum Category: String, Sendable, CaseIterable, Codable {
        /// A few LLM calls and tools, total tokens < 10,000, no ERROR status.
        case ordinary
        /// An ERROR span somewhere (root, retrieval, exhausted LLM retries, or only a downstream span in `tools`).
        case error
        /// A long conversation: total tokens ≥ 10,000.
        case expensive
        /// Minutes long (a slow tool: report generation, human approval, data export).
        case longRunning = "long_running"
        /// The agent loops: 30–120 LLM calls.
        case runaway
        /// An `execute_tool` span fails (ERROR, `error.type`); the agent carries on.
        case toolFailure = "tool_failure"
        /// The final answer is cut off: `finish_reasons` `["length"]` or `["content_filter"]`.
        case truncated
    }

    /// What was generated for one trace.
    package struct Trace: Sendable {
        package var id: TraceID
        package var category: Category
        package var spans: Int
        /// Sum over the trace's spans of `gen_ai.usage.input_tokens` + `gen_ai.usage.output_tokens`.
        package var totalTokens: Int64
        /// Whether any span has status ERROR.
        package var hasError: Bool
        /// Root start to root end (the root spans the whole run).
        package var durationNanos: UInt64
        package var services: Set<String>
    }

    /// One encoded export request.
    package struct Request: Sendable {
        /// Unix nanoseconds when the exporter sends it.
        package var time: UInt64
        package var service: String
        package var protobuf: [UInt8]
        package var spans: Int
    }

    package let options: Options

    package init(_ options: Options) {
        self.options = options
    }

    /// All requests in send order, and what was generated.
    package func generate() -> (requests: [Request], traces: [Trace]) {
        var simulation = Simulation(options)
        simulation.planTraces()
        let requests = simulation.export()
        return (requests, simulation.traces)
    }
}
