import Foundation

// MARK: - Text helpers

/// Escapes text for HTML/XML content and attribute values, dropping characters XML does not allow.
func esc(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
        default:
            let v = scalar.value
            if v < 0x20 || v == 0x7F || (0xFFFE...0xFFFF).contains(v) { out += "\u{FFFD}" } else { out.unicodeScalars.append(scalar) }
        }
    }
    return out
}

/// Text for one terminal line: control characters (newlines included) become spaces.
func plain(_ text: String) -> String {
    String(String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : $0 }))
}

/// Cuts a line to `width` characters, ending in "..." when it was longer.
func clip(_ text: String, _ width: Int) -> String {
    text.count <= width ? text : String(text.prefix(width - 3)) + "..."
}

/// Word-wraps `text` to `width` columns; the first line starts with `indent`, the others with `continuation`.
func wrap(_ text: String, width: Int, indent: String, continuation: String? = nil) -> [String] {
    let next = continuation ?? indent
    var lines: [String] = []
    var line = indent
    var empty = true
    for word in text.split(separator: " ") {
        var w = Substring(word)
        if !empty && line.count + 1 + w.count > width {
            lines.append(line)
            line = next
            empty = true
        }
        // A word longer than a whole line is cut into pieces.
        while empty && line.count + w.count > width && line.count < width {
            let room = width - line.count
            lines.append(line + w.prefix(room))
            w = w.dropFirst(room)
            line = next
        }
        guard !w.isEmpty else { continue }
        line += (empty ? "" : " ") + w
        empty = false
    }
    if !empty || lines.isEmpty { lines.append(line) }
    return lines
}

func leftPad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

extension String {
    var trailingSpacesRemoved: String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}

extension Double {
    func clamped(_ lo: Double, _ hi: Double) -> Double {
        Swift.min(Swift.max(self, lo), hi)
    }
}

/// An integer with thousands separators: 1234567 → "1,234,567".
func grouped(_ v: Int) -> String {
    let digits = String(v.magnitude)
    var out = ""
    out.reserveCapacity(digits.count + digits.count / 3 + 1)
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return v < 0 ? "-" + out : out
}

/// A number with `decimals` decimals and thousands separators: 12345.678, 1 → "12,345.7".
func grouped(_ v: Double, decimals: Int) -> String {
    guard v.isFinite else { return v.isNaN ? "-" : (v > 0 ? "inf" : "-inf") }
    var text = String(format: "%.\(max(0, decimals))f", abs(v))
    var fraction = ""
    if let dot = text.firstIndex(of: ".") {
        fraction = String(text[dot...])
        text = String(text[..<dot])
    }
    var out = ""
    for (i, c) in text.enumerated() {
        if i > 0 && (text.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    let isZero = !(out + fraction).contains { $0 >= "1" && $0 <= "9" }
    return (v < 0 && !isZero ? "-" : "") + out + fraction
}

/// Milliseconds: 0.05 → "0.05", 3.14 → "3.1", 1234.5 → "1,235".
func formatMs(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    let a = abs(v)
    if a == 0 { return "0" }
    if a < 0.1 { return grouped(v, decimals: 2) }
    if a < 1000 { return grouped(v, decimals: 1) }
    return grouped(v, decimals: 0)
}

/// A rate: whole numbers from 100 up, one decimal below.
func formatRate(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    return abs(v) >= 100 || v == 0 ? grouped(v, decimals: 0) : grouped(v, decimals: 1)
}

/// Seconds with one decimal: "120.0 s".
func formatSeconds(_ v: Double) -> String {
    v.isFinite ? grouped(v, decimals: 1) + " s" : "- s"
}

/// A fraction as a percentage: 0.9876 → "98.8%".
func formatPercent(_ fraction: Double) -> String {
    fraction.isFinite ? grouped(fraction * 100, decimals: 1) + "%" : "-"
}

/// Bytes in binary units: "117.7 MiB".
func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var v = Double(bytes)
    var unit = 0
    while abs(v) >= 1024 && unit < units.count - 1 {
        v /= 1024
        unit += 1
    }
    return unit == 0 ? grouped(bytes) + " B" : grouped(v, decimals: 1) + " " + units[unit]
}

/// Axis labels for counts: 0, 500, 1.5k, 20k, 1.2M, 3G.
func compactNumber(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    let a = abs(v)
    for (limit, suffix) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] where a >= limit {
        return tickNumber(v / limit) + suffix
    }
    return tickNumber(v)
}

/// Axis labels for tick values: as few decimals as needed (at most 3), thousands separators.
func tickNumber(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    for decimals in 0...3 {
        let scale = pow(10, Double(decimals))
        if abs((v * scale).rounded() - v * scale) < 1e-6 * Swift.max(1, abs(v * scale)) {
            return grouped(v, decimals: decimals)
        }
    }
    return grouped(v, decimals: 3)
}

/// ISO-8601 in UTC, e.g. "2025-06-01T12:00:00Z" (or "...:00.123Z" with fractional seconds).
func iso8601(_ date: Date, fractional: Bool) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = fractional ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
    return formatter.string(from: date)
}

/// The label of a latency key of the report: "p999" is shown as "p99.9".
func latencyLabel(_ key: String) -> String {
    key == "p999" ? "p99.9" : key
}
