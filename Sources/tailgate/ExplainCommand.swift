import ArgumentParser
import Foundation
#if canImport(TailgateRecording)
import TailgateRecording
#endif
import TailgatePolicies
import TailgateRuntime
import TailgateWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `tailgate explain TRACE_ID`: asks a running Tailgate's admin listener (`GET /debug/traces/{id}`) where a trace is
/// and why it was, or would be, kept or dropped, and prints the answer for people.
struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Explain why a trace was (or would be) kept or dropped, asking a running tailgate or a recording.",
        discussion: """
            Fetches GET /debug/traces/TRACE_ID from the admin listener of a running tailgate and prints where the trace \
            is (buffered, spilled to the store, retained after a drop, kept, dropped) and why: for an undecided trace, \
            when it will be decided and every policy's verdict evaluated now; for a decided one, the policy, the weight, \
            the trigger and how long ago. Exit status: 0 when the trace is known, 1 when it is unknown (never seen, or \
            its decision forgotten), 2 when the admin listener cannot be reached or answers with an error.

            With --recording FILE (a recording written by serve --record, or OTLP/JSON lines), answers offline: the \
            recording's requests that hold the trace are replayed at their recorded times through the buffer and the \
            policies (--policies, else the policies file of --config, else the built-in defaults; buffer timings from \
            --config), and the decision is printed with its trigger and every policy's verdict on the trace's spans at \
            the decision. Exit status: 0 when the trace is in the recording, 1 when it is not, 2 when the recording \
            (or a policies or configuration file) cannot be read.
            """)

    @Argument(help: "The trace ID: 32 hexadecimal digits.")
    var traceID: String

    @Option(help: "The admin listener of the running tailgate, HOST:PORT (default 127.0.0.1:9464).")
    var admin: String?

    @Option(help: "Answer offline from this recording (.tgrec from serve --record, or OTLP/JSON lines; .gz allowed).")
    var recording: String?

    @Option(help: "With --recording: the policies file (default: that of --config, else the built-in defaults).")
    var policies: String?

    @Option(help: "With --recording: the configuration file whose buffer timings (and dry_run) the replay uses.")
    var config: String?

    @Flag(help: "Print the JSON answer as it came.")
    var json = false

    func validate() throws {
        let id = traceID.trimmingCharacters(in: .whitespaces)
        guard id.utf8.count == 32, id.allSatisfy(\.isHexDigit) else {
            throw ValidationError("a trace ID is 32 hexadecimal digits; got '\(traceID)' (\(traceID.count) characters)")
        }
        if recording != nil, admin != nil {
            throw ValidationError("--admin asks a running tailgate, --recording answers from a recording: pass one of them")
        }
        if recording == nil, policies != nil || config != nil {
            throw ValidationError("--policies and --config go with --recording (a running tailgate uses its own)")
        }
    }

    func run() throws {
        let id = traceID.trimmingCharacters(in: .whitespaces).lowercased()
        if let recording {
            return try offline(id, recording: recording)
        }
        let admin = self.admin ?? "127.0.0.1:9464"
        var address = admin
        for scheme in ["http://", "https://"] where address.hasPrefix(scheme) { address.removeFirst(scheme.count) }
        if address.hasSuffix("/") { address.removeLast() }
        guard let (host, port) = Self.split(address) else {
            Self.fail("--admin must be HOST:PORT, got '\(admin)'")
        }
        let response: (status: Int, body: Data)
        do {
            response = try AdminHTTP.get(host: host, port: port, path: "/debug/traces/\(id)", timeout: 10)
        } catch {
            Self.fail("cannot reach the tailgate admin listener at \(host):\(port): \(error) (is tailgate running, and is its admin_listen \(host):\(port)? pass --admin HOST:PORT)")
        }
        let object = (try? JSONSerialization.jsonObject(with: response.body)) as? [String: Any]
        guard let object, [200, 404].contains(response.status) else {
            let text = String(decoding: response.body.prefix(500), as: UTF8.self)
            Self.fail("the admin listener at \(host):\(port) answered HTTP \(response.status): \(text)")
        }
        if json {
            FileHandle.standardOutput.write(response.body)
        } else {
            FileHandle.standardOutput.write(Data(Self.render(object).utf8))
        }
        if response.status == 404 { throw ExitCode(1) }
    }

    /// `--recording`: replays the requests of the recording that hold the trace (see `OfflineExplain`).
    func offline(_ id: String, recording: String) throws {
        guard let trace = TraceID(hex: id), trace.isValid else {
            throw ValidationError("the all-zero trace ID is invalid in OpenTelemetry")
        }
        var configuration = TailgateConfiguration()
        let set: PolicySet
        let policiesName: String
        let requests: [RecordedRequest]
        do {
            if let config { configuration = try TailgateConfiguration.load(path: config) }
            let policiesPath = policies ?? configuration.policiesPath
            set = try policiesPath.map { try PolicySet.load(path: $0) } ?? PolicySet.builtIn()
            policiesName = policiesPath ?? "built-in default"
            requests = try Recording.read(path: recording)
        } catch {
            Self.fail("\(error)")
        }
        let answer = OfflineExplain.explain(traceID: trace, requests: requests, policies: set, policiesName: policiesName,
                                            buffer: configuration.buffer, dryRun: configuration.dryRun,
                                            recordingName: recording)
        if json {
            FileHandle.standardOutput.write(Data(answer.json.utf8))
        } else {
            let object = (try? JSONSerialization.jsonObject(with: Data(answer.json.utf8))) as? [String: Any] ?? [:]
            FileHandle.standardOutput.write(Data(Self.render(object).utf8))
        }
        if !answer.found { throw ExitCode(1) }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        Explain.exit(withError: ExitCode(2))
    }

    /// HOST:PORT, with IPv6 hosts in brackets.
    static func split(_ address: String) -> (String, UInt16)? {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    /// The answer for people: a headline, then the details the state has.
    static func render(_ o: [String: Any]) -> String {
        func string(_ key: String, in d: [String: Any] = o) -> String? { d[key] as? String }
        func number(_ key: String, in d: [String: Any] = o) -> Double? { (d[key] as? NSNumber)?.doubleValue }
        func int(_ key: String, in d: [String: Any] = o) -> Int? { (d[key] as? NSNumber)?.intValue }
        func seconds(_ s: Double?) -> String {
            guard let s else { return "—" }
            return s < 10 ? String(format: "%.1f s", s) : String(format: "%.0f s", s)
        }
        let id = string("trace_id") ?? "?"
        let state = string("state") ?? "?"
        var out = "trace \(id): \(state)\n  \(string("text") ?? "")\n"
        if let spans = int("spans") {
            var line = "  spans: \(spans), \(int("bytes") ?? 0) bytes"
            if let statuses = o["statuses"] as? [String], !statuses.isEmpty { line += "; statuses: \(statuses.joined(separator: ", "))" }
            if let root = o["root_seen"] as? Bool { line += "; root \(root ? "seen" : "not seen")" }
            out += line + "\n"
        }
        if let missing = o["missing_parents"] as? [String: Any] {
            out += "  missing parents: \(int("local", in: missing) ?? 0) local, \(int("remote", in: missing) ?? 0) remote"
            if let stored = int("stored_bytes"), stored > 0 {
                out += "; \(int("spans_in_memory") ?? 0) spans in memory, \(stored) bytes in the store"
            }
            out += "\n"
        }
        if let genAI = o["gen_ai"] as? [String: Any] {
            out += "  GenAI: \(int("spans", in: genAI) ?? 0) span(s), \(int("tokens", in: genAI) ?? 0) tokens"
            if let usd = number("cost_usd", in: genAI) { out += String(format: ", $%.4f", usd) }
            out += "\n"
        }
        if number("first_seen_age_seconds") != nil {
            out += "  first span \(seconds(number("first_seen_age_seconds"))) ago, last \(seconds(number("last_seen_age_seconds"))) ago\n"
        } else if let first = string("first_seen") {
            out += "  first span arrived \(first), last \(string("last_seen") ?? "—")"
            if let root = string("root_arrived") { out += ", root \(root)" }
            out += "\n"
        }
        if let decision = o["decision"] as? [String: Any], let due = number("due_in_seconds", in: decision) {
            out += "  decided in \(seconds(due)) by \(string("trigger", in: decision) ?? "?")"
            if let why = string("why", in: decision) { out += " (\(why))" }
            out += "\n"
        }
        if let policies = o["policies"] as? [[String: Any]] {
            out += "  policies, evaluated \(string("policies_evaluated") ?? "now"):\n"
            let width = policies.map { (string("name", in: $0) ?? "").count + (string("type", in: $0) ?? "").count + 3 }.max() ?? 0
            for p in policies {
                let label = "\(string("name", in: p) ?? "?") (\(string("type", in: p) ?? "?"))"
                var line = "    " + label.padding(toLength: max(width, label.count), withPad: " ", startingAt: 0) + "  "
                line += string("verdict", in: p) ?? "?"
                if let chance = number("chance", in: p), chance < 1 { line += String(format: " (chance %.4g%%)", chance * 100) }
                out += line + "\n"
            }
            if let would = o["would"] as? [String: Any], let text = string("text", in: would) {
                out += "  → \(text)\n"
            }
        }
        if let decision = o["decision"] as? [String: Any], decision["keep"] != nil {
            let keep = decision["keep"] as? Bool ?? false
            var line = "  decision: \(keep ? "keep" : "drop")"
            line += ", policy: \(string("policy", in: decision) ?? "none")"
            if let weight = decision["weight"] as? [String: Any] {
                line += ", weight: \(string("kind", in: weight) ?? "?")"
                if let p = number("probability", in: weight), p < 1 { line += String(format: " (probability %.6g", p) }
                if let th = string("th", in: weight) { line += ", th=\(th)" }
                if let rate = number("sample_rate", in: weight) { line += String(format: ", sample rate %.6g)", rate) } else if (number("probability", in: weight) ?? 1) < 1 { line += ")" }
            }
            line += ", trigger: \(string("trigger", in: decision) ?? "not remembered")"
            if let ago = number("decided_age_seconds", in: decision) {
                line += ", \(seconds(ago)) ago"
            } else if let after = number("decided_after_first_span_seconds", in: decision) {
                line += ", \(seconds(after)) after the first span"
            }
            out += line + "\n"
        }
        if let source = o["source"] as? [String: Any] {
            out += "  replayed from \(string("recording", in: source) ?? "?"): \(int("requests_with_the_trace", in: source) ?? 0) of "
                + "\(int("requests", in: source) ?? 0) requests hold the trace; policies: \(string("policies", in: source) ?? "?")\n"
        }
        return out
    }
}

