import Testing
import TailgateTestSupport
@testable import TailgateWire

private func scan(_ bytes: [UInt8]) throws -> ScannedRequest {
    var result = ScannedRequest()
    try bytes.withUnsafeBytes { try OTLPScanner().scan($0, into: &result) }
    return result
}

/// Resource and scope origins are shared across requests by content (see `OriginInterner`).
@Suite struct OriginInternerTests {
    @Test func theSameResourceAndScopeInTwoRequestsAreOneOrigin() throws {
        let a = try scan(exportRequest(service: "agent", spans: [TestSpan(trace: tid(1), span: 1)]))
        let b = try scan(exportRequest(service: "agent", spans: [TestSpan(trace: tid(2), span: 2)]))
        #expect(a.scopes.count == 1 && b.scopes.count == 1)
        #expect(a.scopes[0] === b.scopes[0])
        #expect(a.scopes[0].resource === b.scopes[0].resource)
    }

    @Test func differentContentIsNeverShared() throws {
        let r = try scan(exportRequest([
            TestResource(service: "agent", scopes: [("s1", [TestSpan(trace: tid(1), span: 1)]), ("s2", [TestSpan(trace: tid(1), span: 2)])]),
            TestResource(service: "tools", scopes: [("s1", [TestSpan(trace: tid(1), span: 3)])]),
        ]))
        #expect(r.scopes.count == 3)
        // Two scopes of one resource: one resource object, two scopes.
        #expect(r.scopes[0].resource === r.scopes[1].resource)
        #expect(r.scopes[0] !== r.scopes[1])
        // The same scope name under another resource is another scope.
        #expect(r.scopes[0].resource !== r.scopes[2].resource)
        #expect(r.scopes[0] !== r.scopes[2])
        #expect(r.scopes[0].header == r.scopes[2].header)
        #expect(r.scopes.map { Array($0.resource.header) }.allSatisfy { !$0.isEmpty })
    }

    @Test func collidingSlotsReplaceButNeverConfuse() {
        // A table of 1024 slots filled with 5,000 distinct resources: every lookup returns an origin with exactly the
        // bytes asked for, whether it was found or made again.
        let interner = OriginInterner()
        for round in 0..<2 {
            for i in 0..<5_000 {
                let header = Array("resource-\(i)".utf8)
                let origin = interner.resource(header)
                #expect(origin.header == header, "round \(round), resource \(i)")
                let scope = interner.scope(origin, Array("scope-\(i % 7)".utf8))
                #expect(scope.resource === origin && scope.header == Array("scope-\(i % 7)".utf8))
            }
        }
    }
}
