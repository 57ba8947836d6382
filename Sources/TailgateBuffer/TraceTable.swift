internal import CHelpers
import TailgateWire

/// One shard's undecided traces by ID: open addressing with linear probing over 32-byte slots that hold the ID, its
/// hash and the entry's reference side by side (two slots to a cache line, never one across two).
///
/// Why not `Dictionary`: finding a trace there reads the occupancy bitmap, the keys array and the values array, and
/// hands the entry back retained. A trace waits seconds between requests, so each of those is a cache miss, and the
/// retain (an atomic write to the entry's first line) waits for the entry before anything else can start. Here a
/// lookup costs one miss, and `prefetchEntries` can find every trace of a request and ask for their entries' lines
/// before the first one is touched, without retaining any, so that all those misses overlap.
///
/// Hashing is XXH3 of the ID with a seed of the table's own (random per process unless given), so a client cannot aim
/// IDs at one run of slots. Deletion shifts the following slots back (no tombstones), so probe runs stay as short as
/// the load factor (at most 3/4) makes them. Only touched with its shard's lock held.
final class TraceTable: @unchecked Sendable {
    struct Slot {
        var hi: UInt64
        var lo: UInt64
        var hash: UInt64
        /// Holds a +1 reference while the slot is in use; nil marks an empty slot.
        var entry: Unmanaged<TraceEntry>?
    }

    private var slots: UnsafeMutablePointer<Slot>
    private var mask: Int
    private(set) var count = 0
    private let seed: UInt64
    /// Hashes of a request's traces between the passes of `prefetchEntries` (kept to save an allocation per request).
    private var scratch: [UInt64] = []

    /// Slots in the table (a power of two); the table grows to keep `count` at most three quarters of it.
    var capacity: Int { mask + 1 }
    var isEmpty: Bool { count == 0 }

    init(seed: UInt64 = .random(in: .min ... .max), capacity: Int = 16) {
        self.seed = seed
        var n = 16
        while n < capacity { n <<= 1 }
        mask = n - 1
        slots = Self.allocate(n)
    }

    deinit {
        for i in 0...mask { slots[i].entry?.release() }
        slots.deallocate()
    }

