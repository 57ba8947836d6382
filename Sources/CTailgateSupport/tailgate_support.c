#include "tailgate_support.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void tailgate_tune_malloc(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

int tailgate_trim_malloc(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}

#ifndef TAILGATE_COMMIT
#define TAILGATE_COMMIT "unknown"
#endif

const char *tailgate_build_commit(void) {
    return TAILGATE_COMMIT;
}
