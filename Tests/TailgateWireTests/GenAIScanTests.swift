import Testing
import TailgateTestSupport
@testable import TailgateWire

/// The scanner's GenAI facts: three naming schemes, ranked within a span so that nothing is counted twice.
@Suite struct GenAIScanTests {
    func facts(_ attributes: [(String, TestValue)], status: StatusCode? = nil, readsGenAI: Bool = true) throws -> GenAISpan? {
        let span = TestSpan(trace: tid(9), span: 5, parent: 4, start: 1_000, end: 3_500, status: status, attributes: attributes)
        var result = ScannedRequest()
        let scanner = OTLPScanner(readsGenAI: readsGenAI)
        try exportRequest(spans: [span]).withUnsafeBytes { raw in
            let outcome = Result { () throws(ScanError) in try scanner.scan(raw, into: &result) }
            try outcome.get()
        }
        return result.genAI(of: result.spans[0])
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var attributes: [(String, TestValue)]
        var operation: String
        var role: GenAISpan.Role
        var input: Int64 = 0, output: Int64 = 0, cacheRead: Int64 = 0, reasoning: Int64 = 0, totalOnly: Int64 = 0
        var model = "", provider = ""
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "GenAI conventions", attributes: [
            ("gen_ai.operation.name", .string("chat")), ("gen_ai.provider.name", .string("openai")),
            ("gen_ai.request.model", .string("gpt-4o")), ("gen_ai.response.model", .string("gpt-4o-2024-08-06")),
            ("gen_ai.usage.input_tokens", .int(100)), ("gen_ai.usage.output_tokens", .int(20)),
            ("gen_ai.usage.cache_read.input_tokens", .int(60)), ("gen_ai.usage.reasoning.output_tokens", .int(5))],
             operation: "chat", role: .inference, input: 100, output: 20, cacheRead: 60, reasoning: 5,
             model: "gpt-4o-2024-08-06", provider: "openai"),
        Case(name: "deprecated names rank below current ones in either order", attributes: [
            ("gen_ai.usage.prompt_tokens", .int(999)), ("gen_ai.usage.input_tokens", .int(10)), ("gen_ai.system", .string("old")),
            ("gen_ai.provider.name", .string("new"))],
             operation: "", role: .inference, input: 10, provider: "new"),
        Case(name: "OpenInference", attributes: [
            ("openinference.span.kind", .string("LLM")), ("llm.model_name", .string("claude")), ("llm.provider", .string("anthropic")),
            ("llm.token_count.prompt", .int(7)), ("llm.token_count.completion", .int(3)), ("llm.token_count.total", .int(10))],
             operation: "chat", role: .inference, input: 7, output: 3, model: "claude", provider: "anthropic"),
        Case(name: "OpenInference agent", attributes: [("openinference.span.kind", .string("AGENT"))],
             operation: "invoke_agent", role: .aggregate),
        Case(name: "OpenLLMetry total only, as a decimal string", attributes: [
            ("llm.request.type", .string("chat")), ("llm.usage.total_tokens", .string("6000.0"))],
             operation: "chat", role: .inference, totalOnly: 6000),
        Case(name: "a total beside input and output is not counted again", attributes: [
            ("gen_ai.usage.input_tokens", .int(1)), ("gen_ai.usage.total_tokens", .int(50))],
             operation: "", role: .inference, input: 1),
        Case(name: "agent span with usage is an aggregate", attributes: [
            ("gen_ai.operation.name", .string("invoke_agent")), ("gen_ai.usage.input_tokens", .int(6000))],
             operation: "invoke_agent", role: .aggregate, input: 6000),
        Case(name: "negative counts are zero", attributes: [("gen_ai.usage.input_tokens", .int(-5)), ("gen_ai.operation.name", .string("chat"))],
             operation: "chat", role: .inference),
    ]

    @Test(arguments: cases)
    func readsTheSpan(_ c: Case) throws {
        let g = try #require(try facts(c.attributes))
        typealias L = GenAISpan.Lane
        #expect(g.operation == c.operation)
        #expect(g.role == c.role)
        #expect(g.tokens[L.input] == c.input && g.tokens[L.output] == c.output)
        #expect(g.tokens[L.cacheRead] == c.cacheRead && g.tokens[L.reasoning] == c.reasoning)
        #expect(g.tokens[L.totalOnly] == c.totalOnly)
        #expect(g.model == c.model && g.provider == c.provider)
        #expect(g.spanID == 5 && g.parentSpanID == 4 && g.durationNanos == 2_500)
    }

    @Test func failuresAndToolsAreRead() throws {
        let g = try #require(try facts([("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("search")),
                                        ("error.type", .string("timeout"))], status: .error))
        #expect(g.failed && g.statusError && g.errorType == "timeout" && g.toolName == "search" && !g.isModelCall)
    }

    @Test func spansWithoutGenAIAttributesHaveNoFacts() throws {
        #expect(try facts([("http.route", .string("/x")), ("gen_ai", .string("not a key"))]) == nil)
        #expect(try facts([("gen_ai.usage.input_tokens", .int(5))], readsGenAI: false) == nil)
    }
}
