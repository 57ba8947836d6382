// libFuzzer target `fuzz-otlp-json`: OTLPJSON.protobufFromJSON over arbitrary bytes (Fuzz/README.md).
//
// Transcoding may throw OTLPJSONError; it must never trap. When it succeeds, its output must be protobuf a parser
// accepts: OTLPScanner must scan it without ScanError, and reject spans only for their IDs (a span the transcoder
// wrote with invalid UTF-8, a wrong wire type or too deep a nesting would be refused by the collector downstream).
// The output must also transcode back to JSON, and that JSON back to protobuf; and when every trace and span ID of
// the output is well-formed, that JSON is a fixed point: protobuf -> JSON -> protobuf -> JSON gives the same JSON.
// (Not the same protobuf bytes: a key repeated in the input, `{"kind":1,"kind":2}`, is written twice, valid protobuf
// where the last wins, and comes back once. And a malformed ID, wrong length or not hex, is written as its text's
// bytes so that the scanner rejects that span alone; it comes back from JSON as the hex of those bytes, so such
// requests do not round-trip, by design.)

import TailgateWire

let scanner = OTLPScanner()

/// Rejections the transcoder may legitimately cause: OTLP/JSON can omit or zero the IDs.
let idRejections = [
    "span without trace_id", "trace_id must be 16 bytes and not all zero",
    "span without span_id", "span_id must be 8 bytes and not all zero", "parent_span_id must be empty or 8 bytes",
]

/// Whether every ID field (span trace_id, span_id, parent_span_id; link trace_id, span_id) has its valid length.
func idsWellFormed(_ protobuf: [UInt8]) -> Bool {
    protobuf.withUnsafeBytes { base in
        func fields(_ range: Range<Int>, _ body: (UInt32, WireType, inout ProtoReader) throws(WireError) -> Bool) throws(WireError) -> Bool {
            var reader = ProtoReader(base, range: range)
            while let (field, wt) = try reader.readTag() {
                if !(try body(field, wt, &reader)) { return false }
            }
            return true
        }
        func ids(_ range: Range<Int>, _ lengths: [UInt32: Int], _ nested: UInt32?) throws(WireError) -> Bool {
            try fields(range) { (field, wt, reader) throws(WireError) -> Bool in
                guard wt == .lengthDelimited else { try reader.skip(wt); return true }
                let r = try reader.readLengthDelimited()
                if let length = lengths[field], r.count != length { return false }
                if field == nested { return try ids(r, [1: 16, 2: 8], nil) }  // a link
                return true
            }
        }
        func within(_ range: Range<Int>, _ depth: Int) throws(WireError) -> Bool {
            try fields(range) { (field, wt, reader) throws(WireError) -> Bool in
                guard wt == .lengthDelimited else { try reader.skip(wt); return true }
                let r = try reader.readLengthDelimited()
                switch (depth, field) {
                case (0, 1), (1, 2): return try within(r, depth + 1)      // resource_spans, scope_spans
                case (2, 2): return try ids(r, [1: 16, 2: 8, 4: 8], 13)   // spans (links are field 13)
                default: return true
                }
            }
        }
        return (try? within(0..<base.count, 0)) ?? false
    }
}

func fail(_ message: String) -> Never {
    fatalError("fuzz-otlp-json: \(message)")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let json = Array(UnsafeBufferPointer(start: data, count: size))
    let protobuf: [UInt8]
    do {
        protobuf = try OTLPJSON.protobufFromJSON(json)
    } catch {
        _ = error.description
        return 0
    }
    var result = ScannedRequest()
    protobuf.withUnsafeBytes { raw in
        do {
            try scanner.scan(raw, into: &result)
        } catch {
            fail("the transcoder's output is not valid protobuf: \(error)")
        }
    }
    if let message = result.rejectionMessage, !idRejections.contains(where: { message.hasPrefix($0) }) {
        fail("the scanner rejects a span of the transcoder's output: \(message)")
    }

    // Round trip: JSON written from the transcoder's output transcodes back, to protobuf that gives the same JSON.
    let back: [UInt8]
    do {
        back = try OTLPJSON.jsonFromProtobuf(protobuf)
    } catch {
        fail("jsonFromProtobuf refuses the transcoder's output: \(error)")
    }
    let again: [UInt8]
    do {
        again = try OTLPJSON.protobufFromJSON(back)
    } catch {
        fail("protobufFromJSON refuses jsonFromProtobuf's output: \(error); JSON: \(String(decoding: back.prefix(2000), as: UTF8.self))")
    }
    guard idsWellFormed(protobuf) else { return 0 }
    let backAgain: [UInt8]
    do {
        backAgain = try OTLPJSON.jsonFromProtobuf(again)
    } catch {
        fail("jsonFromProtobuf refuses the round-tripped protobuf: \(error)")
    }
    if backAgain != back {
        fail("protobuf -> JSON -> protobuf -> JSON differs:\n\(String(decoding: back.prefix(2000), as: UTF8.self))\n\(String(decoding: backAgain.prefix(2000), as: UTF8.self))")
    }
    return 0
}
