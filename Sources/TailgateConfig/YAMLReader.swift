import Foundation
package import Yams

/// A problem in a configuration or policies file, with its position.
package struct Diagnostic: Sendable, Equatable, CustomStringConvertible {
    package enum Severity: String, Sendable { case error, warning }

    package var file: String
    package var line: Int
    package var column: Int
    package var severity: Severity
    package var message: String

    package init(file: String, line: Int, column: Int, severity: Severity = .error, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.severity = severity
        self.message = message
    }

    /// `file:line:column: error: message`, the form compilers and editors understand.
    package var description: String { "\(file):\(line):\(column): \(severity.rawValue): \(message)" }
}

/// A file that could not be loaded; `diagnostics` lists every problem found, not only the first.
package struct DiagnosticsError: Error, Sendable, CustomStringConvertible {
    package var diagnostics: [Diagnostic]
    package init(_ diagnostics: [Diagnostic]) { self.diagnostics = diagnostics }
    package var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Walks a YAML document with positions, collecting diagnostics instead of stopping at the first problem.
/// Shared by the policies file and the server configuration file.
package struct YAMLReader {
    package let file: String
    package private(set) var diagnostics: [Diagnostic] = []

    package init(file: String) { self.file = file }

    package var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }

    /// Parses `text`; nil (with a diagnostic) when it is not YAML. An empty document is an empty mapping.
    package mutating func parse(_ text: String) -> Node? {
        do {
            return try Yams.compose(yaml: text) ?? Node.mapping(Node.Mapping([]))
        } catch let error as YamlError {
            switch error {
            case let .scanner(_, problem, mark, _), let .parser(_, problem, mark, _), let .composer(_, problem, mark, _):
                diagnostics.append(Diagnostic(file: file, line: mark.line, column: mark.column, message: "invalid YAML: \(problem)"))
            case let .duplicatedKeysInMapping(duplicates, context):
                diagnostics.append(Diagnostic(
                    file: file, line: context.mark.line, column: context.mark.column,
                    message: "duplicate key \(duplicates.map { "'\($0)'" }.joined(separator: ", "))"))
            default:
                diagnostics.append(Diagnostic(file: file, line: 1, column: 1, message: "invalid YAML: \(error)"))
            }
        } catch {
            diagnostics.append(Diagnostic(file: file, line: 1, column: 1, message: "invalid YAML: \(error)"))
        }
        return nil
    }

    package mutating func error(_ node: Node?, _ message: String) {
        report(node, .error, message)
    }

    package mutating func warning(_ node: Node?, _ message: String) {
        report(node, .warning, message)
    }

    private mutating func report(_ node: Node?, _ severity: Diagnostic.Severity, _ message: String) {
        let mark = node?.mark
        diagnostics.append(Diagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, severity: severity, message: message))
    }

    /// The entries of a mapping, in order. Unknown keys are reported (with a suggestion) and left out.
    /// Whether a node is YAML's null (`null`, `~`, or nothing), which a configuration key takes to mean "the default".
    package static func isNull(_ node: Node) -> Bool {
        guard case .scalar(let s) = node, s.style == .plain else { return false }
        return ["null", "Null", "NULL", "~", ""].contains(s.string)
    }

    package mutating func mapping(
        _ node: Node, allowed: [String], what: String, allowAny: Bool = false, hint: ((String) -> String?)? = nil
    ) -> [(key: String, keyNode: Node, value: Node)] {
        guard case .mapping(let mapping) = node else {
            error(node, "\(what) must be a mapping (key: value)")
            return []
        }
        var out: [(String, Node, Node)] = []
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            guard allowAny || allowed.contains(key) else {
                var message = "unknown key '\(key)' in \(what)"
                if let special = hint?(key) {
                    message += "; \(special)"
                } else if let hint = suggestion(for: key, among: allowed) {
                    message += "; did you mean '\(hint)'?"
                } else {
                    message += "; expected one of: \(allowed.joined(separator: ", "))"
                }
                error(keyNode, message)
                continue
            }
            out.append((key, keyNode, value))
        }
        return out
    }

    package mutating func sequence(_ node: Node, what: String) -> [Node] {
        guard case .sequence(let seq) = node else {
            error(node, "\(what) must be a list")
            return []
        }
        return Array(seq)
    }

    package mutating func string(_ node: Node, what: String) -> String? {
        guard case .scalar(let s) = node else {
            error(node, "\(what) must be a string")
            return nil
        }
        return s.string
    }

    package mutating func integer(_ node: Node, what: String, range: ClosedRange<Int64>? = nil) -> Int64? {
        guard case .scalar(let s) = node, let v = Int64(s.string.replacingOccurrences(of: "_", with: "")) else {
            error(node, "\(what) must be an integer, got '\(node.scalar?.string ?? "a collection")'")
            return nil
        }
        if let range, !range.contains(v) {
            error(node, "\(what) must be between \(range.lowerBound) and \(range.upperBound), got \(v)")
            return nil
        }
        return v
    }

    package mutating func number(_ node: Node, what: String, range: ClosedRange<Double>? = nil) -> Double? {
        guard case .scalar(let s) = node, let v = Double(s.string), v.isFinite else {
            error(node, "\(what) must be a number, got '\(node.scalar?.string ?? "a collection")'")
            return nil
        }
        if let range, !range.contains(v) {
            error(node, "\(what) must be between \(formatNumber(range.lowerBound)) and \(formatNumber(range.upperBound)), got \(formatNumber(v))")
            return nil
        }
        return v
    }

    package mutating func bool(_ node: Node, what: String) -> Bool? {
        guard case .scalar(let s) = node else {
            error(node, "\(what) must be true or false")
            return nil
        }
        switch s.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            error(node, "\(what) must be true or false, got '\(s.string)'")
            return nil
        }
    }

    /// A duration such as `500ms`, `5s`, `1m30s`, `2h` (Go's syntax, as in the Collector's configuration).
    package mutating func duration(_ node: Node, what: String) -> Duration? {
        guard case .scalar(let s) = node, let d = parseDuration(s.string) else {
            error(node, "\(what) must be a duration such as 500ms, 5s, 1m30s, got '\(node.scalar?.string ?? "a collection")'")
            return nil
        }
        return d
    }

    /// A size such as `4MiB`, `64MB`, `512KiB` or a plain number of bytes.
    package mutating func size(_ node: Node, what: String) -> Int? {
        guard case .scalar(let s) = node, let v = parseSize(s.string) else {
            error(node, "\(what) must be a size such as 4MiB, 64MB or 1048576, got '\(node.scalar?.string ?? "a collection")'")
            return nil
        }
        return v
    }
}

