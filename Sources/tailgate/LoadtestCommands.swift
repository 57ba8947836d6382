import ArgumentParser
import Foundation
import TailgateExport
import TailgateLoadtest
import TailgatePolicies
import TailgateRecording
import TailgateWire
import TailgateIngest
import TailgateConfig

struct Loadtest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay recordings against an OTLP endpoint; measure throughput and ack latency; verify what was forwarded.",
        discussion: """
            Prints progress once a second and a final table; writes the report as JSON and as a self-contained HTML page. \
            With --receiver HOST:PORT, runs a built-in OTLP/gRPC downstream there (point the proxy's --downstream at it) and \
            verifies that every trace the policies keep arrived complete, none they drop arrived, and nothing is duplicated.
            """)

    @Option(help: "Where to send: grpc://HOST:PORT or http://HOST:PORT[/path].")
    var target: String

    @Argument(help: "Recordings (.tgrec or OTLP/JSON lines, optionally gzip-compressed).")
    var recordings: [String]

    @Option(help: "Concurrent connections.")
    var connections: Int = 4

    @Option(help: "Target spans per second (default: as fast as possible).")
    var rate: Double?

    @Option(help: "Stop after this long, e.g. 30s (the recording loops with fresh trace IDs).")
    var duration: String?

    @Option(help: "Stop after this many spans.")
    var spans: Int?

    @Flag(help: "Replay with the recording's own timing (see --speed) instead of a rate.")
    var recordedTiming = false

    @Option(help: "Speed factor for --recorded-timing.")
    var speed: Double = 1

    @Flag(help: "Compress requests with gzip.")
    var gzip = false

    @Flag(name: .customLong("otlp-json"), help: "Send OTLP/JSON instead of protobuf (http:// targets only).")
    var otlpJSON = false

    @Flag(inversion: .prefixedNo, help: "Give each pass over the recording fresh trace IDs.")
    var freshIds = true

    @Option(help: "Run a built-in OTLP/gRPC receiver here and verify what arrives (e.g. 127.0.0.1:14317).")
    var receiver: String?

    @Option(help: "Policies the proxy runs, for verification (default: the built-in default policies).")
    var policies: String?

    @Option(help: "How long to wait for the proxy to flush before verifying.")
    var settle: String = "10s"

    @Option(help: "PID of the proxy, to report its CPU time per span (from /proc).")
    var proxyPid: Int32?

    @Option(name: .customLong("receiver-fail-percent"), help: "The built-in receiver answers this share of requests UNAVAILABLE (fault injection).")
    var receiverFailPercent: Double = 0

    @Option(name: .customLong("receiver-outage"), help: "LENGTH@START, e.g. 30s@60s: the built-in receiver answers every request UNAVAILABLE for LENGTH from START after it started (repeatable).")
    var receiverOutage: [String] = []

    @Option(help: "Write the JSON report here.")
    var json: String = "loadtest-report.json"

    @Option(help: "Write the HTML report here.")
    var html: String = "loadtest-report.html"

    func run() async throws {
        guard let address = DownstreamAddress(target), address.scheme != "file" else {
            throw ValidationError("--target must be grpc://HOST:PORT or http://HOST:PORT[/path]")
        }
        var options = ReplayOptions(target: address)
        options.connections = max(1, connections)
        options.spansPerSecond = rate
        options.maxSpans = spans
        options.recordedTiming = recordedTiming
        options.speed = speed
        options.gzip = gzip
        options.json = otlpJSON
        if otlpJSON && address.scheme != "http" { throw ValidationError("--otlp-json needs an http:// target") }
        options.freshTraceIDs = freshIds
        if let duration {
            guard let d = parseDuration(duration) else { throw ValidationError("--duration: not a duration: \(duration)") }
            options.duration = d
        }
        guard let settleTime = parseDuration(settle) else { throw ValidationError("--settle: not a duration: \(settle)") }
        let policySet = try policies.map { try PolicySet.load(path: $0) } ?? PolicySet.builtIn()

        var requests: [RecordedRequest] = []
        for path in recordings { requests += try Recording.read(path: path) }
        let recording = try PreparedRecording(requests)
        print("recording: \(recording.count) requests, \(recording.spans) spans, \(recording.bytes / 1024) KiB")

        var receiverServer: RecordingReceiver? = nil
        var receiverTask: Task<Void, any Error>? = nil
        if let receiver {
            guard let (host, port) = parseHostPort(receiver) else { throw ValidationError("--receiver must be HOST:PORT") }
            var faults = ReceiverFaults(failPercent: receiverFailPercent)
            for text in receiverOutage {
                guard let outage = ReceiverFaults.outage(text) else { throw ValidationError("--receiver-outage must be LENGTH@START, got '\(text)'") }
                faults.outages.append(outage)
            }
            let r = RecordingReceiver(host: host, port: port, faults: faults)
            receiverServer = r
            receiverTask = Task { try await r.server.serve() }
            // A receiver that cannot listen (its port taken) fails the run here: it used to fail silently, and the
            // run went on with nothing to verify against.
            try await r.server.waitUntilListening()
        }
        let cpuBefore = proxyPid.flatMap(cpuSeconds)
        let replayer = Replayer(recording: recording, options: options)
        var (report, sent) = try await replayer.run { sample, elapsed in
            print(progressLine(sample, elapsed: elapsed))
        }
        report.recording = recordings
        if let receiverServer {
            // Wait until the proxy has decided and flushed everything (or the settle time passed).
            let deadline = ContinuousClock.now + settleTime
            // Settled: nothing new for 4 s (a proxy retrying through injected failures pauses between attempts).
            var last = -1
            var quietSince = ContinuousClock.now
            while ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(500))
                let now = receiverServer.spansReceived
                if now != last { last = now; quietSince = .now }
                if now > 0 && ContinuousClock.now - quietSince >= .seconds(4) { break }
            }
            report.verification = Verifier.verify(
                recording: recording, sent: sent, policies: policySet, received: receiverServer.traces())
            report.notes.append("receiver got \(receiverServer.spansReceived) spans in \(receiverServer.requestsReceived) requests"
                + (receiverServer.requestsFailed > 0 ? "; answered \(receiverServer.requestsFailed) requests with injected failures" : ""))
            receiverServer.server.beginGracefulShutdown()
            receiverTask?.cancel()
        }
        if let pid = proxyPid, let before = cpuBefore, let after = cpuSeconds(pid), report.spansAcked > 0 {
            let perSpan = (after - before) / Double(report.spansAcked) * 1e9
            report.notes.append(String(format: "proxy (pid %d) CPU: %.2f s for %d acknowledged spans = %.0f ns/span", pid, after - before, report.spansAcked, perSpan))
        }
        sent.failed.removeAll()
        print(report.table())
        try report.json().write(to: URL(fileURLWithPath: json))
        try report.html().write(toFile: html, atomically: true, encoding: .utf8)
        print("wrote \(json) and \(html)")
        if let v = report.verification, !v.passed { throw ExitCode(1) }
    }
}

/// User + system CPU seconds of a process, from /proc/PID/stat.
func cpuSeconds(_ pid: Int32) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command: state(0) ppid(1) … utime(11) stime(12), in clock ticks.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

