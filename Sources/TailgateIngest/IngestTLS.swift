#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
package import Darwin
#endif
package import Logging
package import NIOCertificateReloading
package import NIOSSL

/// TLS on the receivers (`tls: {cert_file, key_file, client_ca_file, reload_interval}`): the certificate chain and
/// key (PEM), and — for mTLS — the CA whose certificates clients must present.
package struct IngestTLS: Sendable, Equatable {
    package var certFile: String
    package var keyFile: String
    /// When set, clients must present a certificate issued by one of these CAs (PEM).
    package var clientCAFile: String? = nil
    /// How often the certificate and key files are read again (new connections get the new pair; open connections
    /// keep theirs). Default 30 s.
    package var reloadInterval: Duration = .seconds(30)

    package init(certFile: String, keyFile: String, clientCAFile: String? = nil) {
        self.certFile = certFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
    }
}

/// A certificate, key or CA file that cannot be used; `field` names the configuration key it came from.
package struct TLSFileError: Error, CustomStringConvertible, Equatable {
    package enum Field: String, Sendable { case cert = "cert_file", key = "key_file", clientCA = "client_ca_file", ca = "ca_file" }
    package var field: Field
    package var path: String
    package var message: String
    package var description: String { "\(field.rawValue) '\(path)': \(message)" }
}

/// Checks of PEM files, for configuration errors that name the file before anything listens.
package enum TLSFiles {
    /// The certificate chain and key can be read, and the key belongs to the first certificate.
    package static func checkPair(cert: String, key: String) throws(TLSFileError) {
        _ = try makeReloader(cert: cert, key: key, interval: .seconds(3600), logger: nil)
    }

    /// A file of one or more PEM certificates (a CA bundle).
    package static func checkCertificates(_ path: String, field: TLSFileError.Field) throws(TLSFileError) {
        do {
            let certificates = try NIOSSLCertificate.fromPEMFile(path)
            guard !certificates.isEmpty else { throw TLSFileError(field: field, path: path, message: "holds no PEM certificate") }
        } catch let error as TLSFileError {
            throw error
        } catch {
            throw TLSFileError(field: field, path: path, message: "cannot read PEM certificates (\(readability(path) ?? "\(error)"))")
        }
    }

    static func makeReloader(cert: String, key: String, interval: Duration, logger: Logger?) throws(TLSFileError) -> TimedCertificateReloader {
        if let problem = readability(cert) { throw TLSFileError(field: .cert, path: cert, message: problem) }
        if let problem = readability(key) { throw TLSFileError(field: .key, path: key, message: problem) }
        try checkCertificates(cert, field: .cert)
        do {
            _ = try NIOSSLPrivateKey(file: key, format: .pem)
        } catch {
            throw TLSFileError(field: .key, path: key, message: "cannot read a PEM private key (\(error))")
        }
        var configuration = TimedCertificateReloader.Configuration(
            refreshInterval: interval,
            certificateSource: .init(location: .file(path: cert), format: .pem),
            privateKeySource: .init(location: .file(path: key), format: .pem))
        if let logger {
            configuration.onCertificateLoaded = { diff in
                guard let previous = diff.previousCertificateChain, previous != diff.currentCertificateChain else { return }
                logger.notice("TLS certificate reloaded: new connections get the new certificate", metadata: ["cert_file": "\(cert)"])
            }
            configuration.onCertificateLoadFailed = { failure in
                logger.warning("TLS certificate reload failed: the previous certificate stays in use", metadata: [
                    "cert_file": "\(cert)", "key_file": "\(key)", "error": "\(failure.error)"])
            }
        }
        do {
            return try TimedCertificateReloader.makeReloaderValidatingSources(configuration: configuration)
        } catch let error as TimedCertificateReloader.Error {
            let text = "\(error)"
            if error == .publicKeyMismatch {
                throw TLSFileError(field: .key, path: key, message: "the private key does not match the certificate in \(cert)")
            }
            if text.lowercased().contains("private key") {
                throw TLSFileError(field: .key, path: key, message: "cannot load the private key: \(text)")
            }
            throw TLSFileError(field: .cert, path: cert, message: "cannot load the certificate: \(text)")
        } catch {
            throw TLSFileError(field: .cert, path: cert, message: "cannot load the certificate and key: \(error)")
        }
    }

    /// Why a file cannot be read (nil when it can).
    static func readability(_ path: String) -> String? {
        guard let file = fopen(path, "rb") else { return "cannot open: \(String(cString: strerror(errno)))" }
        fclose(file)
        return nil
    }
}

/// The loaded TLS state of the receivers: one certificate reloader shared by both (run it as a service), the
/// NIOSSL context of the HTTP receiver and the gRPC transport's security.
package final class IngestTLSContext: Sendable {
    package let configuration: IngestTLS
    /// Reads the certificate and key again every `reloadInterval`; must run (it is a swift-service-lifecycle Service).
    package let reloader: TimedCertificateReloader
    /// For the HTTP receiver: each new connection's handshake asks the reloader for the current pair.
    package let sslContext: NIOSSLContext
    /// For the gRPC receiver: the same, offering HTTP/2 by ALPN.
    let grpcSSLContext: NIOSSLContext

    /// Reloads every `reloadInterval` until cancelled.
    package func runReloading() async throws {
        try await reloader.run()
    }

    package init(_ configuration: IngestTLS, logger: Logger?) throws(TLSFileError) {
        self.configuration = configuration
        let reloader = try TLSFiles.makeReloader(cert: configuration.certFile, key: configuration.keyFile,
                                                 interval: configuration.reloadInterval, logger: logger)
        if let ca = configuration.clientCAFile { try TLSFiles.checkCertificates(ca, field: .clientCA) }
        self.reloader = reloader
        do {
            var tls: TLSConfiguration
            if let ca = configuration.clientCAFile {
                tls = try TLSConfiguration.makeServerConfigurationWithMTLS(certificateReloader: reloader, trustRoots: .file(ca))
                tls.certificateVerification = .noHostnameVerification
            } else {
                tls = try TLSConfiguration.makeServerConfiguration(certificateReloader: reloader)
            }
            tls.applicationProtocols = ["http/1.1"]
            sslContext = try NIOSSLContext(configuration: tls)
            tls.applicationProtocols = ["h2"]
            grpcSSLContext = try NIOSSLContext(configuration: tls)
        } catch {
            throw TLSFileError(field: configuration.clientCAFile == nil ? .cert : .clientCA,
                               path: configuration.clientCAFile ?? configuration.certFile, message: "cannot set up TLS: \(error)")
        }
    }
}
