#if canImport(Glibc)
import Glibc
#endif
import Testing
import TailgateTestSupport
import TailgateWire
@testable import TailgateBuffer

/// The shard's trace table (open addressing, linear probing, backward-shift deletion) against `Dictionary` as the
/// model, under long seeded runs of inserts, replacements and removals in a small table, so that probe runs wrap
/// around the end and deletions shift slots back across it.
@Suite struct TraceTableTests {
    static func entry(_ id: TraceID, generation: UInt64) -> TraceEntry {
        TraceEntry(id: id, generation: generation, now: 0, scheduled: 0, planGeneration: 0)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var seed: UInt64
        /// Distinct IDs drawn from: few keeps the table dense with many replacements and misses.
        var keys: Int
        var operations: Int
        /// Share of operations (in percent) that remove.
        var removals: Int
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "a few keys, churned", seed: 1, keys: 12, operations: 20_000, removals: 45),
        Case(name: "growth through many sizes", seed: 2, keys: 5_000, operations: 30_000, removals: 10),
        Case(name: "mostly removals", seed: 3, keys: 300, operations: 30_000, removals: 60),
        Case(name: "IDs differing only in hi", seed: 4, keys: 200, operations: 20_000, removals: 40),
    ]

    @Test(arguments: cases)
    func agreesWithADictionary(_ c: Case) {
        var rng = SplitMix64(seed: c.seed)
        let ids: [TraceID] = (0..<c.keys).map { k in
            c.name.contains("only in hi") ? TraceID(hi: UInt64(k) + 1, lo: 7) : TraceID(hi: rng.next(), lo: rng.next() | 1)
        }
        let table = TraceTable(seed: c.seed &* 0x9E37_79B9_7F4A_7C15)
        var model: [TraceID: UInt64] = [:]
        var generation: UInt64 = 0
        for step in 0..<c.operations {
            let id = ids[Int(rng.next() % UInt64(ids.count))]
            if Int(rng.next() % 100) < c.removals {
                let removed = table.removeValue(forKey: id)
                #expect(removed?.generation == model.removeValue(forKey: id))
            } else {
                generation += 1
                table[id] = Self.entry(id, generation: generation)
                model[id] = generation
            }
            #expect(table.count == model.count)
            #expect(table.count * 4 <= table.capacity * 3)
            let probe = ids[Int(rng.next() % UInt64(ids.count))]
            #expect(table[probe]?.generation == model[probe])
            if step % 997 == 0 {
                #expect(table.isEmpty == model.isEmpty)
                var walked: [TraceID: UInt64] = [:]
                for e in table.values { walked[e.summary.traceID] = e.generation }
                #expect(walked == model)
                for id in ids { #expect(table[id]?.generation == model[id]) }
            }
        }
        for id in ids { #expect(table[id]?.generation == model[id]) }
    }

    @Test func holdsOneReferencePerEntryAndReleasesIt() {
        let id = TraceID(hi: 1, lo: 2), other = TraceID(hi: 3, lo: 4)
        weak var replaced: TraceEntry?
        weak var removed: TraceEntry?
        weak var left: TraceEntry?
        var table: TraceTable? = TraceTable(seed: 9)
        do {
            let a = Self.entry(id, generation: 1)
            replaced = a
            table![id] = a
        }
        #expect(replaced != nil)  // the table holds it
        table![id] = Self.entry(id, generation: 2)
        #expect(replaced == nil)
        do {
            let b = Self.entry(other, generation: 3)
            removed = b
            table![other] = b
        }
        #expect(table!.removeValue(forKey: other)?.generation == 3)
        #expect(removed == nil)
        #expect(table!.removeValue(forKey: other) == nil)
        left = table![id]
        #expect(left?.generation == 2)
        table = nil
        #expect(left == nil)  // released by the table's deinit
    }

    @Test func prefetchingLeavesTheTableAsItWas() {
        let table = TraceTable(seed: 5)
        let present = (1...40).map { TraceID(hi: $0, lo: $0 &* 31) }
        for (n, id) in present.enumerated() { table[id] = Self.entry(id, generation: UInt64(n)) }
        let absent = (1...40).map { TraceID(hi: $0 &+ 1000, lo: 5) }
        // Grouped repeats, absent IDs and an ID that is not valid (all zero) in one request.
        var ids: [TraceID] = []
        for k in 0..<40 { ids += [present[k], present[k], absent[k], TraceID(hi: 0, lo: 0)] }
        table.prefetchEntries(ids)
        table.prefetchEntries([TraceID]())
        #expect(table.count == 40)
        for (n, id) in present.enumerated() { #expect(table[id]?.generation == UInt64(n)) }
        for id in absent { #expect(table[id] == nil) }
    }

    #if canImport(Glibc)
    @Test func theEntryPrefetchCoversTheWholeEntry() {
        let e = Self.entry(TraceID(hi: 1, lo: 1), generation: 0)
        // malloc_usable_size is in <malloc.h>, which the Glibc module does not show.
        typealias UsableSize = @convention(c) (UnsafeMutableRawPointer?) -> Int
        let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_usable_size")  // RTLD_DEFAULT
        #expect(symbol != nil)
        guard let symbol else { return }
        let size = unsafeBitCast(symbol, to: UsableSize.self)(Unmanaged.passUnretained(e).toOpaque())
        #expect(size > 0 && size <= TraceEntry.prefetchedBytes)
    }
    #endif
}
