import TailgateWire

/// Splits an encoded `ExportTraceServiceRequest` in two, at span granularity, each half with the resource and scope
/// headers of its spans — for a batch the downstream finds too large, and for bisecting a batch it rejects as invalid.
/// Works on the bytes (the request was framed by Tailgate, so it is well-formed); nothing is decoded.
enum RequestSplitter {
    struct Half {
        var request: [UInt8]
        var spans: Int
    }

    /// The two halves (about half the spans each), or nil when the request holds fewer than two spans.
    static func split(_ request: [UInt8]) -> (Half, Half)? {
        let total = spanCount(request)
        guard total >= 2 else { return nil }
        let cut = total / 2
        var a = ProtoWriter(capacity: request.count / 2 + 256)
        var b = ProtoWriter(capacity: request.count / 2 + 256)
        var index = 0
        let ok: Bool = request.withUnsafeBytes { raw in
            do {
                var reader = ProtoReader(raw)
                while let (field, wt) = try reader.readTag() {
                    guard field == 1, wt == .lengthDelimited else { try reader.skip(wt); continue }
                    let resource = try reader.readLengthDelimited()
                    var header: [UInt8] = []
                    var scopesA: [UInt8] = [], scopesB: [UInt8] = []
                    var r = ProtoReader(raw, range: resource)
                    while true {
                        let start = r.offset
                        guard let (f, w) = try r.readTag() else { break }
                        guard f == 2, w == .lengthDelimited else {
                            try r.skip(w)
                            header.append(contentsOf: raw[start..<r.offset])
                            continue
                        }
                        let scope = try r.readLengthDelimited()
                        var scopeHeader: [UInt8] = []
                        var spansA: [UInt8] = [], spansB: [UInt8] = []
                        var s = ProtoReader(raw, range: scope)
                        while true {
                            let sStart = s.offset
                            guard let (sf, sw) = try s.readTag() else { break }
                            if sf == 2 && sw == .lengthDelimited {
                                _ = try s.readLengthDelimited()
                                if index < cut { spansA.append(contentsOf: raw[sStart..<s.offset]) }
                                else { spansB.append(contentsOf: raw[sStart..<s.offset]) }
                                index += 1
                            } else {
                                try s.skip(sw)
                                scopeHeader.append(contentsOf: raw[sStart..<s.offset])
                            }
                        }
                        if !spansA.isEmpty { appendMessage(&scopesA, 2, [scopeHeader, spansA]) }
                        if !spansB.isEmpty { appendMessage(&scopesB, 2, [scopeHeader, spansB]) }
                    }
                    if !scopesA.isEmpty { appendMessage(&a.bytes, 1, [header, scopesA]) }
                    if !scopesB.isEmpty { appendMessage(&b.bytes, 1, [header, scopesB]) }
                }
                return true
            } catch {
                return false
            }
        }
        guard ok else { return nil }
        return (Half(request: a.bytes, spans: cut), Half(request: b.bytes, spans: total - cut))
    }

    /// Spans in an encoded request (0 when it does not parse).
    static func spanCount(_ request: [UInt8]) -> Int {
        var count = 0
        forEachSpan(request) { _ in count += 1 }
        return count
    }

    /// Hex trace IDs of the spans of a request (for logging which spans were dropped), at most `limit`.
    static func traceIDs(_ request: [UInt8], limit: Int = 16) -> String {
        var ids: [String] = []
        forEachSpan(request) { span in
            guard ids.count < limit else { return }
            var reader = ProtoReader(span)
            while let (f, w) = try? reader.readTag() {
                if f == 1, w == .lengthDelimited, let r = try? reader.readLengthDelimited() {
                    let hex = span[r].map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
                    if !ids.contains(hex) { ids.append(hex) }
                    return
                }
                guard (try? reader.skip(w)) != nil else { return }
            }
        }
        return ids.joined(separator: ",")
    }

    /// Calls `body` with each span message (the whole input buffer, rebased reads use its offsets).
    private static func forEachSpan(_ request: [UInt8], _ body: (UnsafeRawBufferPointer) -> Void) {
        request.withUnsafeBytes { raw in
            do {
                var reader = ProtoReader(raw)
                while let (field, wt) = try reader.readTag() {
                    guard field == 1, wt == .lengthDelimited else { try reader.skip(wt); continue }
                    var r = ProtoReader(raw, range: try reader.readLengthDelimited())
                    while let (f, w) = try r.readTag() {
                        guard f == 2, w == .lengthDelimited else { try r.skip(w); continue }
                        var s = ProtoReader(raw, range: try r.readLengthDelimited())
                        while let (sf, sw) = try s.readTag() {
                            guard sf == 2, sw == .lengthDelimited else { try s.skip(sw); continue }
                            let span = try s.readLengthDelimited()
                            body(UnsafeRawBufferPointer(rebasing: raw[span]))
                        }
                    }
                }
            } catch {}
        }
    }

    private static func appendMessage(_ out: inout [UInt8], _ field: UInt32, _ parts: [[UInt8]]) {
        var w = ProtoWriter()
        swap(&w.bytes, &out)
        w.appendTag(field, .lengthDelimited)
        w.appendVarint(UInt64(parts.reduce(0) { $0 + $1.count }))
        for p in parts { w.bytes.append(contentsOf: p) }
        swap(&w.bytes, &out)
    }
}
