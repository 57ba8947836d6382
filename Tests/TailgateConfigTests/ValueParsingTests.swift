import Testing
import TailgateConfig
import Yams

/// Durations, sizes and addresses as configuration files and the command line write them.
@Suite struct ValueParsingTests {
    @Test(arguments: [("500ms", 0.5), ("5s", 5.0), ("1m30s", 90.0), ("2h", 7200.0), ("0", 0.0), ("1.5s", 1.5), ("250us", 0.00025)])
    func durations(text: String, seconds: Double) {
        let d = parseDuration(text)!
        #expect(abs(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 - seconds) < 1e-9)
    }

    @Test(arguments: ["", "5", "5x", "ms", "-1s"])
    func badDurations(text: String) { #expect(parseDuration(text) == nil) }

    @Test(arguments: [("4MiB", 4 << 20), ("64MB", 64_000_000), ("1024", 1024), ("512KiB", 512 << 10), ("1GiB", 1 << 30), ("1_000", 1000)])
    func sizes(text: String, bytes: Int) { #expect(parseSize(text) == bytes) }

    @Test(arguments: ["", "MiB", "-1", "4 parsecs", "1e30GiB"])
    func badSizes(text: String) { #expect(parseSize(text) == nil) }

    @Test(arguments: [
        ("127.0.0.1:4317", "127.0.0.1", 4317),
        ("localhost:0", "localhost", 0),
        ("collector.internal:4318", "collector.internal", 4318),
        ("[::1]:9464", "::1", 9464),
    ])
    func hostPorts(text: String, host: String, port: Int) {
        let parsed = parseHostPort(text)
        #expect(parsed?.0 == host)
        #expect(parsed?.1 == port)
    }

    @Test(arguments: ["4317", ":4317", "host:", "host:65536", "host:-1", "[::1:4317", "[::1]4317", "host:port"])
    func badHostPorts(text: String) { #expect(parseHostPort(text) == nil) }
}

/// Diagnostics point at the node they are about, and unknown words get a suggestion only when one is close.
@Suite struct YAMLReaderTests {
    @Test func invalidYAMLIsReportedAtItsLineAndColumn() {
        var reader = YAMLReader(file: "bad.yaml")
        #expect(reader.parse("a: 1\nb: [1, 2\n") == nil)
        let d = reader.diagnostics.first!
        #expect(d.file == "bad.yaml")
        #expect(d.line >= 2)
        #expect(d.message.hasPrefix("invalid YAML"))
        #expect(reader.hasErrors)
    }

    @Test func duplicateKeysAreAnError() {
        var reader = YAMLReader(file: "dup.yaml")
        #expect(reader.parse("a: 1\na: 2\n") == nil)
        #expect(reader.diagnostics.map(\.message) == ["duplicate key 'a'"])
    }

    @Test func anEmptyDocumentIsAnEmptyMapping() {
        var reader = YAMLReader(file: "empty.yaml")
        #expect(reader.parse("")?.mapping?.count == 0)
        #expect(reader.diagnostics.isEmpty)
    }

    @Test func aWarningOnANodeCarriesItsPosition() throws {
        var reader = YAMLReader(file: "w.yaml")
        let parsed = reader.parse("first: 1\nsecond:\n  third: x\n")
        let root = try #require(parsed)
        let third = try #require(root["second"]?["third"])
        reader.warning(third, "look here")
        #expect(reader.diagnostics == [Diagnostic(file: "w.yaml", line: 3, column: 10, severity: .warning, message: "look here")])
        #expect(!reader.hasErrors)
    }

    @Test(arguments: [
        ("polcies", ["policies", "listen", "downstream"], "policies"),
        ("downstrem", ["policies", "listen", "downstream"], "downstream"),
        ("zzzz", ["policies", "listen", "downstream"], nil),
    ])
    func suggestions(word: String, candidates: [String], expected: String?) {
        #expect(suggestion(for: word, among: candidates) == expected)
    }

    @Test func nullMeansTheDefault() throws {
        var reader = YAMLReader(file: "n.yaml")
        let parsed = reader.parse("a: null\nb: ~\nc:\nd: 'null'\n")
        let root = try #require(parsed)
        #expect(YAMLReader.isNull(try #require(root["a"])))
        #expect(YAMLReader.isNull(try #require(root["b"])))
        #expect(YAMLReader.isNull(try #require(root["c"])))
        #expect(!YAMLReader.isNull(try #require(root["d"])))
    }
}
