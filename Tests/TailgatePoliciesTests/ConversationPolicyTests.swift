import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgatePolicies
@testable import TailgateWire

/// Synthetic multi-turn traffic and the Horvitz–Thompson check shared by the conversation and check-warning tests.
enum Conversations {
    /// `traces` turns: conversations of 1–8 turns (10 % of the traces name no conversation), up to 64 conversations
    /// going on at once with their turns interleaved, random trace IDs, 1–20 spans, `errorPercent` % of turns with an
    /// ERROR span, one trace decided every 0.5 ms of decision clock.
    static func population(traces: Int = 100_000, seed: UInt64 = 0xC0_11E5, errorPercent: UInt64 = 5) -> [TraceSummary] {
        var rng = SplitMix64(seed: seed)
        var active: [(conversation: UInt64, turnsLeft: Int)] = []
        var out: [TraceSummary] = []
        out.reserveCapacity(traces)
        while out.count < traces {
            var s = TraceSummary(traceID: TraceID(hi: rng.next(), lo: rng.next()))
            s.spanCount = Int(1 + rng.next() % 20)
            s.spanBytes = s.spanCount * 400
            if rng.next() % 100 < errorPercent { s.statusMask = StatusCode.error.bit }
            s.decidedAt = 1_000_000_000 + UInt64(out.count) * 500_000
            if rng.next() % 10 == 0 {
                s.conversation = 0
            } else {
                if active.count < 64 { active.append((rng.next() | 1, Int(1 + rng.next() % 8))) }
                let i = Int(rng.next() % UInt64(active.count))
                s.conversation = active[i].conversation
                active[i].turnsLeft -= 1
                if active[i].turnsLeft == 0 { active.remove(at: i) }
            }
            out.append(s)
        }
        return out
    }

    struct Estimate: CustomStringConvertible {
        var offered = 0
        var kept = 0
        /// Σ adjusted count (1/p) of the kept traces.
        var estimate = 0.0
        /// √ Σ over conversations (a trace naming none is its own) of (Σ its kept turns' adjusted counts − its turns)²:
        /// the spread of the estimate when whole conversations are kept or dropped together.
        var sigma = 0.0
        /// Keeps stated with probability 0 (an infinite adjusted count).
        var infinite = 0
        /// Keeps stated as consistent (`th` written).
        var consistent = 0

        var deviation: Double { abs(estimate - Double(offered)) / max(sigma, 1) }
        var honest: Bool { infinite == 0 && deviation <= 4 }
        var description: String {
            "kept \(kept) of \(offered); Σ adjusted \(Int(estimate.rounded())) (σ \(Int(sigma.rounded())), \((deviation * 100).rounded() / 100) σ off)"
                + (infinite > 0 ? "; \(infinite) keeps of probability 0" : "")
        }
    }

    /// `excludeDropped`: traces a `drop` policy drops are not counted as offered — for drops on deterministic
    /// conditions, a filter the weights rightly do not cover.
    static func estimate(_ set: PolicySet, _ population: [TraceSummary], excludeDropped: Bool = false) -> Estimate {
        let engine = PolicyEngine(set)
        var out = Estimate(offered: population.count)
        var groups: [UInt64: (y: Double, n: Double)] = [:]
        for (i, trace) in population.enumerated() {
            let key = trace.conversation != 0 ? trace.conversation : UInt64(i) << 1  // conversations are odd
            var g = groups[key] ?? (0, 0)
            let d = engine.decide(trace)
            if excludeDropped, !d.keep, d.policy >= 0, set.policies[d.policy].policy is DropPolicy {
                out.offered -= 1
                continue
            }
            g.n += 1
            if d.keep {
                out.kept += 1
                if case .consistent = d.weight { out.consistent += 1 }
                let p = d.weight.probability
                if p <= 0 { out.infinite += 1 } else {
                    out.estimate += 1 / p
                    g.y += 1 / p
                }
            }
            groups[key] = g
        }
        out.sigma = groups.values.reduce(0) { $0 + ($1.y - $1.n) * ($1.y - $1.n) }.squareRoot()
        return out
    }
}

@Suite struct ConversationPolicyTests {
    static let catchAll = "{name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: rest}}"

    // MARK: weights

