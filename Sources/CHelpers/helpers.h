#pragma once
#include <stddef.h>

/// Asks the CPU to bring the cache line holding `address` in, for writing, without waiting for it; nothing happens for
/// an address that is not mapped. The buffer issues these for a trace's arrays as soon as it has found the trace, so
/// that their cache misses overlap instead of each waiting for the one before it (`TraceEntry.prefetch`).
static inline void tailgate_prefetch(const void *address) { __builtin_prefetch(address, 1, 3); }

/// The C library's `memmem` (a GNU extension, which Swift's Glibc module does not show): the first occurrence of
/// `needle` in `haystack`, or NULL. Used to look for "tailgate." in kept spans (`KeepAnnotation.mayCarryOwnAttributes`).
void *memmem(const void *haystack, size_t haystack_length, const void *needle, size_t needle_length);
static inline const void *tailgate_memmem(const void *haystack, size_t haystack_length, const void *needle,
                                          size_t needle_length) {
    return memmem(haystack, haystack_length, needle, needle_length);
}
