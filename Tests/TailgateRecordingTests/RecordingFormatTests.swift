import Foundation
import Logging
import TailgateRecording
import Testing

/// The `.tgrec` format has one definition (TailgateRecording): what the serve-time writer tees out and what
/// `Recording.encodeCompact` (tailgate generate) writes are the same bytes, and both read back.
@Suite struct RecordingFormatTests {
    let requests = [
        RecordedRequest(arrival: 5, protobuf: [1, 2, 3]),
        RecordedRequest(arrival: 1_700_000_000_000_000_000, protobuf: []),
        RecordedRequest(arrival: 9, protobuf: Array(repeating: 0xAB, count: 300)),
    ]

    @Test func writerAndEncoderAgree() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tgrec-\(UUID().uuidString).tgrec").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try RecordingWriter(configuration: .init(path: path), logger: Logger(label: "test"))
        for r in requests { r.protobuf.withUnsafeBytes { writer.record($0, arrival: r.arrival) } }
        writer.close()
        let written = try #require(FileManager.default.contents(atPath: path)).map { $0 }
        #expect(written == Recording.encodeCompact(requests))
        #expect(Array(written.prefix(Recording.magic.count)) == Recording.magic)
        let back = try Recording.read(path: path)
        #expect(back.map(\.arrival) == requests.map(\.arrival))
        #expect(back.map(\.protobuf) == requests.map(\.protobuf))
    }

    @Test func truncatedRecordIsAnError() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tgrec-\(UUID().uuidString).tgrec").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let bytes = Recording.encodeCompact(requests)
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes.dropLast(1)))
        #expect(throws: Recording.ReadError.self) { try Recording.read(path: path) }
    }
}
