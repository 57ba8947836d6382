import Foundation
import TailgateWire

// What the simulated deployment is made of: span roles, services and scopes, models, tools and errors.

extension AgentTrafficGenerator {
    // MARK: - Static vocabulary

    enum Role: UInt8 {
        case root, retrieval, chat, chatHTTP, toolClient, tool, toolHTTP, toolDB

        /// 0 = agent, 1 = tools.
        var service: Int { rawValue >= Role.tool.rawValue ? 1 : 0 }
    }

    enum Finish: UInt8 { case none, stop, toolCalls, length, contentFilter }

    /// Services and their instrumentation scopes (index = scope number used by the spans).
    static let serviceNames = ["agent", "tools"]
    static let agentScopes: [(name: String, version: String, schema: String?)] = [
        ("agent", "1.4.2", nil),
        ("opentelemetry.instrumentation.openai", "0.44.1", nil),
        ("opentelemetry.instrumentation.anthropic", "0.44.1", nil),
        ("opentelemetry.instrumentation.bedrock", "0.44.1", nil),
        ("opentelemetry.instrumentation.vertexai", "0.44.1", nil),
        ("opentelemetry.instrumentation.mistralai", "0.44.1", nil),
        ("opentelemetry.instrumentation.httpx", "0.55b1", "https://opentelemetry.io/schemas/1.11.0"),
    ]
    static let httpxScope = 6
    static let toolsScopes: [(name: String, version: String, schema: String?)] = [
        ("tools", "3.2.1", nil),
        ("@opentelemetry/instrumentation-undici", "0.13.1", nil),
        ("@opentelemetry/instrumentation-pg", "0.54.0", nil),
    ]

    enum IDStyle: UInt8 { case openai, anthropic, bedrock, vertex, mistral }

    struct Model: Sendable {
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

    static let models: [Model] = [
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
    static let modelWeights = models.map(\.weight)

    enum ToolChild: UInt8 { case none, http, db }

    struct Tool: Sendable {
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

    static let tools: [Tool] = [
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
    static let ordinaryToolWeights = tools.map(\.weight)
    static let toolsWithChild = tools.indices.filter { tools[$0].child != .none && tools[$0].weight > 0 }
    static let longTools = [8, 9, 10]
    static let runawayTools = [0, 1, 3]

    /// Why a span failed: `error.type`, the exception and what HTTP saw.
    enum ErrorKind: UInt8 {
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

    static let llmFailureKinds: [ErrorKind] = [.rateLimit, .serverError, .overloaded, .llmTimeout, .connection]
    static let llmFailureWeights: [Double] = [45, 20, 15, 10, 10]
    static let toolFailureKinds: [ErrorKind] = [.toolExecution, .toolTimeout, .toolValidation, .toolNotFound]
}
