import Foundation
import TailgateWire

/// One export request of a recording, with when it arrived (Unix nanoseconds).
package struct RecordedRequest: Sendable {
    package var arrival: UInt64
    package var protobuf: [UInt8]

    package init(arrival: UInt64, protobuf: [UInt8]) {
        self.arrival = arrival
        self.protobuf = protobuf
    }
}

/// Recordings of OTLP traffic, read and written here (the one definition of the `.tgrec` format):
/// - OTLP/JSON lines (`.jsonl`, `.json`): one `ExportTraceServiceRequest` per line, as the OpenTelemetry
///   Collector's file exporter and Tailgate's `file:` downstream write them (read only);
/// - Tailgate's compact form (`.tgrec`): the 8-byte magic `TGREC1\n\0`, then per request a record: a
///   little-endian UInt64 arrival time (Unix nanoseconds), a little-endian UInt32 length and the protobuf bytes.
/// Either may be gzip-compressed (`.gz`). When a JSON line carries no arrival time, the request is placed at the
/// latest span end time it contains (when an SDK would have exported it).
package enum Recording {
    /// The file header of the compact form.
    package static let magic: [UInt8] = Array("TGREC1\n\0".utf8)
    /// Bytes of a record's header (arrival time and length) before its protobuf bytes.
    package static let recordHeaderSize = 12

    /// Appends one record of the compact form (header and body) to `out`.
    package static func appendRecord(arrival: UInt64, body: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        withUnsafeBytes(of: arrival.littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(body.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: body)
    }

    package struct ReadError: Error, CustomStringConvertible {
        package var file: String
        package var message: String
        package var description: String { "\(file): \(message)" }
    }

    package static func read(path: String, limit: Int = 4 << 30) throws -> [RecordedRequest] {
        guard var data = FileManager.default.contents(atPath: path).map({ [UInt8]($0) }) else {
            throw ReadError(file: path, message: "cannot read file")
        }
        if data.starts(with: [0x1F, 0x8B]) {
            do { data = try Gzip.decompress(data, limit: limit) } catch { throw ReadError(file: path, message: "\(error)") }
        }
        if data.starts(with: magic) { return try readCompact(data, path) }
        return try readJSONLines(data, path)
    }

    static func readCompact(_ data: [UInt8], _ path: String) throws -> [RecordedRequest] {
        var out: [RecordedRequest] = []
        var i = magic.count
        while i < data.count {
            guard data.count - i >= recordHeaderSize else { throw ReadError(file: path, message: "truncated record header at byte \(i)") }
            let arrival = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: i, as: UInt64.self)) }
            let length = Int(data.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: i + 8, as: UInt32.self)) })
            i += recordHeaderSize
            guard data.count - i >= length else { throw ReadError(file: path, message: "truncated record at byte \(i)") }
            out.append(RecordedRequest(arrival: arrival, protobuf: Array(data[i..<(i + length)])))
            i += length
        }
        return out
    }

    static func readJSONLines(_ data: [UInt8], _ path: String) throws -> [RecordedRequest] {
        var out: [RecordedRequest] = []
        var line = 0
        for slice in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            line += 1
            if slice.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) { continue }
            do {
                let protobuf = try OTLPJSON.protobufFromJSON(Array(slice))
                out.append(RecordedRequest(arrival: latestEnd(protobuf), protobuf: protobuf))
            } catch {
                throw ReadError(file: path, message: "line \(line): \(error)")
            }
        }
        return out
    }

    /// The latest span end time in a request (0 if none).
    static func latestEnd(_ protobuf: [UInt8]) -> UInt64 {
        var scanned = ScannedRequest()
        let ok = protobuf.withUnsafeBytes { (try? OTLPScanner().scan($0, into: &scanned)) != nil }
        guard ok else { return 0 }
        return scanned.spans.map(\.endTime).max() ?? 0
    }

    /// The compact form's bytes.
    package static func encodeCompact(_ requests: [RecordedRequest]) -> [UInt8] {
        var out = magic
        for r in requests {
            r.protobuf.withUnsafeBytes { appendRecord(arrival: r.arrival, body: $0, to: &out) }
        }
        return out
    }

    /// Writes the compact form.
    package static func writeCompact(_ requests: [RecordedRequest], to path: String) throws {
        let out = encodeCompact(requests)
        guard FileManager.default.createFile(atPath: path, contents: Data(out)) else {
            throw ReadError(file: path, message: "cannot write file")
        }
    }
}
