import Testing
@testable import TailgateWire

@Suite struct StringInternerTests {
    func intern(_ interner: StringInterner, _ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { interner.string($0) }
    }

    @Test(arguments: [
        "gpt-4o",                                  // inline (≤ 15 bytes): never stored
        "claude-sonnet-4-5-20250929",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "modèle-à-accents-très-long",
    ])
    func aValueReadTwiceIsTheSameString(_ value: String) {
        let interner = StringInterner()
        let first = intern(interner, Array(value.utf8))
        let second = intern(interner, Array(value.utf8))
        #expect(first == value)
        #expect(second == value)
    }

    @Test func invalidUTF8IsRepairedAsStringDecodingDoesAndNotStored() {
        let interner = StringInterner()
        let bytes: [UInt8] = Array("model-name-with-".utf8) + [0xFF, 0xFE] + Array("-tail".utf8)
        let expected = String(decoding: bytes, as: UTF8.self)
        #expect(intern(interner, bytes) == expected)
        #expect(intern(interner, bytes) == expected)
    }

    @Test func manyDistinctValuesStayCorrect() {
        // More values than slots: entries are replaced, never confused.
        let interner = StringInterner()
        let values = (0..<(3 * StringInterner.slots)).map { "tool-name-number-\($0)" }
        for _ in 0..<2 {
            for v in values { #expect(intern(interner, Array(v.utf8)) == v) }
        }
    }
}
