import Foundation
import Testing
import TailgateTestSupport
import TailgateExport
import TailgateIngest
@testable import TailgateRuntime
import TailgatePolicies
import TailgateConfig

/// Certificates made with the openssl command line in a fresh directory (EC P-256, self-signed).
struct CertificateFiles {
    let directory: String

    init() throws {
        directory = scratchDirectory("tailgate-tls")
        for name in ["a", "b"] {
            try Self.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                              "-subj", "/CN=\(name)", "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).crt"])
        }
        try "not a certificate\n".write(toFile: "\(directory)/garbage.pem", atomically: true, encoding: .utf8)
    }

    func path(_ name: String) -> String { "\(directory)/\(name)" }

    static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.fileWriteUnknown) }
    }
}

@Suite struct TLSConfigurationTests {
    func errors(_ yaml: String) -> [String] {
        do {
            _ = try TailgateConfiguration.parse(yaml, file: "c.yaml", environment: [:])
            return []
        } catch {
            return error.diagnostics.map(\.description)
        }
    }

    @Test func downstreamTLSIsRead() throws {
        let files = try CertificateFiles()
        let c = try TailgateConfiguration.parse("""
            downstream: grpcs://collector:4317
            downstream_tls:
              ca_file: \(files.path("a.crt"))
              cert_file: \(files.path("b.crt"))
              key_file: \(files.path("b.key"))
              server_name: collector.internal
              insecure_skip_verify: false
            """, file: "c.yaml", environment: [:])
        #expect(c.downstream == .grpcs(host: "collector", port: 4317))
        var expected = DownstreamTLS()
        expected.caFile = files.path("a.crt")
        expected.certFile = files.path("b.crt")
        expected.keyFile = files.path("b.key")
        expected.serverName = "collector.internal"
        #expect(c.downstreamTLS == expected)
        #expect(c.warnings.isEmpty)
    }

    @Test func ingestTLSIsReadRelativeToTheFile() throws {
        let files = try CertificateFiles()
        let c = try TailgateConfiguration.parse("""
            tls: {cert_file: a.crt, key_file: a.key, client_ca_file: b.crt, reload_interval: 5s}
            """, file: files.path("tailgate.yaml"), environment: [:])
        var expected = IngestTLS(certFile: files.path("a.crt"), keyFile: files.path("a.key"), clientCAFile: files.path("b.crt"))
        expected.reloadInterval = .seconds(5)
        #expect(c.tls == expected)
    }

    @Test func aMissingCertificateIsAnErrorAtItsKey() throws {
        let files = try CertificateFiles()
        let d = errors("tls:\n  cert_file: \(files.path("missing.crt"))\n  key_file: \(files.path("a.key"))\n")
        #expect(d.count == 1)
        #expect(d.first?.hasPrefix("c.yaml:2:14: error: tls.cert_file '\(files.path("missing.crt"))': cannot open") == true, "\(d)")
    }

    @Test func aKeyThatDoesNotMatchIsAnErrorAtTheKeyFile() throws {
        let files = try CertificateFiles()
        let d = errors("tls:\n  cert_file: \(files.path("a.crt"))\n  key_file: \(files.path("b.key"))\n")
        #expect(d.count == 1)
        #expect(d.first?.hasPrefix("c.yaml:3:13: error: tls.key_file") == true, "\(d)")
        #expect(d.first?.contains("does not match the certificate") == true, "\(d)")
    }

    @Test func unreadableFilesAreNamed() throws {
        let files = try CertificateFiles()
        let garbage = files.path("garbage.pem")
        #expect(errors("tls: {cert_file: \(garbage), key_file: \(files.path("a.key"))}").first?.contains(garbage) == true)
        let d = errors("downstream: https://h:1\ndownstream_tls:\n  ca_file: \(garbage)\n")
        #expect(d.count == 1 && d[0].hasPrefix("c.yaml:3:12: error: downstream_tls.ca_file '\(garbage)'"), "\(d)")
        let mismatch = errors("downstream: https://h:1\ndownstream_tls:\n  cert_file: \(files.path("a.crt"))\n  key_file: \(files.path("b.key"))\n")
        #expect(mismatch.count == 1 && mismatch[0].hasPrefix("c.yaml:4:13: error: downstream_tls.key_file"), "\(mismatch)")
    }

    @Test func incompleteBlocksAreErrors() {
        #expect(errors("tls: {cert_file: x.crt}").first?.contains("tls needs both cert_file and key_file") == true)
        #expect(errors("downstream_tls: {key_file: x.key}").first?.contains("key_file needs a cert_file") == true)
        #expect(errors("tls: {cert: x}").first?.contains("unknown key 'cert' in tls") == true)
        #expect(errors("downstream: tcp://h:1").first?.hasPrefix("c.yaml:1:13: error: downstream must be") == true)
    }

    @Test func downstreamTLSWithAPlainDownstreamIsAWarning() throws {
        let c = try TailgateConfiguration.parse("downstream: grpc://h:1\ndownstream_tls: {insecure_skip_verify: true}\n",
                                                file: "c.yaml", environment: [:])
        #expect(c.warnings.map(\.description) == [
            "c.yaml:2:1: warning: downstream_tls applies only to a grpcs:// or https:// downstream (the downstream is grpc://h:1)"])
    }

    @Test func signalQueueBytes() throws {
        #expect(try TailgateConfiguration.parse("forwarder: {signals_queue_bytes: 2MiB}", file: "c.yaml").signalQueueBytes == 2 << 20)
        #expect(TailgateConfiguration().signalQueueBytes == 64 << 20)
    }
}
