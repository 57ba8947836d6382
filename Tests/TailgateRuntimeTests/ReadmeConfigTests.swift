import Foundation
import Testing
@testable import TailgateRuntime
import TailgatePolicies
import TailgateBuffer
import TailgateConfig

/// The README's configuration block lists every key with its default: it must be a valid configuration, and every
/// top-level key the parser knows must appear in it.
@Suite struct ReadmeConfigTests {
    static func readmeBlock() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(text.range(of: "## Configuration file"))
        let start = try #require(text.range(of: "```yaml\n", range: section.upperBound..<text.endIndex))
        let end = try #require(text.range(of: "```", range: start.upperBound..<text.endIndex))
        return String(text[start.upperBound..<end.lowerBound])
    }

    @Test func theReadmeConfigurationParsesWithoutWarnings() throws {
        let block = try Self.readmeBlock()
        let config = try TailgateConfiguration.parse(block, file: "README.md", environment: ["KEY": "k"])
        // The block lists downstream_tls beside the default file downstream, which the parser rightly points out.
        let unexpected = config.warnings.filter { !$0.message.hasPrefix("downstream_tls applies only") }
        #expect(unexpected.isEmpty, "\(unexpected)")
        #expect(config.genAIMaxLabelValues == TailgateConfiguration().genAIMaxLabelValues)
        #expect(config.buffer.maxBufferedBytes == TailgateConfiguration().buffer.maxBufferedBytes)
    }

    /// The README's block is produced from the key table (`TailgateConfiguration.reference()`); with
    /// TAILGATE_WRITE_REFERENCE=FILE set, the expected block is written there for pasting.
    @Test func theReadmeBlockIsTheKeyTablesReference() throws {
        let reference = TailgateConfiguration.reference()
        if let path = ProcessInfo.processInfo.environment["TAILGATE_WRITE_REFERENCE"] {
            try reference.write(toFile: path, atomically: true, encoding: .utf8)
        }
        #expect(try Self.readmeBlock() == reference)
    }

    @Test func everyTopLevelKeyIsDocumented() throws {
        let block = try Self.readmeBlock()
        let documented = Set(block.split(separator: "\n").compactMap { line -> String? in
            guard let first = line.first, first.isLetter, let colon = line.firstIndex(of: ":") else { return nil }
            return String(line[..<colon])
        })
        // Older names kept for compatibility are not advertised.
        let missing = Set(TailgateConfiguration.topKeys).subtracting(documented).subtracting(["metrics_listen"])
        #expect(missing.isEmpty, "configuration keys missing from the README: \(missing.sorted())")
    }
}
