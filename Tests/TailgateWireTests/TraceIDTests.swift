import Testing
@testable import TailgateWire

@Suite struct TraceIDTests {
    @Test func hexRoundTripAndHash() {
        let id = TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!
        #expect(id.description == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(id.bytes.count == 16 && id.bytes[0] == 0x4B && id.bytes[15] == 0x36)
        #expect(TraceID(hex: "4BF92F3577B34DA6A3CE929D0E0E4736") == id)
        #expect(TraceID(hex: "4bf92f") == nil)
        #expect(TraceID(hex: "zz" + String(repeating: "0", count: 30)) == nil)
        // XXH3-64 of the 16 wire bytes; expected values computed independently with python-xxhash.
        #expect(id.xxh3() == 519_413_188_669_670_458)
        #expect(id.xxh3(seed: 1) == 5_271_800_383_191_573_569)
        #expect(xxh3("salt") == 11_229_228_473_275_659_907)
    }

    /// Tables of trace IDs hash with XXH3 seeded by the table's seed: the hash depends on the seed (a client cannot
    /// aim IDs at one bucket without knowing it) and on both halves of the ID.
    @Test func tableHashIsSeededXXH3OfBothHalves() {
        let id = TraceID(hi: 0x0102_0304_0506_0708, lo: 0x090a_0b0c_0d0e_0f10)
        #expect(id._rawHashValue(seed: 7) == Int(truncatingIfNeeded: id.xxh3(seed: 7)))
        #expect(id._rawHashValue(seed: 7) != id._rawHashValue(seed: 8))
        #expect(id._rawHashValue(seed: 7) != TraceID(hi: id.hi, lo: id.lo ^ 1)._rawHashValue(seed: 7))
        #expect(id._rawHashValue(seed: 7) != TraceID(hi: id.hi ^ 1, lo: id.lo)._rawHashValue(seed: 7))
        // Tables behave: 100,000 distinct IDs, sharing their high halves, all found again.
        var table: [TraceID: Int] = [:]
        for i in 0..<100_000 { table[TraceID(hi: 42, lo: UInt64(i))] = i }
        #expect(table.count == 100_000)
        #expect((0..<100_000).allSatisfy { table[TraceID(hi: 42, lo: UInt64($0))] == $0 })
        #expect(table[TraceID(hi: 43, lo: 0)] == nil)
        #expect(Set([id, id, TraceID(hi: id.hi, lo: id.lo)]).count == 1)
    }
}
