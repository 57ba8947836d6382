import Foundation
import TailgateWire

// The simulation: plans runs, their spans and their timing (exporting them is in Simulation+Export.swift).

extension AgentTrafficGenerator {
    // MARK: - Simulation records

    /// One planned span: everything the encoder needs, without strings.
    struct SpanRec {
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

    struct TraceInfo {
        var id: TraceID
        var model: Int
        var conversation: UInt64
        var maxTokens: Int
        var temperature: Double
    }

    enum ErrorMode { case none, toolsOnly, llmExhausted, retrieval, root }

    // Shares of the seeded choices.
    static let maxTokenChoices = [1024, 2048, 4096]
    static let maxTokenWeights: [Double] = [45, 30, 25]
    static let temperatureChoices = [0.0, 0.2, 0.7, 1.0]
    static let temperatureWeights: [Double] = [20, 40, 30, 10]
    static let errorModes: [ErrorMode] = [.toolsOnly, .llmExhausted, .retrieval, .root]
    static let errorModeWeights: [Double] = [35, 30, 15, 20]
    /// LLM calls of an ordinary run: 1...5.
    static let callCountWeights: [Double] = [20, 45, 20, 10, 5]
    /// Tool calls requested by one step: 1...3.
    static let toolCountWeights: [Double] = [75, 20, 5]

    // MARK: - Simulation

    struct Simulation {
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
    }
}
