import CZlib
import Testing
import TailgateTestSupport
@testable import TailgateWire

private func scan(_ bytes: [UInt8], plan: AttributePlan = AttributePlan()) throws(ScanError) -> ScannedRequest {
    var result = ScannedRequest()
    let scanner = OTLPScanner(plan: plan)
    let outcome = bytes.withUnsafeBytes { raw in Result { () throws(ScanError) in try scanner.scan(raw, into: &result) } }
    try outcome.get()
    return result
}

private var tokenPlan: AttributePlan {
    var plan = AttributePlan()
    _ = try! plan.slot(.firstOf(keys: ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"], condition: nil))
    _ = try! plan.slot(.firstOf(keys: ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"], condition: nil))
    return plan
}

@Suite struct ScannerTests {
    @Test func readsDecisionFieldsOfEachSpan() throws {
        let root = TestSpan(trace: tid(1), span: 10, name: "agent.run", start: 100, end: 900, status: .ok)
        let child = TestSpan(trace: tid(1), span: 11, parent: 10, name: "llm.call", start: 200, end: 800, status: .error)
        let body = exportRequest(spans: [root, child])
        let r = try scan(body)
        #expect(r.spans.count == 2)
        #expect(r.scopes.count == 1)
        #expect(r.rejectedSpans == 0)
        let s0 = r.spans[0], s1 = r.spans[1]
        #expect(s0.traceID == tid(1) && s0.spanID == 10 && s0.parentSpanID == 0 && s0.isRoot)
        #expect(s0.startTime == 100 && s0.endTime == 900 && s0.status == .ok)
        #expect(s1.parentSpanID == 10 && !s1.isRoot && s1.status == .error)
        // The reported range is exactly the span's payload.
        #expect(Array(body[s1.bytes]) == child.encoded)
    }

    @Test(arguments: [
        // (attributes, expected input slot, expected output slot)
        ([("gen_ai.usage.input_tokens", Int64(120)), ("gen_ai.usage.output_tokens", 30)], Int64(120), Int64(30)),
        ([("gen_ai.usage.prompt_tokens", 7), ("gen_ai.usage.completion_tokens", 8)], 7, 8),
        // Current name wins over the deprecated one on the same span, in either order: counted once.
        ([("gen_ai.usage.prompt_tokens", 5), ("gen_ai.usage.input_tokens", 50)], 50, 0),
        ([("gen_ai.usage.input_tokens", 50), ("gen_ai.usage.prompt_tokens", 5)], 50, 0),
        ([("other", 99), ("gen_ai.usage.input_tokens_x", 1)], 0, 0),
    ] as [([(String, Int64)], Int64, Int64)])
    func extractsTokenAttributes(attributes: [(String, Int64)], input: Int64, output: Int64) throws {
        let span = TestSpan(trace: tid(2), span: 1, ints: attributes, strings: [("gen_ai.request.model", "gpt")])
        let r = try scan(exportRequest(spans: [span]), plan: tokenPlan)
        #expect(r.spans[0].sums[0] == input)
        #expect(r.spans[0].sums[1] == output)
    }

    @Test func conversationIsTheFirstKeyTheSpanCarries() throws {
        var plan = AttributePlan()
        try plan.conversation(keys: ["gen_ai.conversation.id", "session.id"])
        let both = TestSpan(trace: tid(3), span: 1, strings: [("session.id", "s-1"), ("gen_ai.conversation.id", "conv-7")])
        let sessionOnly = TestSpan(trace: tid(3), span: 2, strings: [("session.id", "conv-7")])
        let none = TestSpan(trace: tid(3), span: 3, strings: [("gen_ai.conversation.id", "")])
        let r = try scan(exportRequest(spans: [both, sessionOnly, none]), plan: plan)
        let expected = Array("conv-7".utf8).withUnsafeBytes { OTLPScanner.conversationHash($0) }
        #expect(r.spans[0].conversation == expected)
        #expect(r.spans[1].conversation == expected)  // the same ID under the second key hashes alike
        #expect(r.spans[2].conversation == 0)  // an empty ID is no conversation
        // A second policy naming other keys is refused: a trace has one conversation.
        #expect(throws: AttributePlan.PlanError.self) { try plan.conversation(keys: ["session.id"]) }
    }

    @Test func attributesAreIgnoredWithoutAPlan() throws {
        let span = TestSpan(trace: tid(2), span: 1, ints: [("gen_ai.usage.input_tokens", 5)])
        let r = try scan(exportRequest(spans: [span]))
        #expect(r.spans[0].sums == SIMD8<Int64>())
    }

    @Test func skipsUnknownFieldsOfEveryWireType() throws {
        var w = ProtoWriter()
        w.appendBytesField(1, tid(3).bytes)
        w.appendVarintField(100, 7)                // unknown varint
        w.appendFixed32Field(101, 9)               // unknown fixed32
        w.appendFixed64Field(102, 9)               // unknown fixed64
        w.appendTag(103, .startGroup)              // unknown group with a nested field
        w.appendVarintField(1, 1)
        w.appendTag(103, .endGroup)
        w.appendBytesField(2, be64(5))
        w.appendStringField(104, "x")
        let body = exportRequestWithRawSpan(w.bytes)
        let r = try scan(body)
        #expect(r.spans.count == 1)
        #expect(r.spans[0].traceID == tid(3) && r.spans[0].spanID == 5)
    }

    @Test func rejectsSpansWithInvalidIDsButKeepsTheRest() throws {
        var zeroTrace = TestSpan(trace: TraceID(hi: 0, lo: 0), span: 1)
        zeroTrace.name = "zero"
        var shortSpan = ProtoWriter()
        shortSpan.appendBytesField(1, tid(4).bytes)
        shortSpan.appendBytesField(2, [1, 2, 3])
        let good = TestSpan(trace: tid(4), span: 2)
        var w = ProtoWriter()
        w.appendMessageField(1) { rs in
            rs.appendMessageField(2) { ss in
                ss.appendBytesField(2, zeroTrace.encoded)
                ss.appendBytesField(2, shortSpan.bytes)
                ss.appendBytesField(2, good.encoded)
            }
        }
        let r = try scan(w.bytes)
        #expect(r.spans.count == 1)
        #expect(r.rejectedSpans == 2)
        #expect(r.rejectionMessage?.contains("trace_id") == true)
    }

    @Test(arguments: [
        // (bytes, expected fragment of the message)
        ([0x0A, 0x05, 0x12], "runs past the end"),                    // resource_spans length 5, only 1 byte
        ([0x0A], "truncated varint"),
        ([0x0F, 0x00], "invalid wire type"),                           // wire type 7
        ([0x0A, 0x02, 0x12, 0x80], "truncated varint"),              // scope_spans length truncated inside
        ([0x0A, 0x04, 0x12, 0x02, 0x12, 0x05], "runs past the end"), // span length 5 inside 2-byte scope
        ([0x0C], "unexpected end-group"),
    ] as [([UInt8], String)])
    func malformedInputGivesAClearError(bytes: [UInt8], fragment: String) {
        #expect {
            _ = try scan(bytes)
        } throws: { error in
            guard let e = error as? ScanError else { return false }
            return e.description.contains(fragment) && e.description.hasPrefix("malformed protobuf:")
        }
    }

    @Test func malformedSpanIsRejectedAloneWithItsPath() throws {
        var w = ProtoWriter()
        w.appendMessageField(1) { rs in
            rs.appendMessageField(2) { ss in ss.appendBytesField(2, TestSpan(trace: tid(1), span: 1).encoded) }
            rs.appendMessageField(2) { ss in
                ss.appendBytesField(2, TestSpan(trace: tid(1), span: 2).encoded)
                ss.appendBytesField(2, [0x39, 0x01])  // span 1 of scope 1: field 7 (fixed64) truncated
                ss.appendBytesField(2, TestSpan(trace: tid(1), span: 3).encoded)
            }
        }
        let r = try scan(w.bytes)
        #expect(r.spans.map(\.spanID) == [1, 2, 3])
        #expect(r.rejectedSpans == 1)
        #expect(r.rejectionMessage == "truncated fixed64 at resourceSpans[0].scopeSpans[1].spans[1]")
    }

    @Test func errorNamesThePathOfTheBadScope() throws {
        var w = ProtoWriter()
        w.appendMessageField(1) { rs in
            rs.appendMessageField(2) { ss in ss.appendBytesField(2, TestSpan(trace: tid(1), span: 1).encoded) }
            rs.appendMessageField(2) { ss in
                ss.appendBytesField(2, TestSpan(trace: tid(1), span: 2).encoded)
                ss.bytes += [0x1A, 0x05]  // schema_url whose length runs past the ScopeSpans
            }
        }
        do {
            _ = try scan(w.bytes)
            Issue.record("expected an error")
        } catch {
            #expect(error.path == "resourceSpans[0].scopeSpans[1]")
        }
    }

    @Test func emptyScopesAndResourcesCostNothing() throws {
        // 1M empty ScopeSpans (2 bytes each) in one resource, 1000 empty resources, then one span.
        var w = ProtoWriter(capacity: 2_100_000)
        w.appendTag(1, .lengthDelimited)
        w.appendVarint(2_000_000)
        for _ in 0..<1_000_000 { w.bytes += [0x12, 0x00] }
        for _ in 0..<1000 { w.bytes += [0x0A, 0x00] }
        w.bytes += exportRequest(spans: [TestSpan(trace: tid(1), span: 7)])
        let r = try scan(w.bytes)
        #expect(r.scopes.count == 1)
        #expect(r.spans.count == 1 && r.spans[0].scope == 0 && r.spans[0].spanID == 7)
        #expect(r.rejectedSpans == 0)
    }

    @Test func scopeIndicesCountOnlyScopesWithAcceptedSpans() throws {
        let bad = TestSpan(trace: TraceID(hi: 0, lo: 0), span: 9)
        let body = exportRequest([
            TestResource(service: "a", scopes: [("empty", []), ("s1", [TestSpan(trace: tid(1), span: 1)]), ("rejected", [bad]),
                                                ("s3", [TestSpan(trace: tid(1), span: 2), bad, TestSpan(trace: tid(2), span: 3)])]),
            TestResource(service: "nothing", scopes: [("empty", []), ("rejected", [bad])]),
            TestResource(service: "b", scopes: [("s4", [TestSpan(trace: tid(3), span: 4)])]),
        ])
        let r = try scan(body)
        #expect(r.rejectedSpans == 3)
        #expect(r.spans.map(\.spanID) == [1, 2, 3, 4])
        #expect(r.spans.map(\.scope) == [0, 1, 1, 2])
        #expect(r.scopes.count == 3)
        #expect(r.scopes[0].resource === r.scopes[1].resource)
        #expect(r.scopes[1].resource !== r.scopes[2].resource)
        // Each span's scope is the right one: re-framing gives every span its scope and service back.
        let decoded = try decodeRequest(body)
        var framer = RequestFramer()
        body.withUnsafeBytes { raw in
            for s in r.spans { framer.append(scope: r.scopes[Int(s.scope)], span: UnsafeRawBufferPointer(rebasing: raw[s.bytes])) }
        }
        let reframed = try decodeRequest(framer.encode())
        #expect(Set(reframed) == Set(decoded.filter { $0.spanID != 9 }))
        #expect(reframed.map(\.scope) == ["s1", "s3", "s3", "s4"])
    }

    @Test func emptyRequestHasNoSpans() throws {
        let r = try scan([])
        #expect(r.spans.isEmpty && r.scopes.isEmpty)
    }
}

/// A request holding one span whose payload is `span`.
func exportRequestWithRawSpan(_ span: [UInt8]) -> [UInt8] {
    var w = ProtoWriter()
    w.appendMessageField(1) { rs in rs.appendMessageField(2) { ss in ss.appendBytesField(2, span) } }
    return w.bytes
}

@Suite struct FramerTests {
    @Test func reframedRequestHoldsTheSameSpansGroupedByResourceAndScope() throws {
        let a1 = TestSpan(trace: tid(1), span: 1, name: "a1")
        let a2 = TestSpan(trace: tid(1), span: 2, parent: 1, name: "a2")
        let b1 = TestSpan(trace: tid(2), span: 3, name: "b1")
        let t1 = TestSpan(trace: tid(1), span: 4, parent: 2, name: "tool")
        let req1 = exportRequest([
            TestResource(service: "agent", scopes: [("s1", [a1, b1]), ("s2", [a2])]),
            TestResource(service: "tools", spans: [t1]),
        ])
        // A second request from the same agent service and scope: must merge into the same groups.
        let a3 = TestSpan(trace: tid(1), span: 5, parent: 1, name: "a3")
        let req2 = exportRequest([TestResource(service: "agent", scopes: [("s1", [a3])])])

        var framer = RequestFramer()
        for req in [req1, req2] {
            let r = try scan(req)
            req.withUnsafeBytes { raw in
                for s in r.spans where s.traceID == tid(1) {
                    framer.append(scope: r.scopes[Int(s.scope)], span: UnsafeRawBufferPointer(rebasing: raw[s.bytes]))
                }
            }
        }
        #expect(framer.spanCount == 4)
        let out = framer.encode()
        let decoded = try decodeRequest(out)
        #expect(decoded.map(\.spanID).sorted() == [1, 2, 4, 5])
        #expect(Set(decoded.map(\.traceID)) == [tid(1)])
        // Span bytes are the originals.
        #expect(decoded.first { $0.spanID == 2 }?.payload == a2.encoded)
        // Grouping: agent/s1 holds spans 1 and 5 in one ScopeSpans; agent/s2 holds 2; tools holds 4.
        #expect(decoded.filter { $0.service == "agent" && $0.scope == "s1" }.map(\.spanID) == [1, 5])
        #expect(decoded.filter { $0.service == "agent" && $0.scope == "s2" }.map(\.spanID) == [2])
        #expect(decoded.filter { $0.service == "tools" }.map(\.spanID) == [4])
        // And the output is itself a request the scanner accepts, with 2 resources and 3 scopes.
        let again = try scan(out)
        #expect(again.spans.count == 4)
        #expect(again.scopes.count == 3)
        #expect(Set(again.scopes.map { ObjectIdentifier($0.resource) }).count == 2)
    }

    /// Spans held in their trace's array (`append(scope:source:…)`) come out exactly as copies of them would, and as
    /// their annotations make them: two arrays, two services, certain and weighted keeps (weighted ones with different
    /// tracestates, so that suffixes differ), a span that already carries an annotation (replaced), spans appended by
    /// pointer in between, and a caller changing its array after appending (the framer keeps what it was given).
    @Test func spansHeldInTheirArraysComeOutAsCopiesWould() throws {
        let origins = try scan(exportRequest([TestResource(service: "agent", spans: [TestSpan(trace: tid(1), span: 1)]),
                                              TestResource(service: "tools", spans: [TestSpan(trace: tid(1), span: 2)])])).scopes
        let agent = origins[0], tools = origins[1]
        let certain = KeepAnnotation(policy: "errors")
        let weighted = KeepAnnotation(policy: "sample", weight: .hashed(probability: 0.25))
        let preAnnotated = TestSpan(trace: tid(9), span: 99).encoded.withUnsafeBytes { KeepAnnotation(policy: "tier1").annotate($0) }
        var payloads: [[UInt8]] = []
        for i in 1...12 {
            let state: String? = i % 4 == 0 ? "k=\(i)" : nil
            let trace = tid(UInt64(i % 3 + 1))
            payloads.append(TestSpan(trace: trace, span: UInt64(i), name: "span \(i)", traceState: state).encoded)
        }
        payloads[5] = preAnnotated
        // Two arrays holding the payloads back to back, as traces' bytes do.
        var arrays: [[UInt8]] = [[], []]
        var place: [(array: Int, offset: Int)] = []
        for (i, p) in payloads.enumerated() {
            place.append((i % 2, arrays[i % 2].count))
            arrays[i % 2] += p
        }
        let plan: [(scope: ScopeOrigin, annotation: KeepAnnotation?, byPointer: Bool)] = (0..<payloads.count).map { i in
            (i % 3 == 0 ? tools : agent, [nil, certain, weighted][i % 3], i % 5 == 4)
        }
        var held = RequestFramer(), copied = RequestFramer()
        for (i, step) in plan.enumerated() {
            payloads[i].withUnsafeBytes { copied.append(scope: step.scope, span: $0, annotation: step.annotation) }
            if step.byPointer {
                payloads[i].withUnsafeBytes { held.append(scope: step.scope, span: $0, annotation: step.annotation) }
            } else {
                held.append(scope: step.scope, source: arrays[place[i].array], offset: place[i].offset, length: payloads[i].count,
                            annotation: step.annotation)
            }
        }
        for a in arrays.indices { for k in arrays[a].indices { arrays[a][k] ^= 0xFF } }  // the caller's copies change
        #expect(held.spanCount == copied.spanCount && held.spanBytes == copied.spanBytes)
        let out = held.encode()
        #expect(out == copied.encode())
        // And each span is its payload as its annotation makes it, grouped by service in order of arrival.
        let decoded = try decodeRequest(out)
        let expected = plan.indices.map { i in
            (plan[i].scope === tools ? "tools" : "agent",
             plan[i].annotation.map { a in payloads[i].withUnsafeBytes { a.annotate($0) } } ?? payloads[i])
        }
        let grouped = expected.filter { $0.0 == "tools" } + expected.filter { $0.0 == "agent" }  // tools arrived first
        #expect(decoded.map(\.service) == grouped.map(\.0))
        #expect(decoded.map(\.payload) == grouped.map(\.1))
    }

    @Test func emptyFramerEncodesAnEmptyRequest() {
        #expect(RequestFramer().encode().isEmpty)
    }
}

@Suite struct GzipTests {
    /// A header CRC (FHCRC) is checked whatever the limit: libdeflate's one-shot path skips it and zlib's streaming
    /// path checks it, so a body with a wrong one was accepted when it fit the limit and refused when it did not (found
    /// by `fuzz-gzip`). A right one is accepted either way.
    @Test func headerCRCIsCheckedWhateverTheLimit() throws {
        let input = Array(repeating: UInt8(ascii: "a"), count: 5000)
        let plain = Gzip.compress(input)
        var header = Array(plain.prefix(10))
        header[3] |= 0x02
        // The header CRC is the low 16 bits of the header's CRC-32 (zlib's).
        let crc = UInt16(truncatingIfNeeded: header.withUnsafeBufferPointer { crc32(0, $0.baseAddress, UInt32($0.count)) })
        let good = header + [UInt8(crc & 0xFF), UInt8(crc >> 8)] + plain.dropFirst(10)
        let bad = header + [UInt8(crc & 0xFF) ^ 0x01, UInt8(crc >> 8)] + plain.dropFirst(10)
        for limit in [input.count, 1 << 20] {
            #expect(try Gzip.decompress(good, limit: limit) == input)
            #expect { try Gzip.decompress(bad, limit: limit) } throws: { ($0 as? Gzip.Failure)?.description.contains("header crc") == true }
        }
        #expect(throws: Gzip.Failure.tooLarge(limit: 100)) { try Gzip.decompress(good, limit: 100) }
    }

    @Test func roundTrip() throws {
        let input = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 7 % 251) }
        let compressed = Gzip.compress(input)
        #expect(compressed.count < input.count)
        #expect(compressed.prefix(2) == [0x1F, 0x8B])
        #expect(try Gzip.decompress(compressed, limit: input.count) == input)
    }

    @Test func bombStopsAtTheLimit() {
        let zeros = [UInt8](repeating: 0, count: 20 << 20)
        let bomb = Gzip.compress(zeros)
        #expect(bomb.count < 100_000)
        #expect(throws: Gzip.Failure.tooLarge(limit: 1 << 20)) { try Gzip.decompress(bomb, limit: 1 << 20) }
    }

    @Test func corruptAndTruncatedDataAreErrors() {
        let good = Gzip.compress(Array("hello hello hello".utf8))
        #expect { try Gzip.decompress(Array(good.prefix(good.count - 6)), limit: 1000) } throws: { ($0 as? Gzip.Failure)?.description.contains("invalid gzip") == true }
        #expect { try Gzip.decompress([0x1F, 0x8B, 0x08, 0x00, 0xFF, 0xFF], limit: 1000) } throws: { $0 is Gzip.Failure }
        #expect { try Gzip.decompress(Array("not gzip at all".utf8), limit: 1000) } throws: { $0 is Gzip.Failure }
    }

    @Test(arguments: [1, 6, 12] as [Int32])
    func everyLevelRoundTripsAndEmptyBodiesToo(level: Int32) throws {
        let input = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 / 3 % 97) }
        let compressed = input.withUnsafeBytes { Gzip.compress($0, level: level) }
        #expect(try Gzip.decompress(compressed, limit: input.count) == input)
        let empty = [UInt8]().withUnsafeBytes { Gzip.compress($0, level: level) }
        #expect(try Gzip.decompress(empty, limit: 0) == [])
    }

    /// What libdeflate's one-shot path does not take goes to zlib's streaming path: the same answers either way.
    @Test func concatenatedMembersZlibFramingAndLyingTrailersAreHandled() throws {
        let a = Array("first member ".utf8), b = Array("second member".utf8)
        // Two gzip members one after the other (allowed by the format): both, in order.
        #expect(try Gzip.decompress(Gzip.compress(a) + Gzip.compress(b), limit: 100) == a + b)
        // zlib framing (gRPC's `deflate` encoding).
        var zlib = [UInt8](repeating: 0, count: 256)
        var zlibLength = UInt(zlib.count)
        #expect(compress2(&zlib, &zlibLength, a, UInt(a.count), 6) == Z_OK)
        #expect(try Gzip.decompress(Array(zlib.prefix(Int(zlibLength))), limit: 100) == a)
        // A trailer that understates the size: never more than the limit comes out.
        let zeros = [UInt8](repeating: 0, count: 4 << 20)
        var lying = Gzip.compress(zeros)
        lying.replaceSubrange((lying.count - 4)..., with: [0x10, 0, 0, 0])  // "16 bytes"
        #expect(throws: Gzip.Failure.tooLarge(limit: 1 << 20)) { try Gzip.decompress(lying, limit: 1 << 20) }
        #expect { try Gzip.decompress(lying, limit: 8 << 20) } throws: { ($0 as? Gzip.Failure)?.description.contains("invalid gzip") == true }
        // A trailer that overstates it (beyond the limit): refused at the limit, not trusted.
        var overstated = Gzip.compress(a)
        overstated.replaceSubrange((overstated.count - 4)..., with: [0xFF, 0xFF, 0xFF, 0x7F])
        #expect { try Gzip.decompress(overstated, limit: 1000) } throws: { $0 is Gzip.Failure }
    }
}