/// A minimal blocking HTTP/1.1 GET over TCP (the admin listener speaks plain HTTP; no dependency needed).
enum AdminHTTP {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func get(host: String, port: UInt16, path: String, timeout: Int) throws -> (status: Int, body: Data) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw Failure(description: "cannot resolve '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            cursor = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
            guard fd >= 0 else { lastError = String(cString: strerror(errno)); continue }
            defer { close(fd) }
            do {
                try connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen, timeout: timeout)
            } catch {
                lastError = "\(error)"
                continue
            }
            var tv = timeval(tv_sec: timeout, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let hostHeader = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            let request = Array("GET \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: tailgate-explain\r\n\r\n".utf8)
            var sent = 0
            while sent < request.count {
                let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { throw Failure(description: "sending the request failed: \(String(cString: strerror(errno)))") }
                sent += n
            }
            return try readResponse(fd)
        }
        throw Failure(description: lastError)
    }

    /// Connects with a deadline (a blocking connect to an unreachable address can take minutes).
    static func connect(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: socklen_t, timeout: Int) throws {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        #if canImport(Glibc)
        let result = Glibc.connect(fd, address, length)
        #else
        let result = Darwin.connect(fd, address, length)
        #endif
        if result == 0 { return }
        guard errno == EINPROGRESS else { throw Failure(description: String(cString: strerror(errno))) }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&pfd, 1, Int32(timeout * 1000))
        guard ready > 0 else { throw Failure(description: ready == 0 ? "connection timed out after \(timeout) s" : String(cString: strerror(errno))) }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size)
        guard error == 0 else { throw Failure(description: String(cString: strerror(error))) }
    }

    static func readResponse(_ fd: Int32) throws -> (status: Int, body: Data) {
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        var headerEnd: Int? = nil
        var contentLength: Int? = nil
        var status = 0
        while true {
            if let end = headerEnd, let length = contentLength, data.count >= end + length { break }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { throw Failure(description: "reading the answer failed: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            data += buffer[0..<n]
            guard data.count <= 16 << 20 else { throw Failure(description: "the answer is larger than 16 MiB") }
            if headerEnd == nil, let end = find([13, 10, 13, 10], in: data) {
                headerEnd = end + 4
                let head = String(decoding: data[0..<end], as: UTF8.self)
                let lines = head.components(separatedBy: "\r\n")
                let parts = lines.first?.split(separator: " ") ?? []
                status = parts.count >= 2 ? Int(parts[1]) ?? 0 : 0
                for line in lines.dropFirst() {
                    let pair = line.split(separator: ":", maxSplits: 1)
                    if pair.count == 2, pair[0].lowercased() == "content-length" {
                        contentLength = Int(pair[1].trimmingCharacters(in: .whitespaces))
                    }
                }
            }
        }
        guard let end = headerEnd, status > 0 else { throw Failure(description: "not an HTTP answer") }
        let body = data[end...]
        return (status, Data(contentLength.map { body.prefix($0) } ?? body))
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<i + needle.count]) == needle { return i }
        }
        return nil
    }
}
