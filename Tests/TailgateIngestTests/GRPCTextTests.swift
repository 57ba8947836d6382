import Foundation
import Testing
@testable import TailgateIngest

@Suite struct GRPCTextTests {
    @Test(arguments: [
        ("plain message", "plain message"),
        ("100% done", "100%25 done"),
        ("line\nbreak", "line%0Abreak"),
        ("café", "caf%C3%A9"),
        ("", ""),
    ])
    func grpcMessageIsPercentEncoded(_ text: String, _ expected: String) {
        #expect(GRPCText.percentEncoded(text) == expected)
    }

    @Test func binaryHeadersAreUnpaddedBase64() {
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let padded = Data(bytes).base64EncodedString()
            #expect(GRPCText.base64(bytes) == padded.replacingOccurrences(of: "=", with: ""), "length \(length)")
        }
    }
}