package func formatNumber(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
}

/// Parses Go-style durations: a sequence of number+unit (ns, us, µs, ms, s, m, h).
package func parseDuration(_ text: String) -> Duration? {
    let s = text.trimmingCharacters(in: .whitespaces)
    if s == "0" { return .zero }
    var total: Double = 0
    var rest = Substring(s)
    guard !rest.isEmpty else { return nil }
    while !rest.isEmpty {
        let numberPart = rest.prefix { $0.isNumber || $0 == "." }
        guard !numberPart.isEmpty, let value = Double(numberPart) else { return nil }
        rest = rest.dropFirst(numberPart.count)
        let unitPart = rest.prefix { $0.isLetter || $0 == "µ" }
        rest = rest.dropFirst(unitPart.count)
        let scale: Double
        switch unitPart {
        case "ns": scale = 1e-9
        case "us", "µs": scale = 1e-6
        case "ms": scale = 1e-3
        case "s": scale = 1
        case "m": scale = 60
        case "h": scale = 3600
        default: return nil
        }
        total += value * scale
    }
    return .nanoseconds(Int64((total * 1e9).rounded()))
}

/// Parses sizes: plain bytes, or a number with B, KB/MB/GB (powers of 1000) or KiB/MiB/GiB (powers of 1024).
package func parseSize(_ text: String) -> Int? {
    let s = text.trimmingCharacters(in: .whitespaces)
    let numberPart = s.prefix { $0.isNumber || $0 == "." || $0 == "_" }
    guard let value = Double(numberPart.replacingOccurrences(of: "_", with: "")), value >= 0 else { return nil }
    let unit = s.dropFirst(numberPart.count).trimmingCharacters(in: .whitespaces).lowercased()
    let scale: Double
    switch unit {
    case "", "b": scale = 1
    case "kb", "k": scale = 1e3
    case "mb", "m": scale = 1e6
    case "gb", "g": scale = 1e9
    case "kib", "ki": scale = 1024
    case "mib", "mi": scale = 1024 * 1024
    case "gib", "gi": scale = 1024 * 1024 * 1024
    default: return nil
    }
    let bytes = value * scale
    guard bytes < 9e18 else { return nil }
    return Int(bytes)
}

/// The closest candidate by edit distance, when it is close enough to be a likely typo.
package func suggestion(for word: String, among candidates: [String]) -> String? {
    let w = Array(word.lowercased())
    var best: (String, Int)? = nil
    for c in candidates {
        let d = editDistance(w, Array(c.lowercased()))
        if d < (best?.1 ?? .max) { best = (c, d) }
    }
    guard let (candidate, distance) = best else { return nil }
    let limit = max(2, min(w.count, candidate.count) / 3)
    return distance <= limit ? candidate : nil
}

package func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}
