import Foundation
import Synchronization
import Testing
@testable import TailgateExport
@testable import TailgateLoadtest
import TailgateRuntime

/// One factory from a downstream address to a client (`DownstreamAddress.makeDownstream`): each kind of address
/// maps to its client, and both `tailgate serve` (`TailgateServer.makeDownstream`) and `tailgate loadtest`
/// (`Replayer.makeClient`) build their clients through it.
@Suite struct DownstreamFactoryTests {
    /// The address kinds, with the client type and target each must give (`file` is a fresh temporary path).
    static func cases(file: String) -> [(address: String, type: any Downstream.Type, target: String)] {
        [
            ("grpc://127.0.0.1:4317", GRPCDownstream.self, "grpc://127.0.0.1:4317"),
            ("grpcs://collector.example:4317", GRPCDownstream.self, "grpcs://collector.example:4317"),
            ("http://[::1]:4318", HTTPDownstream.self, "http://[::1]:4318/v1/traces"),
            ("https://collector.example:4318/otlp/v1/traces", HTTPDownstream.self, "https://collector.example:4318/otlp/v1/traces"),
            ("file:\(file)", FileDownstream.self, "file:\(file)"),
        ]
    }

    static func temporaryFile() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("factory-\(UUID().uuidString).jsonl").path
    }

    /// Builds with `body` while recording every client the factory builds.
    func built(_ body: () throws -> any Downstream) rethrows -> (client: any Downstream, seen: [(DownstreamAddress, String)]) {
        let seen = Mutex<[(DownstreamAddress, String)]>([])
        let client = try DownstreamFactoryObserver.$built.withValue({ address, client in
            seen.withLock { $0.append((address, client.target)) }
        }) { try body() }
        return (client, seen.withLock { $0 })
    }

    @Test func eachAddressKindMapsToItsClient() throws {
        let file = Self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect(Self.cases(file: file).map { DownstreamAddress($0.address)?.scheme } == ["grpc", "grpcs", "http", "https", "file"])
        for c in Self.cases(file: file) {
            let address = try #require(DownstreamAddress(c.address))
            let (client, seen) = try built { try address.makeDownstream(DownstreamOptions(gzip: true, timeout: .seconds(1))) }
            defer { client.close() }
            #expect(type(of: client) == c.type, "\(c.address)")
            #expect(client.target == c.target, "\(c.address)")
            #expect(seen.map(\.0) == [address])
        }
    }

    @Test func serveBuildsItsDownstreamThroughTheFactory() throws {
        let file = Self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: file) }
        for c in Self.cases(file: file) {
            let address = try #require(DownstreamAddress(c.address))
            let (client, seen) = try built {
                try TailgateServer.makeDownstream(address, forwarder: ForwarderConfiguration(), headers: ["x-scope-orgid": "a"])
            }
            defer { client.close() }
            #expect(type(of: client) == c.type, "\(c.address)")
            #expect(seen.map(\.0) == [address], "\(c.address)")
            #expect(seen.map(\.1) == [client.target])
        }
    }

    @Test func loadtestBuildsItsConnectionsThroughTheFactory() throws {
        let recording = try PreparedRecording([])
        for c in Self.cases(file: Self.temporaryFile()) {
            let address = try #require(DownstreamAddress(c.address))
            let replayer = Replayer(recording: recording, options: ReplayOptions(target: address))
            if Replayer.schemes.contains(address.scheme) {
                let (client, seen) = try built { try replayer.makeClient() }
                defer { client.close() }
                #expect(type(of: client) == c.type, "\(c.address)")
                #expect(seen.map(\.0) == [address], "\(c.address)")
            } else {
                // TLS and file targets are refused before anything is built.
                let seen = Mutex(0)
                DownstreamFactoryObserver.$built.withValue({ _, _ in seen.withLock { $0 += 1 } }) {
                    #expect(throws: Replayer.ReplayError.self) { try replayer.makeClient() }
                }
                #expect(seen.withLock { $0 } == 0)
            }
        }
        #expect(Replayer.schemes == ["grpc", "http"])
    }
}
