import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgateExport
@testable import TailgatePolicies
@testable import TailgateRuntime
@testable import TailgateWire

/// Consistent probability sampling takes the trace's explicit randomness (`ot=rv` in a span's tracestate) when there
/// is one — as the OpenTelemetry specification and the Collector's cases ask — also when only a later span has it.
@Suite struct ConsistentRandomnessTests {
    static let half = "policies: [{name: half, type: probabilistic, probabilistic: {sampling_percentage: 50, mode: consistent}}]\n"

    @Test(arguments: [
        // (trace ID low bits, tracestate of the first span, of the second span, kept)
        (UInt64(0), "ot=rv:ffffffffffffff", "", true),             // R from rv: max → kept although the ID says 0
        (UInt64(0), "", "ot=th:0;rv:ffffffffffffff", true),        // rv only on a later span
        (UInt64(0x00FF_FFFF_FFFF_FFFF), "ot=rv:00000000000000", "", false),  // rv 0 → dropped although the ID says max
        (UInt64(0x00FF_FFFF_FFFF_FFFF), "vendor=a", "", true),     // no rv: the ID's low 56 bits
        (UInt64(0), "vendor=a,ot=rv:80000000000000", "", true),    // exactly the 50 % threshold (R ≥ T keeps)
        (UInt64(0), "ot=rv:7fffffffffffff", "", false),
    ])
    func randomnessComesFromRvWhenPresent(lo: UInt64, first: String, second: String, kept: Bool) async throws {
        let (pipeline, downstream, clock) = try testPipeline(policies: Self.half)
        let trace = TraceID(hi: 0x1234, lo: lo)
        await withForwarder(pipeline) {
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: trace, span: 2, parent: 1, traceState: first.isEmpty ? nil : first)]))
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: trace, span: 1, traceState: second.isEmpty ? nil : second)]))
            clock.advance(by: .seconds(3))
            pipeline.tick()
        }
        #expect(Set(downstream.spans.map(\.traceID)) == (kept ? [trace] : []))
    }

    @Test func theScannerReadsRvFromTheOtMemberOnly() {
        func rv(_ state: String) -> UInt64 {
            let bytes = Array(state.utf8)
            return bytes.withUnsafeBytes { OTLPScanner.explicitRandomness($0, 0..<bytes.count) }
        }
        #expect(rv("ot=rv:0123456789abcd") == 0x01_2345_6789_ABCD)
        #expect(rv("a=rv:ffffffffffffff") == .max)        // another vendor's member
        #expect(rv("ot=th:8;rv:00000000000001") == 1)
        #expect(rv("ot=rv:123") == .max)                  // not 14 digits
        #expect(rv(" x=1, ot=rv:fffffffffffff0") == 0xFF_FFFF_FFFF_FFF0)
        #expect(rv("ot=rv:GGGGGGGGGGGGGG") == .max)
    }
}
