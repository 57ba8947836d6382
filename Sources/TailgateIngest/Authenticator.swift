/// Bearer-token authentication of export requests (`Authorization: Bearer TOKEN`, on both receivers). Tokens are
/// compared in constant time (no early exit on the first differing byte, every configured token tried), so response
/// timing does not reveal how much of a guess was right.
package struct Authenticator: Sendable, Equatable {
    private let tokens: [[UInt8]]

    /// nil when `tokens` is empty (authentication off).
    package init?(tokens: [String]) {
        let list = tokens.map { Array($0.utf8) }.filter { !$0.isEmpty }
        guard !list.isEmpty else { return nil }
        self.tokens = list
    }

    /// Whether an `Authorization` header value carries one of the tokens.
    package func accepts(authorization: String?) -> Bool {
        guard let authorization else { return false }
        let value = Array(authorization.utf8)
        let prefix = Array("bearer ".utf8)
        guard value.count > prefix.count,
              zip(value.prefix(prefix.count), prefix).allSatisfy({ ($0 | 0x20) == $1 || $0 == $1 }) else { return false }
        let presented = value.dropFirst(prefix.count)
        var matched = false
        for token in tokens {
            matched = Self.constantTimeEquals(presented, token) || matched
        }
        return matched
    }

    static func constantTimeEquals(_ a: ArraySlice<UInt8>, _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        let n = max(a.count, b.count)
        for i in 0..<n {
            let x = i < a.count ? a[a.startIndex + i] : 0
            let y = i < b.count ? b[i] : 0
            difference |= x ^ y
        }
        return difference == 0 && a.count == b.count
    }
}
