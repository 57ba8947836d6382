import Foundation
import NIOHTTP1
import TailgateHTTPServer

/// OpenMetrics 1.0 text for `/metrics` when the scraper asks for it (`Accept: application/openmetrics-text`).
///
/// swift-prometheus (2.x) writes the Prometheus text format (0.0.4) only, so its exposition is converted, family by
/// family: a counter's family is named without `_total` (its samples keep it; a counter sample without it gets it), a
/// gauge named `*_info` whose samples are all 1 becomes an `info` family, `untyped` becomes `unknown`, HELP text gets
/// OpenMetrics escaping (`\"` too), sample timestamps go from milliseconds to seconds, blank lines and other comments
/// are left out, and `# EOF` ends the text. The samples — names, labels, values — are the same as in the Prometheus
/// text.
enum OpenMetrics {
    static let contentType = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    /// `GET /metrics`: OpenMetrics when the request's `Accept` prefers it, else the Prometheus text as it is.
    static func response(to request: HTTPRequest, exposition: [UInt8]) -> HTTPResponse {
        var headers = HTTPHeaders()
        headers.add(name: "Vary", value: "Accept")
        if preferred(accept: request.head.headers[canonicalForm: "Accept"].joined(separator: ",")) {
            return HTTPResponse(status: .ok, contentType: contentType, headers: headers, body: convert(exposition))
        }
        return HTTPResponse(status: .ok, contentType: prometheusContentType, headers: headers, body: exposition)
    }

    /// Whether an `Accept` header prefers OpenMetrics: an `application/openmetrics-text` range with a q-value above 0
    /// and at least that of any text/plain range (`*/*` alone, or no header, gets Prometheus text).
    static func preferred(accept: String?) -> Bool {
        guard let accept else { return false }
        var openMetrics = 0.0, text = 0.0
        for range in accept.split(separator: ",") {
            let parts = range.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let type = parts.first?.lowercased() else { continue }
            var q = 1.0
            for p in parts.dropFirst() {
                let kv = p.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if kv.count == 2, kv[0].lowercased() == "q", let v = Double(kv[1]) { q = min(max(v, 0), 1) }
            }
            switch type {
            case "application/openmetrics-text": openMetrics = max(openMetrics, q)
            case "text/plain": text = max(text, q)
            default: break
            }
        }
        return openMetrics > 0 && openMetrics >= text
    }

    /// The OpenMetrics text of a Prometheus text exposition.
    static func convert(_ prometheus: [UInt8]) -> [UInt8] {
        let lines = String(decoding: prometheus, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true)
        // Types by metric name, and which gauges named *_info hold only 1s (info metrics).
        var types: [String: String] = [:]
        for line in lines where line.hasPrefix("# TYPE ") {
            let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1)
            if parts.count == 2 { types[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        var infoCandidates = Set(types.filter { $0.value == "gauge" && $0.key.hasSuffix("_info") }.keys)
        for line in lines where !line.hasPrefix("#") {
            let (name, value, _) = splitSample(line)
            if infoCandidates.contains(name), Double(value) != 1 { infoCandidates.remove(name) }
        }
        func family(_ name: String) -> (family: String, type: String) {
            let type = types[name] ?? "unknown"
            if infoCandidates.contains(name) { return (String(name.dropLast(5)), "info") }
            switch type {
            case "counter": return (name.hasSuffix("_total") ? String(name.dropLast(6)) : name, "counter")
            case "untyped": return (name, "unknown")
            default: return (name, type)
            }
        }

        var out = ""
        out.reserveCapacity(prometheus.count + 256)
        var counterFamily: String? = nil  // the counter whose samples follow (renamed to `_total` if they lack it)
        for line in lines {
            if line.hasPrefix("# HELP ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard let name = parts.first.map(String.init) else { continue }
                let help = parts.count > 1 ? String(parts[1]) : ""
                out += "# HELP \(family(name).family) \(escapeHelp(help))\n"
            } else if line.hasPrefix("# TYPE ") {
                guard let name = line.dropFirst(7).split(separator: " ").first.map(String.init) else { continue }
                let (f, type) = family(name)
                counterFamily = type == "counter" ? name : nil
                out += "# TYPE \(f) \(type)\n"
            } else if line.hasPrefix("#") {
                continue  // OpenMetrics allows no other comments
            } else {
                var (name, value, rest) = splitSample(line)
                let labels = line.dropFirst(name.count).prefix(line.count - name.count - rest.count)
                if let counter = counterFamily, name == counter, !name.hasSuffix("_total") { name += "_total" }
                out += name
                out += labels.trimmingCharacters(in: .whitespaces)
                out += " " + value
                if let ms = rest.split(separator: " ").dropFirst().first, let t = Int64(ms) {
                    out += " " + seconds(milliseconds: t)
                }
                out += "\n"
            }
        }
        out += "# EOF\n"
        return Array(out.utf8)
    }

    /// A sample line's metric name, its value, and the text from the value on (value and optional timestamp).
    static func splitSample(_ line: Substring) -> (name: String, value: String, rest: Substring) {
        var nameEnd = line.startIndex
        while nameEnd < line.endIndex, line[nameEnd] != "{", line[nameEnd] != " " { nameEnd = line.index(after: nameEnd) }
        let name = String(line[..<nameEnd])
        var i = nameEnd
        if i < line.endIndex, line[i] == "{" {
            // Skip the labels, minding quoted values with escapes.
            var quoted = false, escaped = false
            while i < line.endIndex {
                let c = line[i]
                if escaped { escaped = false } else if c == "\\" { escaped = quoted } else if c == "\"" { quoted.toggle() } else if c == "}", !quoted {
                    i = line.index(after: i)
                    break
                }
                i = line.index(after: i)
            }
        }
        let rest = line[i...].drop { $0 == " " || $0 == "\t" }
        let value = rest.split(separator: " ").first.map(String.init) ?? ""
        return (name, value, rest)
    }

    /// Prometheus HELP escapes `\\` and `\n`; OpenMetrics escapes `"` too.
    static func escapeHelp(_ help: String) -> String {
        var out = ""
        var escaped = false
        for c in help {
            if escaped {
                out.append(c)
                escaped = false
            } else if c == "\\" {
                out.append(c)
                escaped = true
            } else if c == "\"" {
                out += "\\\""
            } else {
                out.append(c)
            }
        }
        if escaped { out.append("\\") }
        return out
    }

    static func seconds(milliseconds t: Int64) -> String {
        let sign = t < 0 ? "-" : ""
        let m = t.magnitude
        let frac = m % 1000
        return "\(sign)\(m / 1000)" + (frac == 0 ? "" : "." + String(String(frac + 1000).dropFirst()))
    }
}
