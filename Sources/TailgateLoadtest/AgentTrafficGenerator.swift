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

public import Foundation
public import TailgateWire

public struct AgentTrafficGenerator: Sendable {
    public struct Options: Sendable {
        public var traces: Int = 1000
        public var seed: UInt64 = 1
        /// Unix nanoseconds of the first trace's start.
        public var startTime: UInt64 = 1_767_225_600_000_000_000
        /// New agent runs per second (arrival process; exponential inter-arrival times from the seeded RNG).
        public var tracesPerSecond: Double = 50
        /// Spans per export request at most (the SDK's BatchSpanProcessor default is 512).
        public var maxBatchSpans: Int = 512
        /// How often each service's exporter flushes (SDK default 5 s; smaller makes more, smaller requests).
        public var flushInterval: Double = 1.0
        public init() {}
    }

    /// What kind of run a trace is. Every trace is exactly one category.
    public enum Category: String, Sendable, CaseIterable, Codable {
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
    public struct Trace: Sendable {
        public var id: TraceID
        public var category: Category
        public var spans: Int
        /// Sum over the trace's spans of `gen_ai.usage.input_tokens` + `gen_ai.usage.output_tokens`.
        public var totalTokens: Int64
        /// Whether any span has status ERROR.
        public var hasError: Bool
        /// Root start to root end (the root spans the whole run).
        public var durationNanos: UInt64
        public var services: Set<String>
    }

    /// One encoded export request.
    public struct Request: Sendable {
        /// Unix nanoseconds when the exporter sends it.
        public var time: UInt64
        public var service: String
        public var protobuf: [UInt8]
        public var spans: Int
    }

    public let options: Options

    public init(_ options: Options) {
        self.options = options
    }

    /// All requests in send order, and what was generated.
    public func generate() -> (requests: [Request], traces: [Trace]) {
        var simulation = Simulation(options)
        simulation.planTraces()
        let requests = simulation.export()
        return (requests, simulation.traces)
    }
}

extension AgentTrafficGenerator {
    // MARK: - Random numbers

    /// xoshiro256** seeded through splitmix64: fast, and stable across platforms and Swift versions
    /// (unlike the standard library's `random(in:)` algorithms, which are not specified).
    fileprivate struct RNG {
        var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

        init(seed: UInt64) {
            var x = seed
            func splitmix(_ x: inout UInt64) -> UInt64 {
                x &+= 0x9E37_79B9_7F4A_7C15
                var z = x
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return z ^ (z >> 31)
            }
            s0 = splitmix(&x)
            s1 = splitmix(&x)
            s2 = splitmix(&x)
            s3 = splitmix(&x)
        }

        @inline(__always)
        mutating func next() -> UInt64 {
            let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
            let t = s1 << 17
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            s3 = s3 << 45 | s3 >> 19
            return result
        }

        /// Uniform in [0, 1).
        @inline(__always)
        mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

        @inline(__always)
        mutating func chance(_ p: Double) -> Bool { unit() < p }

        /// Uniform in lo...hi (multiply-shift; the bias is far below anything observable).
        @inline(__always)
        mutating func int(_ lo: Int, _ hi: Int) -> Int {
            lo + Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(hi - lo + 1)).high)
        }

