import ArgumentParser
import CTailgateSupport
import Foundation
import Logging
import TailgateExport
import TailgatePolicies
import TailgateBuffer
import TailgateRuntime
import TailgateRecording
import TailgateConfig
import TailgateImport
import TailgateWire

@main
struct Tailgate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tailgate",
        abstract: "A tail-based sampling proxy for OpenTelemetry traces.",
        discussion: """
            Agents send OTLP traces to Tailgate (gRPC :4317, HTTP :4318); Tailgate holds each trace until its \
            decision window closes, applies the policies file, and forwards the kept traces, complete, to the real collector.
            """,
        version: TailgateVersion.current,
        subcommands: [Serve.self, Check.self, Simulate.self, ImportOtel.self, Loadtest.self, Generate.self, Explain.self],
        defaultSubcommand: nil)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the proxy.",
        discussion: """
            Without flags: OTLP/gRPC on 127.0.0.1:4317, OTLP/HTTP on 127.0.0.1:4318, Prometheus metrics on \
            127.0.0.1:9464/metrics, the built-in default policies (policies/default.yaml), and kept traces written as \
            OTLP/JSON lines to ./tailgate-traces.jsonl. Flags override the configuration file. SIGINT/SIGTERM: stop \
            accepting, decide every buffered trace, flush within shutdown_timeout (default 25 s), exit 0 — or 3 when \
            kept spans could not be delivered in that time (the last log line counts them). With --data-dir, a stop \
            persists undecided traces and the undelivered forward queue instead, and the next start resumes them. \
            Exit 1 when a listener cannot bind or the data directory is in use, 2 when the configuration or policies \
            file is invalid.
            """)

    @Option(help: "Configuration file (YAML); see README.md for its keys.")
    var config: String?

    @Option(help: "Policies file (YAML). Default: the built-in default policies.")
    var policies: String?

    @Option(name: .customLong("grpc-listen"), help: "OTLP/gRPC listen address HOST:PORT, or 'off'.")
    var grpcListen: String?

    @Option(name: .customLong("http-listen"), help: "OTLP/HTTP listen address HOST:PORT, or 'off'.")
    var httpListen: String?

    @Option(help: "Where kept traces (and relayed metrics and logs) go: grpc://HOST:PORT, grpcs://HOST:PORT, http(s)://HOST:PORT[/path] or file:PATH ('file:-' for stdout).")
    var downstream: String?

    @Option(name: [.customLong("admin-listen"), .customLong("metrics-listen")],
            help: "Admin listen address HOST:PORT (/metrics, /livez, /readyz, /version), or 'off'. --metrics-listen is the older name.")
    var metricsListen: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .customLong("log-format"),
            help: "Log output on standard error: text (default) or json (one JSON object per line, for log shippers).")
    var logFormat: String?

    @Flag(name: .customLong("dry-run"), help: "Forward every span, marked with what the policies would have decided.")
    var dryRun = false

    @Option(help: "Tee every accepted export request into this recording (compact .tgrec form, rotated at 256 MiB).")
    var record: String?

    @Option(name: .customLong("data-dir"),
            help: "Durable trace store: idle traces wait on disk here, and a stop persists what is undecided for the next start on the same directory. Default: none (everything in memory).")
    var dataDir: String?

    /// A flag's value, else the `TAILGATE_*` environment variable standing for it (flags > environment > file).
    static func fromEnvironment(_ flag: String?, _ variable: String) -> (value: String, source: String)? {
        if let flag { return (flag, "--\(variable.dropFirst("TAILGATE_".count).lowercased().replacingOccurrences(of: "_", with: "-"))") }
        if let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty { return (value, variable) }
        return nil
    }

    var effectiveGRPCListen: (value: String, source: String)? { Self.fromEnvironment(grpcListen, "TAILGATE_GRPC_LISTEN") }
    var effectiveHTTPListen: (value: String, source: String)? { Self.fromEnvironment(httpListen, "TAILGATE_HTTP_LISTEN") }
    var effectiveAdminListen: (value: String, source: String)? { Self.fromEnvironment(metricsListen, "TAILGATE_ADMIN_LISTEN") }
    var effectiveDownstream: (value: String, source: String)? { Self.fromEnvironment(downstream, "TAILGATE_DOWNSTREAM") }
    var effectiveLogLevel: String { Self.fromEnvironment(logLevel == "info" ? nil : logLevel, "TAILGATE_LOG_LEVEL")?.value ?? logLevel }
    var effectiveLogFormat: (value: String, source: String) { Self.fromEnvironment(logFormat, "TAILGATE_LOG_FORMAT") ?? ("text", "default") }

    /// What `--log-format` accepts: `StreamLogHandler`'s text lines, or `JSONLogHandler`'s JSON lines.
    enum LogFormat: String, CaseIterable {
        case text, json
    }

    func validate() throws {
        for listen in [effectiveGRPCListen, effectiveHTTPListen, effectiveAdminListen].compactMap({ $0 }) {
            if listen.value != "off", parseHostPort(listen.value) == nil {
                throw ValidationError("\(listen.source) must be HOST:PORT or 'off', got '\(listen.value)'")
            }
        }
        if Logger.Level(rawValue: effectiveLogLevel) == nil {
            throw ValidationError("--log-level (or TAILGATE_LOG_LEVEL) must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let format = effectiveLogFormat
        if LogFormat(rawValue: format.value) == nil {
            throw ValidationError("\(format.source) must be one of \(LogFormat.allCases.map(\.rawValue).joined(separator: ", ")) (default text), got '\(format.value)'")
        }
    }

    func run() async throws {
        // A bad downstream address is a configuration error (exit 2, before anything listens), like one in the file.
        if let d = effectiveDownstream, DownstreamAddress(d.value) == nil {
            FileHandle.standardError.write(Data("error: \(d.source) must be grpc://HOST:PORT, grpcs://HOST:PORT, http(s)://HOST:PORT[/path] or file:PATH, got '\(d.value)'\n".utf8))
            throw ExitCode(2)
        }
        tailgate_tune_malloc()
        let level = Logger.Level(rawValue: effectiveLogLevel) ?? .info
        switch LogFormat(rawValue: effectiveLogFormat.value) ?? .text {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "tailgate")

        var configuration = TailgateConfiguration()
        do {
            if let config = Self.fromEnvironment(config, "TAILGATE_CONFIG")?.value {
                configuration = try TailgateConfiguration.load(path: config)
            }
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(2)
        }
        func listen(_ flag: (value: String, source: String)?, _ current: String?) -> String? {
            guard let flag else { return current }
            return flag.value == "off" ? nil : flag.value
        }
        configuration.grpcListen = listen(effectiveGRPCListen, configuration.grpcListen)
        configuration.httpListen = listen(effectiveHTTPListen, configuration.httpListen)
        configuration.adminListen = listen(effectiveAdminListen, configuration.adminListen)
        if let d = effectiveDownstream, let address = DownstreamAddress(d.value) { configuration.downstream = address }
        if let policies = Self.fromEnvironment(policies, "TAILGATE_POLICIES")?.value { configuration.policiesPath = policies }
        if dryRun { configuration.dryRun = true }
        if let record { configuration.record = RecordingWriter.Configuration(path: record) }
        if let d = Self.fromEnvironment(dataDir, "TAILGATE_DATA_DIR")?.value { configuration.dataDir = d == "off" ? nil : d }

        var policySet = PolicySet.builtIn()
        do {
            if let path = configuration.policiesPath { policySet = try PolicySet.load(path: path) }
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(2)
        }
        for warning in configuration.warnings + policySet.warnings { logger.warning("\(warning)") }
        let summary: ShutdownSummary
        do {
            summary = try await TailgateServer(configuration: configuration, policies: policySet, logger: logger).run()
        } catch let error as TailgateSetupError {
            logger.critical("tailgate cannot start: \(error)")
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        } catch {
            logger.critical("tailgate cannot run: \(error)")
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if summary.lostAtShutdown > 0 { throw ExitCode(3) }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate policies files.",
        discussion: """
            Prints every problem as FILE:LINE:COLUMN: error|warning: MESSAGE, and warns where policies combine into keeps \
            whose weight cannot be stated honestly. Exit status: 0 when every file is valid (warnings allowed), 1 when \
            any file has an error.
            """)

    @Argument(help: "Policies files to check.")
    var files: [String]

    func run() throws {
        var failed = false
        for file in files {
            do {
                let set = try PolicySet.load(path: file)
                for warning in set.warnings + set.weightWarnings(file: file) { print(warning) }
                print("\(file): ok (\(set.policies.count) policies: \(set.policies.map(\.name).joined(separator: ", ")))")
            } catch {
                failed = true
                for d in error.diagnostics { print(d) }
            }
        }
        if failed { throw ExitCode(1) }
    }
}

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay recordings through a policies file on a virtual clock and show what it would keep.",
        discussion: """
            Recordings: OTLP/JSON lines (as the Collector's file exporter and Tailgate's file: downstream write) or \
            Tailgate's compact .tgrec form, optionally gzip-compressed. Prints, per policy, the traces, spans and bytes \
            it keeps, the overall keep rate and the kept volume per day at the recorded rate. With --against, also how \
            many traces change decision, by category, with example trace IDs.
            """)

    @Option(help: "Policies file to simulate (default: the built-in default policies).")
    var policies: String?

    @Option(help: "A second policies file to compare with.")
    var against: String?

    @Option(help: "Configuration file whose buffer settings (decision timing) to use.")
    var config: String?

    @Argument(help: "Recordings to replay.")
    var recordings: [String]

    func run() throws {
        var buffer = BufferConfiguration()
        var sets: [(String, PolicySet)] = []
        do {
            if let config { buffer = try TailgateConfiguration.load(path: config).buffer }
            sets.append((policies ?? "built-in default", try policies.map { try PolicySet.load(path: $0) } ?? PolicySet.builtIn()))
            if let against { sets.append((against, try PolicySet.load(path: against))) }
        } catch let error as DiagnosticsError {
            for d in error.diagnostics { print(d) }
            throw ExitCode(2)
        }
        var requests: [RecordedRequest] = []
        for path in recordings {
            do { requests += try Recording.read(path: path) } catch {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        let started = ContinuousClock.now
        let reports = Simulator(buffer: buffer).run(requests, policySets: sets.map(\.1))
        let elapsed = ContinuousClock.now - started
        for (i, report) in reports.enumerated() {
            print(Simulator.table(report, title: "\(sets[i].0): \(requests.count) requests"))
        }
        if reports.count == 2 {
            let differences = Simulator.compare(reports[0], reports[1])
            let changed = differences.reduce(0) { $0 + $1.count }
            print("\(changed) of \(reports[0].traces) traces change decision from \(sets[0].0) to \(sets[1].0)")
            for d in differences {
                print("  \(d.category): \(d.count)  e.g. \(d.examples.map(\.description).joined(separator: ", "))")
            }
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(String(format: "(simulated %d spans through %d policies file(s) in %.2f s)", reports.first?.spans ?? 0, reports.count, seconds))
    }
}

struct ImportOtel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-otel",
        abstract: "Turn the tail_sampling processor of an OpenTelemetry Collector configuration into a Tailgate policies file.",
        discussion: "Writes the policies file to standard output (or --output) and notes about what could not be carried over to standard error.")

    @Argument(help: "The Collector's configuration file.")
    var file: String

    @Option(help: "Which tail_sampling processor, when there are several (e.g. tail_sampling/llm).")
    var processor: String?

    @Option(name: .shortAndLong, help: "Write the policies file here instead of standard output.")
    var output: String?

    func run() throws {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            FileHandle.standardError.write(Data("\(file): cannot read file\n".utf8))
            throw ExitCode(2)
        }
        let result: CollectorImport
        do {
            result = try CollectorImport.convert(text, file: file, processor: processor)
        } catch {
            for d in error.diagnostics { FileHandle.standardError.write(Data("\(d)\n".utf8)) }
            throw ExitCode(1)
        }
        for note in result.notes {
            FileHandle.standardError.write(Data("\(note.file):\(note.line):\(note.column): note: \(note.message)\n".utf8))
        }
        if let output {
            try result.policiesYAML.write(toFile: output, atomically: true, encoding: .utf8)
        } else {
            print(result.policiesYAML, terminator: "")
        }
    }
}

