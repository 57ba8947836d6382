import Synchronization

/// The request headers passed through to the downstream (`downstream_headers_from_request`, e.g. the tenant in
/// `X-Scope-OrgID`), interned: a trace, a late span or a forward batch carries a small ID instead of the strings.
/// ID 0 is "none". Distinct sets are capped (`limit`); beyond it a request's headers are not passed through (counted
/// by the caller through `overflowed`).
package final class HeaderSets: Sendable {
    package static let none: UInt32 = 0
    package let limit: Int
    private struct State {
        var ids: [String: UInt32] = [:]
        var sets: [[(String, String)]] = [[]]
        var overflowed = 0
    }
    private let state = Mutex(State())

    package init(limit: Int = 10_000) {
        self.limit = limit
    }

    /// The ID of a set of (lowercased name, value) pairs; `.none` for an empty set or beyond the limit.
    package func id(_ pairs: [(String, String)]) -> UInt32 {
        guard !pairs.isEmpty else { return Self.none }
        let key = Self.key(pairs)
        return state.withLock { s in
            if let id = s.ids[key] { return id }
            guard s.sets.count <= limit else {
                s.overflowed += 1
                return Self.none
            }
            let id = UInt32(s.sets.count)
            s.sets.append(pairs)
            s.ids[key] = id
            return id
        }
    }

    /// The pairs of an ID (empty for `.none` or an unknown ID).
    package func pairs(_ id: UInt32) -> [(String, String)] {
        guard id != Self.none else { return [] }
        return state.withLock { s in Int(id) < s.sets.count ? s.sets[Int(id)] : [] }
    }

    /// Requests whose headers were not passed through because `limit` distinct sets were reached.
    package var overflowed: Int { state.withLock { $0.overflowed } }

    /// A stable text form of a set (`name: value` lines), as written in the store.
    package static func key(_ pairs: [(String, String)]) -> String {
        pairs.map { "\($0.0): \($0.1)" }.joined(separator: "\n")
    }

    /// The pairs of a text form written by `key`.
    package static func parse(_ key: String) -> [(String, String)] {
        key.split(separator: "\n").compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), String(line[line.index(after: colon)...].dropFirst()))
        }
    }
}
