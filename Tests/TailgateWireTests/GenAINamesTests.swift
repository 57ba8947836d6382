import Testing
import TailgateTestSupport
@testable import TailgateWire

/// GenAI names are shared by content: spans with the same names (in one request or many) hold one object, spans with
/// other names never get it, and a table slot taken by a colliding combination never returns the wrong names.
@Suite struct GenAINamesTests {
    func scanned(_ attributes: [[(String, TestValue)]]) throws -> [GenAISpan] {
        let spans = attributes.enumerated().map { i, a in
            TestSpan(trace: tid(3), span: UInt64(i + 1), parent: 0, start: 1, end: 2, attributes: a)
        }
        var result = ScannedRequest()
        let scanner = OTLPScanner()
        try exportRequest(spans: spans).withUnsafeBytes { raw in
            let outcome = Result { () throws(ScanError) in try scanner.scan(raw, into: &result) }
            try outcome.get()
        }
        return result.spans.compactMap { result.genAI(of: $0) }
    }

    static func chat(model: String, tool: String = "") -> [(String, TestValue)] {
        var a: [(String, TestValue)] = [("gen_ai.operation.name", .string("chat")), ("gen_ai.provider.name", .string("anthropic")),
                                        ("gen_ai.request.model", .string(model)), ("gen_ai.usage.input_tokens", .int(10))]
        if !tool.isEmpty { a.append(("gen_ai.tool.name", .string(tool))) }
        return a
    }

    @Test func theSameNamesAreOneObjectAcrossRequests() throws {
        let first = try scanned([Self.chat(model: "claude-sonnet-4-5-20250929"), Self.chat(model: "claude-sonnet-4-5-20250929")])
        let second = try scanned([Self.chat(model: "claude-sonnet-4-5-20250929")])
        #expect(first.count == 2 && second.count == 1)
        #expect(first[0].names === first[1].names)
        #expect(first[0].names === second[0].names)
        // The scanner's names and names made from strings are the same object too.
        let made = GenAINames.of(operation: "chat", provider: "anthropic", model: "claude-sonnet-4-5-20250929")
        #expect(made === first[0].names)
        #expect(first[0].model == "claude-sonnet-4-5-20250929" && first[0].requestModel == "" && first[0].provider == "anthropic")
    }

    @Test func differentNamesAreNeverShared() throws {
        let spans = try scanned([Self.chat(model: "gpt-4o"), Self.chat(model: "gpt-4o", tool: "search"),
                                 Self.chat(model: "gpt-4o-mini")])
        #expect(spans[0].names !== spans[1].names && spans[0].names != spans[1].names)
        #expect(spans[1].toolName == "search" && spans[0].toolName == "")
        #expect(spans[2].model == "gpt-4o-mini")
        // A name moved from one field to another is another combination.
        #expect(GenAINames.of(toolName: "x") != GenAINames.of(agentName: "x"))
    }

    @Test func manyCombinationsThroughTheTableComeBackExactly() {
        // 5,000 tool names through 1,024 slots: collisions replace entries, never answer with another's names.
        for round in 0..<2 {
            for i in 0..<5_000 {
                let names = GenAINames.of(operation: "execute_tool", toolName: "tool-\(i)-\(String(repeating: "x", count: i % 40))")
                #expect(names.toolName == "tool-\(i)-\(String(repeating: "x", count: i % 40))", "round \(round), \(i)")
                #expect(names.operation == "execute_tool" && names.model.isEmpty)
            }
        }
    }
}
