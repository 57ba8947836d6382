// libFuzzer target `fuzz-scanner`: OTLPScanner over arbitrary bytes (Fuzz/README.md).
//
// Every input is scanned twice, with the empty plan (what a policies file without attribute policies uses) and with
// a plan using every kind of condition, slot, conversation key and derived bit the policies compile to; both read
// every span's GenAI facts. Scanning may throw ScanError;
// it must never trap. On top of that, for every request the scanner accepts:
// - both plans agree on what is accepted (the plan reads values, it never decides validity);
// - every accepted span has a valid trace ID and span ID, a byte range inside the body and a scope that exists;
// - `evaluate(span:resourceBits:)` on the span's bytes alone gives the same facts as the scan;
// - the accepted spans re-framed with `RequestFramer` (as they are forwarded) form a request that scans without error,
//   with every span accepted and the same facts, with and without a `KeepAnnotation` appended to each span.

import TailgateWire

/// A plan exercising every action of the compiled plan, on the keys the built-in policies read.
let richPlan: AttributePlan = {
    var p = AttributePlan()
    do {
        _ = try p.slot(.firstOf(keys: ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"], condition: nil))
        _ = try p.slot(.firstOf(keys: ["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"], condition: nil))
        try p.conversation(keys: ["gen_ai.conversation.id", "session.id"])
        let model = try p.bit(key: "gen_ai.request.model", target: .span, .strings(["gpt-4o", "m", ""]))
        let filteredIn = try p.slot(.firstOf(keys: ["gen_ai.usage.input_tokens"], condition: model))
        _ = filteredIn
        let chat = try p.bit(key: "gen_ai.operation.name", target: .span, .strings(["chat", "text_completion", "generate_content"]))
        _ = try p.slot(.count(bit: chat))
        let tool = try p.bit(key: "gen_ai.operation.name", target: .span, .strings(["execute_tool"]))
        let errorType = try p.bit(key: "error.type", target: .span, .exists)
        _ = try p.bit(allOf: [tool], anyOf: [errorType], orStatusError: true)
        let provider = try p.bit(key: "gen_ai.system", target: .any, .strings(["openai", "anthropic"]))
        _ = try p.bit(allOf: [model, provider])
        _ = try p.bit(key: "gen_ai.response.finish_reasons", target: .span, .strings(["length", "content_filter"]))
        _ = try p.bit(key: "http.status_code", target: .span, .numeric(min: 500, max: 599))
        _ = try p.bit(key: "k", target: .any, .numeric(min: -.infinity, max: .infinity))
        _ = try p.bit(key: "k", target: .resource, .regex(["^a.*z$", "[0-9]{3,}", "(?i)é+"]))
        _ = try p.bit(key: "service.name", target: .resource, .strings(["checkout", "a"]))
        _ = try p.bit(key: "retry", target: .span, .bool(true))
        _ = try p.bit(key: "b", target: .any, .bool(false))
        _ = try p.bit(key: "s", target: .span, .regex([".*"]))
        _ = try p.traceStateBit(key: "ot", values: [])
        _ = try p.traceStateBit(key: "k", values: ["v", "w"])
    } catch {
        fatalError("fuzz-scanner: cannot build the plan: \(error)")
    }
    return p
}()

let scanners = [OTLPScanner(), OTLPScanner(plan: richPlan, generation: 1)]
let annotation = KeepAnnotation(policy: "fuzz", probability: 0.25, dryRunKeep: true)

/// The facts of a span that do not depend on where its bytes are.
struct Facts: Hashable {
    var traceID: TraceID
    var spanID, parent, start, end, bits: UInt64
    var status: UInt8
    var sums: [Int64]

    init(_ f: SpanFacts) {
        traceID = f.traceID
        spanID = f.spanID
        parent = f.parentSpanID
        start = f.startTime
        end = f.endTime
        bits = f.bits
        status = f.status.rawValue
        sums = (0..<8).map { f.sums[$0] }
    }
}

func fail(_ message: String, _ body: UnsafeRawBufferPointer) -> Never {
    fatalError("fuzz-scanner: \(message) (input of \(body.count) bytes)")
}

func multiset(_ spans: [SpanFacts]) -> [Facts: Int] {
    var m: [Facts: Int] = [:]
    for s in spans { m[Facts(s), default: 0] += 1 }
    return m
}

func check(_ scanner: OTLPScanner, _ body: UnsafeRawBufferPointer) -> ScannedRequest? {
    var result = ScannedRequest()
    do {
        try scanner.scan(body, into: &result)
    } catch {
        _ = error.description
        return nil
    }
    if result.planGeneration != scanner.generation { fail("wrong plan generation", body) }
    if result.rejectedSpans < 0 || (result.rejectedSpans > 0) != (result.rejectionMessage != nil) {
        fail("rejectedSpans \(result.rejectedSpans) inconsistent with message \(String(describing: result.rejectionMessage))", body)
    }
    if result.spans.isEmpty && !result.scopes.isEmpty { fail("scopes without spans", body) }
    var usedScopes = Set<Int32>()
    for span in result.spans {
        if !span.traceID.isValid || span.spanID == 0 { fail("accepted span with an invalid ID", body) }
        if span.bytes.lowerBound < 0 || span.bytes.upperBound > body.count { fail("span range \(span.bytes) outside the body", body) }
        if span.scope < 0 || Int(span.scope) >= result.scopes.count { fail("span scope \(span.scope) of \(result.scopes.count)", body) }
        usedScopes.insert(span.scope)
        let payload = UnsafeRawBufferPointer(rebasing: body[span.bytes])
        let resourceBits = scanner.resourceBits(header: result.scopes[Int(span.scope)].resource.header)
        guard let again = scanner.evaluate(span: payload, resourceBits: resourceBits) else {
            fail("evaluate(span:) refuses an accepted span", body)
        }
        if Facts(again) != Facts(span) { fail("evaluate(span:) gives \(Facts(again)), the scan \(Facts(span))", body) }
    }
    if usedScopes.count != result.scopes.count { fail("a scope holds no accepted span", body) }

    // Forwarding: the accepted spans, re-framed, must be accepted again, whole, with the same facts.
    guard !result.spans.isEmpty else { return result }
    var framer = RequestFramer()
    var annotated = RequestFramer()
    for span in result.spans {
        let payload = UnsafeRawBufferPointer(rebasing: body[span.bytes])
        framer.append(scope: result.scopes[Int(span.scope)], span: payload)
        annotated.append(scope: result.scopes[Int(span.scope)], span: payload, annotation: annotation)
    }
    let expected = multiset(result.spans)
    for (name, request) in [("re-framed", framer.encode()), ("annotated", annotated.encode())] {
        var rescanned = ScannedRequest()
        request.withUnsafeBytes { raw in
            do {
                try scanner.scan(raw, into: &rescanned)
            } catch {
                fail("\(name) request of the accepted spans does not scan: \(error)", body)
            }
        }
        if rescanned.rejectedSpans != 0 {
            fail("\(name) request rejects \(rescanned.rejectedSpans) accepted spans: \(rescanned.rejectionMessage ?? "")", body)
        }
        if rescanned.spans.count != result.spans.count {
            fail("\(name) request has \(rescanned.spans.count) spans, not \(result.spans.count)", body)
        }
        if name == "re-framed" {
            if multiset(rescanned.spans) != expected { fail("re-framed spans have other facts", body) }
        } else {
            let ids = { (s: [SpanFacts]) in s.map { "\($0.traceID)/\($0.spanID)/\($0.parentSpanID)" }.sorted() }
            if ids(rescanned.spans) != ids(result.spans) { fail("annotated spans have other IDs", body) }
        }
    }
    return result
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let body = UnsafeRawBufferPointer(start: data, count: size)
    let plain = check(scanners[0], body)
    let rich = check(scanners[1], body)
    switch (plain, rich) {
    case (nil, nil):
        break
    case (let a?, let b?):
        if a.spans.count != b.spans.count || a.rejectedSpans != b.rejectedSpans || a.scopes.count != b.scopes.count {
            fail("the plans disagree: \(a.spans.count)/\(a.rejectedSpans) vs \(b.spans.count)/\(b.rejectedSpans) spans accepted/rejected", body)
        }
        for (x, y) in zip(a.spans, b.spans) where x.bytes != y.bytes || x.traceID != y.traceID || x.spanID != y.spanID {
            fail("the plans accept different spans", body)
        }
    default:
        fail("one plan throws and the other does not: plain \(plain == nil ? "throws" : "accepts"), rich \(rich == nil ? "throws" : "accepts")", body)
    }
    return 0
}
