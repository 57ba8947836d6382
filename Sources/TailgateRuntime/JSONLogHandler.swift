#if canImport(Darwin)
package import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
package import Musl
#endif
package import Foundation
package import Logging
import Synchronization

/// A swift-log handler that writes one JSON object per line (`tailgate serve --log-format json`), for log shippers
/// (Loki, Elasticsearch, …) that would otherwise have to parse the text format.
///
/// Each line holds, in this order: `ts` (RFC 3339, UTC, milliseconds), `level` (the swift-log level name), `msg`,
/// `logger` (the logger's label), `source` (the emitting module), then every metadata key as a top-level field, sorted:
/// plain values as strings, nested dictionaries as objects and arrays as arrays. A metadata key equal to one of the
/// fixed fields is written as `meta.KEY` instead. Metadata is merged like `StreamLogHandler` does: the handler's own,
/// then the metadata provider's, then the log statement's (later wins), then `error.message` / `error.type` when the
/// statement carries an error.
///
/// Every line reaches the sink as one buffer; the standard-error sink writes it with `write(2)` under a process-wide
/// lock, so lines from different threads never interleave. The log level is filtered by `Logger` (as for every handler).
package struct JSONLogHandler: LogHandler {
    /// Receives each rendered line, newline included.
    package typealias Sink = @Sendable ([UInt8]) -> Void

    /// The fields every line starts with; metadata keys equal to one of them get the `meta.` prefix.
    package static let fixedFields: Set<String> = ["ts", "level", "msg", "logger", "source"]

    package var logLevel: Logger.Level = .info
    package var metadataProvider: Logger.MetadataProvider?
    package var metadata: Logger.Metadata = [:]

    private let label: String
    private let sink: Sink
    private let now: @Sendable () -> Date

    /// A handler writing to `sink`; `now` stamps each line (injectable for tests).
    package init(label: String, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider,
                now: @escaping @Sendable () -> Date = { Date() }, sink: @escaping Sink) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.now = now
        self.sink = sink
    }

    /// A handler writing to standard error (file descriptor 2), one `write(2)` per line.
    package static func standardError(label: String) -> JSONLogHandler {
        JSONLogHandler(label: label, sink: standardErrorSink)
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get(), !provided.isEmpty {
            merged.merge(provided, uniquingKeysWith: { _, new in new })
        }
        if let explicit = event.metadata, !explicit.isEmpty {
            merged.merge(explicit, uniquingKeysWith: { _, new in new })
        }
        if let error = event.error {
            merged["error.message"] = "\(error)"
            merged["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        sink(Self.render(timestamp: now(), level: event.level, message: event.message.description, label: label,
                         source: event.source, metadata: merged))
    }

    // MARK: Rendering

    /// One line: the JSON object and a newline.
    package static func render(timestamp: Date, level: Logger.Level, message: String, label: String, source: String,
                              metadata: Logger.Metadata) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128 + message.utf8.count + metadata.count * 32)
        out.append(contentsOf: #"{"ts":""#.utf8)
        appendTimestamp(timestamp, to: &out)
        out.append(contentsOf: #"","level":"#.utf8)
        appendString(level.rawValue, to: &out)
        out.append(contentsOf: #","msg":"#.utf8)
        appendString(message, to: &out)
        out.append(contentsOf: #","logger":"#.utf8)
        appendString(label, to: &out)
        out.append(contentsOf: #","source":"#.utf8)
        appendString(source, to: &out)
        for (key, value) in topLevelFields(metadata) {
            out.append(UInt8(ascii: ","))
            appendString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendValue(value, to: &out)
        }
        out.append(contentsOf: "}\n".utf8)
        return out
    }

    /// The metadata as top-level fields, sorted by key, with colliding keys renamed `meta.KEY` (again prefixed while
    /// the new name is taken too, so that no key appears twice in a line).
    static func topLevelFields(_ metadata: Logger.Metadata) -> [(String, Logger.Metadata.Value)] {
        var taken = fixedFields.union(metadata.keys.filter { !fixedFields.contains($0) })
        var fields: [(String, Logger.Metadata.Value)] = []
        fields.reserveCapacity(metadata.count)
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            var name = key
            if fixedFields.contains(key) {
                name = "meta." + key
                while taken.contains(name) { name = "meta." + name }
                taken.insert(name)
            }
            fields.append((name, value))
        }
        return fields.sorted(by: { $0.0 < $1.0 })
    }

    private static func appendValue(_ value: Logger.Metadata.Value, to out: inout [UInt8]) {
        switch value {
        case .string(let string):
            appendString(string, to: &out)
        case .stringConvertible(let convertible):
            appendString(convertible.description, to: &out)
        case .dictionary(let dictionary):
            out.append(UInt8(ascii: "{"))
            for (i, (key, nested)) in dictionary.sorted(by: { $0.key < $1.key }).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                appendValue(nested, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        case .array(let array):
            out.append(UInt8(ascii: "["))
            for (i, nested) in array.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendValue(nested, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
    }

    /// A JSON string: quotes, backslashes and control characters escaped, everything else (non-ASCII included) copied
    /// as UTF-8 (a Swift string is always valid UTF-8).
    static func appendString(_ string: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
            case 0x0A: out.append(contentsOf: #"\n"#.utf8)
            case 0x0D: out.append(contentsOf: #"\r"#.utf8)
            case 0x09: out.append(contentsOf: #"\t"#.utf8)
            case 0x08: out.append(contentsOf: #"\b"#.utf8)
            case 0x0C: out.append(contentsOf: #"\f"#.utf8)
            case 0x00..<0x20, 0x7F:
                out.append(contentsOf: #"\u00"#.utf8)
                out.append(hexDigit(byte >> 4))
                out.append(hexDigit(byte & 0x0F))
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds truncated).
    static func appendTimestamp(_ date: Date, to out: inout [UInt8]) {
        // Whole microseconds first, so that a time like …20.123 that a Double holds as …20.12299999 still shows .123.
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        let (seconds, fraction) = micros.quotientAndRemainder(dividingBy: 1_000_000)
        let milliseconds = Int(fraction < 0 ? fraction + 1_000_000 : fraction) / 1000
        var time = time_t(fraction < 0 ? seconds - 1 : seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func digits(_ value: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var v = max(0, value)
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8((v / divisor) % 10))
                v %= divisor
                divisor /= 10
            }
        }
        digits(Int(parts.tm_year) + 1900, 4)
        out.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        out.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        out.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        out.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        out.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        out.append(UInt8(ascii: "."))
        digits(milliseconds, 3)
        out.append(UInt8(ascii: "Z"))
    }

    // MARK: Standard error

    /// Serializes writers, so that a line longer than the pipe's atomic size (PIPE_BUF) still is not interleaved with
    /// another thread's.
    private static let standardErrorLock = Mutex(())

    /// Writes each line to file descriptor 2 with `write(2)`: one call, repeated only for what a short write left
    /// (and on EINTR). A failed write drops the line — logging has nowhere better to report it.
    package static let standardErrorSink: Sink = { line in
        standardErrorLock.withLock { _ in
            line.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                    if written > 0 {
                        offset += written
                    } else if written < 0, errno == EINTR {
                        continue
                    } else {
                        return
                    }
                }
            }
        }
    }
}
