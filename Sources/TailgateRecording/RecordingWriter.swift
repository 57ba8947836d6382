#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
package import Darwin
#endif
package import Logging
import Synchronization

/// Tees accepted export requests into a recording (Tailgate's compact `.tgrec` form, see `Recording`) without
/// slowing ingest: requests are copied into a bounded in-memory buffer that a background task writes out; when the
/// buffer is full the request is left out of the recording (and counted), never delayed. Files rotate at
/// `maxFileBytes`: `PATH` → `PATH.1` → … → `PATH.<keep>` (the oldest is removed). The runtime's
/// `RecordingService` calls `flush()` periodically and `close()` at shutdown.
package final class RecordingWriter: Sendable {
    package struct Configuration: Sendable, Equatable {
        package var path: String
        /// Rotate when a file reaches this size. Default 256 MiB.
        package var maxFileBytes: Int = 256 << 20
        /// Rotated files kept besides the current one. Default 3.
        package var keepFiles: Int = 3
        /// Requests waiting to be written, at most this many bytes. Default 64 MiB.
        package var bufferBytes: Int = 64 << 20

        package init(path: String) { self.path = path }
    }

    struct State {
        var pending: [UInt8] = []
        var recorded = 0
        var dropped = 0
        var closed = false
    }

    package let configuration: Configuration
    private let state = Mutex(State())
    private let file = Mutex<(fd: Int32, size: Int)>((-1, 0))
    package let logger: Logger

    package init(configuration: Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        try openFile()
    }

    package struct OpenError: Error, CustomStringConvertible {
        package var description: String
    }

    private func openFile() throws {
        let fd = open(configuration.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw OpenError(description: "cannot open \(configuration.path): \(String(cString: strerror(errno)))") }
        writeAll(fd, Recording.magic)
        file.withLock { $0 = (fd, Recording.magic.count) }
    }

    /// Copies one request into the recording buffer (non-blocking).
    package func record(_ body: UnsafeRawBufferPointer, arrival: UInt64) {
        state.withLock { s in
            guard !s.closed else { return }
            guard s.pending.count + body.count + Recording.recordHeaderSize <= configuration.bufferBytes else {
                s.dropped += 1
                return
            }
            Recording.appendRecord(arrival: arrival, body: body, to: &s.pending)
            s.recorded += 1
        }
    }

    package var counts: (recorded: Int, dropped: Int) { state.withLock { ($0.recorded, $0.dropped) } }

    /// Writes out what is buffered; rotates when the file is full.
    package func flush() {
        var chunk: [UInt8] = []
        state.withLock { swap(&chunk, &$0.pending) }
        guard !chunk.isEmpty else { return }
        file.withLock { f in
            if f.size + chunk.count > configuration.maxFileBytes && f.size > Recording.magic.count {
                rotate(&f)
            }
            writeAll(f.fd, chunk)
            f.size += chunk.count
        }
    }

    private func rotate(_ f: inout (fd: Int32, size: Int)) {
        closeFile(f.fd)
        let path = configuration.path
        if configuration.keepFiles > 0 {
            unlink("\(path).\(configuration.keepFiles)")
            for i in stride(from: configuration.keepFiles - 1, through: 1, by: -1) {
                rename("\(path).\(i)", "\(path).\(i + 1)")
            }
            rename(path, "\(path).1")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 {
            logger.error("cannot reopen the recording; recording stops", metadata: ["file": "\(path)"])
            state.withLock { $0.closed = true }
            f = (-1, 0)
            return
        }
        writeAll(fd, Recording.magic)
        f = (fd, Recording.magic.count)
    }

    package func close() {
        flush()
        state.withLock { $0.closed = true }
        file.withLock { f in
            if f.fd >= 0 { closeFile(f.fd) }
            f.fd = -1
        }
    }
}

private func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    guard fd >= 0 else { return }
    var offset = 0
    bytes.withUnsafeBytes { raw in
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 { if errno == EINTR { continue } else { return } }
            offset += n
        }
    }
}

private func closeFile(_ fd: Int32) {
    #if canImport(Glibc)
    _ = Glibc.close(fd)
    #elseif canImport(Darwin)
    _ = Darwin.close(fd)
    #endif
}
