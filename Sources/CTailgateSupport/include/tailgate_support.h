#pragma once

/// Keeps large allocations (export requests and batches of 0.1-4 MB) on the heap instead of mmap, and freed memory
/// for reuse, so the proxy does not pay page faults and page zeroing per request. No-op outside glibc.
void tailgate_tune_malloc(void);
