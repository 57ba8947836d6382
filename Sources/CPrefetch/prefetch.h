#pragma once

/// Asks the CPU to bring the cache line holding `address` in, for writing, without waiting for it; nothing happens for
/// an address that is not mapped. The buffer issues these for a trace's arrays as soon as it has found the trace, so
/// that their cache misses overlap instead of each waiting for the one before it (`TraceEntry.prefetch`).
static inline void tailgate_prefetch(const void *address) { __builtin_prefetch(address, 1, 3); }
