// Listen and downstream addresses as the configuration and the command line write them.

/// Parses `HOST:PORT`, `[IPV6]:PORT`.
package func parseHostPort(_ text: String) -> (String, Int)? {
    var host: Substring
    var portText: Substring
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]") else { return nil }
        host = text[text.index(after: text.startIndex)..<close]
        let after = text[text.index(after: close)...]
        guard after.hasPrefix(":") else { return nil }
        portText = after.dropFirst()
    } else {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        host = text[..<colon]
        portText = text[text.index(after: colon)...]
    }
    guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
    return (String(host), port)
}