    /// Over 100,000 turns in conversations of 1–8 turns, the adjusted counts of the kept turns add up to the turns
    /// offered, within 4 σ (σ of whole conversations), for the policy alone, with keep_after_error, combined, and next
    /// to the catch-all.
    @Test(arguments: [
        "{name: c, type: conversation, conversation: {sampling_percentage: 30}}",
        "{name: c, type: conversation, conversation: {sampling_percentage: 30, without_conversation: none}}",
        "{name: c, type: conversation, conversation: {sampling_percentage: 30, hash_salt: rest}}",  // no-ID traces nested with the catch-all
        "{name: c, type: conversation, conversation: {sampling_percentage: 30, keep_after_error: true}}",
        "{name: c, type: conversation, conversation: {sampling_percentage: 0, keep_after_error: true, max_conversations: 50, remember_for: 20ms}}",
        "{name: e, type: status_code, status_code: {status_codes: [ERROR]}}, {name: c, type: conversation, conversation: {sampling_percentage: 20, keep_after_error: true}}",
        "{name: a, type: and, and: {and_sub_policy: [{name: c, type: conversation, conversation: {sampling_percentage: 50}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 40}}]}}",
        "{name: n, type: not, not: {not_sub_policy: {name: c, type: conversation, conversation: {sampling_percentage: 70}}}}",
        "{name: c, type: conversation, conversation: {sampling_percentage: 20}}, {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 12000}}",
        "{name: c, type: conversation, conversation: {sampling_percentage: 20}}, {name: p, type: probabilistic, probabilistic: {sampling_percentage: 20, mode: consistent}}",
    ])
    func adjustedCountsAddUpToTheTurnsOffered(policy: String) throws {
        let set = try PolicySet.parse("policies: [\(policy), \(Self.catchAll)]", file: "w.yaml")
        let e = Conversations.estimate(set, Conversations.population())
        print("conversation weights: \(policy) + catch-all: \(e)")
        #expect(e.kept > 0 && e.kept < e.offered)
        #expect(e.honest, "\(e)")
    }

