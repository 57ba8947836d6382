import CTailgateSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A growable byte buffer whose storage starts on a `blockBytes` boundary and whose capacity is a whole number of
/// blocks: what `O_DIRECT` writes need. Owned by one `SegmentLog` (under its lock); `release()` frees it.
struct AlignedBytes {
    /// The alignment and write granularity (covers 512-byte and 4 KiB logical blocks).
    static let blockBytes = 4096

    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = Self.roundUp(max(capacity, Self.blockBytes))
        base = .allocate(byteCount: self.capacity, alignment: Self.blockBytes)
    }

    static func roundUp(_ n: Int) -> Int { (n + blockBytes - 1) / blockBytes * blockBytes }

    var isEmpty: Bool { count == 0 }

    /// The first `length` bytes (at most the capacity).
    func bytes(_ length: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }

    func slice(_ range: Range<Int>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(count + bytes.count)
        (base + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        count += bytes.count
    }

    mutating func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    /// Grows by `n` bytes, returned to be written by the caller.
    mutating func appendUninitialized(_ n: Int) -> UnsafeMutableRawBufferPointer {
        reserve(count + n)
        defer { count += n }
        return UnsafeMutableRawBufferPointer(start: base + count, count: n)
    }

    /// Overwrites 4 bytes at `offset` (little-endian).
    func store(_ value: UInt32, at offset: Int) {
        precondition(offset + 4 <= count)
        (base + offset).storeBytes(of: value.littleEndian, as: UInt32.self)
    }

    /// The CRC-32C of `count` bytes at `offset`.
    func checksum(_ offset: Int, _ length: Int) -> UInt32 {
        tailgate_crc32c(0, base + offset, length)
    }

    /// Zeroes the bytes from the end up to `length` (rounded to whole blocks by the caller), growing if needed, and
    /// returns them as one buffer: a padded block for a direct write. `count` is unchanged.
    mutating func padded(to length: Int) -> UnsafeRawBufferPointer {
        reserve(length)
        if length > count { memset(base + count, 0, length - count) }
        return bytes(length)
    }

    /// Drops the first `n` bytes, moving the rest to the start.
    mutating func removeFirst(_ n: Int) {
        precondition(n <= count)
        if n < count { memmove(base, base + n, count - n) }
        count -= n
    }

    mutating func removeAll() { count = 0 }

    /// Keeps the first `n` bytes.
    mutating func truncate(to n: Int) {
        precondition(n <= count)
        count = n
    }

    /// Gives back memory grown past `limit` (a single huge record) once the buffer is empty again.
    mutating func shrink(to limit: Int) {
        let target = Self.roundUp(max(limit, Self.blockBytes))
        guard count <= target, capacity > target else { return }
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: target, alignment: Self.blockBytes)
        fresh.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = fresh
        capacity = target
    }

    private mutating func reserve(_ needed: Int) {
        guard needed > capacity else { return }
        let grown = Self.roundUp(max(needed, capacity * 2))
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: Self.blockBytes)
        fresh.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = fresh
        capacity = grown
    }

    func release() { base.deallocate() }
}
