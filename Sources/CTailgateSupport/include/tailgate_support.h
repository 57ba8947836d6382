#pragma once
#include <stddef.h>
#include <stdint.h>

/// Keeps large allocations (export requests and batches of 0.1-4 MB) on the heap instead of mmap, and freed memory
/// for reuse, so the proxy does not pay page faults and page zeroing per request. No-op outside glibc.
void tailgate_tune_malloc(void);

/// Returns free heap memory to the system beyond `keep` bytes: called every few seconds, so that memory taken by a
/// burst (large requests, a full buffer) is given back once the burst is over, while a steady load keeps reusing
/// what it frees (returned pages cost a page fault and zeroing each when taken again). Under tcmalloc (the programs
/// link it, see Package.swift), `MallocExtension_ReleaseToSystem` of the page heap's free bytes beyond `keep`; under
/// glibc's allocator, `malloc_trim(keep)`. Returns 1 when memory was released. No-op elsewhere.
int tailgate_trim_malloc(size_t keep);

/// Free memory the allocator holds and could return to the system: under tcmalloc, its page heap's free bytes;
/// -1 when the allocator does not say (glibc's).
long long tailgate_allocator_free_bytes(void);

/// The file name of the shared library that provides the process's `malloc` (for example "libtcmalloc_minimal.so.4"
/// or "libc.so.6"), found at run time: which allocator is in effect, whatever was linked or preloaded. "unknown" when
/// it cannot be told.
const char *tailgate_allocator(void);

/// The git commit the binary was built from: the TAILGATE_COMMIT macro (`make` passes
/// `-Xcc -DTAILGATE_COMMIT=\"<sha>\"`), else "unknown".
const char *tailgate_build_commit(void);

/// CRC-32C (Castagnoli) of `count` bytes, continuing from `crc` (0 to start): hardware-accelerated where the CPU has
/// SSE4.2, a table otherwise. The store's record checksum.
uint32_t tailgate_crc32c(uint32_t crc, const void *data, size_t count);

/// The `O_DIRECT` open flag (its value differs between architectures, and glibc shows it only with _GNU_SOURCE),
/// or 0 where the platform has none.
int tailgate_o_direct(void);
