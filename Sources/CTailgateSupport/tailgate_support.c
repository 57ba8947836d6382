#define _GNU_SOURCE
#include "tailgate_support.h"
#include <dlfcn.h>
#include <fcntl.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void tailgate_tune_malloc(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

long long tailgate_allocator_free_bytes(void) {
    // tcmalloc's free pages not yet returned to the system (it returns some on its own, gradually).
    int (*property)(const char *, size_t *) =
        (int (*)(const char *, size_t *))dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty");
    size_t value = 0;
    if (property && property("tcmalloc.pageheap_free_bytes", &value)) return (long long)value;
    return -1;
}

int tailgate_trim_malloc(size_t keep) {
    // Looked up rather than linked: the library modules (and their tests) do not depend on tcmalloc.
    void (*release)(size_t) = (void (*)(size_t))dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseToSystem");
    long long held = tailgate_allocator_free_bytes();  // (not `free`: that would shadow free(3))
    if (release && held >= 0) {
        if ((size_t)held <= keep) return 0;
        release((size_t)held - keep);
        return 1;
    }
#if defined(__GLIBC__)
    return malloc_trim(keep);
#else
    return 0;
#endif
}

const char *tailgate_allocator(void) {
    Dl_info info;
    void *symbol = dlsym(RTLD_DEFAULT, "malloc");
    if (!symbol || !dladdr(symbol, &info) || !info.dli_fname) return "unknown";
    const char *slash = strrchr(info.dli_fname, '/');  // the loader's string, valid while the library is loaded
    return slash ? slash + 1 : info.dli_fname;
}

#ifndef TAILGATE_COMMIT
#define TAILGATE_COMMIT "unknown"
#endif

const char *tailgate_build_commit(void) {
    return TAILGATE_COMMIT;
}

/* CRC-32C (Castagnoli), the store's record checksum: SSE4.2's crc32 instruction where the CPU has it (about 8 bytes
   per cycle), else a table (about 1 byte per cycle). */
#include <stdint.h>
#include <string.h>

static uint32_t crc32c_table[256];
static int crc32c_ready = 0;

static void crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
    crc32c_ready = 1;
}

static uint32_t crc32c_soft(uint32_t crc, const uint8_t *p, size_t n) {
    if (!crc32c_ready) crc32c_init();
    crc = ~crc;
    while (n--) crc = crc32c_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

static int has_sse42(void) {
    static int cached = -1;
    if (cached < 0) {
        unsigned a, b, c, d;
        cached = (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2)) ? 1 : 0;
    }
    return cached;
}
#endif

uint32_t tailgate_crc32c(uint32_t crc, const void *data, size_t count) {
#if defined(__x86_64__)
    if (has_sse42()) return crc32c_hw(crc, (const uint8_t *)data, count);
#endif
    return crc32c_soft(crc, (const uint8_t *)data, count);
}

int tailgate_o_direct(void) {
#ifdef O_DIRECT
    return O_DIRECT;
#else
    return 0;
#endif
}
