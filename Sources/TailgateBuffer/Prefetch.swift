internal import CHelpers

/// Asks for the cache lines of the header (reference count, count, capacity) and first elements of the array stored at
/// `array`, without waiting for them. The array's storage reference is read as bits, not retained: a retain is an
/// atomic write to the very line being asked for, and would wait for it. A prefetch never faults, so a stale or wrong
/// address costs nothing but the hint.
@inline(__always)
func prefetchArray<T>(at array: UnsafeMutablePointer<[T]>) {
    let storage = UnsafeRawPointer(array).load(as: UnsafeRawPointer.self)
    tailgate_prefetch(storage)  // isa, reference count, count, capacity
    tailgate_prefetch(storage + 32)  // the first elements
}

extension TraceEntry {
    /// The trace's arrays are asked for at once, so that their cache misses (a trace waits long enough between requests
    /// to have left the caches) overlap, instead of each waiting for the one before it as the code reaches it. Called
    /// when a span's trace has been found, and for the next trace to decide while one is decided.
    @inline(__always)
    func prefetch() {
        spans.prefetch()
        seen.prefetch()
        missing.prefetch()
        summary.prefetchGenAI()
    }
}
