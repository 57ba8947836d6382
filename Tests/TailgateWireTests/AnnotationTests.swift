import Testing
import TailgateTestSupport
@testable import TailgateWire
import FoundationEssentials

@Suite struct AnnotationTests {
    @Test(arguments: [
        (1.0, "0"),
        (0.5, "8"),
        (0.25, "c"),
        (0.1, "e6666666666666"),
        (0.0, "ffffffffffffff"),
    ])
    func thresholdValues(probability: Double, th: String) {
        #expect(KeepAnnotation.thValue(KeepAnnotation.threshold(probability: probability)) == th)
    }

    @Test(arguments: [
        ("", 0.5, "ot=th:8"),
        ("vendor=x", 0.25, "ot=th:c,vendor=x"),
        // Never lower an incoming threshold: incoming 0.1 (th:e666…) is stricter than our 0.5.
        ("ot=th:e6666666666666;rv:1234", 0.5, "ot=th:e6666666666666;rv:1234"),
        // Raise a lower incoming threshold; keep other ot sub-keys; move ot to the front.
        ("a=1,ot=th:8;rv:ab", 0.25, "ot=th:c;rv:ab,a=1"),
    ])
    func mergeThreshold(incoming: String, probability: Double, expected: String) {
        #expect(KeepAnnotation.mergeThreshold(traceState: incoming, probability: probability) == expected)
    }

