// libFuzzer target `fuzz-gzip`: Gzip.decompress and Gzip.compress (Fuzz/README.md).
//
// - Decompressing arbitrary bytes with a 200 kB limit may throw; it must never trap, and what it returns is at most
//   the limit (200,000 bytes: not a multiple of the 64 KiB inflate chunk, and small enough that the zip bombs the
//   fuzzer soon finds do not dominate the run time). With a smaller limit (taken from the input) the outcome is consistent: the same bytes when they fit,
//   `tooLarge` when they do not.
// - compress then decompress is the identity on the input; with a limit of exactly its size it succeeds, with one
//   byte less it throws `tooLarge`.

import TailgateWire

let limit = 200_000

func fail(_ message: String) -> Never {
    fatalError("fuzz-gzip: \(message)")
}

func roundTrip(_ bytes: UnsafeRawBufferPointer, _ what: String) {
    let compressed = Gzip.compress(bytes)
    do {
        let out = try Gzip.decompress(compressed, limit: bytes.count)
        if !out.elementsEqual(bytes) { fail("round trip of \(what) (\(bytes.count) bytes) gives other bytes (\(out.count))") }
    } catch {
        fail("round trip of \(what) (\(bytes.count) bytes) with limit = its size throws \(error)")
    }
    if bytes.count > 0 {
        do {
            let out = try Gzip.decompress(compressed, limit: bytes.count - 1)
            fail("round trip of \(what) with limit = size - 1 returns \(out.count) bytes")
        } catch .tooLarge(let l) {
            if l != bytes.count - 1 { fail("tooLarge reports limit \(l), not \(bytes.count - 1)") }
        } catch {
            fail("round trip of \(what) with limit = size - 1 throws \(error), not tooLarge")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let full: Result<[UInt8], Gzip.Failure> = Result { () throws(Gzip.Failure) -> [UInt8] in try Gzip.decompress(input, limit: limit) }
    if case .success(let out) = full, out.count > limit { fail("decompress returned \(out.count) bytes > limit \(limit)") }

    // A small limit from the input: agrees with the big one.
    let small = size >= 2 ? Int(input[0]) | Int(input[1]) << 8 : 0
    let bounded: Result<[UInt8], Gzip.Failure> = Result { () throws(Gzip.Failure) -> [UInt8] in try Gzip.decompress(input, limit: small) }
    switch (full, bounded) {
    case (.success(let a), .success(let b)):
        if a != b { fail("limits \(limit) and \(small) give different bytes") }
        if b.count > small { fail("decompress returned \(b.count) bytes > limit \(small)") }
    case (.success(let a), .failure(let e)):
        if a.count <= small { fail("\(a.count) bytes fit the limit \(small) but decompress throws \(e)") }
        if e != .tooLarge(limit: small) { fail("over the limit \(small) decompress throws \(e), not tooLarge") }
    case (.failure(.tooLarge), .success(let b)):
        fail("limit \(limit) is too small but limit \(small) gives \(b.count) bytes")
    case (.failure(.tooLarge), .failure(let e)) where e != .tooLarge(limit: small):
        fail("over the limit \(limit) but with the smaller limit \(small) decompress throws \(e), not tooLarge")
    case (.failure(.corrupt), .success(let b)):
        // The small limit may stop before the corruption is reached... only by throwing, never by succeeding.
        fail("corrupt with limit \(limit) but limit \(small) gives \(b.count) bytes")
    case (.failure, .failure):
        break
    }

    roundTrip(input, "the input")
    return 0
}
