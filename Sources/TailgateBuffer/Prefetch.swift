internal import CPrefetch

extension Array {
    /// Asks for the cache lines of the array's header (reference count, count, capacity) and first elements, without
    /// waiting for them. Harmless if the guess about the layout is wrong: a prefetch never faults.
    @inline(__always)
    func prefetchStorage() {
        withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            let elements = UnsafeRawPointer(base)
            tailgate_prefetch(elements - 32)  // the header: isa, reference count, count, capacity
            tailgate_prefetch(elements)
        }
    }
}

extension BufferedSpans {
    /// The arrays that appending a span reads and writes.
    @inline(__always)
    func prefetch() {
        refs.prefetchStorage()
        data.prefetchStorage()
        origins.prefetchStorage()
    }
}

extension TraceEntry {
    /// A trace's span has arrived and the trace was found: its arrays are asked for at once, so that their cache misses
    /// (a trace waits long enough between requests to have left the caches) overlap, instead of each waiting for the
    /// one before it as the insert reaches it.
    @inline(__always)
    func prefetch() {
        spans.prefetch()
        seen.prefetch()
        missing.prefetch()
        summary.genAI?.prefetch()
    }
}