    @Test func annotatedSpanReadsBackWithTheNewFields() throws {
        let original = TestSpan(trace: tid(1), span: 2, parent: 1, strings: [("k", "v")], traceState: "vendor=x").encoded
        let annotated = original.withUnsafeBytes { KeepAnnotation(policy: "baseline", probability: 0.1).annotate($0) }
        #expect(annotated.starts(with: original))  // the original bytes are untouched
        // A tracestate reader sees the last occurrence; attributes are appended.
        // A hash-mode keep (the default) states no consistent threshold: the tracestate has none to erase and stays.
        let state = annotated.withUnsafeBytes { KeepAnnotation.traceState(of: $0) }
        #expect(state == "vendor=x")
        let consistent = original.withUnsafeBytes {
            KeepAnnotation(policy: "baseline", weight: .consistent(threshold: KeepAnnotation.threshold(probability: 0.1))).annotate($0)
        }
        #expect(consistent.withUnsafeBytes { KeepAnnotation.traceState(of: $0) } == "ot=th:e6666666666666,vendor=x")
        let json = try OTLPJSON.jsonFromProtobuf(exportRequestWithRawSpan(annotated))
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains(#"{"key":"tailgate.policy","value":{"stringValue":"baseline"}}"#))
        #expect(text.contains(#"{"key":"tailgate.sample_rate","value":{"doubleValue":10}}"#) || text.contains(#""doubleValue":10.0"#))
        #expect(text.contains(#"{"key":"k","value":{"stringValue":"v"}}"#))
    }

    @Test func certainKeepsCarryOnlyThePolicy() {
        let original = TestSpan(trace: tid(1), span: 2, traceState: "ot=th:8").encoded
        let annotated = original.withUnsafeBytes { KeepAnnotation(policy: "errors").annotate($0) }
        #expect(annotated.withUnsafeBytes { KeepAnnotation.traceState(of: $0) } == "ot=th:8")  // untouched
        let dry = original.withUnsafeBytes { KeepAnnotation(policy: "", dryRunKeep: false).annotate($0) }
        let text = String(decoding: try! OTLPJSON.jsonFromProtobuf(exportRequestWithRawSpan(dry)), as: UTF8.self)
        #expect(text.contains(#"{"key":"tailgate.dry_run.decision","value":{"stringValue":"drop"}}"#))
        #expect(!text.contains("tailgate.policy"))
    }
}

@Suite struct SecondTierAnnotationTests {
    /// The attributes of a span as (key, JSON value) pairs, in order.
    func attributes(_ span: [UInt8]) throws -> [String] {
        let text = String(decoding: try OTLPJSON.jsonFromProtobuf(exportRequestWithRawSpan(span)), as: UTF8.self)
        return text.components(separatedBy: #"{"key":""#).dropFirst().map { String($0.prefix { $0 != "\"" }) }
    }

    @Test func aSecondTierReplacesTheFirstTiersAttributesInsteadOfAppending() throws {
        let original = TestSpan(trace: tid(1), span: 2, strings: [("k", "v")]).encoded
        let first = original.withUnsafeBytes { KeepAnnotation(policy: "tier1", trigger: "root").annotate($0) }
        let second = first.withUnsafeBytes { KeepAnnotation(policy: "tier2", trigger: "idle").annotate($0) }
        let keys = try attributes(second)
        #expect(keys.filter { $0 == "tailgate.policy" }.count == 1)
        #expect(keys.filter { $0 == "tailgate.decision.trigger" }.count == 1)
        #expect(keys.contains("k"))
        let text = String(decoding: try OTLPJSON.jsonFromProtobuf(exportRequestWithRawSpan(second)), as: UTF8.self)
        #expect(text.contains(#""stringValue":"tier2""#) && !text.contains("tier1"))
        // Spans without Tailgate's attributes are not rewritten (the common case stays a plain append).
        #expect(original.withUnsafeBytes { KeepAnnotation(policy: "x").withoutOwnAttributes($0) } == nil)
    }

    @Test func hashKeepsMultiplyAnUpstreamHashTiersSampleRate() throws {
        let original = TestSpan(trace: tid(1), span: 2).encoded
        let tier1 = original.withUnsafeBytes { KeepAnnotation(policy: "a", weight: .hashed(probability: 0.1)).annotate($0) }
        let tier2 = tier1.withUnsafeBytes { KeepAnnotation(policy: "b", weight: .hashed(probability: 0.5)).annotate($0) }
        let rate = tier2.withUnsafeBytes { KeepAnnotation.incomingSampleRate($0) }
        #expect(rate.map { abs($0 - 20) < 1e-9 } == true, "\(String(describing: rate))")
        #expect(try attributes(tier2).filter { $0 == "tailgate.sample_rate" }.count == 1)
        // A certain keep in tier 2 leaves tier 1's weight as it was.
        let certain = tier1.withUnsafeBytes { KeepAnnotation(policy: "errors").annotate($0) }
        #expect(certain.withUnsafeBytes { KeepAnnotation.incomingSampleRate($0) }.map { abs($0 - 10) < 1e-9 } == true)
    }

    @Test func theFramerReplacesToo() throws {
        let original = TestSpan(trace: tid(1), span: 2).encoded
        let first = original.withUnsafeBytes { KeepAnnotation(policy: "tier1").annotate($0) }
        let scope = ScopeOrigin(resource: ResourceOrigin(header: []), header: [])
        // Both ways in: a span copied, and a span held in its source array (a kept trace's own bytes), with a span
        // that is not annotated yet after it in the same source.
        var copied = RequestFramer()
        first.withUnsafeBytes { copied.append(scope: scope, span: $0, annotation: KeepAnnotation(policy: "tier2")) }
        var held = RequestFramer()
        let source = first + original
        held.append(scope: scope, source: source, offset: 0, length: first.count, annotation: KeepAnnotation(policy: "tier2"))
        held.append(scope: scope, source: source, offset: first.count, length: original.count, annotation: KeepAnnotation(policy: "tier2"))
        for (framer, spans) in [(copied, 1), (held, 2)] {
            let text = String(decoding: try OTLPJSON.jsonFromProtobuf(framer.encode()), as: UTF8.self)
            #expect(text.components(separatedBy: "tailgate.policy").count == spans + 1)
            #expect(text.contains("tier2") && !text.contains("tier1"))
        }
    }
}

@Suite struct OwnAttributeSearchTests {
    /// The search for "tailgate." agrees with a byte-by-byte one: the key planted at every offset of
    /// payloads of every length up to 80 bytes, near misses (each byte of the key changed), and seeded random bytes.
    @Test func findsTheKeyAtEveryOffsetAndNothingElse() {
        let key = Array("tailgate.".utf8)
        func naive(_ bytes: [UInt8]) -> Bool {
            bytes.count >= 9 && (0...(bytes.count - 9)).contains { Array(bytes[$0..<($0 + 9)]) == key }
        }
        func check(_ bytes: [UInt8]) {
            let found = bytes.withUnsafeBytes { KeepAnnotation.mayCarryOwnAttributes($0) }
            #expect(found == naive(bytes), "\(bytes)")
        }
        var rng = SplitMix64(seed: 0x7A11)
        for length in 0...80 {
            // Filler full of 't', 'a' and '.' so that candidates are frequent.
            let filler = (0..<length).map { _ in [0x74, 0x61, 0x2E, 0x67, 0x00, 0xFF][Int(rng.next() % 6)] as UInt8 }
            check(filler)
            guard length >= 9 else { continue }
            for offset in 0...(length - 9) {
                var planted = filler
                planted.replaceSubrange(offset..<(offset + 9), with: key)
                check(planted)
                for k in 0..<9 {
                    var miss = planted
                    miss[offset + k] ^= 0x20
                    check(miss)
                }
            }
        }
    }
}