    private static func allocate(_ n: Int) -> UnsafeMutablePointer<Slot> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * MemoryLayout<Slot>.stride, alignment: 64)
        let p = raw.bindMemory(to: Slot.self, capacity: n)
        p.initialize(repeating: Slot(hi: 0, lo: 0, hash: 0, entry: nil), count: n)
        return p
    }

    @inline(__always)
    func hash(_ id: TraceID) -> UInt64 { id.xxh3(seed: seed) }

    /// The slot holding `id`, or the empty slot that ends its probe run (`found` false).
    @inline(__always)
    private func probe(_ id: TraceID, _ h: UInt64) -> (index: Int, found: Bool) {
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let slot = slots + i
            guard slot.pointee.entry != nil else { return (i, false) }
            if slot.pointee.hash == h && slot.pointee.hi == id.hi && slot.pointee.lo == id.lo { return (i, true) }
            i = (i &+ 1) & mask
        }
    }

    subscript(id: TraceID) -> TraceEntry? {
        get {
            let (i, found) = probe(id, hash(id))
            return found ? slots[i].entry!.takeUnretainedValue() : nil
        }
        set {
            if let newValue { insert(newValue, for: id) } else { removeValue(forKey: id) }
        }
    }

    /// Adds or replaces the entry for `id`.
    func insert(_ entry: TraceEntry, for id: TraceID) {
        let h = hash(id)
        var (i, found) = probe(id, h)
        if found {
            let old = slots[i].entry!
            slots[i].entry = Unmanaged.passRetained(entry)
            old.release()
            return
        }
        if (count + 1) * 4 > capacity * 3 {
            grow()
            i = probe(id, h).index
        }
        slots[i] = Slot(hi: id.hi, lo: id.lo, hash: h, entry: Unmanaged.passRetained(entry))
        count += 1
    }

    /// Removes the entry for `id` (returned), shifting the rest of its probe run back over the hole.
    @discardableResult
    func removeValue(forKey id: TraceID) -> TraceEntry? {
        let (found, was) = probe(id, hash(id))
        guard was else { return nil }
        let entry = slots[found].entry!.takeRetainedValue()
        var hole = found
        var i = (hole &+ 1) & mask
        while let _ = slots[i].entry {
            let home = Int(truncatingIfNeeded: slots[i].hash) & mask
            // The slot may move back to the hole if the hole lies on its probe path (cyclically between home and i).
            if (i &- home) & mask >= (i &- hole) & mask {
                slots[hole] = slots[i]
                hole = i
            }
            i = (i &+ 1) & mask
        }
        slots[hole].entry = nil
        count -= 1
        return entry
    }

    private func grow() {
        let oldSlots = slots, oldCount = mask + 1
        let n = oldCount * 2
        slots = Self.allocate(n)
        mask = n - 1
        for j in 0..<oldCount {
            let slot = oldSlots[j]
            guard slot.entry != nil else { continue }
            var i = Int(truncatingIfNeeded: slot.hash) & mask
            while slots[i].entry != nil { i = (i &+ 1) & mask }
            slots[i] = slot  // the reference moves with the slot
        }
        oldSlots.deallocate()
    }

    /// The entries, in no particular order. The table must not change while they are walked; copy them into an array
    /// first to change it (`Array(table.values)`).
    var values: Values { Values(slots: slots, end: mask + 1) }

    struct Values: Sequence {
        let slots: UnsafeMutablePointer<Slot>
        let end: Int

        struct Iterator: IteratorProtocol {
            let slots: UnsafeMutablePointer<Slot>
            let end: Int
            var i = 0
            mutating func next() -> TraceEntry? {
                while i < end {
                    defer { i += 1 }
                    if let e = slots[i].entry { return e.takeUnretainedValue() }
                }
                return nil
            }
        }

        func makeIterator() -> Iterator { Iterator(slots: slots, end: end) }
    }

    /// Asks for the entries of the traces of `ids` that are in the table, before any of them is touched (see
    /// `TraceBuffer.insert`), in two passes so that the misses of each pass overlap: every slot's line first, then the
    /// entries' lines. Repeats of the ID just before are skipped (a request's spans come grouped by trace). References
    /// are read as bits: nothing is retained, so nothing waits for an entry.
    func prefetchEntries<S: Sequence>(_ ids: S) where S.Element == TraceID {
        scratch.removeAll(keepingCapacity: true)
        var last = TraceID(hi: 0, lo: 0)  // not a valid ID (the scanner rejects it), so never skipped
        for id in ids where id.hi != last.hi || id.lo != last.lo {
            last = id
            let h = hash(id)
            scratch.append(h)
            tailgate_prefetch(slots + (Int(truncatingIfNeeded: h) & mask))
        }
        last = TraceID(hi: 0, lo: 0)
        var k = 0
        for id in ids where id.hi != last.hi || id.lo != last.lo {
            last = id
            let (i, found) = probe(id, scratch[k])
            k += 1
            if found { TraceEntry.prefetchObject(slots[i].entry.unsafelyUnwrapped) }
        }
    }
}

extension TraceEntry {
    /// How much of an entry `prefetchObject` asks for: the whole object (about 450 bytes; a test keeps it within).
    static let prefetchedBytes = 512

    /// The lines of an entry, asked for without a retain.
    @inline(__always)
    static func prefetchObject(_ entry: Unmanaged<TraceEntry>) {
        let base = UnsafeRawPointer(entry.toOpaque())
        var offset = 0
        while offset < prefetchedBytes {
            tailgate_prefetch(base + offset)
            offset += 64
        }
    }
}
