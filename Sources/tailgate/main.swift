import ArgumentParser
import Foundation
import Logging
import TailgateExport
import TailgatePolicies
import TailgateRuntime

@main
struct Tailgate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tailgate",
        abstract: "A tail-based sampling proxy for OpenTelemetry traces.",
        discussion: """
            Agents send OTLP traces to Tailgate (gRPC :4317, HTTP :4318); Tailgate holds each trace until its \
            decision window closes, applies the policies file, and forwards the kept traces, complete, to the real collector.
            """,
        version: "0.1.0",
        subcommands: [Serve.self, Check.self],
        defaultSubcommand: nil)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the proxy.",
        discussion: """
            Without flags: OTLP/gRPC on 127.0.0.1:4317, OTLP/HTTP on 127.0.0.1:4318, Prometheus metrics on \
            127.0.0.1:9464/metrics, the built-in default policies (policies/default.yaml), and kept traces written as \
            OTLP/JSON lines to ./tailgate-traces.jsonl. Flags override the configuration file. SIGINT/SIGTERM: stop \
            accepting, decide every buffered trace, flush, exit 0.
            """)

    @Option(help: "Configuration file (YAML); see README.md for its keys.")
    var config: String?

    @Option(help: "Policies file (YAML). Default: the built-in default policies.")
    var policies: String?

    @Option(name: .customLong("grpc-listen"), help: "OTLP/gRPC listen address HOST:PORT, or 'off'.")
    var grpcListen: String?

    @Option(name: .customLong("http-listen"), help: "OTLP/HTTP listen address HOST:PORT, or 'off'.")
    var httpListen: String?

    @Option(help: "Where kept traces go: grpc://HOST:PORT, http://HOST:PORT[/path] or file:PATH ('file:-' for stdout).")
    var downstream: String?

    @Option(name: .customLong("metrics-listen"), help: "Prometheus /metrics listen address HOST:PORT, or 'off'.")
    var metricsListen: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        for (name, value) in [("--grpc-listen", grpcListen), ("--http-listen", httpListen), ("--metrics-listen", metricsListen)] {
            if let value, value != "off", parseHostPort(value) == nil {
                throw ValidationError("\(name) must be HOST:PORT or 'off', got '\(value)'")
            }
        }
        if let downstream, DownstreamAddress(downstream) == nil {
            throw ValidationError("--downstream must be grpc://HOST:PORT, http://HOST:PORT[/path] or file:PATH, got '\(downstream)'")
        }
        if Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "tailgate")

        var configuration = TailgateConfiguration()
        do {
            if let config { configuration = try TailgateConfiguration.load(path: config) }
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(2)
        }
        func listen(_ flag: String?, _ current: String?) -> String? {
            guard let flag else { return current }
            return flag == "off" ? nil : flag
        }
        configuration.grpcListen = listen(grpcListen, configuration.grpcListen)
        configuration.httpListen = listen(httpListen, configuration.httpListen)
        configuration.metricsListen = listen(metricsListen, configuration.metricsListen)
        if let downstream, let address = DownstreamAddress(downstream) { configuration.downstream = address }
        if let policies { configuration.policiesPath = policies }

        var policySet = PolicySet.builtIn()
        do {
            if let path = configuration.policiesPath { policySet = try PolicySet.load(path: path) }
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(2)
        }
        for warning in policySet.warnings { logger.warning("\(warning)") }
        try await TailgateServer(configuration: configuration, policies: policySet, logger: logger).run()
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate policies files.",
        discussion: """
            Prints every problem as FILE:LINE:COLUMN: error|warning: MESSAGE. Exit status: 0 when every file is valid \
            (warnings allowed), 1 when any file has an error.
            """)

    @Argument(help: "Policies files to check.")
    var files: [String]

    func run() throws {
        var failed = false
        for file in files {
            do {
                let set = try PolicySet.load(path: file)
                for warning in set.warnings { print(warning) }
                print("\(file): ok (\(set.policies.count) policies: \(set.policies.map(\.name).joined(separator: ", ")))")
            } catch {
                failed = true
                for d in error.diagnostics { print(d) }
            }
        }
        if failed { throw ExitCode(1) }
    }
}
