import CZlib

/// gzip for request and export bodies, with a hard limit on the decompressed size so that a small
/// compressed body cannot expand without bound (a "zip bomb").
package enum Gzip {
    package enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        /// The decompressed body would exceed the limit.
        case tooLarge(limit: Int)
        /// Not valid gzip data.
        case corrupt(String)

        package var description: String {
            switch self {
            case .tooLarge(let limit): "decompressed body exceeds the limit of \(limit) bytes"
            case .corrupt(let why): "invalid gzip data: \(why)"
            }
        }
    }

    /// Inflates gzip (or zlib) data, failing as soon as the output would pass `limit` bytes.
    package static func decompress(_ input: UnsafeRawBufferPointer, limit: Int) throws(Failure) -> [UInt8] {
        var stream = z_stream()
        // 15 window bits + 32: detect gzip or zlib headers automatically.
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw .corrupt("cannot initialise zlib")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        output.reserveCapacity(min(input.count * 4, limit))
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.avail_in = UInt32(input.count)
        while true {
            var status: Int32 = Z_OK
            let produced = chunk.withUnsafeMutableBufferPointer { buffer -> Int in
                stream.next_out = buffer.baseAddress
                stream.avail_out = UInt32(buffer.count)
                status = inflate(&stream, Z_NO_FLUSH)
                return buffer.count - Int(stream.avail_out)
            }
            if output.count + produced > limit { throw .tooLarge(limit: limit) }
            output.append(contentsOf: chunk[0..<produced])
            switch status {
            case Z_STREAM_END:
                // Concatenated gzip members are allowed by the format; accept them.
                if stream.avail_in > 0 {
                    guard inflateReset(&stream) == Z_OK else { throw .corrupt("cannot reset zlib") }
                    continue
                }
                return output
            case Z_OK:
                if stream.avail_in == 0 && produced < chunk.count { throw .corrupt("truncated stream") }
            case Z_BUF_ERROR:
                throw .corrupt("truncated stream")
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                throw .corrupt(message)
            }
        }
    }

    /// Compresses with gzip framing at the default level.
    package static func compress(_ input: UnsafeRawBufferPointer, level: Int32 = -1) -> [UInt8] {  // -1: Z_DEFAULT_COMPRESSION
        var stream = z_stream()
        guard deflateInit2_(&stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            preconditionFailure("zlib deflateInit2 failed")
        }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, UInt(input.count))) + 32
        return [UInt8](unsafeUninitializedCapacity: bound) { buffer, count in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
            stream.avail_in = UInt32(input.count)
            stream.next_out = buffer.baseAddress
            stream.avail_out = UInt32(bound)
            let status = deflate(&stream, Z_FINISH)
            precondition(status == Z_STREAM_END, "deflate with a bound-sized buffer must finish")
            count = bound - Int(stream.avail_out)
        }
    }

    package static func compress(_ input: [UInt8]) -> [UInt8] {
        input.withUnsafeBytes { compress($0) }
    }

    package static func decompress(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        let result = input.withUnsafeBytes { raw in Result { () throws(Failure) -> [UInt8] in try decompress(raw, limit: limit) } }
        return try result.get()
    }
}

