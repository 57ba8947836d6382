package import TailgateBuffer
package import TailgateWire

/// USD per million tokens for one model. Cache-read and cache-creation tokens are part of input tokens and reasoning
/// tokens part of output tokens (GenAI conventions): each is priced at its own rate when the table gives one, else
/// at the input (output) rate — never added on top.
package struct ModelPrice: Sendable, Equatable, Hashable {
    package var input: Double
    package var output: Double
    package var cacheRead: Double?
    package var cacheCreation: Double?
    package var reasoning: Double?

    package init(input: Double, output: Double, cacheRead: Double? = nil, cacheCreation: Double? = nil, reasoning: Double? = nil) {
        self.input = input
        self.output = output
        self.cacheRead = cacheRead
        self.cacheCreation = cacheCreation
        self.reasoning = reasoning
    }

    /// USD of the token lanes (`GenAISpan.Lane`) a span counts for. A total reported alone is priced as input.
    package func cost(_ t: SIMD8<Int64>) -> Double {
        typealias L = GenAISpan.Lane
        let cacheRead = Double(t[L.cacheRead]), cacheCreation = Double(t[L.cacheCreation]), reasoning = Double(t[L.reasoning])
        let plainInput = max(0, Double(t[L.input]) - cacheRead - cacheCreation)
        let plainOutput = max(0, Double(t[L.output]) - reasoning)
        var usd = plainInput * input + plainOutput * output + Double(t[L.totalOnly]) * input
        usd += cacheRead * (self.cacheRead ?? input) + cacheCreation * (self.cacheCreation ?? input)
        usd += reasoning * (self.reasoning ?? output)
        return usd / 1e6
    }
}

/// Prices by model: the built-in table, overridden model by model by the policies file's `prices:`.
package struct PriceTable: Sendable, Equatable {
    package var prices: [String: ModelPrice]
    /// For models not listed (and spans without a model); nil: they cost nothing.
    package var defaultPrice: ModelPrice?

    package init(prices: [String: ModelPrice] = PriceTable.builtinPrices, defaultPrice: ModelPrice? = nil) {
        self.prices = prices
        self.defaultPrice = defaultPrice
    }

    package static let builtin = PriceTable()

    /// The price of a span's model: its response model, else its request model, else the default.
    package func price(_ span: GenAISpan) -> ModelPrice? {
        if !span.model.isEmpty, let p = prices[span.model] { return p }
        if !span.requestModel.isEmpty, let p = prices[span.requestModel] { return p }
        return defaultPrice
    }

    /// USD the trace's GenAI spans cost, by the tokens each counts for (`GenAILedger`).
    package func cost(_ ledger: GenAILedger, matching: (GenAISpan) -> Bool = { _ in true }) -> Double {
        var usd = 0.0
        for (i, span) in ledger.spans.enumerated() where i < ledger.counted.count && ledger.counted[i] != SIMD8() && matching(span) {
            if let p = price(span) { usd += p.cost(ledger.counted[i]) }
        }
        return usd
    }

    /// Date of the built-in list prices.
    package static let builtinDate = "2025-10-01"

    /// List prices (USD per million tokens) of common hosted models on `builtinDate`, with their dated names (a
    /// span's response model is usually dated). `policies/llm-agents.yaml` carries the same table (a test keeps them
    /// in step); a policies file's `prices:` overrides it model by model.
    package static let builtinPrices: [String: ModelPrice] = {
        var t: [String: ModelPrice] = [:]
        func add(_ names: [String], _ p: ModelPrice) { for n in names { t[n] = p } }
        // OpenAI (cached input at the provider's cached rate; reasoning tokens are output tokens).
        add(["gpt-5", "gpt-5-2025-08-07"], ModelPrice(input: 1.25, output: 10, cacheRead: 0.125))
        add(["gpt-5-mini", "gpt-5-mini-2025-08-07"], ModelPrice(input: 0.25, output: 2, cacheRead: 0.025))
        add(["gpt-4.1", "gpt-4.1-2025-04-14"], ModelPrice(input: 2, output: 8, cacheRead: 0.5))
        add(["gpt-4o", "gpt-4o-2024-08-06"], ModelPrice(input: 2.5, output: 10, cacheRead: 1.25))
        add(["gpt-4o-mini", "gpt-4o-mini-2024-07-18"], ModelPrice(input: 0.15, output: 0.6, cacheRead: 0.075))
        add(["o3", "o3-2025-04-16"], ModelPrice(input: 2, output: 8, cacheRead: 0.5))
        add(["o4-mini", "o4-mini-2025-04-16"], ModelPrice(input: 1.1, output: 4.4, cacheRead: 0.275))
        // Anthropic (cache writes of 5 minutes).
        add(["claude-opus-4-1", "claude-opus-4-1-20250805"], ModelPrice(input: 15, output: 75, cacheRead: 1.5, cacheCreation: 18.75))
        add(["claude-sonnet-4-5", "claude-sonnet-4-5-20250929"], ModelPrice(input: 3, output: 15, cacheRead: 0.3, cacheCreation: 3.75))
        add(["claude-haiku-4-5", "claude-haiku-4-5-20251001"], ModelPrice(input: 1, output: 5, cacheRead: 0.1, cacheCreation: 1.25))
        // Google (prompts up to 200k tokens).
        add(["gemini-2.5-pro"], ModelPrice(input: 1.25, output: 10, cacheRead: 0.31))
        add(["gemini-2.5-flash"], ModelPrice(input: 0.3, output: 2.5, cacheRead: 0.075))
        return t
    }()
}
