import CXXHash
import Synchronization

/// Strings made from span bytes that recur across spans (model, provider, agent and tool names), shared instead of
/// allocated per span: a value longer than 15 UTF-8 bytes would otherwise be a heap allocation (and a copy) for every
/// GenAI span. A fixed table of `slots` entries indexed by the value's XXH3 hash; a colliding value replaces the
/// entry (the table never grows, so hostile label values cost at most what they did without it).
final class StringInterner: Sendable {
    static let shared = StringInterner()
    static let slots = 1024
    private let table = Mutex([Entry](repeating: Entry(hash: 0, value: ""), count: StringInterner.slots))

    struct Entry {
        var hash: UInt64
        var value: String
    }

    /// The UTF-8 bytes as a string (invalid sequences repaired as `String(decoding:as:)` does).
    func string(_ bytes: UnsafeRawBufferPointer) -> String {
        // Up to 15 bytes a string is stored inline: nothing to share.
        guard bytes.count > 15 else { return String(decoding: bytes, as: UTF8.self) }
        let hash = XXH3_64bits(bytes.baseAddress, bytes.count)
        let slot = Int(truncatingIfNeeded: hash) & (Self.slots - 1)
        if let found = table.withLock({ table -> String? in
            let entry = table[slot]
            guard entry.hash == hash, entry.value.utf8.count == bytes.count else { return nil }
            return entry.value
        }), found.utf8.elementsEqual(bytes) {
            return found
        }
        let made = String(decoding: bytes, as: UTF8.self)
        // Stored only when the bytes were valid UTF-8 (the stored value must compare equal to them).
        if made.utf8.count == bytes.count {
            table.withLock { $0[slot] = Entry(hash: hash, value: made) }
        }
        return made
    }
}
