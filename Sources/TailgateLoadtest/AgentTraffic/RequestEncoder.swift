import Foundation
import TailgateWire

// Encodes planned spans into OTLP ExportTraceServiceRequests, as the Python and Node.js SDKs write them.

extension AgentTrafficGenerator {
    /// Encodes batches of planned spans into ExportTraceServiceRequests, reusing its buffers.
    struct RequestEncoder {
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
