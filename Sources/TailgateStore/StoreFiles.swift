import CTailgateSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file-system error with the call and path that failed.
package struct StoreIOError: Error, CustomStringConvertible, Sendable {
    package var operation: String
    package var path: String
    package var errno: Int32

    package init(_ operation: String, _ path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    /// The disk (or a quota) is full.
    package var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    package var description: String {
        "\(operation) \(path): \(String(cString: strerror(errno)))"
    }
}

/// The file operations the store needs, injectable so that tests can simulate a full disk, short writes and damage
/// without touching the machine's disk.
package protocol StoreFiles: Sendable {
    /// Names of the entries of a directory.
    func list(_ directory: String) throws(StoreIOError) -> [String]
    func makeDirectory(_ path: String) throws(StoreIOError)
    /// Opens (creating it when `create`) a file for reading and appending; returns a descriptor.
    func open(_ path: String, create: Bool) throws(StoreIOError) -> Int32
    func close(_ fd: Int32)
    /// Writes all of `bytes` at the end of the file.
    func append(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(StoreIOError)
    /// A second descriptor on an existing file for unbuffered writes (`O_DIRECT`: no copy into the page cache), or
    /// nil when the file system does not support them (then `append` is used).
    func openForDirectWrites(_ path: String) -> Int32?
    /// Writes all of `bytes` at `offset` (a direct write: both, and the buffer's address, are block-aligned).
    func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws(StoreIOError)
    /// Reads exactly `count` bytes at `offset` (fewer at the end of the file).
    func read(_ fd: Int32, offset: UInt64, count: Int, path: String) throws(StoreIOError) -> [UInt8]
    func size(_ fd: Int32, path: String) throws(StoreIOError) -> UInt64
    /// Cuts a file back to `size` bytes (after a failed, possibly partial, write).
    func truncate(_ fd: Int32, to size: UInt64, path: String) throws(StoreIOError)
    /// Makes written data durable (`fdatasync`).
    func sync(_ fd: Int32, path: String) throws(StoreIOError)
    func remove(_ path: String) throws(StoreIOError)
    /// Takes an exclusive advisory lock on a lock file for the life of the process; throws when another process holds
    /// it (`EWOULDBLOCK`).
    func lock(_ path: String) throws(StoreIOError) -> Int32
}

/// The real file system (POSIX calls).
package struct POSIXStoreFiles: StoreFiles {
    package init() {}

    package func list(_ directory: String) throws(StoreIOError) -> [String] {
        guard let dir = opendir(directory) else { throw StoreIOError("opendir", directory, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    package func makeDirectory(_ path: String) throws(StoreIOError) {
        var components: [Substring] = []
        var current = path.hasPrefix("/") ? "/" : ""
        components = path.split(separator: "/")
        for c in components {
            current += (current.isEmpty || current.hasSuffix("/") ? "" : "/") + c
            if mkdir(current, 0o755) != 0 && errno != EEXIST { throw StoreIOError("mkdir", current, errno: errno) }
        }
    }

    package func open(_ path: String, create: Bool) throws(StoreIOError) -> Int32 {
        let fd = posixOpen(path, O_RDWR | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0))
        guard fd >= 0 else { throw StoreIOError("open", path, errno: errno) }
        return fd
    }

    package func close(_ fd: Int32) { posixClose(fd) }

    package func append(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(StoreIOError) {
        var done = 0
        while done < bytes.count {
            let n = posixWrite(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreIOError("write", path, errno: errno)
            }
            done += n
        }
    }

    package func openForDirectWrites(_ path: String) -> Int32? {
        let flag = tailgate_o_direct()
        guard flag != 0 else { return nil }
        let fd = posixOpen(path, O_WRONLY | flag | O_CLOEXEC)
        return fd >= 0 ? fd : nil
    }

    package func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws(StoreIOError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreIOError("write", path, errno: errno)
            }
            done += n
        }
    }

    package func read(_ fd: Int32, offset: UInt64, count: Int, path: String) throws(StoreIOError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        let failure: Int32? = out.withUnsafeMutableBytes { raw -> Int32? in
            while done < count {
                let n = pread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if n == 0 { break }
                done += n
            }
            return nil
        }
        if let failure { throw StoreIOError("read", path, errno: failure) }
        if done < count { out.removeLast(count - done) }
        return out
    }

    package func size(_ fd: Int32, path: String) throws(StoreIOError) -> UInt64 {
        // lseek rather than fstat: `struct stat` is re-exported by several system modules, which member import
        // visibility cannot attribute the same way in debug and release builds. The offset is restored.
        let current = lseek(fd, 0, SEEK_CUR)
        guard current >= 0 else { throw StoreIOError("lseek", path, errno: errno) }
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw StoreIOError("lseek", path, errno: errno) }
        guard lseek(fd, current, SEEK_SET) == current else { throw StoreIOError("lseek", path, errno: errno) }
        return UInt64(end)
    }

    package func truncate(_ fd: Int32, to size: UInt64, path: String) throws(StoreIOError) {
        guard ftruncate(fd, off_t(size)) == 0 else { throw StoreIOError("ftruncate", path, errno: errno) }
    }

    package func sync(_ fd: Int32, path: String) throws(StoreIOError) {
        guard fdatasync(fd) == 0 else { throw StoreIOError("fdatasync", path, errno: errno) }
    }

    package func remove(_ path: String) throws(StoreIOError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw StoreIOError("unlink", path, errno: errno) }
    }

    package func lock(_ path: String) throws(StoreIOError) -> Int32 {
        let fd = posixOpen(path, O_RDWR | O_CREAT | O_CLOEXEC)
        guard fd >= 0 else { throw StoreIOError("open", path, errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            posixClose(fd)
            throw StoreIOError("lock", path, errno: e)
        }
        // The holder's PID, for the message a second instance prints.
        _ = ftruncate(fd, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return fd
    }
}

private func posixOpen(_ path: String, _ flags: Int32) -> Int32 { open(path, flags, 0o644) }
private func posixClose(_ fd: Int32) { _ = close(fd) }
private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int { write(fd, bytes, count) }
