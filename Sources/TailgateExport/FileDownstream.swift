#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private let closeDescriptor = Glibc.close
#elseif canImport(Darwin)
private let closeDescriptor = Darwin.close
#endif
import NIOConcurrencyHelpers
import TailgateWire

/// Writes each export request as one line of OTLP/JSON, the shape the OpenTelemetry Collector's file
/// exporter writes, so the output can be read back by the Collector's `otlpjsonfile` receiver or by
/// `tailgate` recordings. `-` writes to standard output.
package final class FileDownstream: Downstream {
    package let target: String
    /// The open descriptor (nil once closed), under a lock so lines are never interleaved.
    private let descriptor: NIOLockedValueBox<Int32?>
    private let ownsDescriptor: Bool

    package init(path: String) throws {
        target = "file:\(path)"
        if path == "-" {
            descriptor = NIOLockedValueBox(STDOUT_FILENO)
            ownsDescriptor = false
        } else {
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw FileDownstreamError(path: path, errno: errno) }
            descriptor = NIOLockedValueBox(fd)
            ownsDescriptor = true
        }
    }

    package func run() async throws {}

    package func close() {
        descriptor.withLockedValue { fd in
            guard let f = fd else { return }
            if ownsDescriptor { _ = closeDescriptor(f) }
            fd = nil
        }
    }

    package func send(_ request: [UInt8]) async -> SendOutcome {
        let line: [UInt8]
        do {
            line = try OTLPJSON.jsonFromProtobuf(request) + [UInt8(ascii: "\n")]
        } catch {
            return .invalid(reason: "cannot encode as JSON: \(error)")
        }
        return descriptor.withLockedValue { fd -> SendOutcome in
            guard let f = fd else { return .permanent(reason: "file closed") }
            var offset = 0
            while offset < line.count {
                let n = line.withUnsafeBytes { write(f, $0.baseAddress! + offset, $0.count - offset) }
                if n < 0 {
                    if errno == EINTR { continue }
                    return .retryable(reason: "write to \(target) failed: \(String(cString: strerror(errno)))", retryAfter: nil)
                }
                offset += n
            }
            return .delivered
        }
    }
}

package struct FileDownstreamError: Error, CustomStringConvertible {
    package var path: String
    package var errno: Int32
    package var description: String { "cannot open \(path) for appending: \(String(cString: strerror(errno)))" }
}
