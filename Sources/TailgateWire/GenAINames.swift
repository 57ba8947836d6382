import CXXHash
import Synchronization

/// The names of a GenAI span — operation, provider, response and request model, error type, tool and agent name —
/// shared by every span that has the same ones. The spans of a run repeat a handful of combinations (one model, a few
/// tools), and seven strings inline were 112 of a ledger entry's 208 bytes, held for every GenAI span of every
/// buffered trace (`tailgate-bench memory`). Shared, an entry holds one reference.
///
/// Equal by content (the key: each name's UTF-8 length and bytes), whatever the object.
package final class GenAINames: Sendable, Equatable {
    package let operation: String
    package let provider: String
    package let model: String
    package let requestModel: String
    package let errorType: String
    package let toolName: String
    package let agentName: String
    /// Each name in the order above: its length (UInt16, little-endian) and UTF-8 bytes.
    let key: [UInt8]
    let hash: UInt64

    /// Names read back from a key (see `key`).
    init(key: [UInt8], hash: UInt64) {
        self.key = key
        self.hash = hash
        var names: [String] = []
        names.reserveCapacity(7)
        key.withUnsafeBytes { raw in
            var o = 0
            for _ in 0..<7 {
                let n = Int(raw[o]) | Int(raw[o + 1]) << 8
                names.append(String(decoding: UnsafeRawBufferPointer(rebasing: raw[(o + 2)..<(o + 2 + n)]), as: UTF8.self))
                o += 2 + n
            }
        }
        (operation, provider, model, requestModel) = (names[0], names[1], names[2], names[3])
        (errorType, toolName, agentName) = (names[4], names[5], names[6])
    }

    package static func == (a: GenAINames, b: GenAINames) -> Bool { a === b || (a.hash == b.hash && a.key == b.key) }

    /// The shared names with these values (a span without GenAI names has all of them empty).
    package static func of(operation: String = "", provider: String = "", model: String = "", requestModel: String = "",
                           errorType: String = "", toolName: String = "", agentName: String = "") -> GenAINames {
        var key: [UInt8] = []
        for name in [operation, provider, model, requestModel, errorType, toolName, agentName] {
            let bytes = name.utf8.prefix(Int(UInt16.max))
            key.append(UInt8(truncatingIfNeeded: bytes.count))
            key.append(UInt8(truncatingIfNeeded: bytes.count >> 8))
            key.append(contentsOf: bytes)
        }
        return key.withUnsafeBytes { GenAINamesInterner.shared.names(key: $0) }
    }
}

/// A fixed direct-mapped table of `GenAINames` indexed by the key's XXH3 (like `OriginInterner`): a colliding
/// combination replaces the entry and the table never grows, so high-cardinality names (a tool name per call) cost at
/// most one object per span, as seven strings did. A hit is checked by content.
final class GenAINamesInterner: Sendable {
    static let shared = GenAINamesInterner()
    static let slots = 1024
    private let table = Mutex([GenAINames?](repeating: nil, count: GenAINamesInterner.slots))

    func names(key: UnsafeRawBufferPointer) -> GenAINames {
        let hash = XXH3_64bits(key.baseAddress, key.count)
        let slot = Int(truncatingIfNeeded: hash) & (Self.slots - 1)
        if let found = table.withLock({ $0[slot] }), found.hash == hash, found.key.count == key.count,
           found.key.withUnsafeBytes({ memcmpBytes($0.baseAddress!, key.baseAddress!, key.count) }) {  // a key is never empty
            return found
        }
        let made = GenAINames(key: Array(key), hash: hash)
        table.withLock { $0[slot] = made }
        return made
    }

    /// The shared names whose values are these seven byte ranges (the scanner's path: no string is made unless the
    /// combination is new).
    func names(_ parts: (UnsafeRawBufferPointer, UnsafeRawBufferPointer, UnsafeRawBufferPointer, UnsafeRawBufferPointer,
                         UnsafeRawBufferPointer, UnsafeRawBufferPointer, UnsafeRawBufferPointer)) -> GenAINames {
        let total = 14 + parts.0.count + parts.1.count + parts.2.count + parts.3.count + parts.4.count + parts.5.count
            + parts.6.count
        return withUnsafeTemporaryAllocation(byteCount: total, alignment: 1) { buffer in
            var o = 0
            func put(_ part: UnsafeRawBufferPointer) {
                let n = min(part.count, Int(UInt16.max))
                buffer[o] = UInt8(truncatingIfNeeded: n)
                buffer[o + 1] = UInt8(truncatingIfNeeded: n >> 8)
                if n > 0 { (buffer.baseAddress! + o + 2).copyMemory(from: part.baseAddress!, byteCount: n) }
                o += 2 + n
            }
            put(parts.0); put(parts.1); put(parts.2); put(parts.3); put(parts.4); put(parts.5); put(parts.6)
            return names(key: UnsafeRawBufferPointer(rebasing: buffer[0..<o]))
        }
    }
}