    /// Alone (no catch-all), with keep_after_error: what the policy keeps still adds up — the later turns kept with
    /// weight 1 are exactly the ones that are always kept.
    @Test func keepAfterErrorAloneAddsUp() throws {
        let set = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 10, keep_after_error: true}}]", file: "w.yaml")
        let e = Conversations.estimate(set, Conversations.population())
        print("conversation weights: 10 % + keep_after_error alone: \(e)")
        #expect(e.honest, "\(e)")
        #expect(e.consistent == 0)
    }

    /// No systematic bias: over 16 independent populations of 25,000 turns (conversation draws and catch-all), the
    /// deviations of Σ adjusted count from the turns offered, in σ, average to 0 within 4 standard errors.
    @Test(arguments: [
        "{name: c, type: conversation, conversation: {sampling_percentage: 30}}",
        "{name: c, type: conversation, conversation: {sampling_percentage: 30, keep_after_error: true}}",
    ]) func noBiasAcrossPopulations(policy: String) throws {
        let set = try PolicySet.parse("policies: [\(policy), \(Self.catchAll)]", file: "w.yaml")
        let k = 16
        let z = (0..<k).map { i -> Double in
            let e = Conversations.estimate(set, Conversations.population(traces: 25_000, seed: 0xB1A5 &+ UInt64(i) &* 7919))
            return (e.estimate - Double(e.offered)) / max(e.sigma, 1)
        }
        let mean = z.reduce(0, +) / Double(k)
        print("conversation weights: \(policy): mean deviation over \(k) populations \((mean * 100).rounded() / 100) σ")
        #expect(abs(mean) <= 4 / Double(k).squareRoot(), "\(z)")
        #expect(z.allSatisfy { abs($0) <= 4.5 }, "\(z)")
    }

    /// The test can fail: weighing the turns kept after an error by the percentage (1/p) instead of 1 — or the
    /// conversation draw as if it were the catch-all's trace-ID hash — misses by far more than 4 σ.
    @Test func wrongWeightsAreCaught() throws {
        let population = Conversations.population()
        let set = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 10, keep_after_error: true}}]", file: "w.yaml")
        let engine = PolicyEngine(set)
        var wrong = 0.0
        for t in population {
            let d = engine.decide(t)
            if d.keep { wrong += d.weight.isCertain ? 10 : 1 / d.weight.probability }
        }
        #expect(abs(wrong - Double(population.count)) > 4 * Conversations.estimate(set, population).sigma)

        // Nested instead of independent: the union of 30 % (conversation) and 10 % (catch-all) stated as 30 %.
        let both = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 30}}, \(Self.catchAll)]", file: "w.yaml")
        var nested = 0.0
        for t in population where PolicyEngine(both).decide(t).keep { nested += 1 / 0.3 }
        #expect(abs(nested - Double(population.count)) > 4 * Conversations.estimate(both, population).sigma)
    }

    /// A conversation keep is hashed: no `th` (consistent weights would claim R ≥ T, which the draw says nothing of),
    /// `tailgate.sample_rate` = 1/p; with another source the probability is the union of independent chances.
    @Test func keepsStateAHashedWeight() throws {
        let population = Conversations.population(traces: 5_000)
        let alone = PolicyEngine(try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 25}}]", file: "w.yaml"))
        let withCatchAll = PolicyEngine(try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 25}}, \(Self.catchAll)]", file: "w.yaml"))
        let nested = PolicyEngine(try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 25, hash_salt: rest}}, \(Self.catchAll)]", file: "w.yaml"))
        var checked = 0
        for t in population {
            let d = alone.decide(t)
            if d.keep { #expect(d.weight == .hashed(probability: 0.25)); checked += 1 }
            let u = withCatchAll.decide(t)
            if u.keep { #expect(abs(u.weight.probability - (1 - 0.75 * 0.9)) < 1e-12) }
            let n = nested.decide(t)
            // A trace naming no conversation draws on the trace-ID hash with the same salt as the catch-all: nested.
            if n.keep && t.conversation == 0 { #expect(n.weight == .hashed(probability: 0.25)) }
        }
        #expect(checked > 1000)
    }

    // MARK: whole conversations

    /// Every turn of a conversation gets the same verdict, and the share of conversations kept is the percentage.
    @Test(arguments: [10.0, 33.0, 75.0]) func conversationsAreKeptWhole(percentage: Double) throws {
        let set = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: \(percentage), without_conversation: none}}]", file: "w.yaml")
        let engine = PolicyEngine(set)
        var verdicts: [UInt64: Set<Bool>] = [:]
        var noConversationKept = 0
        for t in Conversations.population(traces: 50_000) {
            let keep = engine.decide(t).keep
            if t.conversation == 0 { if keep { noConversationKept += 1 }; continue }
            verdicts[t.conversation, default: []].insert(keep)
        }
        #expect(verdicts.values.allSatisfy { $0.count == 1 }, "a conversation was split")
        #expect(noConversationKept == 0)
        let n = Double(verdicts.count), p = percentage / 100
        let kept = Double(verdicts.values.filter { $0 == [true] }.count)
        #expect(abs(kept - n * p) <= 4 * (n * p * (1 - p)).squareRoot(), "\(kept) of \(n) conversations kept")
    }

    /// The draw is XXH3-64 of the conversation hash's 8 big-endian bytes seeded with XXH3-64 of the salt: values
    /// computed independently with Python's xxhash (what the end-to-end test uses to predict the kept conversations).
    @Test(arguments: [
        ("conv-0001", "", UInt64(0x3db8_37ff_78a1_12ca), UInt64(0x7039_6cb5_a914_97c5)),
        ("conv-0001", "tenant-a", 0x3db8_37ff_78a1_12ca, 0x05ff_6d3a_eb22_9bdc),
        ("a3f1c2d4-5e6f-4a1b-9c8d-7e6f5a4b3c2d", "", 0x2987_d46e_7aee_49b4, 0x4ea2_c8f2_21b0_2170),
    ]) func theDrawIsTheSameEverywhere(id: String, salt: String, conversation: UInt64, draw: UInt64) {
        let h = Array(id.utf8).withUnsafeBytes { OTLPScanner.conversationHash($0) }
        #expect(h == conversation)
        #expect(ConversationPolicy.conversationDraw(h, seed: salt.isEmpty ? 0 : xxh3(salt)) == draw)
        var s = TraceSummary(traceID: tid(1))
        s.conversation = h
        // 0.438 (no salt) and 0.023 (tenant-a) of the way through the hash range.
        let kept = ConversationPolicy(percentage: 30, salt: salt).evaluate(s).isSample
        #expect(kept == (Double(draw) / 18_446_744_073_709_551_616.0 < 0.3))
    }

    /// Through the real scanner and buffer: the conversation is read from any span (the first of the keys it carries),
    /// turns with the same ID in different traces agree, and `session.id` is the default fallback key.
    @Test func turnsAreReadFromTheWire() throws {
        let set = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 50, without_conversation: none}}]", file: "t.yaml")
        let runtime = PolicyRuntime(set)
        func turn(_ n: UInt64, _ attributes: [(String, TestValue)], onRoot: Bool = false) -> Decision {
            let spans = [
                TestSpan(trace: tid(n), span: 1, attributes: onRoot ? attributes : []),
                TestSpan(trace: tid(n), span: 2, parent: 1, attributes: onRoot ? [] : attributes),
            ]
            return run(runtime, [TestResource(service: "agent", spans: spans)])
        }
        // Find one kept and one dropped conversation ID among a few.
        var verdicts: [String: Bool] = [:]
        for i in 0..<20 { verdicts["conv-\(i)"] = turn(UInt64(100 + i), [("gen_ai.conversation.id", .string("conv-\(i)"))]).keep }
        let keptID = try #require(verdicts.first { $0.value }?.key)
        let droppedID = try #require(verdicts.first { !$0.value }?.key)
        for (n, onRoot) in [(UInt64(200), true), (201, false), (202, true)] {
            #expect(turn(n, [("gen_ai.conversation.id", .string(keptID))], onRoot: onRoot).keep)
            #expect(!turn(n + 10, [("gen_ai.conversation.id", .string(droppedID))], onRoot: onRoot).keep)
            // session.id names the same conversation when gen_ai.conversation.id is absent; gen_ai.conversation.id wins.
            #expect(turn(n + 20, [("session.id", .string(keptID))], onRoot: onRoot).keep)
            #expect(!turn(n + 30, [("gen_ai.conversation.id", .string(droppedID)), ("session.id", .string(keptID))], onRoot: onRoot).keep)
        }
        // Without an ID (and without_conversation: none): not kept. A non-string ID names nothing.
        #expect(!turn(300, []).keep)
        #expect(!turn(301, [("gen_ai.conversation.id", .int(7))]).keep)
    }

    @Test func customKeys() throws {
        let set = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 100, keys: [app.thread], without_conversation: none}}]", file: "t.yaml")
        #expect(set.plan.conversationKeys == ["app.thread"])
        let runtime = PolicyRuntime(set)
        #expect(run(runtime, [TestResource(service: "a", spans: [TestSpan(trace: tid(1), span: 1, attributes: [("app.thread", .string("t1"))])])]).keep)
        #expect(!run(runtime, [TestResource(service: "a", spans: [TestSpan(trace: tid(2), span: 1, attributes: [("gen_ai.conversation.id", .string("t1"))])])]).keep)
    }

    // MARK: keep_after_error

    /// (turn: conversation, ERROR?, minutes since the start, kept?, kept for certain?) with 0 % (only errors and
    /// what follows them are kept), max_conversations 2 and remember_for 1h.
    static let memoryCases: [(String, [(UInt64, Bool, Double, Bool)])] = [
        ("a turn before the error is not kept; the error and every later turn are", [
            (1, false, 0, false), (1, true, 1, true), (1, false, 2, true), (1, false, 50, true), (2, false, 51, false)]),
        ("remembered for an hour after the conversation's latest turn, then forgotten", [
            (1, true, 0, true), (1, false, 59, true), (1, false, 118, true), (1, false, 179, false), (1, false, 180, false)]),
        ("a new error after forgetting remembers it again", [
            (1, true, 0, true), (1, false, 61, false), (1, true, 62, true), (1, false, 63, true)]),
        ("at most 2 conversations: the least recently active is forgotten first", [
            (1, true, 0, true), (2, true, 1, true), (1, false, 2, true), (3, true, 3, true),
            (2, false, 4, false), (1, false, 5, true), (3, false, 6, true)]),
        ("other conversations are not affected", [
            (1, true, 0, true), (2, false, 1, false), (3, false, 2, false), (1, false, 3, true)]),
    ]

    @Test(arguments: memoryCases.indices) func keepAfterError(index: Int) throws {
        let (what, turns) = Self.memoryCases[index]
        let set = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 0, keep_after_error: true, max_conversations: 2, remember_for: 1h}}]", file: "t.yaml")
        let engine = PolicyEngine(set)
        for (i, (conversation, error, minutes, kept)) in turns.enumerated() {
            var t = TraceSummary(traceID: tid(UInt64(1000 + i)))
            t.conversation = conversation
            if error { t.statusMask = StatusCode.error.bit }
            t.decidedAt = 5_000_000_000 + UInt64(minutes * 60e9)
            let d = engine.decide(t)
            #expect(d.keep == kept, "\(what): turn \(i)")
            if d.keep { #expect(d.weight == .certain, "\(what): turn \(i)") }
        }
    }

    @Test func forgettingIsCounted() throws {
        let policy = ConversationPolicy(percentage: 0, keepAfterError: true, maxConversations: 1000, rememberFor: .seconds(60))
        for i in 0..<5000 {
            var t = TraceSummary(traceID: tid(UInt64(i)))
            t.conversation = UInt64(i + 1)
            t.statusMask = StatusCode.error.bit
            t.decidedAt = UInt64(i) * 1_000_000  // 1 ms apart: none expires
            policy.observe(t)
        }
        #expect(policy.memoryStatistics == {
            var s = ConversationMemory.Statistics()
            s.size = 1000; s.remembered = 5000; s.forgottenEarly = 4000
            return s
        }())
        // The oldest were forgotten, the newest are remembered.
        var old = TraceSummary(traceID: tid(1)); old.conversation = 1; old.decidedAt = 5_000_000_000
        var new = TraceSummary(traceID: tid(2)); new.conversation = 5000; new.decidedAt = 5_000_000_000
        #expect(!policy.evaluate(old).isSample && policy.evaluate(new).isSample)
        // A minute and more later, they expire (counted when the memory next looks at them).
        var later = TraceSummary(traceID: tid(3)); later.conversation = 9999; later.statusMask = StatusCode.error.bit
        later.decidedAt = 70_000_000_000
        policy.observe(later)
        #expect(!policy.evaluate(new.with(decidedAt: 70_000_000_000)).isSample)
        #expect(policy.memoryStatistics.size == 1 && policy.memoryStatistics.expired == 1000)
    }

    /// The memory is fed by every decided trace whatever decides it: an error kept by an earlier `status_code` policy
    /// (the engine stops there) still makes the conversation's later turns kept by the conversation policy.
    @Test func errorsKeptByAnotherPolicyAreRemembered() throws {
        let set = try PolicySet.parse("""
            policies:
              - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
              - {name: conversations, type: conversation, conversation: {sampling_percentage: 0, keep_after_error: true}}
            """, file: "t.yaml")
        let engine = PolicyEngine(set)
        var t = TraceSummary(traceID: tid(1)); t.conversation = 42; t.statusMask = StatusCode.error.bit; t.decidedAt = 1
        #expect(engine.decide(t) == Decision(keep: true, policy: 0))
        var next = TraceSummary(traceID: tid(2)); next.conversation = 42; next.decidedAt = 2
        #expect(engine.decide(next) == Decision(keep: true, policy: 1))
        // A dropped turn of another conversation whose late span is an error is revised, and remembered.
        var late = TraceSummary(traceID: tid(3)); late.conversation = 43; late.decidedAt = 3
        #expect(!engine.decide(late).keep)
        late.statusMask = StatusCode.error.bit
        #expect(engine.revise(late)?.keep == true)
        var after = TraceSummary(traceID: tid(4)); after.conversation = 43; after.decidedAt = 4
        #expect(engine.decide(after) == Decision(keep: true, policy: 1))
    }

    /// Through the real scanner and buffer on a manual clock: turn 2 fails, turns 3 and 4 are kept.
    @Test func keepAfterErrorThroughTheBuffer() throws {
        let set = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 0, keep_after_error: true, remember_for: 10m}}]", file: "t.yaml")
        let runtime = PolicyRuntime(set)
        let clock = ManualClock()
        let buffer = TraceBuffer(configuration: BufferConfiguration(), decider: runtime, clock: clock)
        var kept: [Bool] = []
        for turn in 1...4 {
            let span = TestSpan(trace: tid(UInt64(turn)), span: 1, status: turn == 2 ? .error : .ok,
                                attributes: [("gen_ai.conversation.id", .string("chat-7"))])
            let body = exportRequest([TestResource(service: "agent", spans: [span])])
            var scanned = ScannedRequest()
            body.withUnsafeBytes { raw in
                try! runtime.scanner.scan(raw, into: &scanned)
                _ = buffer.insert(scanned, body: raw)
            }
            clock.advance(by: .seconds(30))
            let decided = buffer.decideExpired()
            #expect(decided.count == 1)
            kept.append(decided.first?.decision.keep ?? false)
        }
        #expect(kept == [false, true, true, true])
    }

    // MARK: the file

    @Test(arguments: [
        ("policies:\n  - {name: c, type: conversation, conversation: {keys: [a]}}\n",
         ["2:35: error: conversation policy needs 'sampling_percentage' (0 to 100)"]),
        ("policies:\n  - {name: c, type: conversation, conversation: {sampling_percentage: 10, keys: []}}\n",
         ["2:75: error: keys must name at least one attribute, e.g. [gen_ai.conversation.id]"]),
        ("policies:\n  - {name: c, type: conversation, conversation: {sampling_percentage: 10, without_conversation: trace-id}}\n",
         ["2:97: error: without_conversation must be trace_id or none, got 'trace-id'; did you mean 'trace_id'?"]),
        ("policies:\n  - {name: c, type: conversation, conversation: {sampling_percentage: 10, max_conversations: 5}}\n",
         ["2:75: warning: 'max_conversations' has no effect without keep_after_error: true"]),
        ("policies:\n  - {name: c, type: conversation, conversation: {sampling_percentage: 10, keep_after_error: true, remember_for: soon}}\n",
         ["2:113: error: remember_for must be a duration such as 500ms, 5s, 1m30s, got 'soon'"]),
        ("policies:\n  - {name: c, type: conversation, conversation: {sampling_percentage: 10, keep_after_error: true, max_conversations: 0}}\n",
         ["2:118: error: max_conversations must be between 1 and 10000000, got 0"]),
        ("policies:\n  - {name: c, type: conversation, conversation: {sampling_percentage: 0}}\n",
         ["2:12: warning: policy 'c' can never keep a trace", "1:1: warning: no policy can keep a trace: every trace will be dropped"]),
        ("policies:\n  - {name: c, type: conversation, conversation: {sampling_percentage: 0, keep_after_error: true}}\n", []),
        ("policies:\n  - {name: c, type: conversation, conversation: {sampling_percentage: 10}}\n  - {name: d, type: conversation, conversation: {sampling_percentage: 10, keys: [session.id]}}\n",
         ["3:81: error: policies name different conversation keys (gen_ai.conversation.id, session.id and session.id): a trace has one conversation, so every policy must use the same keys"]),
        ("policies:\n  - name: c\n    type: conversation\n    sampling_percentage: 10\n",
         ["4:5: error: unknown key 'sampling_percentage' in a policy; 'sampling_percentage' belongs inside the 'conversation:' block",
          "3:11: error: conversation policy needs a 'conversation:' block, e.g. conversation: {sampling_percentage: 10}"]),
    ] as [(String, [String])])
    func fileDiagnostics(text: String, expected: [String]) {
        #expect(diagnostics(text) == expected)
    }

    @Test func defaults() throws {
        let set = try PolicySet.parse("policies: [{name: c, type: conversation, conversation: {sampling_percentage: 10}}]", file: "t.yaml")
        let c = try #require(set.policies.first?.policy as? ConversationPolicy)
        #expect(c.conversationKeys == ["gen_ai.conversation.id", "session.id"])
        #expect(set.plan.conversationKeys == ["gen_ai.conversation.id", "session.id"])
        #expect(c.fallback == .traceID && !c.keepsAfterError && c.seed == 0)
    }
}

extension TraceSummary {
    func with(decidedAt: UInt64) -> TraceSummary {
        var s = self
        s.decidedAt = decidedAt
        return s
    }
}