        @inline(__always)
        mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }

        mutating func nonZero() -> UInt64 {
            while true {
                let v = next()
                if v != 0 { return v }
            }
        }

        /// Approximately standard normal (Irwin–Hall of 4), bounded to ±3.46: no absurd outliers.
        @inline(__always)
        mutating func normal() -> Double { (unit() + unit() + unit() + unit() - 2) * 1.7320508075688772 }

        /// Lognormal with the given median (exp of a normal with σ = `sigma`).
        @inline(__always)
        mutating func logNormal(_ median: Double, _ sigma: Double) -> Double { median * exp(sigma * normal()) }

        /// Index into `weights` with probability proportional to the weight.
        mutating func pick(_ weights: [Double]) -> Int {
            var total = 0.0
            for w in weights { total += w }
            var u = unit() * total
            for (i, w) in weights.enumerated() {
                if u < w { return i }
                u -= w
            }
            return weights.count - 1
        }
    }

    @inline(__always) fileprivate static func nanos(_ seconds: Double) -> UInt64 { seconds > 0 ? UInt64(seconds * 1e9) : 0 }
    @inline(__always) fileprivate static func millis(_ ms: Int) -> UInt64 { UInt64(ms) * 1_000_000 }

    // MARK: - Static vocabulary

    fileprivate enum Role: UInt8 {
        case root, retrieval, chat, chatHTTP, toolClient, tool, toolHTTP, toolDB

        /// 0 = agent, 1 = tools.
        var service: Int { rawValue >= Role.tool.rawValue ? 1 : 0 }
    }

    fileprivate enum Finish: UInt8 { case none, stop, toolCalls, length, contentFilter }

    /// Services and their instrumentation scopes (index = scope number used by the spans).
    fileprivate static let serviceNames = ["agent", "tools"]
    fileprivate static let agentScopes: [(name: String, version: String, schema: String?)] = [
        ("agent", "1.4.2", nil),
        ("opentelemetry.instrumentation.openai", "0.44.1", nil),
        ("opentelemetry.instrumentation.anthropic", "0.44.1", nil),
        ("opentelemetry.instrumentation.bedrock", "0.44.1", nil),
        ("opentelemetry.instrumentation.vertexai", "0.44.1", nil),
        ("opentelemetry.instrumentation.mistralai", "0.44.1", nil),
        ("opentelemetry.instrumentation.httpx", "0.55b1", "https://opentelemetry.io/schemas/1.11.0"),
    ]
    fileprivate static let httpxScope = 6
    fileprivate static let toolsScopes: [(name: String, version: String, schema: String?)] = [
        ("tools", "3.2.1", nil),
        ("@opentelemetry/instrumentation-undici", "0.13.1", nil),
        ("@opentelemetry/instrumentation-pg", "0.54.0", nil),
    ]

    fileprivate enum IDStyle: UInt8 { case openai, anthropic, bedrock, vertex, mistral }

    fileprivate struct Model: Sendable {
        var provider: StaticString
        var request: StaticString
        var response: StaticString
        var scope: Int
        var host: StaticString
        var path: StaticString
        var style: IDStyle
        /// Median seconds per output token.
        var perToken: Double
        var weight: Double
        /// Whether responses report cached prompt tokens.
        var caches: Bool
    }

    fileprivate static let models: [Model] = [
        Model(provider: "openai", request: "gpt-4o", response: "gpt-4o-2024-08-06", scope: 1, host: "api.openai.com",
              path: "/v1/chat/completions", style: .openai, perToken: 0.014, weight: 28, caches: true),
        Model(provider: "openai", request: "gpt-4o-mini", response: "gpt-4o-mini-2024-07-18", scope: 1, host: "api.openai.com",
              path: "/v1/chat/completions", style: .openai, perToken: 0.008, weight: 22, caches: true),
        Model(provider: "openai", request: "gpt-4.1", response: "gpt-4.1-2025-04-14", scope: 1, host: "api.openai.com",
              path: "/v1/chat/completions", style: .openai, perToken: 0.013, weight: 10, caches: true),
        Model(provider: "anthropic", request: "claude-sonnet-4-20250514", response: "claude-sonnet-4-20250514", scope: 2,
              host: "api.anthropic.com", path: "/v1/messages", style: .anthropic, perToken: 0.018, weight: 18, caches: true),
        Model(provider: "anthropic", request: "claude-3-5-haiku-latest", response: "claude-3-5-haiku-20241022", scope: 2,
              host: "api.anthropic.com", path: "/v1/messages", style: .anthropic, perToken: 0.009, weight: 8, caches: true),
        Model(provider: "aws.bedrock", request: "amazon.nova-pro-v1:0", response: "amazon.nova-pro-v1:0", scope: 3,
              host: "bedrock-runtime.us-east-1.amazonaws.com", path: "/model/amazon.nova-pro-v1:0/converse", style: .bedrock,
              perToken: 0.011, weight: 5, caches: false),
        Model(provider: "gcp.vertex_ai", request: "gemini-2.0-flash", response: "gemini-2.0-flash-001", scope: 4,
              host: "us-central1-aiplatform.googleapis.com",
              path: "/v1/projects/acme-support/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
              style: .vertex, perToken: 0.006, weight: 6, caches: false),
        Model(provider: "mistral_ai", request: "mistral-large-latest", response: "mistral-large-2411", scope: 5,
              host: "api.mistral.ai", path: "/v1/chat/completions", style: .mistral, perToken: 0.016, weight: 3, caches: false),
    ]
    fileprivate static let modelWeights = models.map(\.weight)

    fileprivate enum ToolChild: UInt8 { case none, http, db }

    fileprivate struct Tool: Sendable {
        var name: StaticString
        var description: StaticString
        var child: ToolChild
        var method: StaticString = "GET"
        var url: StaticString = ""
        var host: StaticString = ""
        var port: Int64 = 443
        var statement: StaticString = ""
        /// Lognormal latency (seconds) of an ordinary tool, or uniform minimum/maximum of a long one.
        var median: Double
        var sigma: Double
        var resultTokens: ClosedRange<Int>
        var weight: Double
    }

    fileprivate static let tools: [Tool] = [
        Tool(name: "search_knowledge_base", description: "Full-text search over help-center articles", child: .db,
             statement: "SELECT id, title, body FROM kb_articles WHERE tsv @@ plainto_tsquery($1) ORDER BY ts_rank(tsv, plainto_tsquery($1)) DESC LIMIT 5",
             median: 0.09, sigma: 0.6, resultTokens: 250...900, weight: 30),
        Tool(name: "lookup_order", description: "Fetch an order with its shipments and payment state", child: .http,
             url: "http://orders.shop.svc.cluster.local:8080/v1/orders/lookup", host: "orders.shop.svc.cluster.local", port: 8080,
             median: 0.12, sigma: 0.5, resultTokens: 80...320, weight: 25),
        Tool(name: "get_customer_profile", description: "Load the customer's profile and plan", child: .db,
             statement: "SELECT id, name, email, tier, created_at FROM customers WHERE id = $1",
             median: 0.03, sigma: 0.6, resultTokens: 60...240, weight: 15),
        Tool(name: "web_search", description: "Search the public web", child: .http,
             url: "https://api.search.brave.com/res/v1/web/search", host: "api.search.brave.com",
             median: 0.9, sigma: 0.5, resultTokens: 400...1400, weight: 10),
        Tool(name: "create_ticket", description: "Open a support ticket for a human agent", child: .http, method: "POST",
             url: "https://acme.zendesk.com/api/v2/tickets.json", host: "acme.zendesk.com",
             median: 0.45, sigma: 0.4, resultTokens: 30...90, weight: 8),
        Tool(name: "calculator", description: "Evaluate an arithmetic expression", child: .none,
             median: 0.003, sigma: 0.5, resultTokens: 5...20, weight: 5),
        Tool(name: "send_email", description: "Send an email to the customer", child: .http, method: "POST",
             url: "https://api.sendgrid.com/v3/mail/send", host: "api.sendgrid.com",
             median: 0.3, sigma: 0.4, resultTokens: 10...40, weight: 4),
        Tool(name: "refund_payment", description: "Refund a payment, fully or partially", child: .http, method: "POST",
             url: "https://api.stripe.com/v1/refunds", host: "api.stripe.com",
             median: 0.6, sigma: 0.4, resultTokens: 40...120, weight: 3),
        // Long-running tools (long_running category only): latency uniform in median...sigma seconds.
        Tool(name: "generate_report", description: "Build an account activity report", child: .db,
             statement: "SELECT date_trunc('day', created_at) AS day, count(*), sum(amount) FROM events WHERE account_id = $1 GROUP BY 1 ORDER BY 1",
             median: 120, sigma: 720, resultTokens: 300...900, weight: 0),
        Tool(name: "wait_for_human_approval", description: "Ask a supervisor to approve the action and wait", child: .none,
             median: 120, sigma: 900, resultTokens: 10...40, weight: 0),
        Tool(name: "run_data_export", description: "Export the customer's data as an archive", child: .http, method: "POST",
             url: "http://exports.data.svc.cluster.local:8080/v1/exports", host: "exports.data.svc.cluster.local", port: 8080,
             median: 120, sigma: 600, resultTokens: 40...120, weight: 0),
    ]
    fileprivate static let ordinaryToolWeights = tools.map(\.weight)
    fileprivate static let toolsWithChild = tools.indices.filter { tools[$0].child != .none && tools[$0].weight > 0 }
    fileprivate static let longTools = [8, 9, 10]
    fileprivate static let runawayTools = [0, 1, 3]

    /// Why a span failed: `error.type`, the exception and what HTTP saw.
    fileprivate enum ErrorKind: UInt8 {
        case none
        // LLM calls (Python).
        case rateLimit, llmTimeout, serverError, overloaded, connection
        // Retrieval and the agent itself (Python).
        case vectorTimeout, outputParser, validation
        // Tools (Node).
        case toolExecution, toolTimeout, toolValidation, toolNotFound
        // Downstream of tools (Node).
        case pgTimeout, upstream503

        var type: StaticString {
            switch self {
            case .none: ""
            case .rateLimit: "RateLimitError"
            case .llmTimeout: "APITimeoutError"
            case .serverError: "InternalServerError"
            case .overloaded: "OverloadedError"
            case .connection: "APIConnectionError"
            case .vectorTimeout: "qdrant_client.http.exceptions.ResponseHandlingException"
            case .outputParser: "OutputParserException"
            case .validation: "pydantic_core._pydantic_core.ValidationError"
            case .toolExecution: "ToolExecutionError"
            case .toolTimeout: "TimeoutError"
            case .toolValidation: "ValidationError"
            case .toolNotFound: "NotFoundError"
            case .pgTimeout: "error"
            case .upstream503: "503"
            }
        }

        var message: StaticString {
            switch self {
            case .none: ""
            case .rateLimit: "Error code: 429 - {'error': {'message': 'Rate limit reached for requests per min (RPM). Please try again in 1.2s.', 'type': 'requests', 'code': 'rate_limit_exceeded'}}"
            case .llmTimeout: "Request timed out."
            case .serverError: "Error code: 500 - {'error': {'message': 'The server had an error while processing your request. Sorry about that!', 'type': 'server_error'}}"
            case .overloaded: "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}"
            case .connection: "Connection error."
            case .vectorTimeout: "timed out"
            case .outputParser: "Could not parse LLM output: the answer did not match the SupportAnswer schema"
            case .validation: "1 validation error for SupportAnswer\ncitations\n  Field required [type=missing, input_value={'answer': '...'}, input_type=dict]"
            case .toolExecution: "order service returned 503 Service Unavailable"
            case .toolTimeout: "The operation was aborted due to timeout"
            case .toolValidation: "invalid arguments: \"order_id\" must match /^ORD-[0-9]{6}$/"
            case .toolNotFound: "Request failed with status code 404"
            case .pgTimeout: "canceling statement due to statement timeout"
            case .upstream503: "Service Unavailable"
            }
        }

        var stacktrace: StaticString {
            switch self {
            case .none: ""
            case .rateLimit, .llmTimeout, .serverError, .overloaded, .connection:
                """
                Traceback (most recent call last):
                  File "/app/.venv/lib/python3.12/site-packages/opentelemetry/trace/__init__.py", line 589, in use_span
                    yield span
                  File "/app/support_bot/llm.py", line 88, in complete
                    response = await self.client.chat.completions.create(**request)
                  File "/app/.venv/lib/python3.12/site-packages/openai/_base_client.py", line 1594, in request
                    raise self._make_status_error_from_response(err.response) from None
                """
            case .vectorTimeout:
                """
                Traceback (most recent call last):
                  File "/app/support_bot/retrieval.py", line 41, in search
                    hits = await self.qdrant.search(collection_name="support_articles", query_vector=vector, limit=8)
                  File "/app/.venv/lib/python3.12/site-packages/qdrant_client/http/api_client.py", line 130, in send_inner
                    raise ResponseHandlingException(e)
                """
            case .outputParser, .validation:
                """
                Traceback (most recent call last):
                  File "/app/support_bot/agent.py", line 152, in run
                    answer = self.parser.parse(message.content)
                  File "/app/support_bot/parsing.py", line 37, in parse
                    raise OutputParserException(f"Could not parse LLM output: {err}") from err
                """
            case .toolExecution, .toolTimeout, .toolValidation, .toolNotFound:
                """
                Error: tool failed
                    at ToolRunner.execute (/srv/tools/dist/runner.js:118:15)
                    at async /srv/tools/dist/server.js:64:22
                    at async Server.<anonymous> (/srv/tools/node_modules/@fastify/otel/index.js:211:16)
                """
            case .pgTimeout:
                """
                error: canceling statement due to statement timeout
                    at /srv/tools/node_modules/pg/lib/client.js:535:17
                    at process.processTicksAndRejections (node:internal/process/task_queues:105:5)
                    at async searchArticles (/srv/tools/dist/kb.js:29:18)
                """
            case .upstream503:
                """
                Error: Service Unavailable
                    at fetchJSON (/srv/tools/dist/http.js:22:11)
                    at process.processTicksAndRejections (node:internal/process/task_queues:105:5)
                """
            }
        }

        /// What the HTTP client span of a failed LLM call saw: response status (0 = none) and its `error.type`.
        var http: (status: UInt16, type: StaticString) {
            switch self {
            case .rateLimit: (429, "429")
            case .llmTimeout: (0, "httpx.ReadTimeout")
            case .serverError: (500, "500")
            case .overloaded: (529, "529")
            case .connection: (0, "httpx.ConnectError")
            default: (0, "")
            }
        }
    }

    fileprivate static let llmFailureKinds: [ErrorKind] = [.rateLimit, .serverError, .overloaded, .llmTimeout, .connection]
    fileprivate static let llmFailureWeights: [Double] = [45, 20, 15, 10, 10]
    fileprivate static let toolFailureKinds: [ErrorKind] = [.toolExecution, .toolTimeout, .toolValidation, .toolNotFound]

    // MARK: - Simulation records

    /// One planned span: everything the encoder needs, without strings.
    fileprivate struct SpanRec {
        var start: UInt64 = 0
        var end: UInt64 = 0
        var spanID: UInt64 = 0
        var parentID: UInt64 = 0
        /// Seeds the span's own random strings (response and tool-call IDs), so encoding order does not matter.
        var salt: UInt64 = 0
        var trace: Int32 = 0
        var input: Int32 = 0
        var output: Int32 = 0
        var cacheRead: Int32 = 0
        var role: Role = .root
        var error: ErrorKind = .none
        var isError = false
        var finish: Finish = .none
        var tool: UInt8 = 0
        var remoteParent = false
        var httpStatus: UInt16 = 0
        var docs: UInt16 = 0
    }

    fileprivate struct TraceInfo {
        var id: TraceID
        var model: Int
        var conversation: UInt64
        var maxTokens: Int
        var temperature: Double
    }

    fileprivate enum ErrorMode { case none, toolsOnly, llmExhausted, retrieval, root }

    // Shares of the seeded choices.
    fileprivate static let maxTokenChoices = [1024, 2048, 4096]
    fileprivate static let maxTokenWeights: [Double] = [45, 30, 25]
    fileprivate static let temperatureChoices = [0.0, 0.2, 0.7, 1.0]
    fileprivate static let temperatureWeights: [Double] = [20, 40, 30, 10]
    fileprivate static let errorModes: [ErrorMode] = [.toolsOnly, .llmExhausted, .retrieval, .root]
    fileprivate static let errorModeWeights: [Double] = [35, 30, 15, 20]
    /// LLM calls of an ordinary run: 1...5.
    fileprivate static let callCountWeights: [Double] = [20, 45, 20, 10, 5]
    /// Tool calls requested by one step: 1...3.
    fileprivate static let toolCountWeights: [Double] = [75, 20, 5]

    // MARK: - Simulation

    fileprivate struct Simulation {
        let options: AgentTrafficGenerator.Options
        var rng: RNG
        var infos: [TraceInfo] = []
        var traces: [AgentTrafficGenerator.Trace] = []
        /// Planned spans per service, in creation order.
        var spans: [[SpanRec]] = [[], []]
        var scratch: [SpanRec] = []
        let agentID: [UInt8]
        /// Encoded `resource` field (tag included) of each service's ResourceSpans.
        let resources: [[UInt8]]
        /// Encoded InstrumentationScope payload and ScopeSpans schema_url (as a trailing field) per service and scope.
        let scopeHeaders: [[[UInt8]]]
        let scopeTrailers: [[[UInt8]]]
        let phases: [UInt64]
        let interval: UInt64

        init(_ options: AgentTrafficGenerator.Options) {
            self.options = options
            rng = RNG(seed: options.seed)
            interval = max(1_000_000, nanos(options.flushInterval))
            var setup = RNG(seed: options.seed ^ 0x5EED_0F_7A11_6A7E)
            agentID = Array("asst_".utf8) + (0..<24).map { _ in base62[Int(setup.next() % 62)] }
            phases = [UInt64(setup.unit() * Double(interval)), UInt64(setup.unit() * Double(interval))]
            resources = [
                Simulation.resource(python: true, service: "agent", version: "2.14.0", setup: &setup),
                Simulation.resource(python: false, service: "tools", version: "3.2.1", setup: &setup),
            ]
            func scopes(_ list: [(name: String, version: String, schema: String?)]) -> ([[UInt8]], [[UInt8]]) {
                var headers: [[UInt8]] = []
                var trailers: [[UInt8]] = []
                for s in list {
                    var scope = ProtoWriter()
                    scope.appendMessageField(1) { w in
                        w.appendStringField(1, s.name)
                        w.appendStringField(2, s.version)
                    }
                    headers.append(scope.bytes)
                    var trailer = ProtoWriter()
                    if let schema = s.schema { trailer.appendStringField(3, schema) }
                    trailers.append(trailer.bytes)
                }
                return (headers, trailers)
            }
            let agentScopeFields = scopes(agentScopes), toolsScopeFields = scopes(toolsScopes)
            scopeHeaders = [agentScopeFields.0, toolsScopeFields.0]
            scopeTrailers = [agentScopeFields.1, toolsScopeFields.1]
        }

        /// The `resource` field of a ResourceSpans, like the Python or Node SDK on Kubernetes writes it.
        static func resource(python: Bool, service: String, version: String, setup: inout RNG) -> [UInt8] {
            let podAlphabet = Array("bcdfghjklmnpqrstvwxz2456789".utf8)
            func pod(_ n: Int) -> String { String(decoding: (0..<n).map { _ in podAlphabet[Int(setup.next() % 27)] }, as: UTF8.self) }
            let hostName = "\(service)-\(pod(10))-\(pod(5))"
            let uuid = (0..<16).map { _ in UInt8(truncatingIfNeeded: setup.next()) }
            let hex = uuid.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
            let instance = hex[0..<4].joined() + "-" + hex[4..<6].joined() + "-" + hex[6..<8].joined() + "-"
                + hex[8..<10].joined() + "-" + hex[10..<16].joined()
            var strings: [(String, String)] = [
                ("telemetry.sdk.language", python ? "python" : "nodejs"),
                ("telemetry.sdk.name", "opentelemetry"),
                ("telemetry.sdk.version", python ? "1.34.1" : "2.0.1"),
                ("service.name", service),
                ("service.version", version),
                ("service.namespace", "support"),
                ("service.instance.id", instance),
                ("deployment.environment", "production"),
                ("deployment.environment.name", "production"),
                ("host.name", hostName),
                ("host.arch", "amd64"),
                ("os.type", "linux"),
                ("process.runtime.name", python ? "cpython" : "nodejs"),
                ("process.runtime.version", python ? "3.12.7" : "22.11.0"),
                ("k8s.namespace.name", "support"),
                ("k8s.pod.name", hostName),
            ]
            if python { strings.insert(("process.executable.path", "/usr/local/bin/python3.12"), at: 13) }
            var attrs = ProtoWriter()
            for (k, v) in strings {
                attrs.appendMessageField(1) { kv in
                    kv.appendStringField(1, k)
                    kv.appendMessageField(2) { $0.appendStringField(1, v) }
                }
                if k == "os.type" {
                    let pid = UInt64(setup.int(7, 4_000_000))
                    attrs.appendMessageField(1) { kv in
                        kv.appendStringField(1, "process.pid")
                        kv.appendMessageField(2) { $0.appendVarintField(3, pid) }
                    }
                }
            }
            if !python { attrs.appendVarintField(2, 0) }  // protobufjs writes the explicit zero
            var field = ProtoWriter()
            field.appendBytesField(1, attrs.bytes)
            return field.bytes
        }

        // MARK: Planning

        mutating func planTraces() {
            let count = max(0, options.traces)
            let rate = options.tracesPerSecond > 0 && options.tracesPerSecond.isFinite ? options.tracesPerSecond : 50
            infos.reserveCapacity(count)
            traces.reserveCapacity(count)
            spans[0].reserveCapacity(count * 8)
            spans[1].reserveCapacity(count * 3)
            var offset = 0.0
            for i in 0..<count {
                if i > 0 { offset += -log(1 - rng.unit()) / rate }
                let u = rng.unit()
                let category: AgentTrafficGenerator.Category =
                    u < 0.03 ? .error : u < 0.07 ? .expensive : u < 0.09 ? .longRunning : u < 0.10 ? .runaway
                    : u < 0.12 ? .toolFailure : u < 0.14 ? .truncated : .ordinary
                planTrace(category, start: options.startTime &+ nanos(offset))
            }
        }

        mutating func planTrace(_ category: AgentTrafficGenerator.Category, start: UInt64) {
            var hi = rng.next(), lo = rng.next()
            while hi == 0 && lo == 0 { hi = rng.next(); lo = rng.next() }
            let maxTokens = maxTokenChoices[rng.pick(maxTokenWeights)]
            let info = TraceInfo(
                id: TraceID(hi: hi, lo: lo), model: rng.pick(modelWeights), conversation: rng.next(),
                maxTokens: maxTokens, temperature: temperatureChoices[rng.pick(temperatureWeights)])
            let index = Int32(infos.count)
            infos.append(info)
            let instrumentedHTTP = rng.chance(0.6)

            var attempt = 0
            var tokens: Int64 = 0
            while true {
                scratch.removeAll(keepingCapacity: true)
                tokens = build(category, start, info, index, instrumentedHTTP, minimal: attempt >= 20)
                let duration = scratch[0].end - start
                let short = duration < 120_000_000_000
                let ok: Bool
                switch category {
                case .expensive: ok = tokens >= 10_000 && short
                case .runaway: ok = true
                case .longRunning: ok = tokens < 10_000
                default: ok = tokens < 10_000 && short
                }
                if ok || attempt > 40 { break }
                attempt += 1
            }

            var hasError = false, usesTools = false
            for s in scratch {
                hasError = hasError || s.isError
                let service = s.role.service
                usesTools = usesTools || service == 1
                spans[service].append(s)
            }
            traces.append(AgentTrafficGenerator.Trace(
                id: info.id, category: category, spans: scratch.count, totalTokens: tokens, hasError: hasError,
                durationNanos: scratch[0].end - start, services: usesTools ? ["agent", "tools"] : ["agent"]))
        }

        @inline(__always)
        mutating func span(_ role: Role, _ trace: Int32, parent: UInt64, start: UInt64, end: UInt64) -> SpanRec {
            var s = SpanRec()
            s.role = role
            s.trace = trace
            s.spanID = rng.nonZero()
            s.parentID = parent
            s.start = start
            s.end = max(end, start + 1000)
            s.salt = rng.next()
            return s
        }

        /// Plans one run into `scratch` (root first) and returns its total tokens.
        private mutating func build(
            _ category: AgentTrafficGenerator.Category, _ t0: UInt64, _ info: TraceInfo, _ trace: Int32,
            _ instrumentedHTTP: Bool, minimal: Bool
        ) -> Int64 {
            let model = models[info.model]
            let isError = category == .error
            var errorMode = ErrorMode.none
            if isError {
                errorMode = errorModes[rng.pick(errorModeWeights)]
            }
            var tokens: Int64 = 0
            var root = span(.root, trace, parent: 0, start: t0, end: t0)
            scratch.append(root)
            var t = t0 + millis(rng.int(2, 25))

            // Retrieval.
            var docs = rng.int(3, 8)
            var retrieval = span(.retrieval, trace, parent: root.spanID, start: t, end: t + nanos(rng.logNormal(0.045, 0.6)))
            if errorMode == .retrieval {
                retrieval.end = t + nanos(rng.uniform(5, 10))
                retrieval.error = .vectorTimeout
                retrieval.isError = true
                docs = 0
            }
            retrieval.docs = UInt16(docs)
            scratch.append(retrieval)
            t = retrieval.end + millis(rng.int(1, 8))

            // Conversation context: system prompt, retrieved chunks, user message (and history when expensive).
            var context = Int64(minimal ? 500 + docs * 120 : rng.int(450, 1100) + docs * rng.int(110, 260) + rng.int(15, 220))
            if category == .expensive { context += Int64(minimal ? 12_000 : rng.int(2500, 24_000)) }

            var calls: Int
            switch category {
            case .runaway: calls = minimal ? 30 : rng.int(30, 120)
            case .expensive: calls = minimal ? 3 : rng.int(3, 12)
            case .longRunning: calls = minimal ? 2 : rng.int(2, 5)
            default: calls = minimal ? 1 : 1 + rng.pick(callCountWeights)
            }
            if category == .toolFailure || category == .longRunning || errorMode == .toolsOnly { calls = max(calls, 2) }
            if errorMode == .llmExhausted { calls = max(calls, 1) }
            let specialStep = calls >= 2 ? rng.int(0, calls - 2) : 0
            let exhaustedStep = errorMode == .llmExhausted ? rng.int(0, calls - 1) : -1
            let truncateWithLength = rng.chance(0.6)
            let speed = minimal ? 0.6 : rng.uniform(0.8, 1.3)
            let runawayTool = runawayTools[rng.int(0, runawayTools.count - 1)]

            for step in 0..<calls {
                let last = step == calls - 1
                // Failed attempts, retried with backoff (a failure has error.type; ERROR status only in `error` runs).
                var failures = 0
                if step == exhaustedStep {
                    failures = 3
                } else if !minimal && rng.chance(0.04) {
                    failures = rng.chance(0.2) ? 2 : 1
                }
                var lastKind = ErrorKind.none
                for f in 0..<failures {
                    var kind = minimal ? .rateLimit : llmFailureKinds[rng.pick(llmFailureWeights)]
                    if kind == .overloaded && model.style != .anthropic { kind = .serverError }
                    lastKind = kind
                    let seconds: Double
                    switch kind {
                    case .rateLimit: seconds = rng.uniform(0.08, 0.4)
                    case .serverError: seconds = rng.uniform(0.3, 3)
                    case .overloaded: seconds = rng.uniform(0.2, 1.5)
                    case .llmTimeout: seconds = rng.uniform(20, 40)
                    default: seconds = rng.uniform(0.005, 0.05)
                    }
                    var chat = span(.chat, trace, parent: root.spanID, start: t, end: t + nanos(seconds))
                    chat.error = kind
                    chat.isError = isError
                    scratch.append(chat)
                    if instrumentedHTTP {
                        var http = span(.chatHTTP, trace, parent: chat.spanID, start: chat.start + millis(rng.int(1, 4)),
                                        end: chat.end - millis(1))
                        http.error = kind
                        http.httpStatus = kind.http.status
                        http.isError = isError
                        scratch.append(http)
                    }
                    t = chat.end + nanos(0.5 * Double(1 << f) * (1 + rng.unit()))
                }
                if step == exhaustedStep {
                    root.error = lastKind
                    root.isError = true
                    break
                }

                // The successful call.
                let input = min(context, 127_000)
                var output: Int64
                var finish: Finish
                if last {
                    output = Int64(min(max(40, rng.logNormal(220, 0.5)), Double(info.maxTokens - 1)))
                    finish = .stop
                    if category == .truncated {
                        if truncateWithLength {
                            output = Int64(info.maxTokens)
                            finish = .length
                        } else {
                            output = Int64(rng.int(0, 40))
                            finish = .contentFilter
                        }
                    }
                } else {
                    output = Int64(rng.int(18, 160))
                    finish = .toolCalls
                }
                let seconds = rng.logNormal(0.55, 0.45) + Double(input) / 12_000
                    + Double(output) * model.perToken * speed
                var chat = span(.chat, trace, parent: root.spanID, start: t, end: t + nanos(seconds))
                chat.input = Int32(input)
                chat.output = Int32(output)
                chat.finish = finish
                if model.caches && step > 0 && input >= 1024 && rng.chance(0.7) {
                    chat.cacheRead = Int32((input - Int64(rng.int(100, 700))) / 128 * 128)
                }
                scratch.append(chat)
                if instrumentedHTTP {
                    var http = span(.chatHTTP, trace, parent: chat.spanID, start: chat.start + millis(rng.int(1, 4)),
                                    end: chat.end - millis(1))
                    http.httpStatus = 200
                    scratch.append(http)
                }
                tokens += input + output
                context += output
                t = chat.end + millis(rng.int(1, 15))
                if last { break }

                // Tool calls requested by this step, executed by the tools service.
                let count = category == .runaway || minimal ? 1 : 1 + rng.pick(toolCountWeights)
                let parallel = count > 1 && rng.chance(0.5)
                var stepEnd = t
                var toolStart = t
                for k in 0..<count {
                    let special = step == specialStep && k == 0
                    var toolIndex: Int
                    if category == .longRunning && special {
                        toolIndex = longTools[rng.int(0, longTools.count - 1)]
                    } else if category == .runaway {
                        toolIndex = runawayTool
                    } else if errorMode == .toolsOnly && special {
                        toolIndex = toolsWithChild[rng.int(0, toolsWithChild.count - 1)]
                    } else {
                        toolIndex = rng.pick(ordinaryToolWeights)
                    }
                    let tool = tools[toolIndex]
                    let failTool = category == .toolFailure && special
                    let failChild = errorMode == .toolsOnly && special
                    var failKind = ErrorKind.none
                    if failTool { failKind = toolFailureKinds[rng.int(0, toolFailureKinds.count - 1)] }

                    var seconds = tool.weight == 0 ? rng.uniform(tool.median, tool.sigma) : rng.logNormal(tool.median, tool.sigma)
                    if failKind == .toolTimeout { seconds = rng.uniform(10, 30) }
                    if failKind == .toolValidation { seconds = rng.uniform(0.001, 0.004) }
                    let begin = parallel ? t + millis(rng.int(0, 3)) : toolStart
                    var parent = root.spanID
                    var clientIndex = -1
                    if instrumentedHTTP {
                        let client = span(.toolClient, trace, parent: root.spanID, start: begin, end: begin)
                        parent = client.spanID
                        clientIndex = scratch.count
                        scratch.append(client)
                    }
                    let serverStart = begin + UInt64(rng.int(300_000, 2_000_000))
                    var server = span(.tool, trace, parent: parent, start: serverStart, end: serverStart + nanos(seconds))
                    server.tool = UInt8(toolIndex)
                    server.remoteParent = true
                    server.httpStatus = 200
                    if failTool {
                        server.error = failKind
                        server.isError = true
                    }
                    scratch.append(server)
                    if tool.child != .none && failKind != .toolValidation {
                        // The downstream call sits inside the tool's span.
                        let length = Double(server.end - server.start)
                        let childStart = server.start + UInt64(length * rng.uniform(0.03, 0.1))
                        let childEnd = childStart + UInt64(length * rng.uniform(0.55, 0.85))
                        var child = span(tool.child == .db ? .toolDB : .toolHTTP, trace, parent: server.spanID,
                                         start: childStart, end: childEnd)
                        child.tool = UInt8(toolIndex)
                        child.httpStatus = 200
                        if failChild || failKind == .toolExecution {
                            child.error = tool.child == .db ? .pgTimeout : .upstream503
                            child.httpStatus = 503
                            child.isError = true
                        }
                        scratch.append(child)
                    }
                    let end = server.end + UInt64(rng.int(300_000, 2_000_000))
                    if clientIndex >= 0 {
                        scratch[clientIndex].end = end
                        scratch[clientIndex].httpStatus = 200
                        scratch[clientIndex].tool = UInt8(toolIndex)
                    }
                    context += failTool ? Int64(rng.int(20, 60)) : Int64(rng.int(tool.resultTokens.lowerBound, tool.resultTokens.upperBound))
                    toolStart = end + millis(rng.int(0, 3))
                    stepEnd = max(stepEnd, end)
                }
                t = stepEnd + millis(rng.int(2, 30))
            }

            if errorMode == .root {
                root.error = rng.chance(0.5) ? .outputParser : .validation
                root.isError = true
            }
            root.end = t + millis(rng.int(1, 20))
            scratch[0] = root
            return tokens
        }

        // MARK: Export

        /// A planned export: which spans (indices into the service's sorted order) and when.
        struct Batch {
            var service: Int
            var time: UInt64
            var range: Range<Int>
        }

        func export() -> [AgentTrafficGenerator.Request] {
            let maxBatch = max(1, options.maxBatchSpans)
            let interval = self.interval
            var perService: [[AgentTrafficGenerator.Request]] = [[], []]
            var encoder = RequestEncoder(simulation: self)
            for service in 0..<2 {
                let list = spans[service]
                // Export order: by end time (the SDK queues a span when it ends).
                var order = [(end: UInt64, index: Int32)]()
                order.reserveCapacity(list.count)
                for (i, s) in list.enumerated() { order.append((s.end, Int32(i))) }
                order.sort { $0.end != $1.end ? $0.end < $1.end : $0.index < $1.index }

                let firstTick = options.startTime &+ phases[service]
                func tick(after end: UInt64) -> UInt64 {
                    end < firstTick ? firstTick : firstTick + ((end - firstTick) / interval + 1) * interval
                }
                var batches: [Batch] = []
                var pendingStart = 0
                var currentTick: UInt64 = 0
                for (position, entry) in order.enumerated() {
                    let due = tick(after: entry.end)
                    if position > pendingStart && due != currentTick {
                        // The timer fired before this span ended: export what was queued.
                        batches.append(Batch(service: service, time: currentTick, range: pendingStart..<position))
                        pendingStart = position
                    }
                    currentTick = due
                    if position + 1 - pendingStart == maxBatch {
                        // A full batch is exported at once.
                        batches.append(Batch(service: service, time: entry.end, range: pendingStart..<(position + 1)))
                        pendingStart = position + 1
                    }
                }
                if pendingStart < order.count {
                    batches.append(Batch(service: service, time: currentTick, range: pendingStart..<order.count))
                }
                perService[service].reserveCapacity(batches.count)
                for batch in batches {
                    let bytes = encoder.encode(service: service, spans: list, order: order, range: batch.range)
                    perService[service].append(AgentTrafficGenerator.Request(
                        time: batch.time, service: serviceNames[service], protobuf: bytes, spans: batch.range.count))
                }
            }
            // Merge the two exporters' streams by send time (agent first on ties).
            var merged: [AgentTrafficGenerator.Request] = []
            merged.reserveCapacity(perService[0].count + perService[1].count)
            var i = 0, j = 0
            let a = perService[0], b = perService[1]
            while i < a.count || j < b.count {
                if j >= b.count || (i < a.count && a[i].time <= b[j].time) {
                    merged.append(a[i]); i += 1
                } else {
                    merged.append(b[j]); j += 1
                }
            }
            return merged
        }
    }

    // MARK: - Encoding

    fileprivate static let base62: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
    fileprivate static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    @inline(__always) fileprivate static func vsize(_ v: UInt64) -> Int { ProtoWriter.varintSize(v) }
    @inline(__always) fileprivate static func vsize(_ v: Int) -> Int { ProtoWriter.varintSize(UInt64(v)) }
    @inline(__always) fileprivate static func utf8Count(_ s: StaticString) -> Int { s.withUTF8Buffer { $0.count } }

    /// Tags of KeyValue fields: span attributes (field 9) and event attributes (field 3).
    fileprivate static let spanAttr: UInt8 = 0x4A
    fileprivate static let eventAttr: UInt8 = 0x1A

    /// A byte buffer with the protobuf writes the span encoder needs, sized up front (no nested buffers).
    fileprivate struct Enc {
        var b: [UInt8] = []

        @inline(__always) mutating func byte(_ x: UInt8) { b.append(x) }

        @inline(__always) mutating func varint(_ value: UInt64) {
            var v = value
            while v >= 0x80 {
                b.append(UInt8(truncatingIfNeeded: v) | 0x80)
                v >>= 7
            }
            b.append(UInt8(v))
        }

        @inline(__always) mutating func varint(_ v: Int) { varint(UInt64(v)) }
        @inline(__always) mutating func raw(_ s: StaticString) { s.withUTF8Buffer { b.append(contentsOf: $0) } }
        @inline(__always) mutating func raw(_ a: [UInt8]) { b.append(contentsOf: a) }
        @inline(__always) mutating func be64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { b.append(contentsOf: $0) } }
        @inline(__always) mutating func le64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        @inline(__always) mutating func le32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }

        /// A string field made of two parts.
        @inline(__always) mutating func string(_ tag: UInt8, _ a: StaticString, _ c: StaticString = "") {
            byte(tag)
            varint(utf8Count(a) + utf8Count(c))
            raw(a)
            raw(c)
        }

        @inline(__always) mutating func kvHeader(_ tag: UInt8, _ key: StaticString, valueLength n: Int) {
            let k = utf8Count(key)
            byte(tag)
            varint(1 + vsize(k) + k + 1 + vsize(n) + n)
            byte(0x0A)
            varint(k)
            raw(key)
            byte(0x12)
            varint(n)
        }

        /// A string attribute of `length` bytes written by `body` (which must write exactly that many).
        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, length: Int, _ body: (inout Enc) -> Void) {
            kvHeader(tag, key, valueLength: 1 + vsize(length) + length)
            byte(0x0A)
            varint(length)
            body(&self)
        }

        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, _ value: StaticString, _ suffix: StaticString = "") {
            kv(tag, key, length: utf8Count(value) + utf8Count(suffix)) {
                $0.raw(value)
                $0.raw(suffix)
            }
        }

        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, bytes: [UInt8]) {
            kv(tag, key, length: bytes.count) { $0.raw(bytes) }
        }

        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, int value: Int64) {
            let u = UInt64(bitPattern: value)
            kvHeader(tag, key, valueLength: 1 + vsize(u))
            byte(0x18)
            varint(u)
        }

        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, double value: Double) {
            kvHeader(tag, key, valueLength: 9)
            byte(0x21)
            le64(value.bitPattern)
        }

        /// A string array attribute with one element.
        @inline(__always) mutating func kv(_ tag: UInt8, _ key: StaticString, array value: StaticString) {
            let n = utf8Count(value)
            let element = 1 + vsize(n) + n
            let array = 1 + vsize(element) + element
            kvHeader(tag, key, valueLength: 1 + vsize(array) + array)
            byte(0x2A)
            varint(array)
            byte(0x0A)
            varint(element)
            byte(0x0A)
            varint(n)
            raw(value)
        }

        @inline(__always) mutating func randomChars(_ n: Int, _ alphabet: [UInt8], _ r: inout RNG) {
            for _ in 0..<n { b.append(alphabet[Int(truncatingIfNeeded: r.next().multipliedFullWidth(by: UInt64(alphabet.count)).high)]) }
        }

        @inline(__always) mutating func hex(_ v: UInt64, digits: Int) {
            for i in stride(from: digits - 1, through: 0, by: -1) { b.append(hexDigits[Int((v >> UInt64(4 * i)) & 0xF)]) }
        }
    }

    /// Encodes batches of planned spans into ExportTraceServiceRequests, reusing its buffers.
    fileprivate struct RequestEncoder {
        let infos: [TraceInfo]
        let agentID: [UInt8]
        let resources: [[UInt8]]
        let scopeHeaders: [[[UInt8]]]
        let scopeTrailers: [[[UInt8]]]
        var span = Enc()
        var event = Enc()
        var scopeBuffers: [[UInt8]] = Array(repeating: [], count: 8)
        var scopeOrder: [Int] = []

        init(simulation: Simulation) {
            infos = simulation.infos
            agentID = simulation.agentID
            resources = simulation.resources
            scopeHeaders = simulation.scopeHeaders
            scopeTrailers = simulation.scopeTrailers
            span.b.reserveCapacity(4096)
            event.b.reserveCapacity(2048)
        }

        mutating func encode(service: Int, spans: [SpanRec], order: [(end: UInt64, index: Int32)], range: Range<Int>) -> [UInt8] {
            scopeOrder.removeAll(keepingCapacity: true)
            for position in range {
                let s = spans[Int(order[position].index)]
                let scope: Int
                switch s.role {
                case .root, .retrieval, .tool: scope = 0
                case .chat: scope = models[infos[Int(s.trace)].model].scope
                case .chatHTTP, .toolClient: scope = httpxScope
                case .toolHTTP: scope = 1
                case .toolDB: scope = 2
                }
                if service == 0 { encodeAgentSpan(s) } else { encodeToolsSpan(s) }
                if !scopeOrder.contains(scope) {
                    scopeOrder.append(scope)
                    scopeBuffers[scope].removeAll(keepingCapacity: true)
                }
                scopeBuffers[scope].append(0x12)
                var n = UInt64(span.b.count)
                while n >= 0x80 {
                    scopeBuffers[scope].append(UInt8(truncatingIfNeeded: n) | 0x80)
                    n >>= 7
                }
                scopeBuffers[scope].append(UInt8(n))
                scopeBuffers[scope].append(contentsOf: span.b)
            }
            // ExportTraceServiceRequest { resource_spans { resource, scope_spans { scope, spans..., schema_url }... } }
            var resourceSpans = resources[service].count
            for scope in scopeOrder {
                let payload = scopeHeaders[service][scope].count + scopeBuffers[scope].count + scopeTrailers[service][scope].count
                resourceSpans += 1 + vsize(payload) + payload
            }
            var out = Enc()
            out.b.reserveCapacity(1 + vsize(resourceSpans) + resourceSpans)
            out.byte(0x0A)
            out.varint(resourceSpans)
            out.raw(resources[service])
            for scope in scopeOrder {
                let payload = scopeHeaders[service][scope].count + scopeBuffers[scope].count + scopeTrailers[service][scope].count
                out.byte(0x12)
                out.varint(payload)
                out.raw(scopeHeaders[service][scope])
                out.raw(scopeBuffers[scope])
                out.raw(scopeTrailers[service][scope])
            }
            return out.b
        }

        /// Span fields the two SDKs share: IDs, name, kind, times.
        @inline(__always)
        private mutating func head(_ s: SpanRec, _ info: TraceInfo, flags: UInt32?, name: StaticString, _ suffix: StaticString, kind: UInt8) {
            span.b.removeAll(keepingCapacity: true)
            span.byte(0x0A)
            span.byte(16)
            span.be64(info.id.hi)
            span.be64(info.id.lo)
            span.byte(0x12)
            span.byte(8)
            span.be64(s.spanID)
            if s.parentID != 0 {
                span.byte(0x22)
                span.byte(8)
                span.be64(s.parentID)
            }
            if let flags {  // protobufjs writes fields in declaration order: flags follows parent_span_id
                span.byte(0x85)
                span.byte(0x01)
                span.le32(flags)
            }
            span.string(0x2A, name, suffix)
            span.byte(0x30)
            span.byte(kind)
            span.byte(0x39)
            span.le64(s.start)
            span.byte(0x41)
            span.le64(s.end)
        }

        /// An `exception` event (Span field 11) just before the span ends.
        private mutating func exceptionEvent(_ s: SpanRec) {
            let kind = s.error
            event.b.removeAll(keepingCapacity: true)
            event.byte(0x09)
            event.le64(s.end - min(s.end - s.start, 200_000))
            event.string(0x12, "exception")
            event.kv(eventAttr, "exception.type", kind.type)
            event.kv(eventAttr, "exception.message", kind.message)
            event.kv(eventAttr, "exception.stacktrace", kind.stacktrace)
            span.byte(0x5A)
            span.varint(event.b.count)
            span.raw(event.b)
        }

        /// Status (field 15): empty for UNSET (Python), `code: 0` (Node), or ERROR with its message.
        @inline(__always)
        private mutating func status(_ s: SpanRec, node: Bool) {
            if s.isError {
                let type = s.error.type, message = s.error.message
                let text = node ? utf8Count(message) : utf8Count(type) + 2 + utf8Count(message)
                let payload = 1 + vsize(text) + text + 2
                span.byte(0x7A)
                span.varint(payload)
                span.byte(0x12)
                span.varint(text)
                if !node {
                    span.raw(type)
                    span.raw(": ")
                }
                span.raw(message)
                span.byte(0x18)
                span.byte(2)
            } else if node {
                span.byte(0x7A); span.byte(2); span.byte(0x18); span.byte(0)
            } else {
                span.byte(0x7A); span.byte(0)
            }
        }

        private mutating func encodeAgentSpan(_ s: SpanRec) {
            let info = infos[Int(s.trace)]
            let model = models[info.model]
            var r = RNG(seed: s.salt)
            switch s.role {
            case .root:
                head(s, info, flags: nil, name: "invoke_agent support-bot", "", kind: 2)
                span.kv(spanAttr, "gen_ai.operation.name", "invoke_agent")
                span.kv(spanAttr, "gen_ai.agent.name", "support-bot")
                span.kv(spanAttr, "gen_ai.agent.id", bytes: agentID)
                span.kv(spanAttr, "gen_ai.conversation.id", length: 29) { e in
                    e.raw("conv_")
                    e.hex(info.conversation, digits: 16)
                    e.hex(info.id.lo, digits: 8)
                }
                span.kv(spanAttr, "gen_ai.provider.name", model.provider)
                span.kv(spanAttr, "gen_ai.request.model", model.request)
                span.kv(spanAttr, "http.request.method", "POST")
                span.kv(spanAttr, "http.route", "/v1/support/chat")
            case .retrieval:
                head(s, info, flags: nil, name: "retrieval.vector_search", "", kind: 3)
                span.kv(spanAttr, "gen_ai.operation.name", "retrieval")
                span.kv(spanAttr, "db.system", "qdrant")
                span.kv(spanAttr, "db.collection.name", "support_articles")
                span.kv(spanAttr, "db.operation.name", "search")
                span.kv(spanAttr, "server.address", "qdrant.vector.svc.cluster.local")
                span.kv(spanAttr, "server.port", int: 6333)
                span.kv(spanAttr, "db.vector.query.top_k", int: 8)
                span.kv(spanAttr, "retrieval.documents", int: Int64(s.docs))
            case .chat:
                head(s, info, flags: nil, name: "chat ", model.request, kind: 3)
                span.kv(spanAttr, "gen_ai.operation.name", "chat")
                span.kv(spanAttr, "gen_ai.provider.name", model.provider)
                span.kv(spanAttr, "gen_ai.request.model", model.request)
                span.kv(spanAttr, "gen_ai.request.max_tokens", int: Int64(info.maxTokens))
                span.kv(spanAttr, "gen_ai.request.temperature", double: info.temperature)
                span.kv(spanAttr, "server.address", model.host)
                span.kv(spanAttr, "server.port", int: 443)
                if s.error == .none {
                    span.kv(spanAttr, "gen_ai.response.model", model.response)
                    switch model.style {
                    case .openai:
                        span.kv(spanAttr, "gen_ai.response.id", length: 38) { $0.raw("chatcmpl-"); $0.randomChars(29, base62, &r) }
                    case .anthropic:
                        span.kv(spanAttr, "gen_ai.response.id", length: 28) { $0.raw("msg_01"); $0.randomChars(22, base62, &r) }
                    case .bedrock:
                        span.kv(spanAttr, "gen_ai.response.id", length: 36) { e in
                            let a = r.next(), b = r.next()
                            e.hex(a >> 32, digits: 8); e.byte(0x2D)
                            e.hex(a >> 16, digits: 4); e.byte(0x2D)
                            e.hex(a, digits: 4); e.byte(0x2D)
                            e.hex(b >> 48, digits: 4); e.byte(0x2D)
                            e.hex(b, digits: 12)
                        }
                    case .vertex:
                        span.kv(spanAttr, "gen_ai.response.id", length: 23) { $0.randomChars(23, base62, &r) }
                    case .mistral:
                        span.kv(spanAttr, "gen_ai.response.id", length: 32) { $0.hex(r.next(), digits: 16); $0.hex(r.next(), digits: 16) }
                    }
                    switch s.finish {
                    case .toolCalls: span.kv(spanAttr, "gen_ai.response.finish_reasons", array: "tool_calls")
                    case .length: span.kv(spanAttr, "gen_ai.response.finish_reasons", array: "length")
                    case .contentFilter: span.kv(spanAttr, "gen_ai.response.finish_reasons", array: "content_filter")
                    default: span.kv(spanAttr, "gen_ai.response.finish_reasons", array: "stop")
                    }
                    span.kv(spanAttr, "gen_ai.usage.input_tokens", int: Int64(s.input))
                    span.kv(spanAttr, "gen_ai.usage.output_tokens", int: Int64(s.output))
                    if s.cacheRead > 0 { span.kv(spanAttr, "gen_ai.usage.cache_read.input_tokens", int: Int64(s.cacheRead)) }
                } else {
                    span.kv(spanAttr, "error.type", s.error.type)
                }
            case .chatHTTP:
                head(s, info, flags: nil, name: "POST", "", kind: 3)
                span.kv(spanAttr, "http.request.method", "POST")
                span.kv(spanAttr, "url.full", length: 8 + utf8Count(model.host) + utf8Count(model.path)) { e in
                    e.raw("https://"); e.raw(model.host); e.raw(model.path)
                }
                span.kv(spanAttr, "server.address", model.host)
                span.kv(spanAttr, "server.port", int: 443)
                span.kv(spanAttr, "network.protocol.version", "1.1")
                if s.httpStatus != 0 { span.kv(spanAttr, "http.response.status_code", int: Int64(s.httpStatus)) }
                if s.error != .none { span.kv(spanAttr, "error.type", s.error.http.type) }
            case .toolClient:
                let tool = tools[Int(s.tool)]
                head(s, info, flags: nil, name: "POST", "", kind: 3)
                span.kv(spanAttr, "http.request.method", "POST")
                span.kv(spanAttr, "url.full", "http://tools.support.svc.cluster.local:8080/v1/tools/", tool.name)
                span.kv(spanAttr, "server.address", "tools.support.svc.cluster.local")
                span.kv(spanAttr, "server.port", int: 8080)
                span.kv(spanAttr, "network.protocol.version", "1.1")
                span.kv(spanAttr, "http.response.status_code", int: Int64(s.httpStatus))
            default:
                preconditionFailure("not an agent span")
            }
            if s.error != .none && s.role != .chatHTTP { exceptionEvent(s) }
            status(s, node: false)
            // Python: flags last (field order); HAS_IS_REMOTE, never a remote parent in the agent.
            span.byte(0x85)
            span.byte(0x01)
            span.le32(0x100)
        }

        private mutating func encodeToolsSpan(_ s: SpanRec) {
            let info = infos[Int(s.trace)]
            let tool = tools[Int(s.tool)]
            var r = RNG(seed: s.salt)
            let flags: UInt32 = 0x101 | (s.remoteParent ? 0x200 : 0)
            switch s.role {
            case .tool:
                head(s, info, flags: flags, name: "execute_tool ", tool.name, kind: 2)
                span.kv(spanAttr, "gen_ai.operation.name", "execute_tool")
                span.kv(spanAttr, "gen_ai.tool.name", tool.name)
                switch models[info.model].style {
                case .openai, .vertex:
                    span.kv(spanAttr, "gen_ai.tool.call.id", length: 29) { $0.raw("call_"); $0.randomChars(24, base62, &r) }
                case .anthropic:
                    span.kv(spanAttr, "gen_ai.tool.call.id", length: 30) { $0.raw("toolu_01"); $0.randomChars(22, base62, &r) }
                case .bedrock:
                    span.kv(spanAttr, "gen_ai.tool.call.id", length: 30) { $0.raw("tooluse_"); $0.randomChars(22, base62, &r) }
                case .mistral:
                    span.kv(spanAttr, "gen_ai.tool.call.id", length: 9) { $0.randomChars(9, base62, &r) }
                }
                span.kv(spanAttr, "gen_ai.tool.type", "function")
                span.kv(spanAttr, "gen_ai.tool.description", tool.description)
                span.kv(spanAttr, "http.request.method", "POST")
                span.kv(spanAttr, "http.route", "/v1/tools/:name")
                span.kv(spanAttr, "http.response.status_code", int: Int64(s.httpStatus))
                if s.error != .none { span.kv(spanAttr, "error.type", s.error.type) }
            case .toolHTTP:
                head(s, info, flags: flags, name: tool.method, "", kind: 3)
                span.kv(spanAttr, "http.request.method", tool.method)
                span.kv(spanAttr, "url.full", tool.url)
                span.kv(spanAttr, "server.address", tool.host)
                span.kv(spanAttr, "server.port", int: tool.port)
                span.kv(spanAttr, "http.response.status_code", int: Int64(s.httpStatus))
                span.kv(spanAttr, "user_agent.original", "node")
                if s.error != .none { span.kv(spanAttr, "error.type", s.error.type) }
            case .toolDB:
                head(s, info, flags: flags, name: "pg.query:SELECT support", "", kind: 3)
                span.kv(spanAttr, "db.system", "postgresql")
                span.kv(spanAttr, "db.name", "support")
                span.kv(spanAttr, "db.statement", tool.statement)
                span.kv(spanAttr, "db.user", "tools_svc")
                span.kv(spanAttr, "db.connection_string", "postgresql://postgres.data.svc.cluster.local:5432/support")
                span.kv(spanAttr, "net.peer.name", "postgres.data.svc.cluster.local")
                span.kv(spanAttr, "net.peer.port", int: 5432)
            default:
                preconditionFailure("not a tools span")
            }
            span.byte(0x50); span.byte(0)  // dropped_attributes_count: 0, written explicitly by protobufjs
            if s.error != .none && s.role != .toolHTTP { exceptionEvent(s) }
            span.byte(0x60); span.byte(0)  // dropped_events_count
            span.byte(0x70); span.byte(0)  // dropped_links_count
            status(s, node: true)
        }
    }
}
